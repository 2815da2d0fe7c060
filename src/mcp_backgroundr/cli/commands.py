"""The human commands: ps, logs, status, send, stop and prune, on the registry and the logs.

They work with or without a running server, and never take tasks over: a server
that owns a task stays its owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from .. import runner
from ..config import Settings
from ..core import taskinput
from ..errors import BackgroundrError
from ..logs import files, holes
from ..models import TaskRecord, TaskState, one_line
from ..platform import process
from ..platform.inotify import WriteWatches
from ..remote import commands as remote
from ..store import orphans, retention
from ..store.registry import Registry

STOP_REASON = "mcp-backgroundr stop"
COPY_CHUNK = 1024 * 1024
COMMAND_COLUMN_WIDTH = 60
FOLLOW_EXIT_CHECK_SECONDS = 0.5
"""How long logs -f waits on the log before looking whether the task has ended."""


def open_registry(settings: Settings) -> Registry:
    if not settings.registry_path.exists():
        raise BackgroundrError(
            f"no task registry at {settings.registry_path} yet: no server has run with this state directory"
        )
    return Registry(settings.registry_path)


def _record(registry: Registry, task_id: str) -> TaskRecord:
    record = registry.get(task_id.strip())  # an id pasted with the spaces around it
    if record is None:
        raise BackgroundrError(f"no task {task_id!r} in {registry.path}; `mcp-backgroundr ps --all` lists the ids")
    return record


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def ps(settings: Settings, everything: bool) -> str:
    """A table of running tasks (``everything``: finished ones too), newest first."""
    if not settings.registry_path.exists():
        return f"no tasks yet in {settings.home}"
    with contextlib.closing(open_registry(settings)) as registry:
        records = [r for r in map(orphans.as_it_stands, registry.records()) if everything or r.running]
    if not records:
        return f"no tasks in {settings.home}" if everything else "no running tasks; ps --all lists finished ones too"
    ports = process.listening_by_task({r.task_id for r in records if r.running})
    now = time.time()
    rows = [("ID", "NAME", "STATE", "HOST", "PID", "PORTS", "RUNTIME", "COMMAND")]
    for r in records:
        listening = ",".join(str(port) for _, port, _ in ports.get(r.task_id, []))
        state = r.state if r.exit_code is None else f"{r.state}({r.exit_code})"
        command = one_line(r.command, COMMAND_COLUMN_WIDTH)
        rows.append(
            (
                r.task_id,
                r.name or "-",
                state,
                r.host or "-",
                str(r.pid or "-"),
                listening or "-",
                _duration(r.runtime_seconds(now)),
                command,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def status(settings: Settings, task_id: str, as_json: bool) -> str:
    with contextlib.closing(open_registry(settings)) as registry:
        record = orphans.as_it_stands(_record(registry, task_id))
    if record.host is not None:
        return _remote_status(settings, record, as_json)
    path = Path(record.log_path)
    fields = asdict(record) | {"output_bytes": files.log_size(path), "dropped_bytes": files.dropped_bytes(path)}
    fields["state"] = str(record.state)
    fields["cgroup"] = record.cgroup.split("\n") if record.cgroup else None  # one per hierarchy
    run = runner.read_run_record(record.run_record_path) if record.supervised else None
    if run is not None:
        fields |= {"restarts": run.restarts, "next_start_at": run.next_start_at}
    for key in ("started_at", "ended_at", "next_start_at", "pid_create_time"):
        if fields.get(key) is not None and not as_json:
            fields[key] = datetime.fromtimestamp(fields[key], UTC).isoformat(timespec="seconds")
    return json.dumps(fields, indent=2) if as_json else _as_text(fields)


def _remote_status(settings: Settings, record: TaskRecord, as_json: bool) -> str:
    answer = anyio.run(remote.status, settings, record)
    fields = {key: value for key, value in asdict(answer).items() if key != "output"}
    fields |= {"log_path": record.log_path, "owner": record.owner}
    fields["command"] = record.command  # the answer shows at most the start of it
    return json.dumps(fields, indent=2) if as_json else _as_text(fields)


def _as_text(fields: dict[str, Any]) -> str:
    """One ``key: value`` line per field that has a value; a list's items, and the lines of a
    multi-line value, continue on lines of their own, indented."""
    lines = []
    for key, value in fields.items():
        if value in (None, [], ""):
            continue
        parts = [str(item) for item in value] if isinstance(value, list) else str(value).split("\n")
        lines.append(f"{key}: {parts[0]}")
        lines.extend(f"  {part}" for part in parts[1:])
    return "\n".join(lines)


def logs_command(settings: Settings, task_id: str, lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of a task's log, then (``follow``) what it writes until it ends."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = _record(registry, task_id)
    if record.host is not None:
        anyio.run(remote.logs, settings, record, lines, follow)
        return
    path = Path(record.log_path)
    offset = _copy(path, files.offset_of_last_lines(path, lines))
    if follow and record.running and record.pid is not None:
        anyio.run(_follow, path, offset, record)


def _copy(path: Path, offset: int) -> int:
    """Write the log from ``offset`` to the end onto stdout (what is kept of it); return the new offset."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return offset
    try:
        while True:
            chunk, offset, _ = holes.read_kept(fd, COPY_CHUNK, offset)
            if not chunk:
                break
            sys.stdout.buffer.write(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    sys.stdout.buffer.flush()
    return offset


async def _follow(path: Path, offset: int, record: TaskRecord) -> None:
    pid = record.pid
    assert pid is not None
    ended = anyio.Event()

    async def watch_exit() -> None:
        await process.wait_until_ended(pid, record.pid_create_time)
        ended.set()

    writes = WriteWatches()
    async with anyio.create_task_group() as group:
        group.start_soon(writes.run)
        group.start_soon(watch_exit)
        with writes.watching(path) as growth:
            while not ended.is_set():
                offset = _copy(path, offset)
                with anyio.move_on_after(FOLLOW_EXIT_CHECK_SECONDS):
                    await growth.wait()
            _copy(path, offset)
        group.cancel_scope.cancel()


def send(settings: Settings, task_id: str, text: str, newline: bool = True, close: bool = False) -> str:
    """Write to the input home of a keep_running task started with stdin, whichever server owns it."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = orphans.as_it_stands(_record(registry, task_id))
    if not record.running:
        raise BackgroundrError(f"task {task_id} has ended ({record.state}); it takes no more input")
    if not taskinput.has_input_home(record):
        raise BackgroundrError(
            f"task {task_id} has no input here: only keep_running tasks started with stdin=true take input "
            "from the command line (or their input was closed); others take it from their server's send_task_input"
        )
    written = anyio.run(taskinput.write_to_input_home, record, (text + "\n" if newline else text).encode())
    if close:
        anyio.run(taskinput.close_input_home, record)
    return f"wrote {written} bytes to task {task_id}" + ("; its input is now closed" if close else "")


def stop(settings: Settings, task_id: str, grace_seconds: float) -> str:
    """End a task's whole process tree, whichever server owns it."""
    with contextlib.closing(open_registry(settings)) as registry:
        record = _record(registry, task_id)
        if not record.running:
            return f"task {task_id} has already ended ({record.state})"
        record.request_end(STOP_REASON)
        registry.update([record])
        if record.host is not None:
            return _stop_remote(settings, registry, record, grace_seconds)
        outcome = anyio.run(orphans.end_unowned, [record], grace_seconds, settings.kill_wait_seconds)
        if orphans.owner_is_gone(record.owner):
            # No server will record the end: do it here.
            fresh = registry.get(task_id) or record
            if fresh.running:
                fresh.mark_ended(TaskState.KILLED, STOP_REASON)
                registry.update([fresh])
    return _stopped(f"stopped task {task_id}: signalled {len(outcome.signalled)} process(es)", outcome.survivors)


def _stopped(text: str, survivors: Iterable[tuple[int, str, str]]) -> str:
    """``text``, then the processes that survived (pid, command, why), or that none is left."""
    named = "; ".join(f"pid {pid} ({command}): {why}" for pid, command, why in survivors)
    return text + (f"; SURVIVORS: {named}" if named else "; none is left")


def _stop_remote(settings: Settings, registry: Registry, record: TaskRecord, grace_seconds: float) -> str:
    ended = anyio.run(remote.stop, settings, record, grace_seconds, STOP_REASON)
    if orphans.owner_is_gone(record.owner):
        registry.update([record])  # no server will record the end: do it here
    text = f"stopped task {record.task_id} on {record.host}: signalled {len(ended.signalled_pids)} process(es)"
    return _stopped(text, ((s.pid, s.command, s.reason) for s in ended.survivors))


def prune(settings: Settings, keep: int, days: float) -> str:
    if not settings.registry_path.exists():
        return "nothing to prune"
    with contextlib.closing(open_registry(settings)) as registry:
        pruned = retention.prune(registry, keep, days)
    left = anyio.run(remote.forget, settings, pruned) if any(r.host for r in pruned) else []
    return "\n".join([f"pruned {len(pruned)} finished task(s) and their logs", *left])
