"""End-to-end: talking to tasks through stdin and pseudo-terminals."""

from __future__ import annotations

import fcntl
import functools
import re
import struct
import termios
from pathlib import Path

import anyio
import pytest

from .harness import call, call_error, connect, finished, text_of, until

pytestmark = pytest.mark.anyio


async def test_cat_answers_what_it_is_sent_and_ends_when_stdin_closes(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat", stdin=True)
        sent = await call(client, "send_task_input", task_id=task["task_id"], text="hello cat")
        reply = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="hello", since=sent["cursor"]
        )
        closing = await call(client, "send_task_input", task_id=task["task_id"], text="bye", close=True)
        status = await finished(client, task["task_id"])
        after = await call_error(client, "send_task_input", task_id=task["task_id"], text="late")
    assert (sent["bytes_written"], sent["closed"]) == (10, False)
    assert reply["matched_line"] == "hello cat"
    assert closing["closed"] is True
    assert (status["state"], status["exit_code"], status["output"]) == ("completed", 0, "hello cat\nbye\n")
    assert "ended" in after


async def test_a_task_without_stdin_refuses_input(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        message = await call_error(client, "send_task_input", task_id=task["task_id"], text="x")
    assert "stdin=true" in message


async def test_input_a_task_does_not_read_is_a_clear_error_not_a_hang(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300", stdin=True)
        message = await call_error(client, "send_task_input", task_id=task["task_id"], text="x" * 1_000_000)
        status = await call(client, "get_task_status", task_id=task["task_id"])
    assert "not reading its input" in message
    assert status["state"] == "running"


async def test_under_a_pty_the_task_sees_a_terminal_and_colours_are_stripped_unless_raw(server_command: str) -> None:
    command = "python3 -c \"import sys; print(sys.stdout.isatty()); print('\\x1b[31mred\\x1b[0m')\""
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=command, pty=True)
        status = await finished(client, task["task_id"])
        raw = await call(client, "get_task_status", task_id=task["task_id"], raw=True)
    assert status["output"] == "True\nred\n"
    assert "\x1b[31mred\x1b[0m" in raw["output"]
    assert status["exit_code"] == 0


async def test_a_repl_in_a_pty_answers_and_can_be_interrupted(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="python3 -q -i", pty=True, wait_for_pattern="^>>> ")
        sent = await call(client, "send_task_input", task_id=task["task_id"], text="6*7")
        answer = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="^42", since=sent["cursor"]
        )
        sent = await call(client, "send_task_input", task_id=task["task_id"], text="import time; time.sleep(300)")
        await call(client, "send_task_input", task_id=task["task_id"], text="\u0003", newline=False)
        interrupted = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="KeyboardInterrupt", since=sent["cursor"]
        )
        # Its next prompt, before the end of input: a Ctrl-D that comes while readline switches the
        # terminal out of line mode can be lost in the switch (seen once, under load in CI).
        since = interrupted["matched_cursor"]
        await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="^>>> ", since=since)
        await call(client, "send_task_input", task_id=task["task_id"], text="", newline=False, close=True)
        status = await finished(client, task["task_id"])
    assert task["wait"]["reason"] == "pattern"
    assert answer["reason"] == "pattern"
    assert interrupted["reason"] == "pattern"
    assert status["state"] in ("completed", "failed")  # Ctrl-D ended it; python -i reports the last error
    assert status["kill_requested"] is False


async def test_closing_a_terminal_after_a_partial_line_still_ends_its_input(server_command: str) -> None:
    # Ctrl-D after unfinished text only hands that text over; a second one is end of input.
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat; echo end-of-input-read", pty=True)
        await call(client, "send_task_input", task_id=task["task_id"], text="part", newline=False)
        await call(client, "send_task_input", task_id=task["task_id"], text="ial", newline=False, close=True)
        read = await call(
            client, "wait_for_task", task_id=task["task_id"], output_pattern="end-of-input-read", since=0,
            timeout_seconds=10,
        )  # fmt: skip
        status = await finished(client, task["task_id"])
    assert read["reason"] == "pattern"
    assert "partial" in status["output"]
    assert (status["state"], status["exit_code"]) == ("completed", 0), status


