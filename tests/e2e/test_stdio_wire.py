"""The stdio wire, served on the event loop when stdin and stdout are pipes (``tools/pipes.py``) and
by the SDK's transport otherwise: both read lines as the SDK does and answer every request."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..disks import fill_disk
from ..reliability.rawwire import ANSWER_SECONDS, RawServer
from .harness import alive, heavy_call

MIB = 1024 * 1024


def _ping(request_id: int, pad: str = "") -> bytes:
    message = {"jsonrpc": "2.0", "id": request_id, "method": "ping", "params": {"_meta": {"pad": pad}}}
    return json.dumps(message).encode()


def test_a_line_of_several_mebibytes_is_read_whole(server_command: str) -> None:
    with RawServer(server_command) as server:
        server.initialize()
        server.send(_ping(1, "x" * (3 * MIB)))
        assert server.answer() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert server.request("ping")["result"] == {}


def test_crlf_and_a_lone_cr_end_a_line_as_they_do_for_the_sdk(server_command: str) -> None:
    with RawServer(server_command) as server:
        server.initialize()
        server.send(_ping(1) + b"\r" + _ping(2) + b"\r\n")
        assert [server.answer()["id"], server.answer()["id"]] == [1, 2]


def test_bytes_that_are_not_utf8_are_replaced_not_refused(server_command: str) -> None:
    with RawServer(server_command) as server:
        server.initialize()
        server.send(_ping(1).replace(b'"pad": ""', b'"pad": "\xff\xfe"'))
        assert server.answer() == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_answers_wait_for_a_client_that_reads_slowly(server_command: str) -> None:
    """Forty tool lists (about 1.5 MB) asked for at once, before any is read: far more than a pipe
    holds, so the server must wait for the client to read, and lose nothing."""
    with RawServer(server_command) as server:
        server.initialize()
        for request_id in range(40):
            server.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode())
        answers = [server.answer() for _ in range(40)]
        assert [answer["id"] for answer in answers] == list(range(40))
        assert all(len(answer["result"]["tools"]) == len(answers[0]["result"]["tools"]) > 5 for answer in answers)


def test_a_file_on_stdin_is_served_too(server_command: str, tmp_path: Path) -> None:
    """stdin from a file (not a pipe: the event loop cannot wait on it) is read by the SDK's transport."""
    requests = tmp_path / "requests.jsonl"
    initialize = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "file", "version": "1"}}
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    with requests.open("rb") as stdin:
        done = subprocess.run([server_command], stdin=stdin, capture_output=True, timeout=ANSWER_SECONDS, check=True)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [answer.get("id") for answer in answers] == [1, 2, None]
    assert answers[1]["result"] == {} and answers[2]["error"]["code"] == -32700


def test_a_client_that_closes_the_servers_stdout_first_is_a_client_that_left(
    server_command: str, tmp_path: Path
) -> None:
    """A client may close its end of the server's stdout before its stdin. The next answer finds
    no reader: that is the client leaving, as a closed stdin is: the server ends its tasks, records
    them, and exits 0 with one line on stderr. Before, it exited 1 with a traceback."""
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr, RawServer(server_command, stderr=stderr) as server:
        server.initialize()
        arguments = {"name": "run_background_task", "arguments": {"command": "sleep 300"}}
        started = server.request("tools/call", arguments)["result"]["structuredContent"]
        assert server.process.stdout is not None
        server.process.stdout.close()
        server.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode())
        returncode = server.process.wait(ANSWER_SECONDS)
    said = errors.read_text()
    assert returncode == 0, said
    assert "Traceback" not in said and "closed the server's stdout" in said, said
    _assert_ended_and_recorded(server_command, started)


def _assert_ended_and_recorded(server_command: str, started: dict[str, Any]) -> None:
    listed = subprocess.run([server_command, "ps", "-a"], capture_output=True, text=True, timeout=ANSWER_SECONDS)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(started["task_id"]))
    assert "killed" in row, listed.stdout
    assert not alive([started["pid"]])


