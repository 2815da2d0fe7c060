"""mcp-backgroundr side by side with other MCP servers that run commands in the background.

    python bench/peers.py [--quick] [--only SERVER ...]

The peers are installed once into a scratch directory, never as project dependencies:
``$MCP_BACKGROUNDR_BENCH_PEERS_DIR``, by default ``~/.cache/mcp-backgroundr-bench/peers``, one
directory per pinned version:

- ``@wonderwhy-er/desktop-commander`` (npm), with ``npm install --ignore-scripts`` (its
  postinstall reports the installation over the network; Puppeteer's downloads a browser);
- ``mcp-background-job`` (PyPI), in a venv of the first Python >= 3.12 found
  (``$MCP_BACKGROUNDR_BENCH_PYTHON312``, this Python, ``python3.1x`` on PATH, pyenv), else
  skipped with a note;
- ``backburner-mcp`` (PyPI), in a venv of the first Python >= 3.10 found the same way (this
  one, here).

Only the peers' own versions are pinned; the JSON record lists what pip resolved beside them.

Every server is launched by the SDK's stdio client (``Client`` + ``stdio_client``, as
``_harness.py`` does) with a private ``HOME`` in a temporary directory, and every scenario is
mapped onto each server's own tools (``MAPPINGS``; the report prints them). Per server, in one
connection: start latency, the 200 MB writes, status latency, 100 tasks, ending a tree, ending a
task that ignores SIGTERM; then fresh connections for the disconnect runs. Launch-to-tools/list
runs first, alternating the servers. Every figure is a median over repetitions in this run, given
as a ratio to mcp-backgroundr's or to a plain-shell run of the same command.

- Latency calls are spaced ``GAP`` apart (a model's calls are seconds apart); back to back,
  desktop-commander waits for the lock on its config file, where it counts every call.
- Answer sizes are the bytes of the answer's text content (what a model reads); the JSON
  record also has the size of the whole result (mcp-backgroundr repeats the output in its
  structured content, for clients that show the model that instead).
- The 200 MB write is ``yes <99 x> | head -c 200000000``. Time to completion: from the start
  call until the server reports the task finished. This process waits on a pidfd of the task's
  top process (found by its marker), then polls the server's state call every 10 ms; nothing
  polls during the write. The plain shell runs the same command as ``sh -c '{ CMD; } > file'``
  just before each server run; the ratio is the median of the per-run ratios. Peak RSS is the
  server process's own (2 ms samples), not its tasks'.
- Survivors and orphans: every task command is ``env BENCH_PEERS_MARK=<unique> sh -c '...'``,
  so every process of it carries the marker in its environment; processes are counted with
  psutil ``END_SETTLE`` s after the end call returned (the peers' own kill escalations are
  shorter) or ``ORPHAN_SETTLE`` s after the client closed (after the SDK's own 2 s wait and
  kill of the server's process group). The harness kills whatever carries a marker of the run
  at the end of each scenario and reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import psutil
from _harness import BENCH_DIR, HOME_ENV, Sampler, median, server_command
from chart import render as render_chart
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent

PEERS_DIR_ENV = "MCP_BACKGROUNDR_BENCH_PEERS_DIR"
PYTHON312_ENV = "MCP_BACKGROUNDR_BENCH_PYTHON312"
DEFAULT_PEERS_DIR = Path.home() / ".cache" / "mcp-backgroundr-bench" / "peers"
DC_PACKAGE, DC_VERSION = "@wonderwhy-er/desktop-commander", "0.2.52"
BGJOB_PACKAGE, BGJOB_VERSION = "mcp-background-job", "0.1.2"
BB_PACKAGE, BB_VERSION = "backburner-mcp", "1.0.0"
INSTALL_TIMEOUT = 900.0

SESSION_ENV = "BENCH_PEERS_SESSION"
"""Set on every server of a run (``<run id>:<n>``): every process it starts inherits it."""
MARK_ENV = "BENCH_PEERS_MARK"
"""Put in each task's command: every process of that task carries it."""

CALL_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0
SCENARIO_TIMEOUT = 600.0
GAP = 0.2
"""Pause before each timed latency call."""
POLL = 0.01
END_SETTLE = 8.0
WRITE_LIMIT = 60.0
"""Longest a server gets to report the 200 MB writer finished (half with --quick)."""
ORPHAN_SETTLE = 3.0
CLIENT_GRACE = 2.0
"""How long the SDK's stdio client waits for a server to exit after closing its stdin, before it
kills the server's process group (SIGTERM, then SIGKILL 2 s later)."""
APPEAR_TIMEOUT = 10.0
LINE = "x" * 99
BIG = 200_000_000
SMALL = 20_000
"""Both logs are 100-byte lines, so both tails carry the same 100 lines."""
TASKS = 100
SLEEP = "sleep 300"
TREE = "sleep 300 & sleep 300"
IGNORER = "trap '' INT TERM; sleep 300"
"""Ignores SIGTERM, and SIGINT too: desktop-commander's force_terminate sends SIGINT first."""
WRITER = f"yes {LINE} | head -c {BIG}"
SMALL_WRITER = f"yes {LINE} | head -c {SMALL}"


