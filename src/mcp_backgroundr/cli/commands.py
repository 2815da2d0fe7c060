"""The human commands: ps, logs, status, send, stop and prune, on the registry and the logs.

They work with or without a running server, and never take tasks over: a server that owns a
task stays its owner. Every one of them acts through a session of the core
(:class:`~..core.session.CoreSession`), the functions the tools call, wherever a task runs:
the CLI and the tools agree, and neither asks where a task is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ..config import HOME_ENV, Settings
from ..core.requests import ReadRequest, WaitRequest
from ..core.session import CoreSession
from ..errors import BackgroundrError, printable, warn
from ..logs import files
from ..models import TaskRecord, TaskState, one_line, socket_address
from ..platform.containment import TaskCgroup
from ..remote.place import RemotePlace
from ..results import Ended, Status, output_away, signalled_text, survivors_text
from ..store import orphans
from ..store.registry import Registry

STOP_REASON = "mcp-backgroundr stop"
SERVER_GONE = "(server gone)"
"""After ``running`` in ps: its server died without ending it, and no server has taken it over yet."""
COMMAND_COLUMN_WIDTH = 60
OUTPUT_BUDGET = 4 * 1024 * 1024
"""What one read of ``logs`` prints at most (a tool answer's budget is a model's, not a terminal's)."""
FOLLOW_WAIT_SECONDS = 60.0
"""logs -f waits for the next line at most this long, then looks again."""
ANY_LINE = "^"
_NOT_IN_STATUS = ("output", "cursor", "truncated", "truncation", "grep_matches")
"""What a read answers that ``status`` does not show (the output is ``logs``')."""
_SAID_BY_THE_READ = ("host_output_bytes", "host_dropped_bytes")
"""What the record keeps that the read says anyway (output_bytes, dropped_bytes: as last known, when
its host cannot be reached)."""
_TIMES = ("pid_create_time", "started_at", "ended_at", "host_seen_at", "next_start_at")

_T = TypeVar("_T")


def _has_registry(settings: Settings) -> bool:
    """Whether a server has run with this state directory (one that is a file is an error, not "no tasks")."""
    if settings.home.exists() and not settings.home.is_dir():
        raise BackgroundrError(f"the state directory {settings.home} is not a directory; set {HOME_ENV} to one")
    return settings.registry_path.exists()


def open_registry(settings: Settings) -> Registry:
    if not _has_registry(settings):
        raise BackgroundrError(
            f"no task registry at {settings.registry_path} yet: no server has run with this state directory"
        )
    return Registry(settings.registry_path)


def _record(registry: Registry, task_id: str) -> TaskRecord:
    record = registry.get(task_id.strip())  # an id pasted with the spaces around it
    if record is None:
        raise BackgroundrError(f"no task {task_id!r} in {registry.path}; `mcp-backgroundr ps --all` lists the ids")
    return record


def _in_session(settings: Settings, registry: Registry, work: Callable[[CoreSession], Awaitable[_T]]) -> _T:
    """Run ``work`` in a session of the core over ``registry`` (tasks on other hosts reached as a
    server reaches them, sharing its SSH connections), and answer what it answers."""
    reading = dataclasses.replace(settings, output_budget=max(settings.output_budget, OUTPUT_BUDGET))

    async def run() -> _T:
        async with CoreSession(reading, registry, away=RemotePlace) as session:
            return await work(session)

    return anyio.run(run)


def _duration(seconds: float) -> str:
    if seconds < 10:  # a task just started is not 0s old
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def ps(settings: Settings, everything: bool) -> str:
    """A table of running tasks, finished ones whose processes still run among them (``everything``:
    every finished one too), newest first: what
    ``list_tasks(all=true)`` lists, but for what a server's listing would take over (ps changes
    nothing): a running task whose server is gone says so."""
    if not _has_registry(settings):
        return f"no tasks yet in {settings.home}"
    wanted = None if everything else TaskState.RUNNING
    with contextlib.closing(open_registry(settings)) as registry:
        listing = _in_session(settings, registry, lambda session: session.list_tasks(wanted))
    if not listing.tasks:
        return f"no tasks in {settings.home}" if everything else "no running tasks; ps --all lists finished ones too"
    rows = [("ID", "NAME", "STATE", "HOST", "PID", "PORTS", "RUNTIME", "COMMAND")]
    gone = orphans.gone_owners({t.owner for t in listing.tasks if t.state is TaskState.RUNNING})
    for t in listing.tasks:
        host = one_line(t.host or "-") + (" (unreachable)" if t.host_reachable is False else "")
        state = str(t.state) if t.exit_code is None else f"{t.state}({t.exit_code})"
        if t.lingering is not None:
            state += f" +{t.lingering} lingering"
        rows.append(
            (
                t.task_id,
                one_line(t.name, COMMAND_COLUMN_WIDTH) if t.name else "-",
                f"{state} {SERVER_GONE}" if t.state is TaskState.RUNNING and t.owner in gone else state,
                host,
                str(t.pid or "-"),
                ",".join(t.listening) or "-",
                _duration(t.runtime_seconds),
                one_line(t.command, COMMAND_COLUMN_WIDTH),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def status(settings: Settings, task_id: str, as_json: bool) -> str:
    """A task's record and its status as ``get_task_status`` reads it, one printer wherever it runs."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = _record(registry, task_id)
        shown = _in_session(settings, registry, lambda session: session.read(record.task_id, ReadRequest(lines=0)))
    fields = _status_fields(record, shown)
    if as_json:
        return json.dumps(fields, indent=2)
    for key in _TIMES:
        if isinstance(fields.get(key), float):
            fields[key] = datetime.fromtimestamp(fields[key], UTC).isoformat(timespec="seconds")
    return _as_text(fields)


def _status_fields(record: TaskRecord, shown: Status) -> dict[str, Any]:
    """The record's fields, then what the read learnt and measured (which wins where both say)."""
    fields = {key: value for key, value in dataclasses.asdict(record).items() if key not in _SAID_BY_THE_READ}
    read = {key: value for key, value in dataclasses.asdict(shown).items() if key not in _NOT_IN_STATUS}
    fields |= read | {"state": str(shown.state), "command": record.command}  # answers show the command's start
    fields["listening"] = [f"{socket_address(p.address, p.port)} (pid {p.pid})" for p in shown.listening]
    fields["cgroup"], fields["cgroup_removed"] = _cgroups(record)
    return fields


def _cgroups(record: TaskRecord) -> tuple[list[str] | None, list[str] | None]:
    """A task's cgroup directories (one per hierarchy) that are there, and those removed (a finished
    task's, once no process was left in them). A remote task's are on its host: shown as recorded."""
    cgroup = TaskCgroup.decode(record.cgroup)
    if cgroup is None:
        return None, None
    removed = cgroup.removed() if record.host is None else []
    there = [str(directory) for directory in cgroup.directories if directory not in removed]
    return there or None, [str(directory) for directory in removed] or None


def _as_text(fields: dict[str, Any]) -> str:
    """One ``key: value`` line per field that has a value; a list's items, and the lines of a
    multi-line value, continue on lines of their own, indented."""
    lines = []
    for key, value in fields.items():
        if value in (None, [], ""):
            continue
        parts = [str(item) for item in value] if isinstance(value, list) else str(value).split("\n")
        parts = [printable(part) for part in parts]  # the record's text is the client's
        lines.append(f"{key}: {parts[0]}")
        lines.extend(f"  {part}" for part in parts[1:])
    return "\n".join(lines)


def logs_command(settings: Settings, task_id: str, lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of a task's log, then (``follow``) what it writes until it ends."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = _record(registry, task_id)
        _in_session(settings, registry, functools.partial(_logs, record, lines, follow))


async def _logs(record: TaskRecord, lines: int, follow: bool, session: CoreSession) -> None:
    task_id = record.task_id
    printer = _Printer()
    shown = printer.printed(await session.read(task_id, ReadRequest(lines=lines, raw=True)))
    if shown.truncation == files.gone_note(Path(record.log_path)):  # nothing to print, nor to follow
        raise BackgroundrError(f"task {task_id}: {shown.truncation}")
    if shown.truncated:
        _say_what_is_left_out(record, lines, shown)
    while follow and shown.state is TaskState.RUNNING:
        await session.wait(task_id, WaitRequest(FOLLOW_WAIT_SECONDS, ANY_LINE), shown.cursor)
        shown = await _print_on(session, task_id, shown.cursor, printer)
    if follow:  # on stderr: the output stays the task's own
        warn(f"task {task_id} ended ({_how_it_ended(shown)})")


def _say_what_is_left_out(record: TaskRecord, lines: int, shown: Status) -> None:
    """Say on stderr what the last ``lines`` lines printed leave out: what the log's cap dropped
    before them, and the start of lines longer than ``logs`` prints. The read's own note tells a
    tool's caller what to call (since=...): the CLI has no such option, and the whole log is a file
    a person can open."""
    if shown.dropped_bytes:
        warn(files.dropped_note(0, shown.dropped_bytes))
    if not files.shows_all_kept(shown.truncation):
        where = f"on host {one_line(record.host)} at {record.log_path}" if record.host else record.log_path
        warn(
            f"the last {lines} lines are longer than {OUTPUT_BUDGET} bytes: only their end is shown; "
            f"the whole log is {where}"
        )


async def _print_on(session: CoreSession, task_id: str, cursor: int, printer: _Printer) -> Status:
    """Print what the task wrote from ``cursor`` on, a read at a time; the last read."""
    while True:
        shown = printer.printed(await session.read(task_id, ReadRequest(since=cursor, raw=True)), since=cursor)
        if not shown.truncated or shown.cursor == cursor:
            return shown
        cursor = shown.cursor


class _Printer:
    """Prints a task's output read after read, as whole lines where its log's cap dropped the bytes
    at a read's cursor: the line printed last, cut there, is ended; the rest of the line the kept
    output starts in is left out; and which bytes were dropped is said on stderr, as the tool's
    answer says it (a line spliced from two fragments is not a line the task wrote)."""

    def __init__(self) -> None:
        self.line_open = False
        """The last output printed did not end its line."""
        self.skipping = False
        """The output is left out up to the next line's start."""

    def printed(self, shown: Status, since: int | None = None) -> Status:
        """Print the output ``shown`` holds (read from ``since``); a host that cannot be reached is
        an error (one line: the output is on that host)."""
        if shown.host_reachable is False:
            raise BackgroundrError(output_away(shown))
        text = shown.output
        if since is not None and since < shown.dropped_bytes:
            self._gap(since, shown.dropped_bytes)
        if self.skipping:
            text = self._skipped(text)
        if text:
            sys.stdout.write(text)
            self.line_open = not text.endswith("\n")
        sys.stdout.flush()
        return shown

    def _gap(self, since: int, dropped: int) -> None:
        if self.line_open:
            sys.stdout.write("\n")
            self.line_open = False
        sys.stdout.flush()
        note = files.dropped_note(since, dropped)
        warn(f"{note}; the output goes on from the next line after them")
        self.skipping = True

    def _skipped(self, text: str) -> str:
        newline = text.find("\n")
        if newline < 0:
            return ""
        self.skipping = False
        return text[newline + 1 :]


def send(settings: Settings, task_id: str, text: str, newline: bool = True, close: bool = False) -> str:
    """Write to a task's input as ``send_task_input`` does: a keep_running task started with stdin
    takes it whichever server owns it (or none), a remote one on its host."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = _record(registry, task_id)
        written = _in_session(
            settings, registry, lambda session: session.send_input(record.task_id, text, newline, close)
        )
    closed = "; its input is now closed" if close else ""
    return f"wrote {written.bytes_written} bytes to task {record.task_id}{closed}"


def stop(settings: Settings, task_id: str, grace_seconds: float) -> str:
    """End a task's whole process tree, whichever server owns it (``end_background_task``'s end)."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = _record(registry, task_id)
        was_running = orphans.as_it_stands(record).running
        ended = _in_session(settings, registry, lambda session: session.end(record.task_id, grace_seconds, STOP_REASON))
    where = f" on {one_line(record.host)}" if record.host else ""
    signalled = signalled_text(ended.signalled_pids, ended.escalated)
    if was_running and ended.state is TaskState.KILLED:
        return _survivors(f"stopped task {ended.task_id}{where}: {signalled}", ended)
    text = f"task {ended.task_id} had already ended ({_how_it_ended(ended)})"
    if ended.signalled_pids or ended.survivors:
        text = _survivors(f"{text}; {signalled} it left running{where}", ended)
    return text


def _how_it_ended(ended: Ended | Status) -> str:
    """How a task ended: "failed, exit code 143, signal SIGTERM", "completed, exit code 0" or "killed"."""
    return ", ".join(
        [str(ended.state)]
        + ([] if ended.exit_code is None else [f"exit code {ended.exit_code}"])
        + ([f"signal {ended.signal}"] if ended.signal else [])
    )


def _survivors(text: str, ended: Ended) -> str:
    """``text``, then the processes that survived (pid, command, why), or what was checked to find
    none (as the tool says it: "the task's cgroup is empty" claims no more than was looked at)."""
    named = survivors_text(ended.survivors)
    return text + (f"; SURVIVORS: {named}" if named else f"; {ended.verified or 'no process of it was found'}")


def prune(settings: Settings, keep: int, days: float) -> str:
    if not settings.registry_path.exists():
        return "nothing to prune"

    async def pruned(session: CoreSession) -> list[str]:
        forgotten = await session.prune(keep, days)
        return [f"pruned {len(forgotten)} finished task(s) and their logs", *await session.forget(forgotten)]

    with contextlib.closing(open_registry(settings)) as registry:
        lines = _in_session(settings, registry, pruned)
        if left := [r for r in registry.records() if not r.running and not orphans.owner_is_gone(r.owner)]:
            lines.append(
                f"left {len(left)} finished task(s) of servers that still run, which show them: "
                "remove_task there, or prune once they have exited"
            )
        return "\n".join(lines)