def _handshake_and_a_task() -> list[bytes]:
    """The handshake and a task started (request 2), to be sent in one go."""
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    call = {"name": "run_background_task", "arguments": {"command": "sleep 300"}}
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call},
    ]
    return [json.dumps(message).encode() for message in messages]


def _start_task(server: RawServer) -> None:
    """The handshake and a task started; the answers go where the server's stdout is."""
    for request in _handshake_and_a_task():
        server.send(request)


def _started(answer_lines: list[bytes]) -> dict[str, Any]:
    answer = json.loads(answer_lines[1])
    assert answer["id"] == 2, answer
    started: dict[str, Any] = answer["result"]["structuredContent"]
    return started


def _one_line_without_traceback(said: str, reason: str) -> None:
    assert "Traceback" not in said and reason in said, said
    assert len([line for line in said.splitlines() if reason in line]) == 1, said


def test_a_full_disk_under_a_stdout_file_ends_the_server_and_its_tasks_with_one_line(
    server_command: str, tmp_path: Path, small_spare_disk: Path
) -> None:
    """stdout a file (served by the SDK's transport): once the disk under it is full, an answer
    cannot be written. Before, the write error went unseen while the server waited for stdin,
    which the client kept open: it hung, then exited 1 with a traceback once stdin ended. Now it
    ends its tasks, records them, and exits 1 with one line saying why, stdin still open."""
    answers, errors = small_spare_disk / "answers.jsonl", tmp_path / "stderr"
    with answers.open("wb") as stdout, errors.open("wb") as stderr, RawServer(server_command, stderr, stdout) as server:
        _start_task(server)
        deadline = time.monotonic() + ANSWER_SECONDS
        while len(answers.read_bytes().splitlines()) < 2:
            assert time.monotonic() < deadline and server.process.poll() is None, errors.read_text()
            time.sleep(0.02)
        started = _started(answers.read_bytes().splitlines())
        fill_disk(small_spare_disk)
        server.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode())
        returncode = server.process.wait(ANSWER_SECONDS)
    said = errors.read_text()
    assert returncode == 1, said
    _one_line_without_traceback(said, "cannot write answers to stdout (No space left on device)")
    _assert_ended_and_recorded(server_command, started)


def test_a_terminal_on_stdout_that_is_closed_is_a_client_that_left(server_command: str, tmp_path: Path) -> None:
    """stdout a terminal whose other side is closed: writing fails (EIO). Before, the server hung
    on stdin as above; now the client has left, as when it closes a pipe: tasks ended, exit 0."""
    controller, terminal = pty.openpty()
    errors = tmp_path / "stderr"
    try:
        with errors.open("wb") as stderr, RawServer(server_command, stderr, terminal) as server:
            os.close(terminal)
            terminal = -1
            _start_task(server)
            started = _started(_terminal_lines(controller, 2))
            os.close(controller)
            controller = -1
            server.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode())
            returncode = server.process.wait(ANSWER_SECONDS)
    finally:
        for descriptor in (controller, terminal):
            if descriptor >= 0:
                os.close(descriptor)
    said = errors.read_text()
    assert returncode == 0, said
    _one_line_without_traceback(said, "the terminal on the server's stdout was closed")
    _assert_ended_and_recorded(server_command, started)


def _terminal_lines(controller: int, count: int) -> list[bytes]:
    """The first ``count`` lines the server wrote to its terminal (bounded wait)."""
    received = b""
    deadline = time.monotonic() + ANSWER_SECONDS
    while received.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, received
        if select.select([controller], [], [], remaining)[0]:
            received += os.read(controller, 1 << 16)
    return [line.rstrip(b"\r") for line in received.split(b"\n")[:count]]