# ---------------------------------------------------------------------------------------------
# Processes


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_processes(match: Callable[[dict[str, str], str], bool]) -> list[psutil.Process]:
    """Live processes (not this one) whose environment or command line ``match`` accepts."""
    found = []
    for process in psutil.process_iter(["environ", "cmdline"], ad_value=None):
        environ = process.info.get("environ") or {}
        cmdline = " ".join(process.info.get("cmdline") or [])
        if process.pid != os.getpid() and match(environ, cmdline) and _alive(process):
            found.append(process)
    return found


def marked(marker: str) -> list[psutil.Process]:
    return find_processes(lambda env, cmd: env.get(MARK_ENV) == marker or f"{MARK_ENV}={marker}" in cmd)


def of_run(run_id: str) -> list[psutil.Process]:
    return find_processes(lambda env, cmd: env.get(SESSION_ENV, "").startswith(run_id + ":"))


def kill_all(processes: Sequence[psutil.Process]) -> list[str]:
    """SIGKILL them; describe each."""
    described = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid} {' '.join(process.cmdline())[:80]}")
            process.kill()
    psutil.wait_procs(list(processes), timeout=5)
    return described


async def wait_count(marker: str, done: Callable[[int], bool], limit: float) -> int:
    """Poll the marked processes every 20 ms until ``done(count)`` or ``limit`` s; the last count."""
    deadline = time.monotonic() + limit
    while True:
        count = len(await anyio.to_thread.run_sync(marked, marker))
        if done(count) or time.monotonic() >= deadline:
            return count
        await anyio.sleep(0.02)


async def wait_pidfd(pid: int, limit: float) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with anyio.fail_after(limit):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def new_marker() -> str:
    return uuid.uuid4().hex[:12]


def marked_command(marker: str, script: str) -> str:
    """The same command for every server: parsed by a shell or by ``shlex.split`` alike. A plain
    ``sleep`` goes without ``sh -c`` (a shell would stay as its parent)."""
    if script == SLEEP:
        return f"env {MARK_ENV}={marker} {script}"
    return f"env {MARK_ENV}={marker} sh -c {shlex.quote(script)}"


def bytes_written(marker: str, name: str) -> int | None:
    """What the marked processes called ``name`` have written so far (``/proc/PID/io``)."""
    total = None
    for process in marked(marker):
        with contextlib.suppress(psutil.Error):
            if process.name() == name:
                total = (total or 0) + process.io_counters().write_chars
    return total


# ---------------------------------------------------------------------------------------------
# Installing the peers


def peers_dir() -> Path:
    return Path(os.environ.get(PEERS_DIR_ENV) or DEFAULT_PEERS_DIR).expanduser()


def _run(command: list[str], **kwargs: Any) -> None:
    print(f"  $ {' '.join(command)}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.stdout.split()
    return (int(parts[0]), int(parts[1])) if out.returncode == 0 and len(parts) == 2 else None


def find_python(minimum: tuple[int, int]) -> str | None:
    """This Python if new enough, else the first of $MCP_BACKGROUNDR_BENCH_PYTHON312, python3.1x
    on PATH, pyenv's versions."""
    candidates = [os.environ.get(PYTHON312_ENV, ""), sys.executable]
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in range(minimum[1], 20)]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(str(p) for p in pyenv.glob("3.*/bin/python3"))
    for python in candidates:
        version = _python_version(python) if python else None
        if version is not None and version >= minimum:
            return python
    return None


def install_npm(package: str, version: str) -> Path:
    """``npm install`` into its own directory, without install scripts; the package's directory."""
    target = peers_dir() / f"{package.replace('/', '+')}-{version}"
    stamp, where = target / ".installed", target / "node_modules" / package
    if not stamp.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
        _run([npm, "install", "--prefix", str(target), "--ignore-scripts", "--no-audit", "--no-fund",
              f"{package}@{version}"], env=env)  # fmt: skip
        stamp.write_text(f"{package}@{version}\n")
    return where


def install_pip(package: str, version: str, python: str) -> Path:
    """A venv of ``python`` holding ``package==version``; its bin directory."""
    target = peers_dir() / f"{package}-{version}"
    stamp, bindir = target / ".installed", target / "bin"
    if not stamp.exists():
        shutil.rmtree(target, ignore_errors=True)
        _run([python, "-m", "venv", str(target)])
        _run([str(bindir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
              f"{package}=={version}"])  # fmt: skip
        stamp.write_text(f"{package}=={version}\n")
    return bindir


def pip_freeze(bindir: Path) -> list[str]:
    done = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout.split()


# ---------------------------------------------------------------------------------------------
# A connection


@dataclass
class Answer:
    """One tool answer."""

    text: str
    structured: Any
    seconds: float
    text_bytes: int
    """Bytes of the text content: what a model reads."""
    result_bytes: int
    """Bytes of the whole result as JSON (text and structured content)."""


@dataclass
class Session:
    client: Client
    tag: str
    """This connection's SESSION_ENV value."""

    async def call(self, tool: str, **arguments: Any) -> Answer:
        started = time.perf_counter()
        result: CallToolResult = await self.client.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)
        seconds = time.perf_counter() - started
        text = "".join(block.text for block in result.content if isinstance(block, TextContent))
        if result.is_error:
            raise RuntimeError(f"{tool}({arguments}) failed: {text[:500]}")
        size = len(result.model_dump_json(by_alias=True, exclude_none=True).encode())
        return Answer(text, result.structured_content, seconds, len(text.encode()), size)

    def server_process(self) -> psutil.Process:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.environ().get(SESSION_ENV) == self.tag:
                    return child
        raise RuntimeError(f"no server process for {self.tag} among this process's children")


