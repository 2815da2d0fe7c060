"""A host behind a link the tests can cut: a network namespace, a veth pair, an sshd inside."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .sshd import Sshd, running_sshd


def missing() -> str | None:
    """Why network namespaces cannot be had here, or None."""
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed; .ci/run installs it"
    probe = f"mcpbprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*arguments: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *arguments], check=True, capture_output=True)


@dataclass
class FarHost:
    """An sshd in its own network namespace, reached over a veth pair."""

    sshd: Sshd
    link: str
    """The host side of the veth pair."""

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")


@contextlib.contextmanager
def far_host(directory: Path, own_pids: bool = False) -> Iterator[FarHost]:
    """A namespace with a private /30 link to this one, and an sshd on its side (``own_pids``: in a
    PID namespace of its own, so its pids mean nothing here, as on another machine); all removed after."""
    tag = secrets.token_hex(3)
    netns, near, far = f"mcpb{tag}", f"mcpbh{tag}", f"mcpbn{tag}"
    subnet = f"10.213.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}"
    base = subnet.rsplit(".", 1)
    near_address, far_address = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", near, "type", "veth", "peer", "name", far)
        _ip("link", "set", far, "netns", netns)
        _ip("addr", "add", f"{near_address}/30", "dev", near)
        _ip("link", "set", near, "up")
        _ip("addr", "add", f"{far_address}/30", "dev", far, netns=netns)
        _ip("link", "set", far, "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
        with running_sshd(directory, far_address, netns=netns, own_pids=own_pids) as sshd:
            yield FarHost(sshd, near)
    finally:
        subprocess.run(["ip", "link", "del", near], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