INVALID_IDS = [{"a": 1}, 1.5, None, True, [1]]
"""A request's id is a string or an integer (JSON-RPC 2.0); the validator took a message with any
other id (and a method) for a notification, which gets no answer: the client waited forever."""


def _with_id(request_id: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode()


def test_a_request_with_an_invalid_id_is_answered_invalid_request(server_command: str) -> None:
    with RawServer(server_command) as server:
        server.initialize()
        for request_id in INVALID_IDS:
            server.send(_with_id(request_id))
            answer = server.answer()
            assert (answer["id"], answer["error"]["code"]) == (None, -32600), (request_id, answer)
        assert server.request("ping")["result"] == {}


def test_a_request_with_an_invalid_id_is_answered_with_a_file_on_stdin_too(server_command: str, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    initialize = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "file", "version": "1"}}
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize}).encode(),
        b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}',
        *(_with_id(request_id) for request_id in INVALID_IDS),
    ]
    requests.write_bytes(b"".join(line + b"\n" for line in lines))
    with requests.open("rb") as stdin:
        done = subprocess.run([server_command], stdin=stdin, capture_output=True, timeout=ANSWER_SECONDS, check=True)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    refused = [answer for answer in answers if "error" in answer]
    assert sorted(answer["id"] for answer in answers if "result" in answer) == [1, 2], answers
    assert [(answer["id"], answer["error"]["code"]) for answer in refused] == [(None, -32600)] * len(INVALID_IDS)


def test_one_socket_for_stdin_and_stdout_is_served_to_the_end(server_command: str, tmp_path: Path) -> None:
    """One socket on both stdin and stdout, as socat's EXEC (a socketpair) and inetd-style socket
    activation give. Before, the event loop's write side took the client's second message for the
    client closing the server's stdout: the server ended its tasks and left without answering."""
    client, served = socket.socketpair()
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr:
        server = subprocess.Popen([server_command], stdin=served.fileno(), stdout=served.fileno(), stderr=stderr)
    served.close()
    client.settimeout(ANSWER_SECONDS)
    try:
        with client.makefile("rwb") as wire:
            for request in _handshake_and_a_task():
                wire.write(request + b"\n")
            wire.flush()
            started = _started([wire.readline(), wire.readline()])
            wire.write(_ping(3) + b"\n")
            wire.flush()
            assert json.loads(wire.readline()) == {"jsonrpc": "2.0", "id": 3, "result": {}}
    finally:
        client.close()
        try:
            returncode = server.wait(ANSWER_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()  # (its tasks: the leak check names them)
            server.wait(ANSWER_SECONDS)
            raise
    said = errors.read_text()
    assert returncode == 0, said
    _one_line_without_traceback(said, "client closed stdin")
    _assert_ended_and_recorded(server_command, started)


def test_tool_arguments_that_are_not_an_object_are_answered_with_what_to_send(server_command: str) -> None:
    """`arguments` as a list or a string got -32602 "Invalid request parameters" with empty data: a
    client cannot tell what it sent wrong (a new-user trial)."""
    with RawServer(server_command) as server:
        server.initialize()
        for arguments in ([1, 2], "hello", 3):
            answer = server.request("tools/call", {"name": "list_tasks", "arguments": arguments})
            error = answer["error"]
            assert error["code"] == -32602, answer
            assert "arguments" in error["message"] and "object" in error["message"], answer
            assert "\n" not in error["message"], answer
        assert "result" in server.request("tools/call", {"name": "list_tasks", "arguments": {}})


def _calls_then_end_of_input(requests: list[tuple[str, dict[str, Any]]]) -> bytes:
    """The handshake, then a tools/call per request (ids 2, 3, ...), as one client writes them
    before it closes the server's stdin (``printf ... | mcp-backgroundr``, a file on stdin)."""
    initialize = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "pipe", "version": "1"}}
    lines: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    for request_id, (tool, arguments) in enumerate(requests, start=2):
        call = {"name": tool, "arguments": arguments}
        lines.append({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call})
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


