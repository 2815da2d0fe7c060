"""End-to-end: tasks on another host over SSH, through a real sshd on a loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp.shared.subscriptions import ResourceUpdated

from .harness import alive, call, call_error, cli, connect, finished, kill_server_of, text_of, until
from .sshd import Sshd, free_port, keygen
from .test_port_waits import ONE_CLIENT_SERVER
from .test_volume import grep_a_line_longer_than_a_read, grep_with_lines_and_raw

pytestmark = pytest.mark.anyio

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
PID_TRIES = 200
ALLOW = ("serve", "--allowed-ssh-host", "loopback", "--allowed-ssh-host", "stranger", "--allowed-ssh-host", "nopython")


async def test_a_remote_task_runs_reports_and_ends_with_its_whole_tree(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client,
            "run_background_task",
            command="echo one; setsid sleep 300 & sleep 300 & echo two; wait",
            host="loopback",
        )
        assert started["host"] == "loopback"
        waited = await call(client, "wait_for_task", task_id=started["task_id"], output_pattern="two", since=0)
        status = await call(client, "get_task_status", task_id=started["task_id"])
        assert (status["state"], status["host"], status["host_reachable"]) == ("running", "loopback", True)
        assert status["output"] == "one\ntwo\n"
        assert waited["reason"] == "pattern"
        ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=1)
        assert ended["survivors"] == []
        assert ended["state"] == "killed"
        # Which of the 4 processes get a signal of their own races with the runner ending its children
        # on SIGTERM (2 of 3 were listed 1 run in 4); that none is left, the leak check checks.
        assert status["process_count"] >= 3 and ended["signalled_pids"], (status, ended)
        after = await call(client, "get_task_status", task_id=started["task_id"])
        assert after["state"] == "killed"
        assert alive(ended["signalled_pids"]) == []


async def test_a_host_the_policy_does_not_allow_is_refused_naming_the_rule(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, env=ssh_env) as client:
        message = await call_error(client, "run_background_task", command="true", host="loopback")
    assert "allowed_hosts" in message
    assert "no remote host is allowed by default" in message


async def test_an_unknown_host_key_is_refused_with_how_to_accept_it(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        message = await call_error(client, "run_background_task", command="true", host="stranger")
    assert "known_hosts" in message
    assert "ssh -F" in message and "stranger true" in message


async def test_a_changed_host_key_is_named_as_changed_and_a_finished_tasks_status_answers_from_what_is_known(
    server_command: str, sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "rekeyed_known_hosts"
    known_hosts.write_text(f"[{sshd.address}]:{sshd.port} {sshd.host_public_key}\n")
    config = tmp_path / "rekeyed_config"
    entry = sshd.client_config(home, "rekeyed")
    config.write_text(re.sub(r"UserKnownHostsFile \S+", f"UserKnownHostsFile {known_hosts}", entry))
    env = {"MCP_BACKGROUNDR_SSH_CONFIG": str(config)}
    allow = ("serve", "--allowed-ssh-host", "rekeyed")
    async with connect(server_command, args=allow, env=env) as client:
        done = await call(client, "run_background_task", command="echo done", host="rekeyed")
        await finished(client, done["task_id"])
    # The host's key changes (as after a reinstall, or a man in the middle); the master is closed.
    other = " ".join((await anyio.to_thread.run_sync(keygen, tmp_path / "other")).split()[:2])
    known_hosts.write_text(f"[{sshd.address}]:{sshd.port} {other}\n")
    async with connect(server_command, args=allow, env=env) as client:
        message = await call_error(client, "run_background_task", command="true", host="rekeyed")
        status = await call(client, "get_task_status", task_id=done["task_id"])
    assert "host key has CHANGED" in message and "ssh-keygen" in message and " -R " in message, message
    assert "not in known_hosts" not in message, message
    assert (status["state"], status["exit_code"], status["host_reachable"]) == ("completed", 0, False), status
    assert "host key has CHANGED" in status["host_problem"], status


async def test_an_empty_host_is_bad_input_not_a_policy_refusal(server_command: str, ssh_env: dict[str, str]) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        message = await call_error(client, "run_background_task", command="true", host="")
    assert message.startswith('host="" is invalid:') and "leave host out" in message, message
    assert "policy" not in message and "allowed_hosts" not in message, message


async def test_a_missing_ssh_config_file_is_named_as_missing(server_command: str, tmp_path: Path) -> None:
    missing_config = tmp_path / "no_such_ssh_config"
    env = {"MCP_BACKGROUNDR_SSH_CONFIG": str(missing_config)}
    async with connect(server_command, args=ALLOW, env=env) as client:
        message = await call_error(client, "run_background_task", command="true", host="loopback")
    assert message.startswith("host loopback:") and f"{missing_config}, does not exist" in message, message
    assert "later" not in message, message


async def test_a_host_without_python_is_one_clear_line(server_command: str, ssh_env: dict[str, str]) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        message = await call_error(client, "run_background_task", command="true", host="nopython")
    assert message.startswith("host nopython: python3 is not installed there"), message


async def test_cursors_grep_list_resources_and_remove_work_on_a_remote_task(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command="printf 'a\\nb\\nc\\n'; echo error: boom; exit 3", host="loopback"
        )
        task_id = started["task_id"]
        waited = await call(client, "wait_for_task", task_id=task_id, timeout_seconds=20, since=0)
        assert (waited["reason"], waited["status"]["state"]) == ("exited", "failed")
        whole = await call(client, "get_task_status", task_id=task_id, since=0)
        assert (whole["output"], whole["cursor"], whole["exit_code"]) == ("a\nb\nc\nerror: boom\n", 18, 3)
        middle = await call(client, "get_task_status", task_id=task_id, since=2)
        assert middle["output"] == "b\nc\nerror: boom\n"
        assert (await call(client, "get_task_status", task_id=task_id, since=18))["output"] == ""
        found = await call(client, "get_task_status", task_id=task_id, grep="^error")
        assert (found["output"], found["grep_matches"]) == ("4: error: boom", 1)
        listing = await call(client, "list_tasks")
        assert [(t["task_id"], t["host"], t["exit_code"]) for t in listing["tasks"]] == [(task_id, "loopback", 3)]
        resource = await client.read_resource(f"task://{task_id}/log")
        assert "error: boom" in str(resource.contents[0])
        removed = await call(client, "remove_task", task_id=task_id)
        assert removed["freed_bytes"] > 0
        assert "not a known task" in await call_error(client, "get_task_status", task_id=task_id)


async def test_a_grep_of_a_remote_task_shows_its_processes_as_a_status_does(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """A grep's answer said a running remote task had no process (process_count 0) and a finished one
    had none left behind: its host answered without them."""
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        running = await call(
            client, "run_background_task", command="echo up; sleep 300", host="loopback", wait_for_pattern="up"
        )
        found = await call(client, "get_task_status", task_id=running["task_id"], grep="up")
        status = await call(client, "get_task_status", task_id=running["task_id"])
        assert (found["state"], found["grep_matches"], found["process_count"]) == (
            "running",
            1,
            status["process_count"],
        )
        assert found["process_count"] > 0 and found["memory_rss_bytes"] > 0
        left = await call(client, "run_background_task", command="sleep 300 > /dev/null & echo $!", host="loopback")
        waited = await call(client, "wait_for_task", task_id=left["task_id"], timeout_seconds=20)
        left_behind = waited["status"]["lingering_pids"]
        found = await call(client, "get_task_status", task_id=left["task_id"], grep=".")
        assert (found["state"], found["lingering_pids"], found["process_count"]) == ("completed", left_behind, 1)
        for task in (running, left):
            ended = await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
            assert ended["survivors"] == []


async def test_input_reaches_a_remote_task_and_closing_it_ends_its_input(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client,
            "run_background_task",
            command="read line; echo got $line; cat; echo input closed",
            stdin=True,
            host="loopback",
        )
        task_id = started["task_id"]
        sent = await call(client, "send_task_input", task_id=task_id, text="hello")
        got = await call(
            client,
            "wait_for_task",
            task_id=task_id,
            output_pattern="got hello",
            since=sent["cursor"],
            timeout_seconds=20,
        )
        assert got["reason"] == "pattern"
        await call(client, "send_task_input", task_id=task_id, text="last", close=True)
        done = await call(client, "wait_for_task", task_id=task_id, timeout_seconds=20)
        assert done["reason"] == "exited"
        assert done["status"]["exit_code"] == 0
        final = await call(client, "get_task_status", task_id=task_id)
        assert final["output"].endswith("last\ninput closed\n")


async def test_a_wait_for_a_port_on_the_remote_host_ends_when_the_task_listens(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    port = free_port()
    serve = f"exec python3 -m http.server {port} --bind 127.0.0.1"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command=serve, host="loopback", wait_for_port=port, wait_timeout_seconds=20
        )
        assert started["wait"]["reason"] == "port"
        status = await call(client, "get_task_status", task_id=started["task_id"])
        assert [item["port"] for item in status["listening"]] == [port]
        ended = await call(client, "end_background_task", task_id=started["task_id"])
        assert ended["survivors"] == []


async def test_a_remote_task_that_exited_leaving_its_server_running_is_listed_running(
    server_command: str, ssh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`server &` on a host: the shell exits at once and its server lives on. A local one is listed by
    list_tasks(state=running) and ps as completed with lingering=1; a remote one was not counted: left
    out of the running ones, as if nothing ran there."""
    port = free_port()
    command = f"python3 -m http.server {port} --bind 127.0.0.1 &"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        task = await call(
            client, "run_background_task", command=command, host="loopback", wait_for_port=port, wait_timeout_seconds=20
        )
        await finished(client, task["task_id"])
        running = await call(client, "list_tasks", state="running")
        text = text_of(await client.call_tool("list_tasks", {"state": "running"}))
        for name, value in ssh_env.items():
            monkeypatch.setenv(name, value)
        shown = await anyio.to_thread.run_sync(cli, server_command, "ps")
        await call(client, "end_background_task", task_id=task["task_id"])
        after = await call(client, "list_tasks", state="running")
    rows = [(row["task_id"], row["state"], row.get("lingering")) for row in running["tasks"]]
    assert task["wait"]["reason"] == "port", task
    assert rows == [(task["task_id"], "completed", 1)], running
    assert "lingering=1" in text, text
    rows_shown = [line for line in shown.stdout.splitlines() if line.startswith(task["task_id"])]
    assert len(rows_shown) == 1 and "completed(0) +1 lingering" in rows_shown[0], shown
    assert after["tasks"] == []


