"""End-to-end: the event loop reads no process table and opens no log.

The server runs with an audit hook (``sys.addaudithook``, loaded through ``sitecustomize``) that
records every file the event loop's thread opens or lists under ``/proc`` or the logs directory:
reading a process's files can wait on that process (its memory map lock) and their number grows
with the machine's processes, and making or opening a file can wait on the disk, so they belong
to worker threads (the server's own /proc files and the boot time are constant, and allowed).
The calls below go through every path that asks about another server's task or a process by its
pid (listing, reading, ending and removing another live server's task and a dead server's,
closing a kept task's input) and every way of reading a log (lines, a cursor, grep, pattern waits).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from mcp_backgroundr.platform.scans import SOCKET_TABLE_SECONDS

from .harness import call, connect, finished, kill_server_of, until

pytestmark = pytest.mark.anyio

AUDIT_ENV = "LOOP_IO_AUDIT_FILE"
SITECUSTOMIZE = """
import atexit, os, sys, threading, traceback

_out, _main, _seen = os.environ["LOOP_IO_AUDIT_FILE"], threading.main_thread(), []
_own = ("/proc/self/", f"/proc/{os.getpid()}/")
_watched = ("/proc/", os.path.join(os.environ["MCP_BACKGROUNDR_HOME"], "logs"))
_fd_lists = {}  # how often each pid's descriptors were listed, by any thread


def _hook(event, args):
    if event not in ("open", "os.listdir", "os.scandir"):
        return
    path = args[0] if args else None
    if not isinstance(path, (str, bytes, os.PathLike)) or not os.fsdecode(path).startswith(_watched):
        return
    path = os.fsdecode(path)
    parts = path.split("/")
    if event == "os.listdir" and len(parts) == 4 and parts[3] == "fd" and parts[2].isdigit():
        _fd_lists[int(parts[2])] = _fd_lists.get(int(parts[2]), 0) + 1
    if threading.current_thread() is not _main:
        return
    if path == "/proc/stat" or path.startswith(_own):
        return  # the boot time, the server's own files: constant, and waiting on no other process
    frames = [f"{f.name}:{f.lineno}" for f in traceback.extract_stack()[:-1] if "mcp_backgroundr" in f.filename]
    if frames and frames[0].startswith("<module>:"):
        return  # importing, before the event loop runs
    _seen.append(f"{path} from {' < '.join(reversed(frames[-5:]))}")


def _write():
    with open(_out, "w") as out:
        out.write("\\n".join(_seen))
    with open(_out + ".fd", "w") as out:
        out.write(" ".join(f"{pid}:{count}" for pid, count in sorted(_fd_lists.items())))