QUICK_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("run_background_task", {"command": "echo piped", "name": "piped"}),
    ("list_tasks", {}),
    ("list_tasks", {"all": True}),
    ("list_tasks", {"state": "running"}),
]
"""Calls a server may answer in any order (it serves requests at once, as MCP allows)."""


def _answers_by_id(stdout: bytes) -> dict[int, dict[str, Any]]:
    answers = [json.loads(line) for line in stdout.splitlines()]
    return {answer["id"]: answer for answer in answers}


def _assert_each_call_answered(answers: dict[int, dict[str, Any]]) -> None:
    assert sorted(answers) == [1, 2, 3, 4, 5], answers
    for request_id in (2, 3, 4, 5):
        assert "result" in answers[request_id], answers[request_id]
        assert answers[request_id]["result"]["isError"] is False, answers[request_id]
    assert "started task" in answers[2]["result"]["content"][0]["text"]


def test_calls_written_before_stdin_ends_are_answered_on_a_pipe(server_command: str) -> None:
    """Requests read before the end of stdin are answered before the server leaves: the SDK cancelled
    them at the end of its input, and a call piped in got "Connection closed" or no answer at all."""
    done = subprocess.run(
        [server_command], input=_calls_then_end_of_input(QUICK_CALLS), capture_output=True, timeout=ANSWER_SECONDS
    )
    assert done.returncode == 0, done.stderr
    _assert_each_call_answered(_answers_by_id(done.stdout))


def test_calls_in_a_file_on_stdin_are_answered(server_command: str, tmp_path: Path) -> None:
    """The same through the SDK's transport (a file on stdin), which reads the whole file at once."""
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(_calls_then_end_of_input(QUICK_CALLS))
    with requests.open("rb") as stdin:
        done = subprocess.run([server_command], stdin=stdin, capture_output=True, timeout=ANSWER_SECONDS)
    assert done.returncode == 0, done.stderr
    _assert_each_call_answered(_answers_by_id(done.stdout))


def test_a_call_still_running_when_stdin_ends_is_answered_with_why_within_the_grace(server_command: str) -> None:
    """A wait the client will not see the end of is answered, saying why, once the grace after the end
    of stdin has passed; what came before it is answered in full, and the server then ends its tasks."""
    never_ready = {"command": "sleep 60", "wait_for_pattern": "never written", "wait_timeout_seconds": 40}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("list_tasks", {}),
        ("run_background_task", never_ready),
        ("list_tasks", {"all": True}),
    ]
    began = time.monotonic()
    done = subprocess.run(
        [server_command], input=_calls_then_end_of_input(calls), capture_output=True, timeout=ANSWER_SECONDS
    )
    took = time.monotonic() - began
    answers = _answers_by_id(done.stdout)
    assert done.returncode == 0, done.stderr
    assert sorted(answers) == [1, 2, 3, 4], answers
    assert answers[2]["result"]["isError"] is False and answers[4]["result"]["isError"] is False, answers
    error = answers[3]["error"]
    assert error["code"] == -32000 and "ended the server's stdin" in error["message"], error
    assert "\n" not in error["message"]
    assert took < 20, f"the server took {took:.1f} s to leave with a wait in flight"
    assert "ended 1 task(s)" in done.stderr.decode(), done.stderr


def test_a_call_the_client_cancelled_is_not_answered_when_stdin_ends(server_command: str) -> None:
    """A cancelled request gets no answer (the protocol's rule), at the end of stdin too; and a
    cancellation whose request id is not an id (an object) costs the server nothing."""
    never_ready = {"command": "sleep 60", "wait_for_pattern": "never written", "wait_timeout_seconds": 40}
    lines = _calls_then_end_of_input([("run_background_task", never_ready)])
    for request_id in ({"not": "an id"}, [2], 2):
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        lines += json.dumps(cancel).encode() + b"\n"
    lines += _ping(3) + b"\n"
    done = subprocess.run([server_command], input=lines, capture_output=True, timeout=ANSWER_SECONDS)
    answers = _answers_by_id(done.stdout)
    assert done.returncode == 0, done.stderr
    assert answers.get(3) == {"jsonrpc": "2.0", "id": 3, "result": {}}, answers
    assert "ended the server's stdin" not in json.dumps(answers.get(2)), answers
    assert b"Traceback" not in done.stderr, done.stderr


