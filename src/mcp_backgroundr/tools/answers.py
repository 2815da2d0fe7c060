"""Each tool's answer: its model (built here from the core's plain data) and its text.

MCP clients show a model either the text or the structured content of an answer, so the
text carries the same facts: state first, then what to do next, then the output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from ..models import EndedTask, TaskState, TaskStatus, WaitResult, one_line, socket_address
from ..results import Listing, Summary, signalled_text, survivors_text

MAX_LISTED = 1000


_Model = TypeVar("_Model", bound=BaseModel)


def model_of(kind: type[_Model], data: object) -> _Model:
    """The answer model ``kind`` for what the core returned (plain data with the same field names)."""
    return kind.model_validate(data, from_attributes=True)


def answer(model: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


def listing_answer(listing: Listing, text: str) -> CallToolResult:
    """list_tasks' answer straight from the core's plain data: a summary's fields are the
    answer's (``TaskSummary``), already JSON types but its state, so no model is built per task
    only to be dumped again (and the SDK does not check it again: ``appserver.background_tool``)."""
    tasks = [_summary_json(summary) for summary in listing.tasks]
    return _ListingAnswer(
        content=[TextContent(type="text", text=text)], structured_content={"tasks": tasks, "total": listing.total}
    )


SENT_AS: dict[str, Any] = {"by_alias": True, "mode": "json", "exclude_none": True}
"""How the SDK dumps an answer to send it (``mcp.server.runner._dump_result``)."""


class _ListingAnswer(CallToolResult):
    """list_tasks' answer, dumped to be sent without a walk of its rows.

    The SDK walks an answer three times on its way out: it dumps it to a dict (:data:`SENT_AS`),
    checks that dict against its protocol version's model and dumps it again, and writes it as
    JSON. The first walk of 100 rows (800 values, the first to touch them since they were made)
    took 0.23 ms of a call made 0.2 s after the last (docs/benchmarks.md 13). This answer's content
    is already what that dump gives (its text, and rows of JSON types), so that dump hands it on
    as it is; any other dump is pydantic's, and ``tests/test_answers.py`` holds the two equal.
    """

    def model_dump(self, **options: Any) -> dict[str, Any]:
        if options != SENT_AS or len(self.content) != 1 or not isinstance(text := self.content[0], TextContent):
            return super().model_dump(**options)
        sent = dict(_SENT_FORM)
        sent["content"] = [{**_SENT_TEXT, "text": text.text}]
        sent["structuredContent"] = self.structured_content
        return sent


_SENT_FORM = CallToolResult(content=[TextContent(type="text", text="")], structured_content={}).model_dump(**SENT_AS)
"""An answer with a text and structured content as sent: its keys, in their order, and their defaults."""
_SENT_TEXT: dict[str, Any] = _SENT_FORM["content"][0]


ROWS_KEPT = 4096
"""Tasks whose row (its JSON and its text line, but for runtime and addresses) is kept between
listings: a listing shows every task on every call, and a task's row changes only when it ends."""


@dataclass(frozen=True)
class _Row:
    """What a row shows of a task but its runtime and listening addresses, made once (see :func:`_row`)."""

    head: dict[str, object]
    """The JSON row's keys before ``runtime_seconds`` (its null facts left out)..."""
    tail: dict[str, object]
    """... and after it (and after ``listening``)."""
    line_start: str
    """The text line up to its containment,"""
    containment: str
    """the containment (shown when the listed tasks do not share one),"""
    line_middle: str
    """what comes between it and the runtime,"""
    line_name: str
    """the name, which comes before the addresses,"""
    line_command: str
    """and the command, which ends the line."""


def _row_of(summary: Summary) -> _Row:
    return _row(
        summary.task_id, summary.name, summary.command, summary.state, summary.pid, summary.exit_code,
        summary.started_at, summary.owner, summary.containment, summary.host, summary.host_reachable,
        summary.host_seen_at,
    )  # fmt: skip


@functools.lru_cache(maxsize=ROWS_KEPT)
def _row(
    task_id: str, name: str | None, command: str, state: TaskState, pid: int | None, exit_code: int | None,
    started_at: str, owner: str, containment: str, host: str | None, reachable: bool | None, seen_at: str | None,
) -> _Row:  # fmt: skip
    """The row of a task with these facts (its summary's but the runtime and the addresses), kept:
    the same task with the same facts is shown with the same row on the next call."""
    head: dict[str, object] = {"task_id": task_id, "name": name, "command": command, "state": state.value}
    head |= {"pid": pid, "exit_code": exit_code, "started_at": started_at}
    tail = {"owner": owner, "containment": containment, "host": host, "host_reachable": reachable}
    tail["host_seen_at"] = seen_at
    middle = f" host={one_line(host)}" if host else ""
    if reachable is False:
        middle += f" (host unreachable, last answered {seen_at})"
    if exit_code is not None:
        middle += f" exit={exit_code}"
    return _Row(
        head={key: value for key, value in head.items() if value is not None},
        tail={key: value for key, value in tail.items() if value is not None},
        line_start=f"{task_id} {state:<9} pid={pid}",
        containment=f" containment={containment}",
        line_middle=middle,
        line_name=f" name={one_line(name)}" if name else "",
        line_command=" " + one_line(command),
    )


