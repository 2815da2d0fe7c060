"""End-to-end: a client's text (a name, a command, a directory, a tool's name) shown in answers and
on the terminal adds no line and carries no control character: each is shown as its escape."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from .harness import call, call_error, cli, connect, text_of

CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""What may not reach a reader as it is: every control character but the line breaks that end
an answer's own lines (counted apart)."""
TRICKS = "\x1b[31mred\x1b[0m\x07\x08\x08\r\u202erev\u2028"
FORGED_ROW = "\nt00000000 running   pid=1 0.1s FAKE ROW"


def _clean(text: str) -> str:
    assert CONTROLS.search(text) is None, repr(text)
    return text


@pytest.mark.anyio
async def test_a_clients_text_adds_no_line_and_no_control_character_to_answers_or_the_terminal(
    server_command: str, tmp_path: Path
) -> None:
    """A name with a line break forged a row of list_tasks; ps passed ESC, BEL, backspaces and
    U+202E to the terminal; a cwd with a line break split the start's answer (a new-user trial)."""
    directory = tmp_path / f"dir{FORGED_ROW}{TRICKS}"
    directory.mkdir()
    command = f"sleep 300 # {TRICKS}{FORGED_ROW}"
    async with connect(server_command) as client:
        started = await client.call_tool("run_background_task", {"command": command, "cwd": str(directory)})
        assert _clean(text_of(started)).count("\n") == 0, text_of(started)
        task = started.structured_content
        assert task is not None and task["cwd"] == str(directory) and task["command"] == command
        listed = _clean(text_of(await client.call_tool("list_tasks", {})))
        status = _clean(text_of(await client.call_tool("get_task_status", {"task_id": task["task_id"]})))
        ps = await anyio.to_thread.run_sync(lambda: cli(server_command, "ps"))
        shown = await anyio.to_thread.run_sync(lambda: cli(server_command, "status", task["task_id"]))
        unknown = await client.call_tool(f"run{TRICKS}", {f"x{TRICKS}": 1})
        await call(client, "end_background_task", task_id=task["task_id"])
    assert len(listed.splitlines()) == 2 and "FAKE ROW" in listed.splitlines()[1], listed
    assert "\\x1b[31mred" in listed and "\\u202erev" in listed and "\\nt00000000" in listed
    assert status.splitlines()[0].endswith("\\u2028\\nt00000000 running   pid=1 0.1s FAKE ROW"), status
    assert len(_clean(ps.stdout).splitlines()) == 2, ps.stdout
    assert "cwd: " in _clean(shown.stdout) and "\\x1b[31mred" in shown.stdout, shown.stdout
    assert unknown.is_error and _clean(text_of(unknown)).count("\n") == 0


@pytest.mark.anyio
async def test_a_name_with_a_control_character_is_refused_in_one_line(server_command: str) -> None:
    """A name is a one-line label: with a line break, ESC or a bidirectional override it is refused
    (saying which character), not stored to be shown as something else."""
    async with connect(server_command) as client:
        for name in ("web\nt00000000 running FAKE", "\x1b[31mred", "\u202ertl", "tab\there"):
            message = _clean(await call_error(client, "run_background_task", command="true", name=name))
            assert message.startswith("name=") and "control character" in message, message
        assert (await call(client, "list_tasks"))["tasks"] == []
