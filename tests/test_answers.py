"""Tool answers built from the core's plain data say what their pydantic models would."""

from __future__ import annotations

import dataclasses

import hypothesis
import hypothesis.strategies as st
import jsonschema
from mcp_types import CallToolResult

from mcp_backgroundr.core.task import answer_of, summary_of
from mcp_backgroundr.models import TaskList, TaskRecord, TaskState, one_line
from mcp_backgroundr.results import Listing, Summary
from mcp_backgroundr.tools.answers import SENT_AS, describe_list, listing_answer, model_of
from mcp_backgroundr.tools.schemas import cheap_to_validate

BASE = Summary(
    task_id="bg-0",
    name=None,
    command="sleep 600",
    state=TaskState.RUNNING,
    pid=41,
    exit_code=None,
    started_at="2026-11-30T05:00:00.000+00:00",
    runtime_seconds=1.5,
    listening=[],
    owner="box:1:2",
    containment="marker",
    host=None,
)


def test_the_listing_answer_is_what_the_task_list_model_dumps() -> None:
    listing = Listing(
        tasks=[
            dataclasses.replace(BASE, task_id="bg-1", name="web", listening=["127.0.0.1:8000", "[::1]:8000"]),
            dataclasses.replace(
                BASE, task_id="bg-2", state=TaskState.FAILED, exit_code=2, pid=None, host="build", containment="cgroup"
            ),
        ],
        total=3,
    )
    model = model_of(TaskList, listing)
    answer = listing_answer(listing, describe_list(listing))
    dumped = model.model_dump(mode="json")
    without_absent = [
        {key: value for key, value in task.items() if value not in (None, [])} for task in dumped["tasks"]
    ]
    assert answer.structured_content == {**dumped, "tasks": without_absent}
    assert TaskList.model_validate(answer.structured_content) == model


def test_a_listed_line_leaves_out_only_what_its_task_does_not_have() -> None:
    remote = dataclasses.replace(
        BASE, exit_code=0, host="build", host_reachable=False, host_seen_at="2026-11-30T05:00:01"
    )
    answer = listing_answer(Listing(tasks=[BASE, remote], total=2), "")
    assert answer.structured_content is not None
    local, far = answer.structured_content["tasks"]
    assert set(local) == {"task_id", "command", "state", "pid", "started_at", "runtime_seconds", "owner", "containment"}
    assert (far["exit_code"], far["host"], far["host_reachable"]) == (0, "build", False)


_TEXT = st.text(max_size=20)
_MAYBE_INT = st.none() | st.integers(min_value=-(2**31), max_value=2**31)
SUMMARIES = st.builds(
    Summary,
    task_id=_TEXT,
    name=st.none() | _TEXT,
    command=_TEXT,
    state=st.sampled_from(TaskState),
    pid=_MAYBE_INT,
    exit_code=_MAYBE_INT,
    started_at=_TEXT,
    runtime_seconds=st.floats(min_value=0, max_value=1e9),
    listening=st.lists(_TEXT, max_size=3),
    owner=_TEXT,
    containment=st.sampled_from(["cgroup", "subreaper", "marker"]),
    host=st.none() | _TEXT,
    host_reachable=st.none() | st.booleans(),
    host_seen_at=st.none() | _TEXT,
    lingering=st.none() | st.integers(min_value=1, max_value=1000),
)
TYPED = cheap_to_validate(TaskList.model_json_schema())


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(SUMMARIES, max_size=4), st.integers(min_value=0, max_value=10))
def test_every_listing_answer_matches_the_typed_schema(tasks: list[Summary], more: int) -> None:
    """The SDK does not check list_tasks' answer against TaskList (the tool publishes its rows checked by
    key, ``appserver.background_tool``): whatever the core lists, the answer passes the fully typed
    model and schema, every value of every row (docs/benchmarks.md 13, fifth pass)."""
    listing = Listing(tasks=tasks, total=len(tasks) + more)
    answer = listing_answer(listing, describe_list(listing))
    TaskList.model_validate(answer.structured_content)
    jsonschema.validate(answer.structured_content, TYPED, cls=jsonschema.Draft202012Validator)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(SUMMARIES, max_size=4), st.integers(min_value=0, max_value=10))
