"""End-to-end: arguments as models and real clients send them are taken, not refused.

``null`` for an optional field is its default; a number or boolean where text is
expected is its JSON text (the Inspector CLI reads every ``--tool-arg`` as JSON);
enum values forgive case and separators; ``command`` may be an argv list. What
stays refused is refused in JSON terms, and unknown names get the likely one.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import psutil
import pytest
from mcp import Client
from mcp_types import TextResourceContents

from .harness import call, call_error, connect, finished, text_of, until

pytestmark = pytest.mark.anyio


async def _optional_fields(client: Client) -> dict[str, set[str]]:
    tools = (await client.list_tools()).tools
    return {t.name: set(t.input_schema["properties"]) - set(t.input_schema.get("required", [])) for t in tools}


async def test_null_means_the_default_for_every_optional_field_of_every_tool(server_command: str) -> None:
    async with connect(server_command) as client:
        optional = await _optional_fields(client)

        def nulls(tool: str, **given: Any) -> dict[str, Any]:
            return dict.fromkeys(optional[tool] - set(given)) | given

        started = await call(client, "run_background_task", **nulls("run_background_task", command="cat", stdin=True))
        task_id = started["task_id"]
        sent = await call(client, "send_task_input", **nulls("send_task_input", task_id=task_id, text="hi"))
        status = await call(client, "get_task_status", **nulls("get_task_status", task_id=task_id))
        waited = await call(
            client, "wait_for_task", **nulls("wait_for_task", task_id=task_id, output_pattern="hi", since=0)
        )
        listed = await call(client, "list_tasks", **nulls("list_tasks"))
        ended = await call(client, "end_background_task", **nulls("end_background_task", task_id=task_id))
        await call(client, "remove_task", task_id=task_id)
    assert started["state"] == "running" and started["wait"] is None
    with pytest.raises(json.JSONDecodeError):
        json.loads(task_id)  # an id is never sent back as a number by clients that read values as JSON
    assert sent["bytes_written"] == 3 and sent["closed"] is False
    assert status["state"] == "running"
    assert waited["reason"] == "pattern"
    assert [t["task_id"] for t in listed["tasks"]] == [task_id]
    assert ended["state"] == "killed"


async def test_numbers_and_booleans_where_text_is_expected_are_their_json_text(server_command: str) -> None:
    async with connect(server_command) as client:
        printer = await call(
            client,
            "run_background_task",
            command='echo "GET 404 $PORT $DEBUG $RATIO"; echo 200 OK; sleep 300',
            name=123,
            env={"PORT": 8000, "DEBUG": True, "RATIO": 0.5},
            wait_for_pattern=200,
        )
        grepped = await call(client, "get_task_status", task_id=printer["task_id"], grep=404)
        listed = await call(client, "list_tasks")
        cat = await call(client, "run_background_task", command="cat", stdin=True)
        await call(client, "send_task_input", task_id=cat["task_id"], text=1)
        await call(client, "send_task_input", task_id=cat["task_id"], text=True, close=True)
        echoed = await finished(client, cat["task_id"])
        await call(client, "end_background_task", task_id=printer["task_id"], grace_seconds=0)
    assert printer["wait"]["reason"] == "pattern"
    assert printer["wait"]["matched_line"] == "200 OK"
    assert grepped["output"] == "1: GET 404 8000 true 0.5"
    assert listed["tasks"][0]["name"] == "123"
    assert echoed["output"] == "1\ntrue\n"


async def test_enum_values_forgive_case_and_separators(server_command: str) -> None:
    async with connect(server_command) as client:
        flaky = await call(client, "run_background_task", command="exit 3", restart="On_Failure", max_restarts=1)
        plain = await call(client, "run_background_task", command="sleep 300", restart=False)
        again = await call(client, "run_background_task", command="true", restart="NO")
        failed = await finished(client, flaky["task_id"])
        running = await call(client, "list_tasks", state="Running")
        await finished(client, again["task_id"])
        completed = await call(client, "list_tasks", state="COMPLETED")
        refused = await call_error(client, "list_tasks", state="sleeping")
        await call(client, "end_background_task", task_id=plain["task_id"], grace_seconds=0)
    assert (failed["state"], failed["restarts"]) == ("failed", 1)
    assert [t["task_id"] for t in running["tasks"]] == [plain["task_id"]]
    assert [t["task_id"] for t in completed["tasks"]] == [again["task_id"]]
    assert 'state="sleeping"' in refused and "running" in refused


async def test_a_command_given_as_argv_runs_exactly_and_the_answer_shows_the_command(server_command: str) -> None:
    argv = ["printf", "%s|", "two words", "$HOME", "it's", 7]
    async with connect(server_command) as client:
        result = await client.call_tool("run_background_task", {"command": argv})
        started = result.structured_content
        assert started is not None and not result.is_error
        status = await finished(client, started["task_id"])
        empty = await call_error(client, "run_background_task", command=[])
    ran = shlex.join([str(part) for part in argv])
    assert started["command"] == ran == status["command"]
    assert ran in result.content[0].text.splitlines()[0]  # type: ignore[union-attr]
    assert status["output"] == "two words|$HOME|it's|7|"
    assert "command=[]" in empty


async def test_refusals_show_values_as_json(server_command: str) -> None:
    async with connect(server_command) as client:
        missing = await call_error(client, "run_background_task", command=None)
        task = await call(client, "run_background_task", command="true")
        boolean = await call_error(client, "get_task_status", task_id=task["task_id"], lines=[True, None])
        unknown = await call_error(client, "get_task_status", task_id="nope")
        env = await call_error(client, "run_background_task", command="true", env="PORT=3000")
        argv = await call_error(client, "run_background_task", command={"program": "ls"})
        negative = await call_error(client, "wait_for_task", task_id=task["task_id"], timeout_seconds=-1)
    assert "command=null" in missing and "None" not in missing
    assert 'env="PORT=3000": Input should be an object, like {"NAME": "value"}' in env and "dictionary" not in env
    assert "an array" in argv and "list" not in argv.replace("list_tasks", "")
    assert "timeout_seconds=-1 is invalid" in negative
    assert "lines=[true,null]" in boolean.replace(" ", "") and "True" not in boolean
    assert 'task_id "nope"' in unknown


UNKNOWN_NAMES = [
    ("wait_for_task", "timeout", "timeout_seconds"),
    ("run_background_task", "timeout", "wait_timeout_seconds"),
    ("wait_for_task", "pattern", "output_pattern"),
    ("run_background_task", "pattern", "wait_for_pattern"),
    ("run_background_task", "port", "wait_for_port"),
    ("wait_for_task", "taskId", "task_id"),
    ("send_task_input", "input", "text"),
    ("get_task_status", "tail", "lines"),
    ("end_background_task", "force", "grace_seconds"),
    ("end_background_task", "signal", "grace_seconds"),
    ("run_background_task", "description", "name"),
    ("run_background_task", "background", "every task runs in the background"),
    ("run_background_task", "cmd", "command"),
    ("run_background_task", "args", "command"),
    ("run_background_task", "argv", "command"),
    ("run_background_task", "workdir", "cwd"),
    ("run_background_task", "working_directory", "cwd"),
    ("run_background_task", "dir", "cwd"),
    ("run_background_task", "environment", "env"),
    ("get_task_status", "id", "task_id"),
    ("remove_task", "task", "task_id"),
    ("get_task_status", "cursor", "since"),
    ("get_task_status", "pattern", "grep"),
    ("list_tasks", "status", "state"),
]


async def test_unknown_arguments_are_refused_with_the_likely_name(server_command: str) -> None:
    async with connect(server_command) as client:
        for tool, name, meant in UNKNOWN_NAMES:
            message = await call_error(client, tool, **{name: 1})
            assert f"unknown argument {name}" in message and meant in message, message


def _names(pid: int) -> tuple[str, list[str]]:
    """The name of a process and of its children."""
    process = psutil.Process(pid)
    return process.name(), sorted(child.name() for child in process.children())


async def test_one_simple_command_is_the_tasks_only_process(server_command: str) -> None:
    async with connect(server_command) as client:
        plain = await call(client, "run_background_task", command="sleep 300")
        kept = await call(client, "run_background_task", command="sleep 300", keep_running=True)
        compound = await call(client, "run_background_task", command="sleep 300; true")
        expected = {plain["pid"]: ("sleep", []), compound["pid"]: ("sh", ["sleep"])}

        async def settled() -> bool:  # the shells have exec'd or forked (a shell that never does times this out)
            runner_children = _names(kept["pid"])[1]  # the runner runs the program itself, not a shell around it
            return all(_names(pid) == names for pid, names in expected.items()) and runner_children == ["sleep"]

        try:
            await until(settled)
            statuses = [await call(client, "get_task_status", task_id=t["task_id"]) for t in (plain, compound)]
        finally:
            for task in (plain, kept, compound):
                await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert [s["process_count"] for s in statuses] == [1, 2]


async def test_a_repl_on_a_terminal_survives_ctrl_c_and_is_not_recorded_failed(server_command: str) -> None:
    async with connect(server_command) as client:
        repl = await call(client, "run_background_task", command="python3 -q -i", pty=True, wait_for_pattern="^>>> ")
        task_id = repl["task_id"]
        await call(client, "send_task_input", task_id=task_id, text="import time; time.sleep(300)")
        sent = await call(client, "send_task_input", task_id=task_id, text="\u0003", newline=False)
        await call(client, "wait_for_task", task_id=task_id, output_pattern="KeyboardInterrupt", since=sent["cursor"])
        sent = await call(client, "send_task_input", task_id=task_id, text="6*7")
        answer = await call(client, "wait_for_task", task_id=task_id, output_pattern="^42", since=sent["cursor"])
        await call(client, "send_task_input", task_id=task_id, text="raise SystemExit(0)")
        status = await finished(client, task_id)
    assert answer["reason"] == "pattern" and answer["status"]["state"] == "running"
    assert answer["status"]["process_count"] == 1
    assert (status["state"], status["exit_code"], status["signal"]) == ("completed", 0, None)


async def test_true_or_false_where_a_number_is_expected_is_refused_in_one_line(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        wait = await call_error(client, "wait_for_task", task_id=task["task_id"], timeout_seconds=True)
        lines = await call_error(client, "get_task_status", task_id=task["task_id"], lines=False)
        start = await call_error(client, "run_background_task", command="true", max_restarts=True, restart="always")
        taken = await call(client, "wait_for_task", task_id=task["task_id"], timeout_seconds="0")
        await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    assert "timeout_seconds=true is invalid" in wait and "number" in wait
    assert "lines=false is invalid" in lines
    assert "max_restarts=true is invalid" in start
    assert taken["reason"] == "timeout"


async def test_ids_with_spaces_around_them_are_taken(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="sleep 300")
        spaced = f"  {task['task_id']} \n"
        status = await call(client, "get_task_status", task_id=spaced)
        waited = await call(client, "wait_for_task", task_id=spaced, timeout_seconds=0)
        ended = await call(client, "end_background_task", task_id=spaced, grace_seconds=0)
        removed = await call(client, "remove_task", task_id=f" {task['task_id']}")
    assert status["task_id"] == waited["status"]["task_id"] == ended["task_id"] == removed["task_id"] == task["task_id"]


async def test_a_null_env_value_unsets_the_variable_and_restart_true_means_on_failure(server_command: str) -> None:
    show = 'echo "[${HABIT_SET-unset}] [${HABIT_KEPT-unset}]"'
    async with connect(server_command, env={"HABIT_SET": "server", "HABIT_KEPT": "server"}) as client:
        shown = await call(client, "run_background_task", command=show, env={"HABIT_SET": None})
        failing = await call(client, "run_background_task", command="exit 3", restart=True, max_restarts=1)
        passing = await call(client, "run_background_task", command="true", restart=True, max_restarts=1)
        shown = await finished(client, shown["task_id"])
        failed = await finished(client, failing["task_id"])
        passed = await finished(client, passing["task_id"])
    assert shown["output"] == "[unset] [server]\n"
    assert (failed["state"], failed["restarts"]) == ("failed", 1)
    assert (passed["state"], passed["restarts"]) == ("completed", 0)


async def test_a_long_command_is_cut_in_every_answer_and_whole_in_its_resource(server_command: str) -> None:
    command = "sleep 300 # " + "x" * 100_000
    async with connect(server_command) as client:
        started = await client.call_tool("run_background_task", {"command": command})
        task_id = (started.structured_content or {})["task_id"]
        answers = [
            started,
            await client.call_tool(
                "run_background_task", {"command": command, "wait_for_port": 1, "wait_timeout_seconds": 0}
            ),
            await client.call_tool("get_task_status", {"task_id": task_id}),
            await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 0}),
            await client.call_tool("list_tasks", {}),
        ]
        whole = await client.read_resource(f"task://{task_id}/command")
        resources = await client.list_resources()
        for task in (await call(client, "list_tasks"))["tasks"]:
            await call(client, "end_background_task", task_id=task["task_id"], grace_seconds=0)
    for result in answers:
        assert not result.is_error, text_of(result)
        assert len(text_of(result)) < 2_000 and len(json.dumps(result.structured_content)) < 4_000
    shown = (started.structured_content or {})["command"]
    assert shown.startswith("sleep 300 # xxx") and f"{len(command)} characters" in shown
    assert f"task://{task_id}/command" in shown and f"task://{task_id}/command" in text_of(started)
    content = whole.contents[0]
    assert isinstance(content, TextResourceContents) and content.text == command
    assert all(len(resource.description or "") < 1_000 for resource in resources.resources)


async def test_a_program_that_is_not_found_is_reported_as_written(server_command: str) -> None:
    async with connect(server_command) as client:
        task = await call(client, "run_background_task", command="no-such-program-x --flag")
        status = await finished(client, task["task_id"])
    assert status["exit_code"] == 127
    assert "no-such-program-x: not found" in status["output"] and "exec" not in status["output"]
