"""The code sent to a remote host: the agent, the runner and the log readers, as one zip.

It is built from this installed package (standard-library modules only), named by the
hash of its contents, and kept on the remote host at ``STATE/agent/HASH.zip``; a call
whose agent is missing there sends it along, once. The bootstrap below is the only code
that is typed on the remote command line: it finds the state directory, stores the zip
when one is sent, and hands the request to the agent.
"""

from __future__ import annotations

import functools
import hashlib
import io
import shlex
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
MODULES = (
    "errors.py",
    "exits.py",
    "logs/holes.py",
    "logs/lines.py",
    "logs/files.py",
    "platform/dying.py",
    "logs/matches.py",
    "platform/heads.py",
    "runner.py",
    "remote/agent.py",
    "remote/agent_patterns.py",
    "remote/agent_procs.py",
    "remote/agent_wait.py",
)
"""What the remote side runs: each imports only the standard library and the others."""
PACKAGES = ("", "logs/", "platform/", "remote/")
"""The packages of MODULES, each shipped with an empty ``__init__`` (the real ones import more)."""
MAIN = "import sys\nfrom mcp_backgroundr.remote.agent import main\nmain(sys.argv[0], '')\n"
NO_PYTHON_STATUS = 97
NEEDS_BUNDLE_STATUS = 98
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

BOOTSTRAP = """\
import os,sys
e=os.environ
s=e.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
d=e.get("MCP_BACKGROUNDR_HOME") or os.path.join(s,"mcp-backgroundr")
z=os.path.join(d,"agent",sys.argv[1]+".zip")
i=sys.stdin.buffer
n=int(i.readline())
if n:
    os.makedirs(os.path.dirname(z),mode=0o700,exist_ok=True)
    t=z+".%d"%os.getpid()
    with os.fdopen(os.open(t,os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o600),"wb") as f:f.write(i.read(n))
    os.replace(t,z)
elif not os.path.exists(z):sys.exit(98)
sys.path.insert(0,z)
from mcp_backgroundr.remote.agent import main
main(z,d)
"""


@functools.cache
def bundle() -> tuple[str, bytes]:
    """(hash, zip bytes) of the remote side, built once per server."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = {"__main__.py": MAIN} | {f"mcp_backgroundr/{package}__init__.py": "" for package in PACKAGES}
        entries |= {f"mcp_backgroundr/{name}": (PACKAGE / name).read_text(encoding="utf-8") for name in MODULES}
        for name, text in sorted(entries.items()):
            entry = zipfile.ZipInfo(name, _ZIP_TIME)  # a ZipInfo is stored uncompressed unless it says otherwise
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, text)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest()[:16], data


def remote_command(python: str | None = None) -> str:
    """What the remote login shell runs for every call (POSIX sh syntax).

    ``python``: the interpreter the host used last time (its ``sys.executable``), run directly
    when it is still there, which skips version-manager shims (pyenv's cost 100 ms and more).
    """
    digest, _ = bundle()
    missing = f"echo 'mcp-backgroundr: no python3 on this host' >&2; exit {NO_PYTHON_STATUS}"
    known = f"[ -x {shlex.quote(python)} ] && p={shlex.quote(python)}; " if python else ""
    return (
        f"p=python3; {known}command -v $p >/dev/null 2>&1 || {{ {missing}; }}; "
        f'exec "$p" -I -c {shlex.quote(BOOTSTRAP)} {digest}'
    )


def request_bytes(request: bytes, with_bundle: bool) -> bytes:
    """What a call writes to the remote stdin: the bundle's length and bytes (or 0), then the request."""
    if not with_bundle:
        return b"0\n" + request
    _, data = bundle()
    return f"{len(data)}\n".encode() + data + request