def test_a_listing_answer_is_sent_as_pydantic_would_dump_it(tasks: list[Summary], more: int) -> None:
    """list_tasks' answer dumps itself for sending without walking its rows (``answers._ListingAnswer``):
    the same dict, keys in the same order, as pydantic's dump of the same CallToolResult; every other
    dump is pydantic's own."""
    listing = Listing(tasks=tasks, total=len(tasks) + more)
    answer = listing_answer(listing, describe_list(listing))
    sent = answer.model_dump(**SENT_AS)
    dumped = CallToolResult.model_dump(answer, **SENT_AS)
    assert sent == dumped
    assert list(sent) == list(dumped)
    assert [list(row) for row in sent["structuredContent"]["tasks"]] == [
        list(row) for row in dumped["structuredContent"]["tasks"]
    ]
    assert answer.model_dump(mode="json") == CallToolResult.model_dump(answer, mode="json")
    assert CallToolResult.model_validate(sent) == CallToolResult.model_validate(dumped)


def test_a_summary_is_what_answer_of_makes_of_the_record() -> None:
    """summary_of spells out, for speed, what the generic answer_of makes of a record."""
    record = TaskRecord(
        task_id="bg-7", name="web", command="x" * 5000, cwd="/", log_path="/l", owner="o", started_at=1.5e9,
        state=TaskState.FAILED, pid=7, exit_code=3, ended_at=1.5e9 + 2, containment="cgroup", host="build",
        host_seen_at=1.5e9 + 1,
    )  # fmt: skip
    sockets = [("127.0.0.1", 80, 7), ("::1", 80, 7)]
    for reachable in (None, True, False):
        expected = answer_of(Summary, record, 2e9, listening=["127.0.0.1:80", "[::1]:80"], host_reachable=reachable)
        assert summary_of(record, 2e9, sockets, reachable) == expected


def test_the_listing_text_says_a_shared_containment_once_and_a_mixed_one_per_line() -> None:
    shared = Listing(tasks=[BASE, dataclasses.replace(BASE, task_id="bg-1")], total=5)
    lines = describe_list(shared).splitlines()
    assert lines[0] == "2 of 5 tasks, containment=marker:"
    assert lines[1] == "bg-0 running   pid=41 1.5s sleep 600"
    assert lines[-1].startswith("... and 3 older not listed")
    mixed = Listing(tasks=[BASE, dataclasses.replace(BASE, task_id="bg-1", containment="cgroup")], total=2)
    lines = describe_list(mixed).splitlines()
    assert lines[0] == "2 of 2 tasks:"
    assert [line.split()[3] for line in lines[1:]] == ["containment=marker", "containment=cgroup"]


def _json_made_afresh(summary: Summary) -> dict[str, object]:
    """A row's JSON as it was made before rows were kept between listings: every fact, in field
    order, but the absent ones."""
    line = {key: value for key, value in vars(summary).items() if value is not None and value != []}
    line["state"] = summary.state.value
    return line


def _line_made_afresh(t: Summary, containment: bool) -> str:
    """A row's text line as it was made before rows were kept between listings."""
    parts = [t.task_id, f"{t.state:<9}", f"pid={t.pid}"]
    parts += [f"containment={t.containment}"] if containment else []
    parts += [f"host={one_line(t.host)}"] if t.host else []
    parts += [f"(host unreachable, last answered {t.host_seen_at})"] if t.host_reachable is False else []
    parts += [f"exit={t.exit_code}"] if t.exit_code is not None else []
    parts.append(f"{t.runtime_seconds}s")
    parts += [f"name={one_line(t.name)}"] if t.name else []
    parts += [f"lingering={t.lingering}"] if t.lingering is not None else []
    parts += [f"listening={','.join(t.listening)}"] if t.listening else []
    parts.append(one_line(t.command))
    return " ".join(parts)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(SUMMARIES, max_size=4), st.floats(min_value=0, max_value=1e9), st.lists(_TEXT, max_size=2))
def test_a_kept_row_shows_what_a_row_made_afresh_shows(tasks: list[Summary], later: float, shown: list[str]) -> None:
    """A row is made once per task and its facts (``answers._row``), and shown again with the runtime
    and addresses of each listing: byte for byte what making it afresh on every call gave, the JSON's
    keys in the same order; a task whose facts changed (it ended, another name) gets a new row."""
    for listed in (tasks, [dataclasses.replace(t, runtime_seconds=later, listening=shown) for t in tasks]):
        listing = Listing(tasks=listed, total=len(listed))
        rows = listing_answer(listing, "").structured_content
        assert rows is not None
        assert [list(row.items()) for row in rows["tasks"]] == [list(_json_made_afresh(t).items()) for t in listed]
        shared = len({t.containment for t in listed}) == 1
        lines = [_line_made_afresh(t, not shared) for t in listed]
        assert describe_list(listing).split("\n", 1)[1:] == (["\n".join(lines)] if lines else [])