CLOSED_AT_ONCE = 10
"""Before the fix about half of such closes ended the task by SIGHUP: all ten passing by luck is 1 in 1,000."""


async def test_a_terminal_closed_right_after_the_start_ends_the_task_by_end_of_input_not_by_hangup(
    server_command: str,
) -> None:
    """``cat`` closes its files at end of input and then exits; the server closed the terminal's
    master as soon as no process held the terminal, which hung it up and killed ``cat`` with SIGHUP
    before it could exit: recorded failed (129) instead of completed."""
    async with connect(server_command) as client:
        ended = []
        for _ in range(CLOSED_AT_ONCE):
            task = await call(client, "run_background_task", command="cat", pty=True)
            await call(client, "send_task_input", task_id=task["task_id"], text="", newline=False, close=True)
            ended.append(await finished(client, task["task_id"]))
    assert [(e["state"], e["exit_code"], e["signal"]) for e in ended] == [("completed", 0, None)] * CLOSED_AT_ONCE


ENDING_TASKS = 80
SENDS_PER_TASK = 8
ENDED = re.compile(
    r"task \S+ has ended( \(\w+\))?; it takes no more input"
    r"|the task closed its stdin after \d+ of \d+ bytes; it takes no more input"  # a pipe's reader exited
)


@pytest.mark.parametrize("pty", [True, False], ids=["pty", "pipe"])
async def test_input_sent_to_a_task_as_it_ends_is_written_or_refused_in_one_line_never_a_crash(
    server_command: str, pty: bool
) -> None:
    """The task's input was checked, then the call awaited (the log's size), and meanwhile the
    task's terminal closed: the write met no input at all and the call crashed (1 in 75 sends to
    ``echo hi`` on a terminal, 3 in 320 with 8 at once). Here the first line a task reads ends
    it, while the other sends are on their way: before the fix, 8 to 43 of the 640 answers on a
    terminal were the crash line or "has no open stdin: start tasks ... with pty=true", in every run."""
    answers: list[tuple[bool, str]] = []
    async with connect(server_command) as client:

        async def send(task_id: str) -> None:
            result = await client.call_tool("send_task_input", {"task_id": task_id, "text": "x"})
            answers.append((result.is_error, text_of(result)))

        async def start_and_send() -> None:
            task = await call(client, "run_background_task", command="read line", pty=pty, stdin=not pty)
            async with anyio.create_task_group() as sends:
                for _ in range(SENDS_PER_TASK):
                    sends.start_soon(send, task["task_id"])

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for _ in range(ENDING_TASKS):
                    group.start_soon(start_and_send)
    refused = [text for is_error, text in answers if is_error]
    unexpected = [text for text in refused if not ENDED.fullmatch(text)]
    assert len(answers) == ENDING_TASKS * SENDS_PER_TASK
    assert not unexpected, (len(unexpected), unexpected[:3])


def _bytes_waiting_in_stdin(pid: int) -> int:
    """How much of what was written to a process's stdin pipe it has not read yet."""
    with open(f"/proc/{pid}/fd/0", "rb", buffering=0) as pipe:  # another reader of the same pipe; it reads nothing
        waiting: int = struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"))[0]
    return waiting


async def test_sends_queued_behind_one_a_task_does_not_read_are_refused_in_the_same_time(server_command: str) -> None:
    """Sends to one task go one at a time, each waiting up to 5 s for the task to read: the third of
    three waited 10 s for its turn, then 5 s more, and a queue of ten outlasted the bound on requests
    without a progress token. A send now waits for its turn as long as a write waits for room."""
    messages: list[str] = []
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300", stdin=True)

        async def send() -> None:
            messages.append(await call_error(client, "send_task_input", task_id=task["task_id"], text="x" * 200_000))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(send)
    assert len(messages) == 3 and all("not reading its input" in message for message in messages), messages
    assert any("the sends before this one waited" in message for message in messages), messages