sys.addaudithook(_hook)
atexit.register(_write)
"""


@pytest.fixture
def audited(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of a server whose event loop's /proc reads are written to the path answered."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    report = tmp_path / "loop-proc-reads.txt"
    return {"PYTHONPATH": str(site), AUDIT_ENV: str(report)}, report


async def test_no_call_reads_the_process_table_on_the_event_loop(
    server_command: str, audited: tuple[dict[str, str], Path]
) -> None:
    env, report = audited
    async with connect(server_command) as other, connect(server_command, env=env) as client:
        # Another live server's tasks: listed, read, ended and removed from here.
        foreign = await call(other, "run_background_task", command="sleep 300")
        finished_foreign = await call(other, "run_background_task", command="true")
        await finished(other, finished_foreign["task_id"])
        await call(client, "list_tasks", all=True)
        await call(client, "get_task_status", task_id=foreign["task_id"])
        await call(client, "end_background_task", task_id=foreign["task_id"], grace_seconds=1)
        await call(client, "wait_for_task", task_id=foreign["task_id"], timeout_seconds=5)
        # A dead server's tasks: listed (and settled), ended, removed.
        orphan = await call(other, "run_background_task", command="sleep 300")
        dead = await call(other, "run_background_task", command="true")
        await finished(other, dead["task_id"])
        await kill_server_of(orphan["pid"])
        await call(client, "list_tasks", all=True)
        await call(client, "end_background_task", task_id=orphan["task_id"], grace_seconds=1)
        await call(client, "remove_task", task_id=dead["task_id"])
        await call(client, "remove_task", task_id=orphan["task_id"])
        # Its own log, read every way: lines, a cursor, grep, a pattern wait from the start.
        talker = await call(client, "run_background_task", command="seq 1 5000; sleep 300")
        await call(client, "wait_for_task", task_id=talker["task_id"], output_pattern="^5000$", timeout_seconds=10)
        await call(client, "get_task_status", task_id=talker["task_id"], lines=5)
        await call(client, "get_task_status", task_id=talker["task_id"], since=0, grep="^4")
        await call(client, "wait_for_task", task_id=talker["task_id"], since=0, output_pattern="^4999$")
        await call(client, "end_background_task", task_id=talker["task_id"], grace_seconds=1)
        # Its own: a kept task's input closed, its status read, ended, removed.
        kept = await call(client, "run_background_task", command="cat", stdin=True, keep_running=True)
        await call(client, "send_task_input", task_id=kept["task_id"], text="a line\n", close=True)
        await finished(client, kept["task_id"])
        await call(client, "remove_task", task_id=kept["task_id"])
    with anyio.fail_after(10):  # written by the server's exit
        await until(lambda: anyio.Path(report).exists())
    reads = report.read_text().splitlines()
    assert not reads, f"{len(reads)} file(s) opened on the event loop:\n" + "\n".join(reads)
    assert os.environ.get(AUDIT_ENV) is None  # only the audited server carries the hook


async def test_tasks_that_exit_at_once_all_start_and_complete(server_command: str) -> None:
    # The child's start time is read off the event loop: read after an await between the spawn
    # and its exit handle, the orphan reaper could take a child that had exited already, and the
    # start failed with the SDK's "Error executing tool" (7 of 60 here, before the reordering).
    async with connect(server_command) as client:
        started = [await call(client, "run_background_task", command="true") for _ in range(40)]
        for task in started:
            status = await finished(client, task["task_id"])
            assert (status["state"], status["exit_code"]) == ("completed", 0)


async def test_the_socket_table_is_read_again_only_when_the_sockets_changed(
    server_command: str, audited: tuple[dict[str, str], Path], platform_backend: str
) -> None:
    # Finding which process holds each listening socket lists every process's descriptors (70 to
    # 90 ms with 1,000 idle processes here); while the kernel lists the same listening sockets,
    # the last answer stands. Each list below finds the table past its age and asks for a new one.
    if platform_backend != "linux":
        pytest.skip("the portable backend finds sockets by each marked process, not the machine's table")
    env, report = audited
    listener = (
        'exec python3 -c \'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); '
        "print(s.getsockname()[1], flush=True); time.sleep(300)'"
    )
    async with connect(server_command, env=env) as client:
        task = await call(client, "run_background_task", command=listener, wait_for_pattern="^[0-9]+$")
        port = int((await call(client, "get_task_status", task_id=task["task_id"], lines=1))["output"])
        for _ in range(4):
            listed = (await call(client, "list_tasks"))["tasks"]
            await anyio.sleep(SOCKET_TABLE_SECONDS + 0.2)
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
    assert listed[0]["listening"] == [f"127.0.0.1:{port}"]
    with anyio.fail_after(10):  # written by the server's exit
        await until(lambda: anyio.Path(f"{report}.fd").exists())
    counts = dict(entry.split(":") for entry in Path(f"{report}.fd").read_text().split())
    # This test's own process is listed once per read of the machine's table: once when the server's
    # first task started (read ahead, in the background, so that the first list finds a table), and
    # once more if the task's socket appeared after that read; the four spaced lists read it no more.
    reads = counts.get(str(os.getpid()))
    assert reads in {"1", "2"}, f"the table was read {reads} times"
