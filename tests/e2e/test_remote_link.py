"""End-to-end: a remote host whose link is cut and restored (an sshd in its own network namespace)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from .harness import (
    TERM_NOTING_LEFTOVER,
    alive,
    call,
    call_error,
    connect,
    connect_http,
    finished,
    http_server,
    text_of,
    until,
)
from .netns import FarHost, far_host, missing

pytestmark = pytest.mark.anyio

ALLOW = ("serve", "--allowed-ssh-host", "faraway")
FAIL_WITHIN_SECONDS = 25.0
"""A call to a cut-off host fails well within this (its own bound is about 13 s)."""
LIST_WITHIN_SECONDS = 5.0
"""list_tasks asks no host of a running task (each host's watch keeps its tasks current), and a host
that did not answer a look at a finished one is not asked again for a while: a cut link costs a list
little (asking each time would cost a call's bound, about 13 s)."""


@pytest.fixture
def far(tmp_path: Path) -> Iterator[FarHost]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    with far_host(tmp_path / "far") as host:
        yield host


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[FarHost]:
    """A far host whose processes live in a PID namespace of their own: another machine, as far
    as pids go (nothing the server finds on its own machine is theirs)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    with far_host(tmp_path / "elsewhere", own_pids=True) as host:
        yield host


@pytest.fixture
def far_env(far: FarHost, home: Path, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "ssh_config"
    config.write_text(far.sshd.client_config(home, "faraway"))
    return {"MCP_BACKGROUNDR_SSH_CONFIG": str(config)}


async def test_a_cut_link_fails_a_wait_and_a_grep_with_one_line_and_the_task_runs_on(
    server_command: str, far: FarHost, far_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        started = await call(
            client, "run_background_task", command="echo up; sleep 300", host="faraway", wait_for_pattern="up"
        )
        task_id = started["task_id"]

        async def cut_soon() -> None:
            await anyio.sleep(0.5)  # the wait below is under way on the remote side by then
            far.cut()

        began = time.monotonic()
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            async with anyio.create_task_group() as group:
                group.start_soon(cut_soon)
                message = await call_error(client, "wait_for_task", task_id=task_id, timeout_seconds=120)
        assert message.startswith("host faraway:"), message
        assert time.monotonic() - began < FAIL_WITHIN_SECONDS
        with anyio.fail_after(LIST_WITHIN_SECONDS):
            listing = await call(client, "list_tasks")
        assert [(t["task_id"], t["state"]) for t in listing["tasks"]] == [(task_id, "running")]
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            grep_error = await call_error(client, "get_task_status", task_id=task_id, grep="up")
        assert grep_error.startswith("host faraway:"), grep_error
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            known = await call(client, "get_task_status", task_id=task_id)
        assert (known["state"], known["host_reachable"]) == ("running", False)
        assert known["host_seen_at"] is not None and known["host_problem"].startswith("host faraway:")
        assert alive([started["pid"]]) == [started["pid"]]  # the task runs on behind the cut
        far.restore()
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            back = await call(client, "get_task_status", task_id=task_id)
        assert (back["state"], back["host_reachable"], back["output"]) == ("running", True, "up\n")
        ended = await call(client, "end_background_task", task_id=task_id, grace_seconds=1)
        assert ended["survivors"] == []
        assert alive([started["pid"]]) == []


async def test_lists_do_not_wait_on_a_cut_link_for_what_a_finished_task_left_running(
    server_command: str, far: FarHost, far_env: dict[str, str]
) -> None:
    """A listing counts what this server's finished remote tasks left running (`server &`), asking
    their hosts; with the link cut, every list_tasks waited the look's bound (4 s) for a host that could
    not answer (a review of ff72ac0). A host that did not answer is not asked again for a while: its
    tasks keep what was last known of them, and the lists after the first answer at once."""
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        started = await call(client, "run_background_task", command="echo up", host="faraway", wait_for_pattern="up")
        assert (await finished(client, started["task_id"]))["state"] == "completed"
        far.cut()
        with anyio.fail_after(LIST_WITHIN_SECONDS):  # three lists: the first may wait a moment for the host
            for _ in range(3):
                listing = await call(client, "list_tasks")
        assert [(t["task_id"], t["state"]) for t in listing["tasks"]] == [(started["task_id"], "completed")]
        far.restore()
        with anyio.fail_after(FAIL_WITHIN_SECONDS):  # the link is back: the host answers again
            back = await call(client, "get_task_status", task_id=started["task_id"])
        assert (back["host_reachable"], back["output"]) == (True, "up\n"), back


LIST_ALL_WITHIN_SECONDS = 12.0
"""list_tasks(all=true) with two hosts behind a cut link answers well within this: hosts are asked
at once, each for a few seconds (asked in turn, each until its call's bound, it took about 26 s)."""


async def test_list_all_answers_promptly_when_a_dead_servers_hosts_are_cut_off(
    server_command: str, far: FarHost, home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "two_hosts_config"
    config.write_text(far.sshd.client_config(home, "faraway") + far.sshd.client_config(home, "faraway2"))
    env = {"MCP_BACKGROUNDR_SSH_CONFIG": str(config)}
    allow = (*ALLOW, "--allowed-ssh-host", "faraway2")
    async with connect(server_command, args=allow, env=env) as other:
        servers = set(psutil.Process().children())
        async with connect(server_command, args=allow, env=env) as doomed:
            (server,) = set(psutil.Process().children()) - servers
            started = [
                await call(
                    doomed, "run_background_task", command="echo up; sleep 300", host=host, wait_for_pattern="up"
                )
                for host in ("faraway", "faraway2")
            ]
            server.kill()
            with anyio.fail_after(5):
                while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.02)
        far.cut()
        with anyio.fail_after(LIST_ALL_WITHIN_SECONDS):
            result = await other.call_tool("list_tasks", {"all": True})
        listed = result.structured_content or {}
        rows = sorted((t["host"], t["state"], t["host_reachable"]) for t in listed["tasks"])
        assert rows == [("faraway", "running", False), ("faraway2", "running", False)]
        assert all(t["host_seen_at"] is not None for t in listed["tasks"])
        assert "host unreachable, last answered" in text_of(result)
        far.restore()
        for task in started:
            with anyio.fail_after(FAIL_WITHIN_SECONDS):
                ended = await call(other, "end_background_task", task_id=task["task_id"], grace_seconds=1)
            assert ended["survivors"] == []
        assert alive([task["pid"] for task in started]) == []


async def test_max_runtime_ends_what_an_ended_remote_task_left_behind_on_its_host(
    server_command: str, elsewhere: FarHost, home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "elsewhere_config"
    config.write_text(elsewhere.sshd.client_config(home, "faraway"))
    env = {"MCP_BACKGROUNDR_SSH_CONFIG": str(config)}
    # The leftover stays in the task's session on the host, without the task's marker.
    command = "env -u MCP_BACKGROUNDR_TASK_ID sleep 300 & echo up"
    async with connect(server_command, args=ALLOW, env=env) as client:
        started = await call(client, "run_background_task", command=command, host="faraway", max_runtime_seconds=4)
        task_id = started["task_id"]
        done = await call(client, "wait_for_task", task_id=task_id, timeout_seconds=20)
        assert (done["reason"], done["status"]["state"]) == ("exited", "completed")
        assert len(done["status"]["lingering_pids"]) == 1
        status: dict[str, Any] = {}

        async def limit_enforced() -> bool:
            nonlocal status
            status = await call(client, "get_task_status", task_id=task_id)
            return status["end_reason"] is not None

        await until(limit_enforced, 30)
        assert status["end_reason"] == "max_runtime_seconds (4 s) reached: ended the processes it left behind"
        assert (status["state"], status["lingering_pids"]) == ("completed", [])
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite3")) as db:
        recorded = db.execute("SELECT leftovers_ended FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    assert recorded == (1,)  # its host ended them all: the registry says so, for whoever comes next


ONE_CALL_SECONDS = 14.0
"""A call to a cut-off host answers within its own bound (10 s, plus 3 s), 8-9 s here; a status that
asked twice took 16-17 s."""


async def test_a_status_asked_behind_a_cut_link_while_the_limit_ends_what_a_task_left_answers_from_what_is_known(
    server_command: str, far: FarHost, far_env: dict[str, str], tmp_path: Path
) -> None:
    """A status of a finished remote task whose leftovers max_runtime_seconds was ending when the link was
    cut waited for that end to fail, then asked the host again: two calls' bounds instead of one."""
    script, termed, ready = tmp_path / "leftover.py", tmp_path / "termed", tmp_path / "ready"
    script.write_text(TERM_NOTING_LEFTOVER)
    command = f"python3 {script} {termed} {ready} & echo up"
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        started = await call(client, "run_background_task", command=command, host="faraway", max_runtime_seconds=4)
        task_id = started["task_id"]
        done = await call(client, "wait_for_task", task_id=task_id, timeout_seconds=20)
        assert done["status"]["state"] == "completed" and ready.exists()

        async def signalled() -> bool:
            return termed.exists()

        await until(signalled, 20)  # the end is under way on the host
        far.cut()
        with anyio.fail_after(ONE_CALL_SECONDS):
            known = await call(client, "get_task_status", task_id=task_id)
        assert (known["state"], known["host_reachable"], known["process_count"]) == ("completed", False, None)
        far.restore()
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            ended = await call(client, "end_background_task", task_id=task_id, grace_seconds=1)
        assert ended["survivors"] == []


LIMIT_BEHIND_THE_CUT_SECONDS = 10
"""A remote task's max_runtime_seconds that is reached only once the test has cut the link. The start
before the cut (the host's first connection, its agent, the wait for the first line) took 1.2-1.8 s
here under load; with a limit of 4 s a slower start let the limit's end reach the host before or as
the link was cut, and the task was killed instead of completing (or ended before the cut: no note)."""


async def test_a_remote_task_that_ends_by_itself_keeps_the_notes_gathered_while_it_ran(
    server_command: str, far: FarHost, far_env: dict[str, str], tmp_path: Path
) -> None:
    """The host's account of a remote task's end replaced its end_reason: the note that its
    max_runtime_seconds could not be enforced while the link was down was gone once the task completed."""
    go = tmp_path / "go"
    command = f"echo up; while [ ! -e {go} ]; do sleep 0.1; done; echo done"
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        began = time.monotonic()
        started = await call(
            client, "run_background_task", command=command, host="faraway",
            max_runtime_seconds=LIMIT_BEHIND_THE_CUT_SECONDS, wait_for_pattern="up",
        )  # fmt: skip
        task_id = started["task_id"]
        far.cut()
        cut_after = time.monotonic() - began
        assert cut_after < LIMIT_BEHIND_THE_CUT_SECONDS, f"the limit was reached before the cut ({cut_after:.1f} s)"
        status: dict[str, Any] = {}

        async def noted() -> bool:
            nonlocal status
            status = await call(client, "get_task_status", task_id=task_id)
            return "enforcing max_runtime_seconds failed" in (status["end_reason"] or "")

        await until(noted, FAIL_WITHIN_SECONDS * 2)
        note = status["end_reason"]
        assert note.startswith("enforcing max_runtime_seconds failed: host faraway: "), note
        assert status["state"] == "running"
        far.restore()
        go.touch()
        status = await finished(client, task_id)
        assert (status["state"], status["exit_code"], status["output"]) == ("completed", 0, "up\ndone\n")
        assert status["end_reason"] == note


PROMPT_SECONDS = 5.0
"""A call that needs no host answers well within this while another client's call hangs on one."""
OWN_BOUND_SECONDS = 12.0
"""A status of a remote task, made while another client's call to its cut-off host is under way,
answers (from what is known) once that call finds the host gone (7-9 s here: ssh's keepalive); it
used to wait for that call, then try the host itself (a new connection: 8 s more)."""


async def test_other_clients_stay_fast_while_one_waits_on_a_cut_off_host(
    server_command: str, far: FarHost, far_env: dict[str, str], tmp_path: Path
) -> None:
    with http_server(server_command, tmp_path, "--no-auth", *ALLOW[1:], env=far_env) as served:
        async with connect_http(served.url, None) as first, connect_http(served.url, None) as second:
            remote = await call(
                first, "run_background_task", command="echo up; sleep 300", host="faraway", wait_for_pattern="up"
            )
            local = await call(second, "run_background_task", command="echo here; sleep 300", wait_for_pattern="here")
            far.cut()
            failed: list[str] = []

            async def hang_on_the_host(tool: str, **arguments: Any) -> None:
                result = await first.call_tool(tool, arguments)
                failed.append(text_of(result) if result.is_error else "")

            with anyio.fail_after(FAIL_WITHIN_SECONDS * 2):
                async with anyio.create_task_group() as group:
                    group.start_soon(functools.partial(hang_on_the_host, "get_task_status", task_id=remote["task_id"]))
                    group.start_soon(
                        functools.partial(
                            hang_on_the_host, "wait_for_task", task_id=remote["task_id"], timeout_seconds=120
                        )
                    )
                    await anyio.sleep(0.5)  # both calls are under way by then
                    for _ in range(3):
                        with anyio.fail_after(PROMPT_SECONDS):
                            listed = await call(second, "list_tasks")
                            status = await call(second, "get_task_status", task_id=local["task_id"])
                        assert {t["task_id"] for t in listed["tasks"]} >= {local["task_id"]}
                        assert (status["state"], status["output"]) == ("running", "here\n")
                    with anyio.fail_after(OWN_BOUND_SECONDS):
                        known = await call(second, "get_task_status", task_id=remote["task_id"])
                    assert (known["state"], known["host_reachable"]) == ("running", False)
            assert failed[-1].startswith("host faraway:"), failed  # the wait failed with one line
            far.restore()
            for task in (remote, local):
                with anyio.fail_after(FAIL_WITHIN_SECONDS):
                    ended = await call(second, "end_background_task", task_id=task["task_id"], grace_seconds=1)
                assert ended["survivors"] == []


async def test_pruning_behind_a_cut_link_forgets_ended_remote_tasks_and_keeps_running_ones(
    server_command: str, far: FarHost, far_env: dict[str, str], tmp_path: Path
) -> None:
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        kept = await call(
            client, "run_background_task", command="echo up; sleep 300", host="faraway", keep_running=True,
            wait_for_pattern="up",
        )  # fmt: skip
        done = await call(client, "run_background_task", command="echo done", host="faraway")
        await call(client, "wait_for_task", task_id=done["task_id"], timeout_seconds=20)
    far.cut()
    # A server that keeps no finished task starts while the host cannot be reached: it forgets the
    # ended task (its files stay on the host, and it says where) and keeps the running one as it was.
    errors = tmp_path / "server.err"
    with errors.open("w") as errlog:
        async with connect(
            server_command, errlog, args=ALLOW, env=far_env | {"MCP_BACKGROUNDR_KEEP_FINISHED": "0"}
        ) as client:

            async def said_where() -> bool:
                return f"left on host faraway ({done['log_path'].removesuffix('.log')}.*)" in errors.read_text()

            await until(said_where, FAIL_WITHIN_SECONDS)
            with anyio.fail_after(LIST_WITHIN_SECONDS):
                listed = await call(client, "list_tasks", all=True)
            assert [(t["task_id"], t["state"]) for t in listed["tasks"]] == [(kept["task_id"], "running")]
            with anyio.fail_after(FAIL_WITHIN_SECONDS):
                known = await call(client, "get_task_status", task_id=kept["task_id"])
            assert (known["state"], known["host_reachable"], known["end_reason"]) == ("running", False, None)
            # Pruning again (the CLI, the link still cut) forgets nothing more.
            env = os.environ | far_env | {"MCP_BACKGROUNDR_KEEP_FINISHED": "0"}
            with anyio.fail_after(FAIL_WITHIN_SECONDS * 2):
                pruned = await anyio.run_process([server_command, "prune", "--keep", "0"], env=env)
            assert "pruned 0 finished task(s)" in pruned.stdout.decode(), pruned.stdout.decode()
            assert Path(done["log_path"]).exists()
            far.restore()
            with anyio.fail_after(FAIL_WITHIN_SECONDS):
                back = await call(client, "get_task_status", task_id=kept["task_id"])
            assert (back["state"], back["host_reachable"], back["output"]) == ("running", True, "up\n")
            ended = await call(client, "end_background_task", task_id=kept["task_id"], grace_seconds=1)
            assert ended["survivors"] == []


async def test_a_start_the_host_never_answers_says_only_what_is_known_and_how_to_check(
    server_command: str, far: FarHost, far_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        far.cut()  # no connection yet: the request cannot go out
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            unsent = await call_error(client, "run_background_task", command="sleep 300", host="faraway")
        assert unsent.startswith("host faraway: ") and "the task did not start there" in unsent, unsent
        far.restore()
        first = await call(
            client, "run_background_task", command="echo up; sleep 300", host="faraway", wait_for_pattern="up"
        )
        far.cut()  # the request goes out on the open connection, and no answer comes back
        with anyio.fail_after(FAIL_WITHIN_SECONDS):
            lost = await call_error(client, "run_background_task", command="sleep 300", host="faraway")
        assert lost.startswith("host faraway: "), lost
        assert re.search(r"whether task (\w+) started there is unknown .*hosted/\1\.\*", lost), lost
        for message in (unsent, lost):
            assert "runs on" not in message, message
        far.restore()
        ended = await call(client, "end_background_task", task_id=first["task_id"], grace_seconds=1)
        assert ended["survivors"] == []


async def test_the_command_line_on_a_cut_off_host_fails_with_one_line_and_a_failed_stop_records_nothing(
    server_command: str, far: FarHost, far_env: dict[str, str]
) -> None:
    """``logs`` printed nothing and exited 0; ``stop`` failed but left kill_requested and its
    end_reason on the task, as if it had been asked to end."""
    env = os.environ | far_env
    async with connect(server_command, args=ALLOW, env=far_env) as client:
        started = await call(
            client, "run_background_task", command="echo up; sleep 300", host="faraway", wait_for_pattern="up"
        )
        task_id = started["task_id"]
        far.cut()
        with anyio.fail_after(FAIL_WITHIN_SECONDS * 2):
            logs = await anyio.run_process([server_command, "logs", task_id], env=env, check=False)
            stop = await anyio.run_process([server_command, "stop", task_id, "--grace", "1"], env=env, check=False)
            recorded = await anyio.run_process([server_command, "status", task_id, "--json"], env=env)
        far.restore()
        status = json.loads(recorded.stdout)  # what the registry holds (the server holds its own record)
        assert (status["state"], status["kill_requested"], status["end_reason"]) == ("running", False, None)
        ended = await call(client, "end_background_task", task_id=task_id, grace_seconds=1)
        assert ended["survivors"] == []
    for failed in (logs, stop):
        said = failed.stderr.decode()
        assert failed.returncode == 1 and said.count("\n") == 1, said
        assert said.startswith("mcp-backgroundr: ") and "faraway" in said, said
        assert "end_background_task" not in said, said  # a person at the CLI has no tool to call
    assert logs.stdout == b""
    assert "cannot be reached" in logs.stderr.decode() and "last answered" in logs.stderr.decode()
