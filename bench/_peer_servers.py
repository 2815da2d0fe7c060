"""The other MCP servers of bench/peers.py: installing them, finding their processes, and
mapping each scenario onto their tools (one adapter class each)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import psutil
from _harness import server_command
from mcp import Client
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
