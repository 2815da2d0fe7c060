"""Containment through the real server: processes that drop the marker and leave the session.

Each escape the issue names runs inside one task, at each containment level this machine
offers (cgroup as root; subreaper and marker forced by the setting), and is checked after
end_background_task, after the client disconnects, and after the server is SIGKILLed and a
new one starts: gone where the level promises it, and an answer that says what it checked
where it does not. Escaped processes carry the test's directory in their command line,
which is how they are found here (and by conftest's leak check).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from mcp_backgroundr.config import CONTAINMENT_ENV, HOME_ENV, TOKEN_ENV
from mcp_backgroundr.logs import capping
from mcp_backgroundr.platform.containment import _cgroup as cgroups

from .harness import call, cgroup_directory, connect, finished, until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.linux_backend("cgroup and subreaper levels, and a non-dumpable server: linux backend only"),
]

LEVELS = ("cgroup", "subreaper", "marker")
ESCAPES = ("env-i", "double-fork", "other-marker", "unset-marker")
SLEEP = "import time; time.sleep(300)"
DOUBLE_FORK = """
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]], {"A": "b"})
    os._exit(0)
os.wait()
"""


def escapes_command(directory: Path) -> str:
    """A task that starts every escape, says ready and exits (its escapes live on)."""
    python = shlex.quote(sys.executable)
    script = directory / "double_fork.py"
    script.write_text(DOUBLE_FORK)

    def tag(name: str) -> str:
        return shlex.quote(str(directory / name))

    return "\n".join(
        [
            f"env -i setsid {python} -c '{SLEEP}' {tag('env-i')} &",
            f"{python} {shlex.quote(str(script))} {tag('double-fork')}",
            f"MCP_BACKGROUNDR_TASK_ID=x setsid {python} -c '{SLEEP}' {tag('other-marker')} &",
            f"(unset MCP_BACKGROUNDR_TASK_ID; exec setsid {python} -c '{SLEEP}' {tag('unset-marker')}) &",
            "echo ready",
        ]
    )


def escaped(directory: Path) -> dict[str, psutil.Process]:
    """The live escapes, by name."""
    found = {}
    for process in psutil.process_iter(["cmdline"], ad_value=None):
        cmdline = process.info.get("cmdline") or []
        for name in ESCAPES:
            if cmdline and cmdline[-1] == str(directory / name):
                with contextlib.suppress(psutil.Error):
                    if process.status() != psutil.STATUS_ZOMBIE:
                        found[name] = process
    return found


async def all_escaped(directory: Path) -> dict[str, psutil.Process]:
    async def ready() -> bool:
        return len(escaped(directory)) == len(ESCAPES)

    await until(ready)
    return escaped(directory)


def end_escapes(directory: Path) -> None:
    """End what a level does not promise to end (the test's own cleanup)."""
    left = list(escaped(directory).values())
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=5)


@contextlib.asynccontextmanager
async def served(server_command: str, level: str) -> AsyncIterator[Client]:
    async with connect(server_command, env={CONTAINMENT_ENV: level}) as client:
        yield client


async def start_escapes(client: Client, directory: Path, level: str) -> dict[str, object]:
    started = await call(client, "run_background_task", command=escapes_command(directory))
    assert started["containment"] == level
    await finished(client, started["task_id"])
    await all_escaped(directory)
    return started


def server_of(client_owner: str) -> psutil.Process:
    return psutil.Process(int(client_owner.split(":")[1]))


@pytest.mark.parametrize("level", LEVELS)
async def test_escapes_after_end(server_command: str, tmp_path: Path, level: str) -> None:
    try:
        async with served(server_command, level) as client:
            started = await start_escapes(client, tmp_path, level)
            status = await call(client, "get_task_status", task_id=started["task_id"])
            assert status["containment"] == level
            listed = (await call(client, "list_tasks"))["tasks"]
            assert [t["containment"] for t in listed] == [level]
            ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=0.5)
            assert ended["containment"] == level
            assert ended["survivors"] == []
            left = escaped(tmp_path)
            if level == "cgroup":
                assert left == {}
                assert ended["verified"] == "the task's cgroup is empty"
            elif level == "subreaper":
                # Handed to the server when the task's shell (a subreaper too) exited, at a moment
                # only that task's main process had exited: claimed for it, and ended with it.
                assert left == {}
                assert "orphaned to this server" not in ended["verified"], ended["verified"]
            else:
                # Not promised: an escape a status call saw while it was still a child of the task's
                # shell is remembered and ended; the others live on, and the answer says why.
                assert "cannot be seen at this containment level" in ended["verified"]
        if level != "marker":
            assert escaped(tmp_path) == {}
    finally:
        end_escapes(tmp_path)