# ---------------------------------------------------------------------------------------------
# The servers and how each scenario maps onto their tools


class Peer(ABC):
    key: str
    label: str
    mapping: ClassVar[dict[str, str]]

    def __init__(self) -> None:
        self.command: list[str] = []
        self.env: dict[str, str] = {}
        self.version = ""
        self.skipped: str | None = None
        """Why this server could not be run at all."""
        self.resolved: list[str] = []
        """``pip freeze`` of a Python peer's venv."""

    @abstractmethod
    def prepare(self) -> None:
        """Install (once) and set ``command``, ``env`` and ``version``."""

    @abstractmethod
    async def start(self, s: Session, command: str) -> tuple[str, Answer]:
        """Start ``command`` in the background: its reference for the other tools."""

    @abstractmethod
    async def finished(self, s: Session, ref: str) -> bool: ...

    @abstractmethod
    async def tail(self, s: Session, ref: str) -> Answer:
        """The last 100 lines of output (and the state, where the same call gives it)."""

    @abstractmethod
    async def read_default(self, s: Session, ref: str) -> Answer:
        """The output-reading call with its defaults."""

    @abstractmethod
    async def running(self, s: Session) -> tuple[int, Answer]:
        """The list call, and how many running tasks it shows."""

    @abstractmethod
    async def end(self, s: Session, ref: str) -> Answer: ...


def _json_text(answer: Answer) -> Any:
    return answer.structured if answer.structured is not None else json.loads(answer.text)


class Ours(Peer):
    key, label = "ours", "mcp-backgroundr"
    mapping: ClassVar[dict[str, str]] = {
        "start": "run_background_task(command)",
        "state": "get_task_status(task_id, lines=0)",
        "tail 100": "get_task_status(task_id, lines=100)",
        "default read": "get_task_status(task_id) (50 lines)",
        "list": "list_tasks(limit=1000) (default limit 50, with `total`; counts state=running)",
        "end": "end_background_task(task_id) (SIGTERM to every process of the task, SIGKILL after 5 s)",
    }

    def prepare(self) -> None:
        import mcp_backgroundr

        self.command = server_command()
        self.version = mcp_backgroundr.__version__

    async def start(self, s: Session, command: str) -> tuple[str, Answer]:
        answer = await s.call("run_background_task", command=command)
        return str(answer.structured["task_id"]), answer

    async def finished(self, s: Session, ref: str) -> bool:
        answer = await s.call("get_task_status", task_id=ref, lines=0)
        return bool(answer.structured["state"] != "running")

    async def tail(self, s: Session, ref: str) -> Answer:
        return await s.call("get_task_status", task_id=ref, lines=100)

    async def read_default(self, s: Session, ref: str) -> Answer:
        return await s.call("get_task_status", task_id=ref)

    async def running(self, s: Session) -> tuple[int, Answer]:
        answer = await s.call("list_tasks", limit=1000)
        return sum(task["state"] == "running" for task in answer.structured["tasks"]), answer

    async def end(self, s: Session, ref: str) -> Answer:
        return await s.call("end_background_task", task_id=ref)