def _summary_json(summary: Summary) -> dict[str, object]:
    """One line of the listing without the facts its task does not have (``TaskSummary``): a client
    checks each value of each line against the output schema, the Python SDK's at about 6 us a value
    (docs/benchmarks.md 13), and a local running task has no name, exit code, address or host."""
    row = _row_of(summary)
    if summary.listening:
        line = {**row.head, "runtime_seconds": summary.runtime_seconds, "listening": summary.listening, **row.tail}
    else:
        line = {**row.head, "runtime_seconds": summary.runtime_seconds, **row.tail}
    if summary.lingering is not None:
        line["lingering"] = summary.lingering
    return line


def task_head(task: TaskStatus | EndedTask) -> str:
    """`task ID [state]` with the exit code and signal when there are any."""
    head = f"task {task.task_id} [{task.state}]"
    if task.exit_code is not None:
        head += f" exit_code={task.exit_code}"
    if task.signal:
        head += f" signal={task.signal}"
    return head


def describe_status(status: TaskStatus) -> str:
    head = task_head(status)
    where = f" host={one_line(status.host)}" if status.host else ""
    head += f"{where} pid={status.pid} runtime={status.runtime_seconds}s containment={status.containment}: "
    head += one_line(status.command)
    lines = [head]
    if status.host_reachable is False:
        lines.append(
            f"HOST UNREACHABLE (last answered {status.host_seen_at}): {one_line(status.host_problem or '')}; "
            "what follows is what was last known"
        )
    if status.end_reason and status.state is not TaskState.RUNNING:
        lines.append(f"ended: {one_line(status.end_reason)}")
    if status.lingering_pids:
        lines.append(
            f"its main process has ended but these processes it started still run: {status.lingering_pids}; "
            "end_background_task ends them"
        )
    if status.restarts or status.next_start_at:
        due = f", next start at {status.next_start_at}" if status.next_start_at else ""
        lines.append(f"restarts={status.restarts}{due}")
    if status.process_count:
        usage = f"{status.process_count} process(es), cpu {status.cpu_percent}%, rss {status.memory_rss_bytes} bytes"
        lines.append(usage)
    if status.listening:
        lines.append("listening on " + ", ".join(socket_address(p.address, p.port) for p in status.listening))
    dropped = f" dropped_bytes={status.dropped_bytes}" if status.dropped_bytes else ""
    lines.append(f"cursor={status.cursor} output_bytes={status.output_bytes}{dropped}")
    if status.grep_matches is not None:
        lines.append(f"grep_matches={status.grep_matches}")
    if status.truncation:
        lines.append(f"truncated: {status.truncation}")
    lines.append("--- output ---" if status.output else "--- no output in this range ---")
    if status.output:
        lines.append(status.output)
    return "\n".join(lines)


def describe_wait(result: WaitResult) -> str:
    head = f"wait ended: {result.reason} after {result.waited_seconds}s"
    if result.matched_line is not None:
        head += f"; matched line (cursor {result.matched_cursor}): {result.matched_line[:500]}"
    advice = f"\n{result.advice}" if result.advice else ""
    return head + advice + "\n" + describe_status(result.status)


def describe_end(ended: EndedTask) -> str:
    if ended.advice is not None:
        return f"{task_head(ended)}; {ended.advice}"
    text = task_head(ended) + "; " + signalled_text(ended.signalled_pids, ended.escalated)
    text += f"; containment={ended.containment}"
    if ended.survivors:
        text += "; SURVIVORS: " + survivors_text(ended.survivors)
    else:
        text += f"; {ended.verified}"
    return text


def describe_list(listing: Listing, state: TaskState | None = None, everyone: bool = False) -> str:
    """A head line (how many, and the containment level when every task has the same), then one line
    per task."""
    if not listing.tasks:
        which = f"no {state} tasks" if state else "no tasks"
        if everyone:
            return f"{which} in the registry; run_background_task starts one"
        return f"{which} on this server; all=true also lists other servers' and earlier sessions' tasks"
    levels = {t.containment for t in listing.tasks}
    shared = levels.pop() if len(levels) == 1 else None
    head = f"{len(listing.tasks)} of {listing.total} tasks" + (f", containment={shared}:" if shared else ":")
    more = listing.total - len(listing.tasks)
    note = [f"... and {more} older not listed; raise limit (at most {MAX_LISTED}) or filter by state"] if more else []
    return "\n".join([head, *(_list_row(t, shared is None) for t in listing.tasks), *note])


def _list_row(t: Summary, containment: bool) -> str:
    row = _row_of(t)
    line = row.line_start + row.containment if containment else row.line_start
    line += f"{row.line_middle} {t.runtime_seconds}s{row.line_name}"
    if t.lingering is not None:
        line += f" lingering={t.lingering}"
    if t.listening:
        return f"{line} listening={','.join(t.listening)}{row.line_command}"
    return line + row.line_command