async def test_at_the_subreaper_level_ending_a_task_ends_its_own_escapes_only(
    server_command: str, tmp_path: Path
) -> None:
    """Escapes handed to the server by two tasks' exits are each claimed for their own task."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    try:
        async with served(server_command, "subreaper") as client:
            started = [await start_escapes(client, directory, "subreaper") for directory in (first, second)]
            await call(client, "end_background_task", task_id=started[0]["task_id"], grace_seconds=0.5)
            assert escaped(first) == {}
            assert set(escaped(second)) == set(ESCAPES)
            ended = await call(client, "end_background_task", task_id=started[1]["task_id"], grace_seconds=0.5)
            assert escaped(second) == {}
            assert ended["survivors"] == [] and "orphaned to this server" not in ended["verified"]
    finally:
        end_escapes(first)
        end_escapes(second)


@pytest.mark.parametrize("level", LEVELS)
async def test_escapes_after_disconnect(server_command: str, tmp_path: Path, level: str) -> None:
    try:
        async with served(server_command, level) as client:
            await start_escapes(client, tmp_path, level)
        left = escaped(tmp_path)
        if level != "marker":  # the marker level promises nothing for them (README)
            assert left == {}
    finally:
        end_escapes(tmp_path)


@pytest.mark.parametrize("level", LEVELS)
async def test_escapes_after_sigkill_and_restart(server_command: str, tmp_path: Path, level: str) -> None:
    try:
        async with served(server_command, level) as client:
            started = await start_escapes(client, tmp_path, level)
            owner = (await call(client, "list_tasks"))["tasks"][0]["owner"]
            server = server_of(owner)
            server.kill()
            with anyio.fail_after(5):
                while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.02)
        async with served(server_command, level) as client:
            status = await call(client, "get_task_status", task_id=started["task_id"])
            left = escaped(tmp_path)
            if level == "cgroup":
                assert left == {}
                assert "its cgroup was emptied" in status["end_reason"], status["end_reason"]
            else:
                # Orphaned to init by the crash, outside the session and without the marker:
                # nothing can find them, and the record says so.
                assert set(left) == set(ESCAPES)
                assert f"at the {level} containment level" in status["end_reason"], status["end_reason"]
    finally:
        end_escapes(tmp_path)


FORK_STORM = "trap '' TERM; while :; do sleep 2 & sleep 0.02; done"


@pytest.mark.parametrize("level", ["cgroup", "subreaper"])
async def test_a_fork_storm_ignoring_sigterm_is_ended_with_no_survivor(server_command: str, level: str) -> None:
    async with served(server_command, level) as client:
        started = await call(client, "run_background_task", command=FORK_STORM)

        async def storming() -> bool:
            status = await call(client, "get_task_status", task_id=started["task_id"], lines=0)
            return bool(status["process_count"] >= 10)

        await until(storming)
        ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=0.2)
        assert ended["survivors"] == [], ended["survivors"]
        assert ended["escalated"]
        status = await call(client, "get_task_status", task_id=started["task_id"], lines=0)
        assert status["process_count"] == 0
        assert status["state"] == "killed"


SECRET = "a-secret-the-task-must-not-see-0123"
OTHERS = "--- other processes ---"


async def test_a_task_cannot_read_the_servers_environment(server_command: str, tmp_path: Path) -> None:
    # As root every process is readable, so the server runs as nobody; DAC_READ_SEARCH (ambient, so
    # its tasks get it too) only lets it reach the interpreter under /root, and does not allow
    # reading another process's environment: only the server being non-dumpable stops that.
    state = tmp_path / "nobody-state"
    command = as_nobody(server_command, state)
    env = {HOME_ENV: str(state), "PATH": os.environ["PATH"], TOKEN_ENV: SECRET}
    parameters = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with open(os.devnull, "w") as errlog:
        async with Client(stdio_client(parameters, errlog=errlog)) as client:
            # The server's environment, and that of every other process it started (its capping process).
            every = f"echo {OTHERS}; for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e; done 2>/dev/null"
            started = await call(
                client, "run_background_task", command=f"id -un; tr '\\0' '\\n' < /proc/$PPID/environ; env; {every}"
            )
            output, others = (await finished(client, started["task_id"], lines=1000))["output"].split(OTHERS)
    assert output.startswith("nobody\n"), output
    assert "Permission denied" in output, output
    assert SECRET not in output and SECRET not in others
    assert HOME_ENV not in output, "a task inherited the server's settings"


def as_nobody(server_command: str, state: Path) -> list[str]:
    """setpriv arguments running the server as nobody (reaching the interpreter under /root
    through DAC_READ_SEARCH), with ``state`` made its own."""
    nobody = pwd.getpwnam("nobody")
    state.mkdir()
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    caps = ["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
    return ["setpriv", "--reuid", "nobody", "--regid", str(nobody.pw_gid), "--clear-groups", *caps, server_command]


def delegated_cgroup(name: str) -> contextlib.AbstractContextManager[Path]:
    """A cgroup v2 directory delegated to nobody, as systemd does for a Delegate=yes scope."""
    nobody = pwd.getpwnam("nobody")
    return cgroup_directory(name, owner=(nobody.pw_uid, nobody.pw_gid))


async def test_a_user_server_in_a_delegated_cgroup_contains_its_tasks_in_cgroups(
    server_command: str, tmp_path: Path
) -> None:
    command = as_nobody(server_command, tmp_path / "nobody-state")
    with delegated_cgroup(f"backgroundr-test-{os.getpid()}") as directory:
        enter = f"echo $$ > {directory}/cgroup.procs && exec {shlex.join(command)}"
        env = {HOME_ENV: str(tmp_path / "nobody-state"), "PATH": os.environ["PATH"]}
        parameters = StdioServerParameters(command="sh", args=["-c", enter], env=env)
        try:
            with open(os.devnull, "w") as errlog:
                async with Client(stdio_client(parameters, errlog=errlog)) as client:
                    started = await start_escapes(client, tmp_path, "cgroup")
                    assert (directory / f"task-{started['task_id']}").is_dir()
                    ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=0.5)
                    assert ended["verified"] == "the task's cgroup is empty"
                    assert escaped(tmp_path) == {}
                    assert not (directory / f"task-{started['task_id']}").exists()
        finally:
            end_escapes(tmp_path)


async def test_a_cgroup_the_task_made_inside_its_own_is_still_the_task(server_command: str, tmp_path: Path) -> None:
    root = cgroups.v2_root()
    assert root is not None
    inner = f"{root}$(sed -n 's/^0:://p' /proc/self/cgroup)/inner"
    python = shlex.quote(sys.executable)
    command = (
        f"d={inner}; mkdir $d; sh -c \"echo \\$\\$ > $d/cgroup.procs; exec {python} -c '{SLEEP}' "
        f'{shlex.quote(str(tmp_path / "env-i"))}" & wait'
    )
    async with served(server_command, "cgroup") as client:
        started = await call(client, "run_background_task", command=command)
        await until(lambda: anyio.to_thread.run_sync(lambda: "env-i" in escaped(tmp_path)))
        status = await call(client, "get_task_status", task_id=started["task_id"])
        assert status["process_count"] == 2  # the shell, and the process in the inner cgroup
        ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=0.2)
        assert ended["survivors"] == []
        assert ended["verified"] == "the task's cgroup is empty"
        assert escaped(tmp_path) == {}


def orphaned_children(server: psutil.Process) -> list[psutil.Process]:
    """The server's children but its capping process (logs/capping.py)."""
    found = []
    for child in server.children():
        with contextlib.suppress(psutil.Error):
            if capping.__name__ not in child.cmdline():
                found.append(child)
    return found