class DesktopCommander(Peer):
    key, label = "dc", "desktop-commander"
    mapping: ClassVar[dict[str, str]] = {
        "start": "start_process(command, timeout_ms=1) (runs `bash -l -c`; pid parsed from the text)",
        "state": "read_process_output(pid, offset=-1, length=1, timeout_ms=1): done once it says 'Process completed'",
        "tail 100": "read_process_output(pid, offset=-100, length=100)",
        "default read": "read_process_output(pid) (new lines, up to fileReadLineLimit=1000)",
        "list": "list_sessions() (counts `PID:` lines; finished sessions drop out)",
        "end": "force_terminate(pid) (SIGINT to the shell, SIGKILL to it 1 s later; answers at once)",
    }

    def prepare(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found")
        package = install_npm(DC_PACKAGE, DC_VERSION)
        self.command = [node, str(package / "dist" / "index.js")]
        self.version = json.loads((package / "package.json").read_text())["version"]
        self.env = {"DESKTOP_COMMANDER_DISABLE_TELEMETRY": "1"}

    async def start(self, s: Session, command: str) -> tuple[str, Answer]:
        answer = await s.call("start_process", command=command, timeout_ms=1)
        found = re.search(r"PID (\d+)", answer.text)
        if found is None:
            raise RuntimeError(f"start_process answered without a PID: {answer.text[:300]}")
        return found.group(1), answer

    async def finished(self, s: Session, ref: str) -> bool:
        answer = await s.call("read_process_output", pid=int(ref), offset=-1, length=1, timeout_ms=1)
        return "Process completed" in answer.text

    async def tail(self, s: Session, ref: str) -> Answer:
        return await s.call("read_process_output", pid=int(ref), offset=-100, length=100)

    async def read_default(self, s: Session, ref: str) -> Answer:
        return await s.call("read_process_output", pid=int(ref))

    async def running(self, s: Session) -> tuple[int, Answer]:
        answer = await s.call("list_sessions")
        return len(re.findall(r"^PID: \d+", answer.text, re.MULTILINE)), answer

    async def end(self, s: Session, ref: str) -> Answer:
        return await s.call("force_terminate", pid=int(ref))


class BackgroundJob(Peer):
    key, label = "bgjob", "mcp-background-job"
    mapping: ClassVar[dict[str, str]] = {
        "start": "execute_command(command) (no shell: shlex.split, then exec)",
        "state": "get_job_status(job_id) (state only, no output)",
        "tail 100": "tail_job_output(job_id, lines=100) (output only, no state)",
        "default read": "get_job_output(job_id) (all the lines it kept)",
        "list": "list_jobs() (counts status=running)",
        "end": "kill_job(job_id) (SIGTERM to the top process, SIGKILL to it after 5 s)",
    }

    def prepare(self) -> None:
        python = find_python((3, 12))
        if python is None:
            raise RuntimeError(f"needs Python >= 3.12 and none was found (set {PYTHON312_ENV})")
        bindir = install_pip(BGJOB_PACKAGE, BGJOB_VERSION, python)
        self.command = [str(bindir / "mcp-background-job")]
        self.resolved = pip_freeze(bindir)
        self.version = BGJOB_VERSION
        self.env = {"MCP_BG_MAX_JOBS": str(TASKS)}

    async def start(self, s: Session, command: str) -> tuple[str, Answer]:
        answer = await s.call("execute_command", command=command)
        return str(answer.structured["job_id"]), answer

    async def finished(self, s: Session, ref: str) -> bool:
        answer = await s.call("get_job_status", job_id=ref)
        return bool(answer.structured["status"] != "running")

    async def tail(self, s: Session, ref: str) -> Answer:
        return await s.call("tail_job_output", job_id=ref, lines=100)

    async def read_default(self, s: Session, ref: str) -> Answer:
        return await s.call("get_job_output", job_id=ref)

    async def running(self, s: Session) -> tuple[int, Answer]:
        answer = await s.call("list_jobs")
        return sum(job["status"] == "running" for job in answer.structured["jobs"]), answer

    async def end(self, s: Session, ref: str) -> Answer:
        return await s.call("kill_job", job_id=ref)


class Backburner(Peer):
    key, label = "bb", "backburner"
    mapping: ClassVar[dict[str, str]] = {
        "start": "start_task(command)",
        "state": "task_status(task_id)",
        "tail 100": "task_result(task_id, tail_lines=100)",
        "default read": "task_result(task_id) (tail_lines=100)",
        "list": "list_tasks(limit=1000) (default limit 20; counts status=working)",
        "end": "cancel_task(task_id) (SIGTERM to the task's process group)",
    }

    def prepare(self) -> None:
        python = find_python((3, 10))
        assert python is not None  # this Python is >= 3.11
        bindir = install_pip(BB_PACKAGE, BB_VERSION, python)
        self.command = [str(bindir / "backburner")]
        self.resolved = pip_freeze(bindir)
        self.version = BB_VERSION

    async def start(self, s: Session, command: str) -> tuple[str, Answer]:
        answer = await s.call("start_task", command=command)
        return str(_json_text(answer)["task_id"]), answer

    async def finished(self, s: Session, ref: str) -> bool:
        answer = await s.call("task_status", task_id=ref)
        return bool(_json_text(answer)["status"] != "working")

    async def tail(self, s: Session, ref: str) -> Answer:
        return await s.call("task_result", task_id=ref, tail_lines=100)

    async def read_default(self, s: Session, ref: str) -> Answer:
        return await s.call("task_result", task_id=ref)

    async def running(self, s: Session) -> tuple[int, Answer]:
        answer = await s.call("list_tasks", limit=1000)
        return sum(task["status"] == "working" for task in answer.structured["result"]), answer

    async def end(self, s: Session, ref: str) -> Answer:
        return await s.call("cancel_task", task_id=ref)


# ---------------------------------------------------------------------------------------------
# Running the scenarios


@dataclass
class Results:
    """Everything measured for one server; lists hold one value per repetition."""

    startup: list[float] = field(default_factory=list)
    tools_bytes: int = 0
    tool_count: int = 0
    start: list[float] = field(default_factory=list)
    status: dict[str, list[float]] = field(default_factory=lambda: {"small": [], "big": []})
    status_bytes: dict[str, int] = field(default_factory=dict)
    default_read_bytes: int = 0
    write: list[float] = field(default_factory=list)
    write_shell: list[float] = field(default_factory=list)
    rss_idle: list[int] = field(default_factory=list)
    rss_peak: list[int] = field(default_factory=list)
    write_unfinished: str = ""
    """Why there is no time to completion: the writer was ended at the limit."""
    many_start: float = 0.0
    many_listed: int = 0
    many_list: list[float] = field(default_factory=list)
    many_list_bytes: int = 0
    tree_end: list[float] = field(default_factory=list)
    tree: list[tuple[int, int]] = field(default_factory=list)
    """(processes before the end call, survivors after END_SETTLE)."""
    ignorer_end: list[float] = field(default_factory=list)
    ignorer: list[tuple[int, int]] = field(default_factory=list)
    disconnect_close: list[float] = field(default_factory=list)
    orphans: list[tuple[int, int]] = field(default_factory=list)
    killed: dict[str, list[str]] = field(default_factory=dict)
    """Processes the harness had to kill after a scenario, by scenario."""
    errors: dict[str, str] = field(default_factory=dict)
    """Scenarios that failed, with the error."""


class Bench:
    def __init__(self, peers: list[Peer], quick: bool) -> None:
        self.peers = peers
        self.quick = quick
        self.run_id = uuid.uuid4().hex[:8]
        self.sessions = 0
        self.results = {peer.key: Results() for peer in peers}

    @contextlib.asynccontextmanager
    async def connect(self, peer: Peer) -> AsyncIterator[Session]:
        """Launch ``peer`` with a private HOME (and state directory) in a temporary directory."""
        self.sessions += 1
        tag = f"{self.run_id}:{self.sessions}"
        with tempfile.TemporaryDirectory(prefix=f"bench-peers-{peer.key}-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            env = {"PATH": os.environ["PATH"], "HOME": str(home), HOME_ENV: str(home / "backgroundr"), SESSION_ENV: tag}
            params = StdioServerParameters(
                command=peer.command[0], args=peer.command[1:], env={**env, **peer.env}, cwd=tmp
            )
            with (Path(tmp) / "server.stderr").open("w") as errlog:
                async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT) as client:
                    yield Session(client, tag)

    def sweep(self, peer: Peer, scenario: str) -> None:
        """Kill every process this run left (the client of ``peer`` is closed or idle) and record it."""
        left = of_run(self.run_id)
        if left:
            self.results[peer.key].killed.setdefault(scenario, []).extend(kill_all(left))

    def sweep_marker(self, peer: Peer, scenario: str, marker: str) -> None:
        left = marked(marker)
        if left:
            self.results[peer.key].killed.setdefault(scenario, []).extend(kill_all(left))

    # -- launch to tools/list ------------------------------------------------------------------

    async def startup(self) -> None:
        launches = 2 if self.quick else 5
        for launch in range(launches):
            order = self.peers[launch % len(self.peers) :] + self.peers[: launch % len(self.peers)]
            for peer in order:
                r = self.results[peer.key]
                started = time.perf_counter()
                try:
                    async with self.connect(peer) as s:
                        tools = await s.client.list_tools(cache_mode="bypass")
                        r.startup.append(time.perf_counter() - started)
                        r.tool_count = len(tools.tools)
                        r.tools_bytes = len(tools.model_dump_json(by_alias=True).encode())
                except Exception as error:
                    r.errors["startup"] = f"{type(error).__name__}: {error}"[:300]
                self.sweep(peer, "startup")

    # -- one connection: start, write, status, many, tree, ignorer -----------------------------

    async def start_latency(self, peer: Peer, s: Session, r: Results) -> None:
        marker, refs = new_marker(), []
        for _ in range(4 if self.quick else 10):
            await anyio.sleep(GAP)
            ref, answer = await peer.start(s, marked_command(marker, SLEEP))
            refs.append(ref)
            r.start.append(answer.seconds)
        for ref in refs:
            await peer.end(s, ref)
        await wait_count(marker, lambda n: n == 0, END_SETTLE)
        self.sweep_marker(peer, "start latency", marker)

    async def wait_finished(self, peer: Peer, s: Session, ref: str, marker: str, limit: float = RUN_TIMEOUT) -> bool:
        """Wait on a pidfd of the task's top process, then poll the server's state call, for at
        most ``limit`` seconds: whether the server reported the task finished."""
        with anyio.move_on_after(limit):
            processes = marked(marker)
            pids = {p.pid for p in processes}
            for top in [p for p in processes if p.ppid() not in pids]:
                await wait_pidfd(top.pid, limit)
            while not await peer.finished(s, ref):
                await anyio.sleep(POLL)
            return True
        return False

    async def plain_shell(self, command: str, directory: Path) -> float:
        out = directory / "plain-shell.out"
        started = time.perf_counter()
        with anyio.fail_after(RUN_TIMEOUT):
            async with await anyio.open_process(["sh", "-c", f"{{ {command}; }} > {shlex.quote(str(out))}"]) as process:
                code = await process.wait()
        elapsed = time.perf_counter() - started
        size = out.stat().st_size
        out.unlink()
        if code != 0 or size != BIG:
            raise RuntimeError(f"plain shell run exited {code} and wrote {size} bytes")
        return elapsed

    async def write_and_status(self, peer: Peer, s: Session, r: Results) -> None:
        server = s.server_process()
        # The small log, and a warm-up of the state and tail calls.
        small_marker = new_marker()
        small, _ = await peer.start(s, marked_command(small_marker, SMALL_WRITER))
        if not await self.wait_finished(peer, s, small, small_marker):
            raise RuntimeError(f"a {SMALL}-byte writer did not finish in {RUN_TIMEOUT:g} s")
        await peer.tail(s, small)
        big, limit = "", WRITE_LIMIT / 2 if self.quick else WRITE_LIMIT
        with tempfile.TemporaryDirectory(prefix="bench-peers-shell-") as tmp:
            for _ in range(1 if self.quick else 3):
                marker = new_marker()
                command = marked_command(marker, WRITER)
                r.write_shell.append(await self.plain_shell(command, Path(tmp)))
                await anyio.sleep(GAP)
                with Sampler(server) as idle:
                    await anyio.sleep(0.3)
                with Sampler(server) as busy:
                    started = time.perf_counter()
                    big, _ = await peer.start(s, command)
                    finished = await self.wait_finished(peer, s, big, marker, limit)
                    elapsed = time.perf_counter() - started
                    written = bytes_written(marker, "head")
                r.rss_idle.append(max(idle.samples))
                r.rss_peak.append(max(busy.samples))
                if not finished:
                    r.write_unfinished = (
                        f"not finished after {limit:g} s: the writer had written "
                        f"{'?' if written is None else _bytes(written)} of {_bytes(BIG)}; ended"
                    )
                    await peer.end(s, big)
                    await wait_count(marker, lambda n: n == 0, END_SETTLE)
                    self.sweep_marker(peer, "200 MB write", marker)
                    break
                r.write.append(elapsed)
                self.sweep_marker(peer, "200 MB write", marker)
        await anyio.sleep(GAP)
        r.default_read_bytes = (await peer.read_default(s, big)).text_bytes
        for ref in (small, big):
            await anyio.sleep(GAP)
            await peer.tail(s, ref)  # warm-up
        for _ in range(4 if self.quick else 10):
            for label, ref in (("small", small), ("big", big)):
                await anyio.sleep(GAP)
                answer = await peer.tail(s, ref)
                r.status[label].append(answer.seconds)
                r.status_bytes[label] = answer.text_bytes

    async def many(self, peer: Peer, s: Session, r: Results) -> None:
        marker, refs = new_marker(), []
        await anyio.sleep(GAP)
        started = time.perf_counter()
        for _ in range(TASKS):
            refs.append((await peer.start(s, marked_command(marker, SLEEP)))[0])
        r.many_start = time.perf_counter() - started
        await wait_count(marker, lambda n: n >= TASKS, APPEAR_TIMEOUT)
        for _ in range(3 if self.quick else 5):
            await anyio.sleep(GAP)
            r.many_listed, answer = await peer.running(s)
            r.many_list.append(answer.seconds)
            r.many_list_bytes = answer.text_bytes
        for ref in refs:
            await peer.end(s, ref)
        await wait_count(marker, lambda n: n == 0, END_SETTLE)
        self.sweep_marker(peer, "100 tasks", marker)

    async def end_one(self, peer: Peer, s: Session, script: str, scenario: str) -> tuple[float, int, int]:
        """Start ``script``, wait for its sleeps, end it: (end call s, processes, survivors)."""
        marker = new_marker()
        sleeps = script.count("sleep")
        ref, _ = await peer.start(s, marked_command(marker, script))
        with anyio.fail_after(APPEAR_TIMEOUT):
            while sum(p.name() == "sleep" for p in marked(marker)) < sleeps:
                await anyio.sleep(0.02)
        await anyio.sleep(0.2)  # let the shell set its traps
        before = len(marked(marker))
        answer = await peer.end(s, ref)
        survivors = await wait_count(marker, lambda n: n == 0, END_SETTLE)
        self.sweep_marker(peer, scenario, marker)
        return answer.seconds, before, survivors

    async def one_connection(self, peer: Peer) -> None:
        r = self.results[peer.key]
        steps: list[tuple[str, Callable[[Session], Any]]] = [
            ("start latency", lambda s: self.start_latency(peer, s, r)),
            ("200 MB write + status", lambda s: self.write_and_status(peer, s, r)),
            ("100 tasks", lambda s: self.many(peer, s, r)),
            ("tree", lambda s: self.ends(peer, s, TREE, "tree", r.tree_end, r.tree)),
            ("ignorer", lambda s: self.ends(peer, s, IGNORER, "ignores SIGTERM", r.ignorer_end, r.ignorer)),
        ]
        try:
            async with self.connect(peer) as s:
                for name, step in steps:
                    print(f"  {peer.label}: {name} ...", file=sys.stderr, flush=True)
                    try:
                        with anyio.fail_after(SCENARIO_TIMEOUT):
                            await step(s)
                    except Exception as error:  # a peer's failure is a result, not the end of the run
                        r.errors[name] = f"{type(error).__name__}: {error}"[:300]
                        print(f"    failed: {r.errors[name]}", file=sys.stderr, flush=True)
        except Exception as error:
            r.errors["connection"] = f"{type(error).__name__}: {error}"[:300]
        self.sweep(peer, "one connection")

    async def ends(
        self, peer: Peer, s: Session, script: str, scenario: str, ends: list[float], counts: list[tuple[int, int]]
    ) -> None:
        for _ in range(1 if self.quick else 2):
            seconds, before, survivors = await self.end_one(peer, s, script, scenario)
            ends.append(seconds)
            counts.append((before, survivors))

    # -- disconnect ----------------------------------------------------------------------------

    async def disconnect(self, peer: Peer) -> None:
        r = self.results[peer.key]
        for _ in range(1 if self.quick else 2):
            marker = new_marker()
            try:
                with anyio.fail_after(SCENARIO_TIMEOUT):
                    async with self.connect(peer) as s:
                        await peer.start(s, marked_command(marker, SLEEP))
                        await wait_count(marker, lambda n: n >= 1, APPEAR_TIMEOUT)
                        before = len(marked(marker))
                        closing = time.perf_counter()
                    r.disconnect_close.append(time.perf_counter() - closing)
                    orphans = await wait_count(marker, lambda n: n == 0, ORPHAN_SETTLE)
                    r.orphans.append((before, orphans))
            except Exception as error:
                r.errors["disconnect"] = f"{type(error).__name__}: {error}"[:300]
            self.sweep_marker(peer, "disconnect", marker)
            self.sweep(peer, "disconnect")

    async def run(self) -> None:
        print("launch to tools/list ...", file=sys.stderr, flush=True)
        with anyio.fail_after(SCENARIO_TIMEOUT):
            await self.startup()
        for peer in self.peers:
            await self.one_connection(peer)
            print(f"  {peer.label}: disconnect ...", file=sys.stderr, flush=True)
            await self.disconnect(peer)


# ---------------------------------------------------------------------------------------------
# Report


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _bytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e4 else f"{size:.0f} B"


def _ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 100 else f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def _counts(runs: list[tuple[int, int]]) -> str:
    if not runs:
        return "n/a"
    return (
        f"{median([float(s) for _, s in runs]):g} of {median([float(b) for b, _ in runs]):g} ("
        + ", ".join(f"{s}/{b}" for b, s in runs)
        + ")"
    )


_NO_DATA = (ValueError, ZeroDivisionError, KeyError, IndexError, TypeError, statistics.StatisticsError)


def rows(peers: list[Peer], results: dict[str, Results]) -> list[tuple[str, str, list[str]]]:
    """(scenario, figure, one cell per server). The first server is ours: the reference."""
    ours = results[peers[0].key]

    def versus(get: Callable[[Results], float], show: Callable[[float], str], failed: str = "") -> list[str]:
        cells = []
        for peer in peers:
            r = results[peer.key]
            if peer.skipped:
                cells.append("n/a")
                continue
            if failed in r.errors:
                cells.append(f"n/a ({r.errors[failed]})"[:120])
                continue
            try:
                value, base = get(r), get(ours)
            except _NO_DATA:
                cells.append("n/a (no data)")
                continue
            cells.append(show(value) if peer is peers[0] else f"{_ratio(value / base)} ({show(value)})")
        return cells

    def cell_each(show: Callable[[Results], str], failed: str = "") -> list[str]:
        cells = []
        for peer in peers:
            r = results[peer.key]
            if peer.skipped:
                cells.append("n/a")
            elif failed in r.errors:
                cells.append(f"n/a ({r.errors[failed]})"[:120])
            else:
                try:
                    cells.append(show(r))
                except _NO_DATA:
                    cells.append("n/a (no data)")
        return cells

    def shell_ratio(r: Results) -> str:
        if r.write_unfinished:
            return f"**{r.write_unfinished}** (shell {median(r.write_shell):.2f} s)"
        ratios = [w / sh for w, sh in zip(r.write, r.write_shell, strict=False)]
        return f"{_ratio(median(ratios))} ({median(r.write):.2f} s; shell {median(r.write_shell):.2f} s)"

    def rss(r: Results) -> str:
        peak, base = max(r.rss_peak), max(ours.rss_peak)
        growth = max(p - i for p, i in zip(r.rss_peak, r.rss_idle, strict=False))
        ratio = "" if r is ours else f"{_ratio(peak / base)} "
        return f"{ratio}({_bytes(peak)}, +{_bytes(growth)} over idle)"

    def tools(r: Results) -> str:
        ratio = "" if r is ours else f"{_ratio(r.tools_bytes / ours.tools_bytes)} "
        return f"{ratio}({_bytes(r.tools_bytes)}, {r.tool_count} tools)"

    def closing(r: Results) -> str:
        took = median(r.disconnect_close)
        how = "the SDK killed its process group" if took >= CLIENT_GRACE else "the server exited by itself"
        return f"{took:.2f} s ({how})"

    def killed(r: Results) -> str:
        where = f" ({', '.join(r.killed)})" if r.killed else ""
        return f"{sum(len(v) for v in r.killed.values())}{where}"

    def big_over_small(r: Results) -> str:
        big, small = median(r.status["big"]), median(r.status["small"])
        ratio = "" if r is ours else f"{_ratio(big / median(ours.status['big']))} ours; "
        partial = " (on the output it kept of the writer it could not finish)" if r.write_unfinished else ""
        return f"{ratio}{_ratio(big / small)} its small-log call ({_ms(big)} vs {_ms(small)}){partial}"

    write, many = "200 MB write + status", "100 tasks"
    tree, ignorer = "end `sh -c 'sleep 300 & sleep 300'`", "end a task ignoring SIGTERM/SIGINT"
    gone = "client disconnects, 1 task running"
    table = [
        ("startup", f"launch -> first tools/list answer, median of {len(ours.startup)}"),
        ("startup", "tools/list answer size (tool count)"),
        ("start a task", f"start call, median of {len(ours.start)}"),
        ("status, 20 kB log", "tail-100 call, median"),
        ("status, 200 MB log", "tail-100 call, median"),
        ("status, 200 MB log", "tail-100 answer text"),
        ("status, 200 MB log", "default output read, answer text"),
        ("200 MB write", f"start -> reported finished vs plain shell, median of {len(ours.write)}"),
        ("200 MB write", "server peak RSS during the write"),
        (many, "starting 100, one call after another"),
        (many, "list call, median"),
        (many, "running tasks the list shows (answer text)"),
        (tree, f"survivors {END_SETTLE:g} s after the end call, of processes (each run)"),
        (tree, "end call, median"),
        (ignorer, f"survivors {END_SETTLE:g} s after the end call, of processes (each run)"),
        (ignorer, "end call, median"),
        (gone, f"orphans {ORPHAN_SETTLE:g} s after the client closed, of processes (each run)"),
        (gone, "client close took, median"),
        ("harness", "leftover processes it had to kill"),
    ]
    cells = [
        versus(lambda r: median(r.startup), _ms, "startup"),
        cell_each(tools, "startup"),
        versus(lambda r: median(r.start), _ms, "start latency"),
        versus(lambda r: median(r.status["small"]), _ms, write),
        cell_each(big_over_small, write),
        versus(lambda r: r.status_bytes["big"], _bytes, write),
        versus(lambda r: r.default_read_bytes, _bytes, write),
        cell_each(shell_ratio, write),
        cell_each(rss, write),
        versus(lambda r: r.many_start, lambda v: f"{v:.2f} s", many),
        versus(lambda r: median(r.many_list), _ms, many),
        cell_each(lambda r: f"{r.many_listed} ({_bytes(r.many_list_bytes)})", many),
        cell_each(lambda r: _counts(r.tree), "tree"),
        versus(lambda r: median(r.tree_end), _ms, "tree"),
        cell_each(lambda r: _counts(r.ignorer), "ignorer"),
        versus(lambda r: median(r.ignorer_end), _ms, "ignorer"),
        cell_each(lambda r: _counts(r.orphans), "disconnect"),
        cell_each(closing, "disconnect"),
        cell_each(killed),
    ]
    return [(scenario, figure, row) for (scenario, figure), row in zip(table, cells, strict=True)]


def print_table(peers: list[Peer], results: dict[str, Results]) -> None:
    print("| scenario | figure | " + " | ".join(f"{p.label} {p.version}".strip() for p in peers) + " |")
    print("| --- | --- |" + " --- |" * len(peers))
    for scenario, figure, cells in rows(peers, results):
        print(f"| {scenario} | {figure} | " + " | ".join(cells) + " |")


def machine() -> str:
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )


@contextlib.contextmanager
def final_sweep(run_id: Callable[[], str | None]) -> Iterator[list[str]]:
    """On the way out, however it goes, kill whatever still carries this run's marker."""
    killed: list[str] = []
    try:
        yield killed
    finally:
        current = run_id()
        if current is not None:
            killed.extend(kill_all(of_run(current)))
            if killed:
                print("killed processes left by the run: " + "; ".join(killed), file=sys.stderr)


PEERS: dict[str, type[Peer]] = {cls.key: cls for cls in (Ours, DesktopCommander, BackgroundJob, Backburner)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke test")
    parser.add_argument("--only", nargs="+", choices=list(PEERS)[1:], default=list(PEERS)[1:], metavar="PEER")
    args = parser.parse_args()

    peers = [PEERS[key]() for key in ["ours", *args.only]]
    print(f"peers in {peers_dir()} (set {PEERS_DIR_ENV} to move them)", file=sys.stderr)
    for peer in peers:
        try:
            peer.prepare()
        except (RuntimeError, OSError, subprocess.SubprocessError) as failure:
            peer.skipped = str(failure)[:300]
            print(f"skipping {peer.label}: {peer.skipped}", file=sys.stderr)
    runnable = [peer for peer in peers if not peer.skipped]
    bench = Bench(runnable, args.quick)

    with final_sweep(lambda: bench.run_id) as killed:
        anyio.run(bench.run)
    results = {**bench.results, **{p.key: Results() for p in peers if p.skipped}}

    print(f"{machine()}{' (--quick)' if args.quick else ''}\n")
    print_table(peers, results)
    print()
    for peer in peers:
        if peer.skipped:
            print(f"- {peer.label}: not run: {peer.skipped}")
        for scenario, message in results[peer.key].errors.items():
            print(f"- {peer.label}, {scenario}: {message}")
    if killed:
        print(f"- processes the final sweep killed: {'; '.join(killed)}")

    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("peers-%Y%m%d-%H%M%S.json")
    record = {
        "machine": machine(),
        "quick": args.quick,
        "servers": {
            p.key: {
                "label": p.label,
                "version": p.version,
                "command": p.command,
                "skipped": p.skipped,
                "mapping": p.mapping,
                "pip_freeze": p.resolved,
            }
            for p in peers
        },
        "results": {key: dataclasses.asdict(r) for key, r in results.items()},
        "table": [{"scenario": s, "figure": f, "cells": c} for s, f, c in rows(peers, results)],
        "final_sweep_killed": killed,
    }
    out.write_text(json.dumps(record, indent=2))
    chart = out.with_suffix(".svg")
    chart.write_text(render_chart(record) + "\n")
    print(f"\n(also written to {out}, and the chart to {chart})", file=sys.stderr)


if __name__ == "__main__":
    main()
