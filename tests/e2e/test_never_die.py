"""End-to-end: nothing that happens to one task can take the server down (issue 10, "never die").

Each test injects one fault through the real server and checks that the fault is recorded on
its task, that the server still answers, and that another task running beside it is untouched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from .harness import call, call_error, connect, finished, until

pytestmark = pytest.mark.anyio

REAL_TIME_SIGNALS = (34, 40, 50, 63, 64)


async def _still_serving(client: Client, bystander: str) -> None:
    """The server answers, and the task beside the fault still runs."""
    listing = await call(client, "list_tasks", all=True)
    assert listing["total"] >= 1
    assert (await call(client, "get_task_status", task_id=bystander))["state"] == "running"


@pytest.mark.parametrize("signum", REAL_TIME_SIGNALS)
async def test_a_task_killed_by_a_real_time_signal_is_recorded_and_the_server_lives_on(
    server_command: str, signum: int
) -> None:
    async with connect(server_command) as client:
        bystander = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
        task = await call(client, "run_background_task", command=f"kill -s {signum} $$")
        status = await finished(client, task["task_id"])
        await _still_serving(client, bystander)
    assert status["state"] == "failed"
    assert status["exit_code"] == 128 + signum
    assert status["signal"] == _expected_name(signum)


@pytest.mark.parametrize("restart", ["no", "always"])
async def test_a_supervised_task_killed_by_a_real_time_signal_is_recorded(server_command: str, restart: str) -> None:
    async with connect(server_command) as client:
        bystander = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
        limit = {"max_restarts": 1} if restart != "no" else {}
        task = await call(
            client, "run_background_task", command="kill -s 40 $$", keep_running=True, restart=restart, **limit
        )
        status = await finished(client, task["task_id"])
        await _still_serving(client, bystander)
    assert (status["state"], status["exit_code"], status["signal"]) == ("failed", 168, "SIGRTMIN+6")
    assert status["restarts"] == (1 if restart == "always" else 0)


@pytest.mark.parametrize("signum", [6, 9, 11, 15])
async def test_a_supervised_task_ended_by_any_signal_is_recorded_with_it(server_command: str, signum: int) -> None:
    """The runner ends the way its command did; SIGKILL (an OOM kill) takes no handler (a
    new-user trial: the runner's own traceback became the log and the task 'failed 1')."""
    async with connect(server_command) as client:
        bystander = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
        task = await call(client, "run_background_task", command=f"echo up; kill -s {signum} $$", keep_running=True)
        status = await finished(client, task["task_id"], lines=5)
        await _still_serving(client, bystander)
    names = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}
    assert (status["state"], status["exit_code"], status["signal"]) == ("failed", 128 + signum, names[signum])
    assert status["output"].strip() == "up", status["output"]


def _expected_name(signum: int) -> str:
    if signum == 34:
        return "SIGRTMIN"
    if signum == 64:
        return "SIGRTMAX"
    return f"SIGRTMIN+{signum - 34}"