BEFORE_INITIALIZE = "was sent before initialize: send the initialize request first, then notifications/initialized"


def test_a_request_before_initialize_is_told_to_send_initialize_first(server_command: str, tmp_path: Path) -> None:
    """tools/list, tools/call and resources/list sent before the handshake got -32602 "Invalid
    request parameters" with empty data (a new-user trial); on a pipe and from a file alike they now
    say to send initialize first, and are served once it is sent."""
    early = [("tools/list", None), ("tools/call", {"name": "list_tasks", "arguments": {}}), ("resources/list", {})]
    with RawServer(server_command) as server:
        for method, params in early:
            error = server.request(method, params)["error"]
            assert (
                error["code"] == -32602 and error["message"] == f"{method} {BEFORE_INITIALIZE}, then this request again"
            )
        assert server.request("ping")["result"] == {}
        server.initialize()
        assert server.request("tools/call", {"name": "list_tasks", "arguments": {}})["result"]["isError"] is False
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}) + "\n")
    with requests.open("rb") as stdin:
        done = subprocess.run([server_command], stdin=stdin, capture_output=True, timeout=ANSWER_SECONDS, check=True)
    assert BEFORE_INITIALIZE in json.loads(done.stdout)["error"]["message"], done.stdout


def test_a_2026_request_without_its_envelope_is_told_what_the_envelope_holds(server_command: str) -> None:
    """The 2026-07-28 protocol has no handshake: a request without the envelope is told what it lacks,
    not to send initialize."""
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    with RawServer(server_command) as server:
        assert "tools" in server.request("tools/list", {"_meta": envelope})["result"]
        message = server.request("tools/list")["error"]["message"]
        assert "io.modelcontextprotocol/protocolVersion" in message and "initialize" not in message, message


def test_a_message_too_heavy_to_parse_is_refused_with_its_id_before_it_is_parsed(server_command: str) -> None:
    """Parsing holds the interpreter whatever thread runs it: 4 MiB of nested empty arrays held the
    event loop 2.9 s (and over HTTP the SDK parses a body once more). A message with far more arrays,
    objects or values than any request needs is refused unparsed, with its id when it has one."""
    with RawServer(server_command) as server:
        server.initialize()
        for request_id, id_last, answered_id in ((5, False, 5), ("late", True, "late"), (10**19 + 5, False, None)):
            server.send(heavy_call(request_id, id_last=id_last))
            answer = server.answer()
            assert answer["id"] == answered_id and answer["error"]["code"] == -32600, answer
            assert "is not read" in answer["error"]["message"] and "\n" not in answer["error"]["message"]
        numbers = (
            b'{"jsonrpc": "2.0", "id": 6, "method": "ping", "params": {"_meta": {"n": [' + b"1," * 300_000 + b"1]}}}"
        )
        server.send(numbers)
        assert server.answer()["error"]["code"] == -32600
        assert server.request("ping")["result"] == {}


