"""Tasks whose server died without ending them (SIGKILL, a crash, the OOM killer).

Each server records itself as a task's owner: host, pid and the process's start
time. A new server on the same state directory looks for running tasks whose
owner is gone and ends them, so a crash never leaves a dev server holding its
port forever. Owners on other hosts are left alone: their liveness cannot be told
from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import psutil

from .. import offload, runner
from ..models import TaskRecord, TaskState, iso_time
from ..platform import process
from ..platform.containment import EndOutcome, Leader, TaskCgroup, end_trees
from ..results import Survivor, survivors_text

GONE_SERVER = (
    "its server exited without recording its end (it crashed or was SIGKILLed, or could not write "
    "the registry, e.g. on a full disk)"
)
ENDED_REASON = f"{GONE_SERVER}; ended when the next server started"
VANISHED_REASON = f"{GONE_SERVER}; it ended while no server watched it, exit status unknown"
LINGERING_ENDED_REASON = "processes it left behind outlived its server and were ended by the next server"
NONE_FOUND_REASON = "the next server found no process it left behind"
"""Said only where a process could have escaped the look (below the cgroup level: ``contained_note``)."""
EXITED_REASON = "exited"
"""A supervised task's end as its runner recorded it, while no server watched: its run exited (before
an end asked for reached it, when one was). Says nothing of what it left running (``leftovers_ended`` does)."""
UNKNOWN_END_REASON = "it ended while no server watched it and left no record of how; exit status unknown"
LEAST_RUNTIME = "runtime_seconds is the least it ran"
"""Said of a task whose end no server saw: its ended_at is the last moment it is known to have run."""
CAPPER = "the log-capping process its server left behind"
HUNG_UP_NOTE = "its terminal hung up when its server died, which ends a program that does not ignore SIGHUP"


def owner_id() -> str:
    """This server's owner id: host, pid and process start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


def leader_of(record: TaskRecord) -> Leader:
    """The leader of a task this process did not start. A dead leader's pid may have been
    reused: then only its cgroup or the environment marker tells the task's processes."""
    assert record.pid is not None
    alive = process.holds_its_pid(record.pid, record.pid_create_time)
    return Leader(record.task_id, None if alive else record.started_at, TaskCgroup.decode(record.cgroup))


def owner_is_gone(owner: str) -> bool:
    """True when the owner ran on this host and its process no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host != socket.gethostname():
        return False
    try:
        pid, started = int(pid_text), float(started_text)
    except ValueError:
        return False  # not an id this version wrote: leave it alone
    return not process.same_process(pid, started)


def gone_owners(owners: Iterable[str]) -> set[str]:
    """Those of ``owners`` that ran on this host and are gone (blocking: a look at each in /proc)."""
    return {owner for owner in owners if owner_is_gone(owner)}


@dataclass
class LeftBehind:
    """What the tasks of dead servers need from the next one."""

    to_end: list[TaskRecord] = field(default_factory=list)
    """Not meant to outlive their server: end them (and settle finished ones)."""
    to_adopt: list[TaskRecord] = field(default_factory=list)
    """keep_running tasks still running: the new server takes them over."""
    to_settle: list[TaskRecord] = field(default_factory=list)
    """keep_running tasks that ended while no server ran: record how, from the runner."""

    def keep_only(self, claimed: Sequence[TaskRecord]) -> None:
        """Leave the tasks to adopt or settle that another server claimed first (not ``claimed``)."""
        won = {id(record) for record in claimed}
        self.to_adopt = [r for r in self.to_adopt if id(r) in won]
        self.to_settle = [r for r in self.to_settle if id(r) in won]


def left_behind(records: Sequence[TaskRecord], own: str) -> LeftBehind:
    """Sort the tasks of dead servers on this host that may still need attention: running
    ones, and finished ones whose leftovers nobody ended (their daemonized children may live on)."""
    found = LeftBehind()
    others = [r for r in records if (r.running or not r.leftovers_ended) and r.owner != own]
    gone = gone_owners({r.owner for r in others})  # one look per server, not per task
    for record in others:
        if record.owner not in gone:
            continue
        if not (record.keep_running and record.state is TaskState.RUNNING):
            found.to_end.append(record)
        elif record.pid is not None and process.same_process(record.pid, record.pid_create_time):
            found.to_adopt.append(record)
        else:
            found.to_settle.append(record)
    return found


def as_it_stands(record: TaskRecord) -> TaskRecord:
    """A record as its server would record it now. A running task whose server is gone may have
    ended since, with no server to write that down: then a copy that says how (its runner, if it
    has one, knows), else the record itself; then its empty cgroup is removed. The CLI and every server
    read others' tasks so."""
    if not record.running or record.host is not None or not owner_is_gone(record.owner):
        return record  # a remote task's host knows how it stands: status, logs and stop ask it
    if record.pid is not None and process.same_process(record.pid, record.pid_create_time):
        return record
    current = dataclasses.replace(record)
    if record.supervised:
        settle_ended(current, time.time())
    elif record.kill_requested:  # as a server records an end it asked for (the CLI's stop, with no server)
        current.mark_ended(TaskState.KILLED, None, record.ended_at)
    else:
        ended_at, window = unseen_end(record, time.time())
        current.mark_ended(TaskState.FAILED, VANISHED_REASON + window, ended_at)
    remove_empty_cgroups([current])
    return current