@contextlib.contextmanager
def _tiny_file_system(where: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted on ``where`` (root only), unmounted on the way out."""
    where.mkdir(parents=True, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


async def test_a_full_disk_under_a_terminal_task_is_recorded_and_the_server_lives_on(
    server_command: str, home: Path
) -> None:
    with _tiny_file_system(home / "logs", "64k"):
        async with connect(server_command) as client:
            bystander = (await call(client, "run_background_task", command="sleep 300"))["task_id"]
            task = await call(
                client,
                "run_background_task",
                command="head -c 300000 /dev/zero | tr '\\0' x; echo; echo done",
                pty=True,
            )
            status = await finished(client, task["task_id"])
            await _still_serving(client, bystander)
            output = await call(client, "get_task_status", task_id=task["task_id"], since=0)
    assert status["state"] == "completed"
    assert "could not be written to its log" in status["end_reason"]
    assert "No space left on device" in status["end_reason"]
    assert output["output_bytes"] > 0


async def test_an_unreadable_record_of_another_servers_task_is_contained(
    server_command: str, home: Path, tmp_path: Path
) -> None:
    flag, errors = tmp_path / "go", tmp_path / "other.err"
    with errors.open("w") as errlog:
        async with connect(server_command) as owner, connect(server_command, errlog=errlog) as other:
            task = await call(owner, "run_background_task", command=f"while [ ! -e {flag} ]; do sleep 0.05; done")
            bystander = (await call(other, "run_background_task", command="sleep 300"))["task_id"]
            # The second server watches the first one's task from now on.
            assert (await call(other, "get_task_status", task_id=task["task_id"]))["state"] == "running"
            with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db, db:
                db.execute("UPDATE tasks SET state = 'paused-by-a-newer-version' WHERE task_id = ?", (task["task_id"],))
            flag.touch()
            with anyio.fail_after(10):
                while "watching another server's task failed" not in errors.read_text():
                    await anyio.sleep(0.02)
            await _still_serving(other, bystander)
            refused = await call_error(other, "get_task_status", task_id=task["task_id"])
            await _still_serving(owner, (await call(owner, "run_background_task", command="sleep 300"))["task_id"])
    assert "cannot be read" in refused
    assert "paused-by-a-newer-version" in refused


@pytest.mark.linux_backend("the start-up failure it provokes is running out of inotify instances")
def test_a_failure_to_start_is_one_line_naming_it(server_command: str) -> None:
    # A user namespace of its own with no inotify instance allowed: a real start-up failure that
    # leaves every other process on the machine (other servers, other tests) its own limits.
    isolated = ["unshare", "--user", "--map-root-user", "sh", "-c"]
    if shutil.which("unshare") is None or subprocess.run([*isolated, "true"], check=False).returncode:
        pytest.skip("needs unshare --user (util-linux) and user namespaces")
    no_inotify_left = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$0"'
    result = subprocess.run(
        [*isolated, no_inotify_left, server_command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mcp-backgroundr: cannot start: no inotify instance is left"), result.stderr
    assert "fs.inotify.max_user_instances" in result.stderr


def _cli(server_command: str, *arguments: str) -> str:
    result = subprocess.run([server_command, *arguments], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


@pytest.mark.parametrize("deleted", [("",), ("-wal", "-shm", "")], ids=["file", "with-wal-and-shm"])
async def test_a_registry_deleted_under_a_live_server_is_written_back(
    server_command: str, home: Path, deleted: tuple[str, ...]
) -> None:
    async with connect(server_command) as client:
        running = await call(client, "run_background_task", command="sleep 300", name="keeps-going")
        done = await call(client, "run_background_task", command="exit 3")
        await finished(client, done["task_id"])
        for suffix in deleted:
            (home / f"registry.sqlite3{suffix}").unlink()

        async def cli_sees_them() -> bool:
            return running["task_id"] in _cli(server_command, "ps") and done["task_id"] in _cli(
                server_command, "ps", "--all"
            )

        await until(cli_sees_them)
        assert "state: failed" in _cli(server_command, "status", done["task_id"])
        started_after = await call(client, "run_background_task", command="true")
        await finished(client, started_after["task_id"])
    async with connect(server_command) as client:
        listing = await call(client, "list_tasks", all=True)
    states = {t["task_id"]: t["state"] for t in listing["tasks"]}
    assert states == {running["task_id"]: "killed", done["task_id"]: "failed", started_after["task_id"]: "completed"}


@pytest.mark.parametrize("deleted", ["log", "logs directory"])
async def test_a_deleted_log_is_said_to_be_gone_by_every_read_and_wait(server_command: str, deleted: str) -> None:
    """A running task's log deleted (rm of the file, or of the whole logs directory): a pattern wait
    failed 'unexpectedly (a defect of this server)' with a 300-line traceback on stderr (inotify
    could not watch the file), and status said 'no output' (a new-user trial). Every read, grep and
    wait now says the log is gone and what that means; a pattern wait, which can never match, is
    refused in one line; the task runs on."""
    async with connect(server_command) as client:
        task = await call(
            client, "run_background_task", command="while :; do echo tick; sleep 0.1; done", wait_for_pattern="tick"
        )
        task_id, log = task["task_id"], Path(task["log_path"])
        cursor = task["wait"]["status"]["cursor"]
        waiting = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            waiting.set()

        during: dict[str, object] = {}

        async def wait() -> None:
            arguments = {"task_id": task_id, "output_pattern": "never", "timeout_seconds": 2}
            result = await client.call_tool("wait_for_task", arguments, progress_callback=on_progress)
            assert not result.is_error and result.structured_content is not None
            during.update(result.structured_content)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(wait)
                await waiting.wait()
                await anyio.to_thread.run_sync(
                    log.unlink if deleted == "log" else functools.partial(shutil.rmtree, log.parent)
                )
        answers = [
            during["status"],
            await call(client, "get_task_status", task_id=task_id),
            await call(client, "get_task_status", task_id=task_id, since=cursor),
            await call(client, "get_task_status", task_id=task_id, grep="tick"),
            (await call(client, "wait_for_task", task_id=task_id, timeout_seconds=0.2))["status"],
        ]
        refusal = await call_error(client, "wait_for_task", task_id=task_id, output_pattern="tick", timeout_seconds=5)
        after = await call(client, "get_task_status", task_id=task_id)
    for answer in answers:
        assert isinstance(answer, dict)
        assert answer["output"] == "", answer
        assert f"its log file {log} is gone (deleted outside this server)" in answer["truncation"], answer
    assert during["reason"] == "timeout"
    assert refusal.startswith(f"task {task_id}: its log file {log} is gone"), refusal
    assert "no output_pattern can match" in refusal
    assert after["state"] == "running"