@pytest.mark.parametrize("keep_running", [False, True], ids=["pipe", "input-home"])
async def test_a_send_waiting_for_room_ends_when_another_call_closes_the_input(
    server_command: str, tmp_path: Path, keep_running: bool
) -> None:
    """A send waiting for a task to read went on waiting after another call closed the input (its own
    copy of the pipe kept it open, so the task saw no end of input either), then blamed the task for
    not reading: 'the task is not reading its input ... in 5s'."""
    go = tmp_path / "go"
    async with connect(server_command) as client:
        task = await call(
            client,
            "run_background_task",
            command=f"while [ ! -e {go} ]; do sleep 0.02; done; wc -c; echo end of input",
            stdin=True,
            keep_running=keep_running,
        )
        message = ""
        async with anyio.create_task_group() as group:

            async def send_more_than_a_pipe_holds() -> None:
                nonlocal message
                message = await call_error(client, "send_task_input", task_id=task["task_id"], text="x" * 200_000)

            group.start_soon(send_more_than_a_pipe_holds)
            await until(lambda: _full(task["pid"]))
            closed = await call(client, "send_task_input", task_id=task["task_id"], text="", newline=False, close=True)
        go.touch()
        # Its end, not its last line: a keep_running task that ends after its server left keeps its
        # empty cgroup until someone learns that it ended (README, Containment).
        ended = await call(client, "wait_for_task", task_id=task["task_id"], since=0, timeout_seconds=30)
    assert closed["closed"] is True
    assert "another call closed" in message and "of 200001 bytes" in message, message
    assert ended["reason"] == "exited" and "end of input" in ended["status"]["output"], ended


async def _full(pid: int) -> bool:
    return _bytes_waiting_in_stdin(pid) >= 65536


async def test_sends_that_arrive_together_each_reach_the_task_whole(server_command: str) -> None:
    """Two sends of more than a pipe holds, sent at once to one task, were written in turns as the
    task read, so the task read them interleaved while both answers said every byte was written."""
    size = 200_000
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="cat", stdin=True)
        async with anyio.create_task_group() as group:
            for letter in "AB":
                group.start_soon(
                    functools.partial(call, client, "send_task_input", task_id=task["task_id"], text=letter * size)
                )
        log = Path(task["log_path"])
        await until(lambda: _holds(log, 2 * size + 2))
        await call(client, "end_background_task", task_id=task["task_id"])
    assert sorted(log.read_text().splitlines()) == ["A" * size, "B" * size]


async def _holds(log: Path, size: int) -> bool:
    return log.stat().st_size >= size


async def test_a_line_longer_than_a_terminal_holds_is_refused_not_cut(server_command: str) -> None:
    """A terminal in line mode holds 4095 bytes of a line and drops the rest: a send of 5,000 answered
    'wrote 5001 bytes' while the program read 4095."""
    reader = "python3 -c \"import sys; print('LEN', len(sys.stdin.readline().rstrip(chr(10))))\""
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command=reader, pty=True)
        message = await call_error(client, "send_task_input", task_id=task["task_id"], text="y" * 5000)
        unfinished = await call(client, "send_task_input", task_id=task["task_id"], text="y" * 4000, newline=False)
        over = await call_error(client, "send_task_input", task_id=task["task_id"], text="y" * 100)
        await call(client, "send_task_input", task_id=task["task_id"], text="y" * 95)
        read = await call(client, "wait_for_task", task_id=task["task_id"], output_pattern="^LEN", since=0)
    assert "4095" in message and "stdin=true" in message, message
    assert unfinished["bytes_written"] == 4000
    assert "4100" in over, over
    assert read["matched_line"] == "LEN 4095"