def zombie_children(server: psutil.Process) -> list[int]:
    found = []
    for child in server.children():
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


@pytest.mark.parametrize("level", ["cgroup", "subreaper"])
async def test_orphans_that_come_back_to_the_server_are_reaped(server_command: str, level: str) -> None:
    async with served(server_command, level) as client:
        started = await call(client, "run_background_task", command="for i in $(seq 20); do (sleep 0.2 &); done")
        await finished(client, started["task_id"])
        server = server_of((await call(client, "list_tasks"))["tasks"][0]["owner"])
        # The 20 sleeps were orphaned to the server (a subreaper); once they exit, none stays a zombie
        # (the one child left is the server's capping process).
        await until(lambda: anyio.to_thread.run_sync(lambda: not orphaned_children(server)))
        assert zombie_children(server) == []


async def test_pruning_a_finished_task_removes_its_emptied_cgroup(server_command: str, home: Path) -> None:
    async with served(server_command, "cgroup") as client:
        started = await call(client, "run_background_task", command="sleep 0.5 &")
        await finished(client, started["task_id"])
        server = server_of((await call(client, "list_tasks"))["tasks"][0]["owner"])
        with sqlite3.connect(home / "registry.sqlite3") as db:
            directory = Path(db.execute("SELECT cgroup FROM tasks").fetchone()[0])
        server.kill()  # no server is left to notice when its last process ends
        with anyio.fail_after(5):
            while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.02)
    await until(lambda: anyio.to_thread.run_sync(lambda: "populated 0" in (directory / "cgroup.events").read_text()))
    pruned = await anyio.run_process([server_command, "prune", "--keep", "0", "--days", "0"])
    assert b"pruned 1" in pruned.stdout, pruned
    assert not directory.exists()
