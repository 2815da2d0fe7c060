"""End-to-end: a wait for a port is answered from the task's listening sockets, on any address,
without connecting to it, and goes on while what the task started lives on."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from mcp_backgroundr.platform.backend import PORTABLE

from .harness import call, connect

pytestmark = pytest.mark.anyio

ONE_CLIENT_SERVER = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
client, _ = server.accept()
print("first client sent", repr(client.recv(100)), flush=True)
"""
"""A server that serves one client and exits (a debug adapter, a language server in --port mode)."""


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_port_on_a_non_loopback_address_makes_the_task_ready(server_command: str) -> None:
    """Only 127.0.0.1 and ::1 were connected to: a server bound to another local address (127.0.0.2
    here, as a machine's own address or a wildcard of one family) was listed as listening on it while
    the wait for its port ran to its timeout, saying nothing of why."""
    port = _free_port("127.0.0.2")
    command = f"python3 -m http.server {port} --bind 127.0.0.2"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, wait_for_port=port, wait_timeout_seconds=10)
        waited = await call(client, "wait_for_task", task_id=task["task_id"], port=port, timeout_seconds=10)
    assert task["wait"]["reason"] == "port", task["wait"]
    assert waited["reason"] == "port", waited


async def test_a_one_client_server_is_not_taken_by_the_port_wait(server_command: str) -> None:
    """The wait connected to the port to see it accept: a server that serves one client took that
    probe for its client and exited, and the real client was refused."""
    port = _free_port()
    command = f"{sys.executable} -c '{ONE_CLIENT_SERVER}' {port}; sleep 300"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, wait_for_port=port, wait_timeout_seconds=10)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as editor:
            editor.sendall(b"initialize")
        said = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="first client", since=0, timeout_seconds=10
        )
    assert task["wait"]["reason"] == "port", task["wait"]
    assert said["matched_line"] == "first client sent b'initialize'", said


async def test_a_port_wait_that_times_out_says_who_holds_the_port(server_command: str, platform_backend: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        held = squatter.getsockname()[1]
        async with connect(server_command) as client:
            task = await call(client, "run_background_task", command="sleep 300")
            on_held = await call(client, "wait_for_task", task_id=task["task_id"], port=held, timeout_seconds=1)
            on_free = await call(client, "wait_for_task", task_id=task["task_id"], port=_free_port(), timeout_seconds=1)
    assert on_held["reason"] == "timeout"
    if platform_backend == PORTABLE:
        assert "whether another program holds the port is not known" in on_held["advice"], on_held["advice"]
    else:
        assert f"held by another program (pid {os.getpid()})" in on_held["advice"], on_held["advice"]
    assert on_free["reason"] == "timeout"
    assert "listens on port" in on_free["advice"], on_free["advice"]


async def test_a_server_started_with_an_ampersand_is_ready_when_it_listens(server_command: str) -> None:
    """`server &`: the shell exits at once and the server lives on. The start's wait_for_port gave up
    ('exited') when the shell exited, and so did a wait_for_task for the port it then listened on."""
    port = _free_port()
    command = f"python3 -m http.server {port} --bind 127.0.0.1 &"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, wait_for_port=port, wait_timeout_seconds=10)
        waited = await call(client, "wait_for_task", task_id=task["task_id"], port=port, timeout_seconds=10)
        await call(client, "end_background_task", task_id=task["task_id"])
    assert task["wait"]["reason"] == "port", task["wait"]
    assert waited["reason"] == "port", waited


async def test_a_listener_that_dropped_the_marker_makes_the_task_ready(server_command: str) -> None:
    """The portable backend's socket table lists only processes that carry a task's marker: a server
    started with `env -i` was shown listening by status while the wait for its port ran out, saying
    nothing listened (the linux backend reads the whole machine's table)."""
    port = _free_port()
    command = f"env -i {sys.executable} -m http.server {port} --bind 127.0.0.1"
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, wait_for_port=port, wait_timeout_seconds=10)
    assert task["wait"]["reason"] == "port", task["wait"]
