"""End-to-end: a remote host that hangs (its sshd SIGSTOPped: the connection stays open, the peer
answers nothing), through the real server and the CLI against the tests' real sshd."""

from __future__ import annotations

import os
import time

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from .harness import call, call_error, connect
from .sshd import Sshd, frozen

pytestmark = pytest.mark.anyio

ALLOW = ("serve", "--allowed-ssh-host", "loopback")
UNREACHABLE_WITHIN_SECONDS = 40.0
"""Bounds each call or command below while the host hangs (a quick call's own bound is 13 s)."""


async def test_status_resource_and_cli_keep_what_the_host_last_told_while_it_hangs(
    server_command: str, sshd: Sshd, ssh_env: dict[str, str]
) -> None:
    env = os.environ | ssh_env
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command="echo hello-log; sleep 100", host="loopback",
            wait_for_pattern="hello",
        )  # fmt: skip
        task_id = started["task_id"]
        seen = await call(client, "get_task_status", task_id=task_id)
        assert (seen["cursor"], seen["output_bytes"], seen["host_reachable"]) == (10, 10, True)
        try:
            with frozen(sshd), anyio.fail_after(UNREACHABLE_WITHIN_SECONDS * 3):
                known = await call(client, "get_task_status", task_id=task_id)
                onward = await call(client, "get_task_status", task_id=task_id, since=known["cursor"])
                with pytest.raises(MCPError) as unread:
                    await client.read_resource(f"task://{task_id}/log")
                shown = await anyio.run_process([server_command, "status", task_id], env=env, check=False)
        finally:
            await call(client, "end_background_task", task_id=task_id, grace_seconds=1)
    # The last known size and cursor (the output did not vanish), processes unknown (not none).
    assert (known["host_reachable"], known["cursor"], known["output_bytes"]) == (False, 10, 10), known
    assert known["process_count"] is None
    assert (onward["cursor"], onward["output_bytes"], onward["output"]) == (10, 10, "")
    assert "cannot be reached" in str(unread.value), unread.value
    printed = shown.stdout.decode()
    assert "output_bytes: 10" in printed and "process_count" not in printed, printed


async def test_calls_keep_their_bound_while_the_host_hangs(
    server_command: str, sshd: Sshd, ssh_env: dict[str, str]
) -> None:
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client,
            "run_background_task",
            command="echo up; sleep 100",
            host="loopback",
            wait_for_pattern="up",
            stdin=True,
        )
        task_id = started["task_id"]
        took: dict[str, float] = {}
        try:
            with frozen(sshd), anyio.fail_after(UNREACHABLE_WITHIN_SECONDS * 3):
                # The first call outlasts the master connection (it gives a silent peer up after 6-9 s):
                # the others start a new one, whose handshake the frozen sshd never answers.
                for tool, arguments, bound in (
                    ("send_task_input", {"text": "x"}, 10 + 3),
                    ("wait_for_task", {"timeout_seconds": 3, "output_pattern": "never"}, 3 + 3),
                    ("end_background_task", {"grace_seconds": 1}, 1 + 2 * 2 + 1 + 3),  # grace, kill waits, scans
                    ("get_task_status", {"grep": "up"}, 10 + 3),
                ):
                    began = time.monotonic()
                    message = await call_error(client, tool, task_id=task_id, **arguments)
                    took[tool] = time.monotonic() - began
                    assert message.startswith("host loopback:"), message
                    assert took[tool] < bound + 1, (tool, took)  # its own bound, not a second one after it
        finally:
            await call(client, "end_background_task", task_id=task_id, grace_seconds=1)


async def test_the_command_line_on_a_hung_host_says_so_in_one_line(
    server_command: str, sshd: Sshd, ssh_env: dict[str, str]
) -> None:
    env = os.environ | ssh_env
    async with connect(server_command, args=ALLOW, env=ssh_env) as client:
        started = await call(
            client, "run_background_task", command="echo up; sleep 100", host="loopback", wait_for_pattern="up"
        )
        task_id = started["task_id"]
        try:
            async with await anyio.open_process([server_command, "logs", "-f", task_id], env=env) as follow:
                assert follow.stdout is not None and follow.stderr is not None
                with anyio.fail_after(UNREACHABLE_WITHIN_SECONDS):
                    assert await follow.stdout.receive() == b"up\n"  # it follows: its wait is under way
                with frozen(sshd), anyio.fail_after(UNREACHABLE_WITHIN_SECONDS * 3):
                    followed = b"".join([chunk async for chunk in follow.stderr]).decode()
                    await follow.wait()
                    once = await anyio.run_process([server_command, "logs", task_id], env=env, check=False)
        finally:
            await call(client, "end_background_task", task_id=task_id, grace_seconds=1)
    assert follow.returncode == 1
    assert followed.count("\n") == 1 and "no message" not in followed, followed
    assert any(said in followed for said in ("did not answer", "no answer within", "timed out")), followed
    said = once.stderr.decode()
    assert once.returncode == 1 and said.count("\n") == 1, said
    assert "cannot be reached" in said and said.count("again") == 1 and said.count("last answered") <= 1, said