def remove_empty_cgroups(records: Iterable[TaskRecord]) -> None:
    """Remove the cgroups of the finished tasks on this machine among ``records`` that no process is
    left in (one that holds a process stays). Whoever learns that a task ended does it (a server
    starting, a listing, the CLI), so none outlives a task that ended while no server watched it."""
    for record in records:
        cgroup = TaskCgroup.decode(record.cgroup)
        if cgroup is not None and record.host is None and not record.running:
            cgroup.remove()


def last_sign_of_life(record: TaskRecord) -> tuple[float, str]:
    """The latest moment ``record``'s task is known to have run, and what shows it (blocking: a stat
    of its log, and of its runner's record): its start, its log's last write (its output; on a
    terminal, what its server copied of it), a supervised task's runner's last record of a run."""
    signs = [(record.started_at, "its start")]
    written = [(record.log_path, "its log's last write")]
    if record.supervised:
        written.append((record.run_record_path, "its runner's last record of a run"))
    for path, sign in written:
        with contextlib.suppress(OSError):
            signs.append((os.stat(path).st_mtime, sign))
    return max(signs, key=lambda each: each[0])


def end_seen(record: TaskRecord) -> tuple[float, bool] | None:
    """When the capping process of ``record``'s dead server saw its main process end, and whether it
    saw it (else it had ended by then, when the server died), if it wrote that down
    (``logs/capping.py``; blocking: it reads what that process wrote)."""
    try:
        with open(record.end_seen_path, encoding="utf-8") as file:
            written = json.load(file)
        at, seen = written["ended_at"], written["seen"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(at, int | float) or not isinstance(seen, bool) or at < record.started_at:
        return None
    return float(at), seen


def unseen_end(record: TaskRecord, found_gone_at: float) -> tuple[float, str]:
    """When a task that ended while no server watched it is recorded as ended, and the words that say
    so, to follow its end reason (blocking: it reads files beside its log): when its dead server's
    capping process saw it end, or else the last moment it is known to have run (its end came after
    it, and before ``found_gone_at``)."""
    hung_up = f"; {HUNG_UP_NOTE}" if record.stdin == "terminal" else ""
    written = end_seen(record)
    if written is not None and written[0] <= found_gone_at:
        at, seen = written
        if seen:
            return at, f", seen to end at {iso_time(at)} by {CAPPER}{hung_up}"
        return at, f", by {iso_time(at)}, when {CAPPER} found its server gone{hung_up}"
    seen_at, sign = last_sign_of_life(record)
    seen_at = min(seen_at, found_gone_at)
    window = (
        f", at a time not known: after {iso_time(seen_at)} ({sign}: ended_at, so {LEAST_RUNTIME}) and before "
        f"{iso_time(found_gone_at)} (when it was found gone)"
    )
    return seen_at, window + hung_up


def settle_from_runner(record: TaskRecord, found_gone_at: float | None = None) -> bool:
    """Record how a supervised task ended, as its runner wrote it down; False when it wrote
    nothing of the end (it was killed first, or the machine stopped). ``found_gone_at``: when it was
    found ended, where no server watched it end (None: it was seen ending now)."""
    run = runner.read_run_record(record.run_record_path)
    final = {str(state) for state in TaskState} - {str(TaskState.RUNNING)}
    if run is None or run.state not in final:  # none yet, or not one this version knows
        if found_gone_at is None or record.ended_at is not None:
            record.mark_ended(TaskState.FAILED, UNKNOWN_END_REASON, record.ended_at)
        else:
            ended_at, window = unseen_end(record, found_gone_at)
            record.mark_ended(TaskState.FAILED, UNKNOWN_END_REASON + window, ended_at)
        return False
    record.mark_ended(TaskState(run.state), EXITED_REASON, run.ended_at)
    record.exit_code, record.signal = run.exit_code, run.signal
    return True


def settle_ended(record: TaskRecord, found_gone_at: float | None = None) -> None:
    """Record how a supervised task ended, as its runner wrote it down. The runner's account wins:
    it records killed only when an end reached the run, so a run that ended by itself just before
    stays completed or failed; an end that was asked for (and its reason) wins when the runner
    recorded killed, or nothing (the end killed it before it could). ``found_gone_at``: see
    :func:`settle_from_runner`."""
    asked_to_end = record.end_reason if record.kill_requested else None
    recorded = settle_from_runner(record, found_gone_at)
    if asked_to_end is not None and (not recorded or record.state is TaskState.KILLED):
        record.state, record.end_reason = TaskState.KILLED, asked_to_end


async def end_unowned(records: Sequence[TaskRecord], grace_seconds: float, kill_wait_seconds: float) -> EndOutcome:
    """End the process trees of tasks this process did not start (the next server ending what a
    dead one left, the CLI's stop), and remove the cgroups they leave empty."""
    leaders = await offload.run(offload.SCANS, _leaders_of, records)
    outcome = await end_trees(leaders, grace_seconds, kill_wait_seconds)
    await offload.run(offload.CGROUPS, _remove_cgroups, records)
    return outcome


def _leaders_of(records: Sequence[TaskRecord]) -> dict[int, Leader]:
    """The leaders of ``records`` by pid (blocking: a look at each in /proc)."""
    return dict(leaders_of(records))


def leaders_of(records: Sequence[TaskRecord]) -> list[tuple[int, Leader]]:
    """The pid and leader of each of ``records`` that has a pid (blocking: a look at each in /proc)."""
    return [(record.pid, leader_of(record)) for record in records if record.pid is not None]


def _remove_cgroups(records: Sequence[TaskRecord]) -> None:
    for record in records:
        cgroup = TaskCgroup.decode(record.cgroup)
        if cgroup is not None:
            cgroup.remove()  # one that still holds a survivor stays


async def end_orphans(orphans: Sequence[TaskRecord], grace_seconds: float, kill_wait_seconds: float) -> None:
    """End every process of the orphaned tasks and record how each one ended (a finished one whose
    leftovers there were none of: as it was, but for ``leftovers_ended``)."""
    outcome = await end_unowned(orphans, grace_seconds, kill_wait_seconds)
    now = time.time()
    unseen = [r for r in orphans if r.state is TaskState.RUNNING and r.task_id not in outcome.ended_tasks]
    unseen_ends = await offload.run(offload.LOGS, lambda: {r.task_id: unseen_end(r, now) for r in unseen})
    for record in orphans:
        had_processes = record.task_id in outcome.ended_tasks
        outlived = outcome.outlived.get(record.task_id)
        note = contained_note(record) if not outlived else outlived_note(outlived)
        record.leftovers_ended = True  # what survives SIGKILL, the next server would not end either
        if record.state is not TaskState.RUNNING:
            if had_processes:
                record.say_why_it_ended(LINGERING_ENDED_REASON + note)
            elif not record.cgroup:  # none found; what could not be looked for is said
                record.say_why_it_ended(NONE_FOUND_REASON + note)
            continue
        record.kill_requested = had_processes
        if had_processes:
            record.mark_ended(TaskState.KILLED, ENDED_REASON + note, now)
        else:
            ended_at, window = unseen_ends[record.task_id]
            record.mark_ended(TaskState.FAILED, VANISHED_REASON + window + note, ended_at)


def outlived_note(survivors: Sequence[tuple[int, str, str]]) -> str:
    """What the next server could not end of a dead server's task (its cgroup, if any, stays)."""
    count = f"{len(survivors)} process{'es' if len(survivors) > 1 else ''}"
    return f"; but {count} outlived SIGKILL: " + survivors_text(
        Survivor(pid, command, why) for pid, command, why in survivors
    )


def contained_note(record: TaskRecord) -> str:
    """What the next server could and could not check of a dead server's task, at its level."""
    if record.cgroup:
        return "; its cgroup was emptied and removed"
    return (
        f"; at the {record.containment} containment level, a process that had left its session and dropped its "
        "marker before the crash cannot be found"
    )