def test_big_messages_a_request_needs_are_not_taken_for_heavy(server_command: str, tmp_path: Path) -> None:
    """Brackets and commas inside text are not the message's structure: a JSON document sent as input,
    and a command of 10,000 arguments, are served as before."""
    document = json.dumps([{"k": [i, i]} for i in range(100_000)])
    with RawServer(server_command) as server:
        server.initialize()
        started = server.request(
            "tools/call", {"name": "run_background_task", "arguments": {"command": "wc -c", "stdin": True}}
        )
        task_id = started["result"]["structuredContent"]["task_id"]
        sent = server.request(
            "tools/call",
            {"name": "send_task_input", "arguments": {"task_id": task_id, "text": document, "close": True}},
        )
        assert sent["result"]["isError"] is False, sent
        argv = ["sh", "-c", 'echo "$#"', "sh", *(f"a{i}" for i in range(10_000))]
        counted = server.request(
            "tools/call",
            {"name": "run_background_task", "arguments": {"command": argv, "wait_for_pattern": "^[0-9]+$"}},
        )
        assert counted["result"]["isError"] is False, counted
        assert "10000" in json.dumps(counted["result"]["structuredContent"]["wait"]), counted


def test_a_message_too_heavy_to_parse_is_refused_from_a_file_on_stdin_too(server_command: str, tmp_path: Path) -> None:
    """The SDK's transport (a file on stdin) reads its lines through the same weighing."""
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(_calls_then_end_of_input([]) + heavy_call(4) + b"\n" + _ping(5) + b"\n")
    with requests.open("rb") as stdin:
        done = subprocess.run([server_command], stdin=stdin, capture_output=True, timeout=ANSWER_SECONDS)
    answers = _answers_by_id(done.stdout)
    assert answers[4]["error"]["code"] == -32600 and "is not read" in answers[4]["error"]["message"], answers
    assert answers[5]["result"] == {}, answers


def test_json_nested_too_deep_is_said_to_be_so_and_the_server_goes_on(server_command: str) -> None:
    """A valid line nested 100,000 levels deep was answered "Parse error: not valid JSON" (a new-user
    trial; one that long is now too heavy to parse, above); one light enough to parse is said to be
    nested too deep."""
    deep = b"[" * 1000 + b"]" * 1000
    line = (
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_tasks","arguments":{"x":' + deep + b"}}}"
    )
    with RawServer(server_command) as server:
        server.initialize()
        server.send(line)
        error = server.answer()["error"]
        assert error["code"] == -32700 and "nested too deep (more than 200 levels" in error["message"], error
        assert server.request("ping")["result"] == {}


def test_tool_arguments_that_are_not_an_object_are_answered_with_what_to_send_from_a_file_too(
    server_command: str, tmp_path: Path
) -> None:
    """A file on stdin (read by the SDK's transport) got the SDK's "Invalid request parameters" with
    empty data for what a pipe was told plainly."""
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(_calls_then_end_of_input([("list_tasks", 5)]))  # type: ignore[list-item]
    with requests.open("rb") as stdin:
        done = subprocess.run([server_command], stdin=stdin, capture_output=True, timeout=ANSWER_SECONDS)
    error = _answers_by_id(done.stdout)[2]["error"]
    assert (
        error["message"] == "Invalid params: tools/call's arguments is a JSON object of names to values, not a number"
    )


def test_answers_still_being_handed_to_a_file_on_stdout_when_stdin_ends_are_all_written(
    server_command: str, tmp_path: Path
) -> None:
    """A request's answer waiting for the writer (busy with the answers before it) when stdin ended
    counted as answered, and the SDK then cancelled the handler that held it: the answer was lost
    (1 request in 15 of a file on stdin, under load). Forty tool lists, 40 kB each, written to a file
    as fast as they come, keep the writer busy at the end of input."""
    requests = tmp_path / "requests.jsonl"
    lists = b"".join(
        json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/list"}).encode() + b"\n" for i in range(2, 42)
    )
    requests.write_bytes(_calls_then_end_of_input([]) + lists)
    answers = tmp_path / "answers.jsonl"
    with requests.open("rb") as stdin, answers.open("wb") as stdout:
        done = subprocess.run(
            [server_command], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=ANSWER_SECONDS
        )
    assert done.returncode == 0, done.stderr
    assert sorted(_answers_by_id(answers.read_bytes())) == list(range(1, 42))