async def test_a_remote_port_wait_that_times_out_says_who_holds_the_port(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """A local wait for a port that timed out says who holds it, or that nobody does; a remote one
    said nothing (advice None)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        held = squatter.getsockname()[1]
        async with connect(server_command, args=ALLOW, env=ssh_env) as client:
            task = await call(client, "run_background_task", command="sleep 300", host="loopback")
            on_held = await call(client, "wait_for_task", task_id=task["task_id"], port=held, timeout_seconds=1)
            on_free = await call(client, "wait_for_task", task_id=task["task_id"], port=free_port(), timeout_seconds=1)
            await call(client, "end_background_task", task_id=task["task_id"])
    assert on_held["reason"] == "timeout"
    # The host is this machine: the program that holds the port is this test.
    assert f"held by another program (pid {os.getpid()})" in (on_held["advice"] or ""), on_held
    assert on_free["reason"] == "timeout"
    assert "listens on port" in (on_free["advice"] or ""), on_free


async def test_a_remote_server_started_with_an_ampersand_is_ready_when_it_listens(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """`server &` on a host: the host's agent answered `exited` as soon as the shell (under its runner)
    exited, while the server it started went on to listen, as a local wait no longer does."""
    port = free_port()
    command = f"sleep 0.5; python3 -m http.server {port} --bind 127.0.0.1 &"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command=command, host="loopback", wait_for_port=port, wait_timeout_seconds=20
        )
        waited = await call(client, "wait_for_task", task_id=started["task_id"], port=port, timeout_seconds=20)
        await call(client, "end_background_task", task_id=started["task_id"])
    assert started["wait"]["reason"] == "port", started["wait"]
    assert waited["reason"] == "port", waited


async def test_a_remote_port_wait_sees_any_address_and_leaves_a_one_client_server_its_client(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """The host's agent connected to 127.0.0.1 and ::1 to see the port accept: a server bound to
    another address was never ready, and one that serves one client took the probe for its client."""
    port = free_port()
    serve = f"python3 -c '{ONE_CLIENT_SERVER.replace('127.0.0.1', '127.0.0.2')}' {port}; sleep 300"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command=serve, host="loopback", wait_for_port=port, wait_timeout_seconds=20
        )
        assert started["wait"]["reason"] == "port", started["wait"]
        with socket.create_connection(("127.0.0.2", port), timeout=5) as editor:
            editor.sendall(b"initialize")
        said = await call(
            client,
            "wait_for_task",
            task_id=started["task_id"],
            output_pattern="first client",
            since=0,
            timeout_seconds=20,
        )
        assert said["matched_line"] == "first client sent b'initialize'", said
        await call(client, "end_background_task", task_id=started["task_id"])


async def test_a_remote_task_outlives_a_killed_server_and_the_next_one_learns_its_exit_code(
    server_command: str, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        remote = await call(
            client, "run_background_task", command=f"echo up; read x < {gate}; exit 4", host="loopback",
            wait_for_pattern="up",
        )  # fmt: skip
        local = await call(client, "run_background_task", command="sleep 300")
        await kill_server_of(local["pid"])
    assert alive([remote["pid"]]) == [remote["pid"]]
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        status = await call(client, "get_task_status", task_id=remote["task_id"])
        assert (status["state"], status["output"]) == ("running", "up\n")
        with open(gate, "w") as opened:
            opened.write("go\n")
        done = await call(client, "wait_for_task", task_id=remote["task_id"], timeout_seconds=20)
        assert (done["reason"], done["status"]["exit_code"], done["status"]["state"]) == ("exited", 4, "failed")
        listing = await call(client, "list_tasks")
        assert [t["task_id"] for t in listing["tasks"]] == [remote["task_id"]]


async def test_a_remote_task_that_ended_by_itself_stays_completed_when_the_server_closes_right_after(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    # The user's case: the client closes as soon as the start answers; the run ends on the host
    # before the shutdown's end reaches it (recorded completed there), or the end reaches it first
    # (killed there). Several tries: the registry must say what the host says, every time.
    started = []
    for _ in range(4):
        async with connect(server_command, args=ALLOW, env=ssh_env) as client:
            started.append(await call(client, "run_background_task", command="true", host="loopback"))
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        for task in started:
            status = await call(client, "get_task_status", task_id=task["task_id"])
            run_record = Path(task["log_path"].removesuffix(".log") + ".status")  # the host is this machine
            hosts = json.loads(run_record.read_text()) if run_record.exists() else {}
            if hosts.get("state") == "completed":
                assert (status["state"], status["exit_code"], status["end_reason"]) == ("completed", 0, None)
            else:  # its runner was ended before it could record the run
                assert (status["state"], status["end_reason"]) == ("killed", "server shutdown")


async def _ended_unseen(server_command: str, ssh_env: dict[str, str], gate: Path, then: str) -> dict[str, Any]:
    """A remote task that runs ``then`` once its server has been SIGKILLed (so no server hears its
    exit), and has ended; its start answer."""
    os.mkfifo(gate)
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        remote = await call(client, "run_background_task", command=f"read x < {gate}; {then}", host="loopback")
        local = await call(client, "run_background_task", command="sleep 300")
        await kill_server_of(local["pid"])
    with open(gate, "w") as opened:
        opened.write("go\n")
    with anyio.fail_after(10):  # its runner exits once it has recorded the run's end
        while alive([remote["pid"]]):
            await anyio.sleep(0.02)
    return remote


async def test_ps_learns_as_list_tasks_does_how_a_remote_task_ended_unseen(
    server_command: str, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    """``ps`` showed the registry's last word (running) where ``list_tasks(all=true)`` asks the host."""
    remote = await _ended_unseen(server_command, ssh_env, tmp_path / "gate", "exit 5")
    with anyio.fail_after(60):
        listed = await anyio.run_process([server_command, "ps", "--all"], env=os.environ | ssh_env)
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:  # it ends the local task left
        status = await call(client, "get_task_status", task_id=remote["task_id"])  # closes the ssh master left
    assert (status["state"], status["exit_code"]) == ("failed", 5)
    (row,) = [line.split() for line in listed.stdout.decode().splitlines() if line.startswith(remote["task_id"])]
    assert row[1:3] == ["-", "failed(5)"], listed.stdout.decode()


async def test_stopping_a_remote_task_that_had_ended_unseen_records_how_it_ended_on_its_host(
    server_command: str, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    # No server hears the exit (its owner was killed first): the stop learns it from the host.
    remote = await _ended_unseen(server_command, ssh_env, tmp_path / "gate", "true")
    with anyio.fail_after(60):
        stopped = await anyio.run_process(
            [server_command, "stop", remote["task_id"], "--grace", "1"], env=os.environ | ssh_env, check=False
        )
    assert stopped.returncode == 0, stopped.stderr.decode()
    # As for a local task, the stop says the task had ended (it said "stopped ... signalled 0").
    assert stopped.stdout.decode() == f"task {remote['task_id']} had already ended (completed, exit code 0)\n"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        status = await call(client, "get_task_status", task_id=remote["task_id"])
        assert (status["state"], status["exit_code"], status["end_reason"]) == ("completed", 0, None)


async def test_the_command_line_shows_follows_and_stops_a_remote_task(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    env = os.environ | ssh_env

    async def cli(*arguments: str) -> str:
        with anyio.fail_after(60):
            done = await anyio.run_process([server_command, *arguments], env=env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        long = await call(
            client, "run_background_task", command="echo one; sleep 300", host="loopback", wait_for_pattern="one"
        )
        short = await call(client, "run_background_task", command="echo a; sleep 1; echo b", host="loopback")
        listed = await cli("ps")
        assert long["task_id"] in listed and "loopback" in listed
        assert "state: running" in await cli("status", long["task_id"])
        assert await cli("logs", long["task_id"]) == "one\n"
        assert await cli("logs", "-f", short["task_id"]) == "a\nb\n"
        stopped = await cli("stop", long["task_id"], "--grace", "1")
        assert "no process" in stopped and "is left on loopback" in stopped, stopped
        cat = await call(client, "run_background_task", command="cat", host="loopback", stdin=True)
        assert "wrote 6 bytes" in await cli("send", cat["task_id"], "hello")  # as send_task_input writes it
        echoed = await call(client, "wait_for_task", task_id=cat["task_id"], output_pattern="hello", since=0)
        assert echoed["reason"] == "pattern"
        assert "input is now closed" in await cli("send", "--close", cat["task_id"], "bye")
        assert (await finished(client, cat["task_id"]))["output"] == "hello\nbye\n"
        assert alive([long["pid"]]) == []
        status = await call(client, "get_task_status", task_id=long["task_id"])
        assert status["state"] == "killed"


async def test_status_prints_the_same_keys_for_a_local_and_a_remote_task(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """One printer: the keys of ``status`` differed (a remote task's lacked log size, owner's
    cgroup...; a local task's lacked cpu, ports...)."""
    env = os.environ | ssh_env

    async def status_of(task_id: str, *options: str) -> str:
        with anyio.fail_after(60):
            shown = await anyio.run_process([server_command, "status", task_id, *options], env=env, check=False)
        assert shown.returncode == 0, shown.stderr.decode()
        return shown.stdout.decode()

    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        tasks = [
            await call(client, "run_background_task", command="echo one; sleep 300", wait_for_pattern="one", **where)
            for where in ({}, {"host": "loopback"})
        ]
        local, remote = [json.loads(await status_of(task["task_id"], "--json")) for task in tasks]
        texts = [await status_of(task["task_id"]) for task in tasks]
        for task in tasks:
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
    assert set(local) == set(remote), set(local) ^ set(remote)
    for shown in (local, remote):
        assert (shown["state"], shown["output_bytes"], shown["process_count"] > 0) == ("running", 4, True), shown
    assert (local["host"], remote["host"], remote["host_reachable"]) == (None, "loopback", True)
    local_keys, remote_keys = ({line.split(":")[0] for line in text.splitlines() if line[:1] != " "} for text in texts)
    assert remote_keys - local_keys <= {"host", "host_reachable", "host_seen_at"}, remote_keys ^ local_keys
    assert local_keys - remote_keys <= {"cgroup", "pid_create_time"}, remote_keys ^ local_keys


async def test_logs_follow_prints_a_remote_tasks_new_lines_as_they_come_and_ends_cleanly_with_it(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """Each new line reaches ``logs -f`` while the task runs (not when it ends, nor a minute
    later), and neither it nor ``stop`` leaves an ssh process for Python to complain about."""
    env = os.environ | ssh_env
    command = "echo first; sleep 1; echo second; sleep 300"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(client, "run_background_task", command=command, host="loopback", wait_for_pattern="first")
        follower = await anyio.open_process([server_command, "logs", started["task_id"], "-f"], env=env)
        try:
            assert follower.stdout is not None and follower.stderr is not None
            shown = b""
            with anyio.fail_after(20):
                while b"second\n" not in shown:
                    shown += await follower.stdout.receive()
            assert alive([started["pid"]]) == [started["pid"]]
            with anyio.fail_after(60):
                stopped = await anyio.run_process(
                    [server_command, "stop", started["task_id"], "--grace", "1"], env=env, check=False
                )
                await follower.wait()
                errors = b"".join([chunk async for chunk in follower.stderr])
        finally:
            if follower.returncode is None:
                follower.kill()
                await follower.wait()
            await follower.aclose()
    assert shown == b"first\nsecond\n"
    assert (stopped.returncode, follower.returncode) == (0, 0)
    for complaint in (stopped.stderr, errors):
        assert b"Traceback" not in complaint and b"Exception ignored" not in complaint, complaint.decode()


async def test_a_remote_python_task_is_unbuffered_unless_its_env_says_otherwise(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """As locally, PYTHONUNBUFFERED=1 is a default: a print reaches the log at once (block
    buffered, it would wait for the exit), and a value the caller gives wins."""
    script = "import os, time; print('ready', os.environ.get('PYTHONUNBUFFERED')); time.sleep(30)"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command=f'python3 -c "{script}"', host="loopback",
            wait_for_pattern="ready", wait_timeout_seconds=15,
        )  # fmt: skip
        chosen = await call(
            client, "run_background_task", command=f'python3 -u -c "{script}"', host="loopback",
            env={"PYTHONUNBUFFERED": "yes"}, wait_for_pattern="ready", wait_timeout_seconds=15,
        )  # fmt: skip
        for task in (started, chosen):
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
    assert (started["wait"]["reason"], started["wait"]["matched_line"]) == ("pattern", "ready 1")
    assert (chosen["wait"]["reason"], chosen["wait"]["matched_line"]) == ("pattern", "ready yes")


async def test_a_remote_log_is_kept_under_its_cap_on_the_remote_host(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    cap = 64 * 1024
    writer = "head -c 2000000 /dev/zero | tr '\\0' a; echo; echo written; sleep 300"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command=writer, host="loopback", max_log_bytes=cap,
            wait_for_pattern="^written", wait_timeout_seconds=30,
        )  # fmt: skip
        assert started["wait"]["reason"] == "pattern"
        status: dict[str, object] = {}

        async def capped() -> bool:
            nonlocal status
            status = await call(client, "get_task_status", task_id=started["task_id"], lines=1)
            return os.stat(started["log_path"]).st_blocks * 512 <= cap

        await until(capped, 20)
        assert status["output_bytes"] == 2000000 + len("\nwritten\n")
        assert isinstance(status["dropped_bytes"], int) and status["dropped_bytes"] > 2000000 - cap
        assert status["output"] == "written\n"
        await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=0)


async def test_closing_the_server_ends_its_remote_tasks_but_keep_running_ones_stay(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        ordinary = await call(client, "run_background_task", command="sleep 300 & sleep 300", host="loopback")
        kept = await call(client, "run_background_task", command="sleep 300", host="loopback", keep_running=True)
    assert alive([ordinary["pid"]]) == []
    assert alive([kept["pid"]]) == [kept["pid"]]
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        status = await call(client, "get_task_status", task_id=ordinary["task_id"])
        assert (status["state"], status["end_reason"]) == ("killed", "server shutdown")
        ended = await call(client, "end_background_task", task_id=kept["task_id"], grace_seconds=1)
        assert ended["survivors"] == []


async def test_a_remote_exit_is_heard_without_a_call_and_recorded(
    server_command: str, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command=f"read x < {gate}; exit 5", host="loopback", name="gated"
        )
        uri = f"task://{started['task_id']}/log"
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            with open(gate, "w") as opened:
                opened.write("go\n")
            with anyio.fail_after(20):
                async for event in subscription:
                    if isinstance(event, ResourceUpdated) and event.uri == uri:
                        break
        # The server recorded the exit when it heard it: the registry (read by the CLI) says so.
        with anyio.fail_after(30):
            listed = await anyio.run_process([server_command, "ps", "--all"], env=os.environ | ssh_env)
        row = next(line for line in listed.stdout.decode().splitlines() if started["task_id"] in line)
        assert "failed" in row, row


async def test_max_runtime_ends_a_remote_task(server_command: str, ssh_env: dict[str, str]) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(client, "run_background_task", command="sleep 300", host="loopback", max_runtime_seconds=1)
        done = await call(client, "wait_for_task", task_id=started["task_id"], timeout_seconds=20)
        assert (done["reason"], done["status"]["state"]) == ("exited", "killed")
        assert done["status"]["end_reason"] == "max_runtime_seconds (1 s) reached"
        assert alive([started["pid"]]) == []


async def test_a_backtracking_pattern_on_a_remote_log_is_refused_within_its_budget_and_others_go_on(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    line = "a" * 30 + "b"  # (a+)+$ against it backtracks for minutes in Python's re
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        slow = await call(
            client, "run_background_task", command=f"echo {line}; sleep 300", host="loopback", wait_for_pattern="b$"
        )
        other = await call(
            client, "run_background_task", command="echo other; sleep 300", host="loopback", wait_for_pattern="other"
        )
        answered: list[str] = []

        async def grep() -> None:
            message = await call_error(client, "get_task_status", task_id=slow["task_id"], grep="(a+)+$")
            answered.append("grep")
            assert message.startswith('grep="(a+)+$" is invalid: matching it took more than 2 s of CPU'), message
            assert "loopback" in message

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(grep)
                for _ in range(3):
                    status = await call(client, "get_task_status", task_id=other["task_id"])
                    assert status["output"] == "other\n"
                answered.append("status")
        assert answered == ["status", "grep"]
        with anyio.fail_after(30):
            waited = await call_error(
                client, "wait_for_task", task_id=slow["task_id"], output_pattern="(a+)+$", since=0, timeout_seconds=120
            )
        assert waited.startswith('output_pattern="(a+)+$" is invalid: matching it took more than 2 s'), waited
        assert (await call(client, "get_task_status", task_id=slow["task_id"], grep=r"b\z"))["grep_matches"] == 1
        for task in (slow, other):
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)


async def test_allowed_cwd_applies_on_the_remote_host_with_its_own_home(
    server_command: str, ssh_env: dict[str, str], sshd: Sshd, tmp_path: Path
) -> None:
    (sshd.directory / "home" / "proj").mkdir(exist_ok=True)
    root = tmp_path / "work"
    (root / "sub").mkdir(parents=True)
    policy = ("--allowed-cwd", str(root), "--allowed-cwd", "~/proj")
    async with connect(server_command, args=(*ALLOW, *policy), env=ssh_env) as client:
        for cwd in ("/etc", None, str(root / "sub" / ".." / "..")):
            arguments = {"cwd": cwd} if cwd else {}
            message = await call_error(client, "run_background_task", command="pwd", host="loopback", **arguments)
            assert message.startswith("refused by policy rule allowed_cwd: cwd "), message
            assert "on host loopback" in message and "~/proj" in message
        for cwd, where in ((str(root / "sub"), root / "sub"), ("~/proj", sshd.directory / "home" / "proj")):
            started = await call(client, "run_background_task", command="pwd", host="loopback", cwd=cwd)
            done = await call(client, "wait_for_task", task_id=started["task_id"], since=0, timeout_seconds=20)
            assert done["status"]["output"] == f"{where}\n"


async def test_a_relative_cwd_on_a_remote_host_is_taken_from_its_home_and_a_refusal_says_so(
    server_command: str, ssh_env: dict[str, str], sshd: Sshd
) -> None:
    """A relative cwd that did not exist on the host was refused without saying relative to what."""
    home = sshd.directory / "home"
    (home / "proj").mkdir(exist_ok=True)
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        message = await call_error(client, "run_background_task", command="pwd", host="loopback", cwd="nope/dir")
        started = await call(client, "run_background_task", command="pwd", host="loopback", cwd="proj")
        done = await call(client, "wait_for_task", task_id=started["task_id"], since=0, timeout_seconds=20)
    assert f"(a relative cwd is taken from the home directory there, {home})" in message, message
    assert done["status"]["output"] == f"{home / 'proj'}\n"


async def test_pruned_remote_tasks_lose_their_files_on_the_host_or_say_where_they_were_left(
    server_command: str, ssh_env: dict[str, str], sshd: Sshd, tmp_path: Path
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        older, newer = [await call(client, "run_background_task", command="echo x", host="loopback") for _ in "ab"]
        for task in (older, newer):
            await call(client, "wait_for_task", task_id=task["task_id"], timeout_seconds=20)
    # The CLI prunes the older one while the host cannot be reached: its files stay, and it says where.
    cut_off = tmp_path / "cut_off_config"
    cut_off.write_text(f"Host loopback\n  HostName 127.0.0.1\n  Port {free_port()}\n")
    env = os.environ | ssh_env | {"MCP_BACKGROUNDR_SSH_CONFIG": str(cut_off)}
    with anyio.fail_after(60):
        pruned = await anyio.run_process([server_command, "prune", "--keep", "1"], env=env)
    said = pruned.stdout.decode()
    assert "pruned 1 finished task(s)" in said
    assert f"left on host loopback ({older['log_path'].removesuffix('.log')}.*)" in said, said
    assert Path(older["log_path"]).exists()
    # A server that prunes the newer one at its start deletes its files on the host.
    async with connect(server_command, args=ALLOW, env=ssh_env | {"MCP_BACKGROUNDR_KEEP_FINISHED": "0"}) as client:

        async def deleted() -> bool:
            return not Path(newer["log_path"]).exists()

        await until(deleted, 30)
        assert (await call(client, "list_tasks", all=True))["tasks"] == []


async def test_a_remote_task_restarts_by_its_policy_and_its_last_exit_is_recorded(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command="echo run; exit 3", host="loopback", restart="on-failure",
            max_restarts=2,
        )  # fmt: skip
        done = await call(client, "wait_for_task", task_id=started["task_id"], since=0, timeout_seconds=30)
        assert done["reason"] == "exited"
        status = done["status"]
        assert (status["state"], status["exit_code"], status["restarts"]) == ("failed", 3, 2)
        assert status["output"].count("run\n") == 3  # beside the runner's line at each restart
        listed = await call(client, "list_tasks")
        assert [(t["task_id"], t["state"], t["exit_code"]) for t in listed["tasks"]] == [
            (started["task_id"], "failed", 3)
        ]


async def test_another_live_servers_remote_task_is_read_ended_and_recorded_by_its_owner(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with (
        connect(server_command, args=ALLOW, env=ssh_env) as owner,
        connect(server_command, args=ALLOW, env=ssh_env) as other,
    ):
        started = await call(
            owner, "run_background_task", command="echo up; sleep 300", host="loopback", wait_for_pattern="up"
        )
        task_id = started["task_id"]
        seen = await call(other, "get_task_status", task_id=task_id)
        assert (seen["state"], seen["output"], seen["host"], seen["host_reachable"]) == (
            "running",
            "up\n",
            "loopback",
            True,
        )
        listed = await call(other, "list_tasks", all=True)
        assert [(t["task_id"], t["state"]) for t in listed["tasks"]] == [(task_id, "running")]
        ended = await call(other, "end_background_task", task_id=task_id, grace_seconds=1)
        assert (ended["state"], ended["survivors"]) == ("killed", [])
        assert alive([started["pid"]]) == []

        async def recorded() -> bool:  # by its owner, which hears the exit through its watch
            rows = (await call(other, "list_tasks", all=True))["tasks"]
            return bool(rows[0]["state"] == "killed")

        await until(recorded, 20)


async def test_list_all_settles_a_remote_task_of_a_server_that_died_meanwhile(
    server_command: str, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with connect(server_command, args=ALLOW, env=ssh_env) as other:
        servers = set(psutil.Process().children())
        async with connect(server_command, args=ALLOW, env=ssh_env) as doomed:
            (server,) = set(psutil.Process().children()) - servers
            remote = await call(
                doomed, "run_background_task", command=f"echo up; read x < {gate}; exit 6", host="loopback",
                wait_for_pattern="up",
            )  # fmt: skip
            server.kill()
            with anyio.fail_after(5):
                while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(0.02)
        with open(gate, "w") as opened:
            opened.write("go\n")
        with anyio.fail_after(20):
            while alive([remote["pid"]]):
                await anyio.sleep(0.05)
        listed = await call(other, "list_tasks", all=True)
        assert [(t["task_id"], t["state"], t["exit_code"]) for t in listed["tasks"]] == [
            (remote["task_id"], "failed", 6)
        ]


async def test_a_remote_wait_on_a_log_capped_as_it_is_read_never_matches_a_line_it_did_not_write(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    # Only printable ASCII is written; a line read from a hole punched during the read (zeros,
    # shown as U+FFFD) would be the one a pattern for anything else matches.
    writer = "yes 'abcdefghijklmnopqrstuvwxyz 0123456789' | head -c 100000000; echo; echo written"
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        for _ in range(3):
            started = await call(
                client, "run_background_task", command=writer, host="loopback", max_log_bytes=64 * 1024
            )
            waited = await call(
                client, "wait_for_task", task_id=started["task_id"], output_pattern="[^ -~]", since=0,
                timeout_seconds=60,
            )  # fmt: skip
            assert waited["reason"] == "exited", waited["matched_line"]


ESCAPE_SECONDS = 313
"""An escaping child's sleep: a number no other test uses, to find it if it outlives its task."""


def _escaped() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", str(ESCAPE_SECONDS)]:
            found.append(process)
    return found


async def test_a_remote_child_that_drops_its_marker_and_session_is_ended_with_its_task(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """``env -i setsid`` leaves the task's session and its marker: the runner on the host is a
    child subreaper, so the child stays in its tree, and ending the task ends it."""
    # It ignores SIGTERM too: once the runner has ended, it must still be found to be SIGKILLed.
    command = f"env -i setsid sh -c 'trap \"\" TERM; exec sleep {ESCAPE_SECONDS}' & sleep 300"
    try:
        async with connect(server_command, args=ALLOW, env=ssh_env) as client:
            started = await call(client, "run_background_task", command=command, host="loopback")
            with anyio.fail_after(20):
                while not _escaped():
                    await anyio.sleep(0.05)
            status = await call(client, "get_task_status", task_id=started["task_id"])
            ended = await call(client, "end_background_task", task_id=started["task_id"], grace_seconds=1)
        assert status["process_count"] >= 3  # the shell, its sleep and the escaped sleep (and the runner)
        assert ended["survivors"] == []
        assert _escaped() == []
        assert ended["escalated"]
        assert ended["verified"] == (
            "no process in its session, below its runner or carrying its marker is left on loopback"
        )
    finally:
        for process in _escaped():
            process.kill()


async def test_grep_counts_a_line_longer_than_a_read_once_and_shows_its_match_on_a_host(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        await grep_a_line_longer_than_a_read(client, "loopback")


async def test_grep_honours_lines_as_the_last_matches_and_raw_on_a_host(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        await grep_with_lines_and_raw(client, "loopback")


async def test_a_pattern_means_on_a_host_what_it_means_here(server_command: str, ssh_env: dict[str, str]) -> None:
    """The agent matches with Python's re, which read RE2's [[:digit:]] as a set of '[:digt' then ']'
    (grep ^[[:digit:]]+$ gave 'd]]' remotely, '12345' here) and \\d as any Unicode digit (a new-user
    trial). Such syntax is translated; what cannot be (\\pL) is refused in one line."""
    command = "echo 12345; echo 'port: 8080'; echo 'd]]'; echo '\u0661\u0662\u0663'; echo 'a.b'"
    patterns = ("^[[:digit:]]+$", "[[:alpha:]]+: [[:digit:]]+", r"^\d+$", r"^\w+$", r"^[[:^digit:]]+$", r"\Qa.b\E")
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        answers: dict[str | None, list[str]] = {}
        for host in (None, "loopback"):
            task = await call(client, "run_background_task", command=command, host=host)
            await finished(client, task["task_id"])
            answers[host] = [
                (await call(client, "get_task_status", task_id=task["task_id"], grep=pattern))["output"]
                for pattern in patterns
            ]
        refusal = await call_error(client, "get_task_status", task_id=task["task_id"], grep=r"\pL")
    assert answers["loopback"] == answers[None], answers
    assert answers[None][:3] == ["1: 12345", "2: port: 8080", "1: 12345"], answers[None]
    assert "is valid for RE2 but means something else, or nothing, to Python's re on this host" in refusal


def _with_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A shell with two children started with ``pid`` (the pid of a runner that has ended), in a
    session of its own (which ``pid`` names too): the kernel is told the pid before it (as root), a
    few times over if another process took it first."""
    for _ in range(PID_TRIES):
        with open(NS_LAST_PID, "w") as last:
            last.write(str(pid - 1))
        shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
        if shell.pid == pid:
            return shell
        shell.kill()
        shell.wait()
    return None


async def test_a_finished_remote_task_whose_runner_pid_was_given_out_again_owns_nothing_of_it(
    server_command: str, ssh_env: dict[str, str]
) -> None:
    """A runner's pid, once it has ended, may be given to an unrelated process. The host took that
    process's children for the task's: list_tasks(state=running) showed the finished task with
    lingering=2 (its session and children taken for the task's), and ending it SIGTERMed them."""
    if not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip(f"{NS_LAST_PID} cannot be written (not root)")
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        task = await call(client, "run_background_task", command="true", host="loopback")
        await finished(client, task["task_id"])
        unrelated = _with_pid(task["pid"])
        if unrelated is None:
            pytest.skip(f"pid {task['pid']} was taken by other processes {PID_TRIES} times")
        shell = psutil.Process(unrelated.pid)

        async def both_children_started() -> bool:
            return len(shell.children()) == 2

        try:
            await until(both_children_started)
            children = [child.pid for child in shell.children()]
            running = await call(client, "list_tasks", state="running")
            ended = await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=1)
            still = alive([unrelated.pid, *children])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(unrelated.pid, signal.SIGKILL)
            unrelated.wait()
    assert running["tasks"] == [], running
    assert ended["signalled_pids"] == [], ended
    assert len(still) == 3, still
