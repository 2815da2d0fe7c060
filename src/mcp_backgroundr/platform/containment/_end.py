"""Ending a set of tasks' processes: the stop signal, a grace period, then freeze and kill.

A tree that keeps forking cannot be ended by signalling what one scan found: its newest
children are always missing. So before SIGKILL the tree is frozen — its cgroup's freezer,
or SIGSTOP to every member and a rescan until no new member appears — and only then
killed, all at once. Survivors are reported with the reason that is true for each.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import psutil

from ... import offload
from .. import backend
from ..dying import dying
from ._find import Leader, describe, every_process, find_task_processes, pids, still_running

MAX_FREEZE_ROUNDS = 50
"""SIGSTOP rounds before giving up on a tree that forks faster than it can be scanned."""
UNINTERRUPTIBLE = "in uninterruptible sleep (D state, usually stuck in I/O); SIGKILL takes effect when the I/O returns"
DENIED = "permission denied: the process belongs to another user"
LATE = "started after the last SIGKILL round: the tree kept forking faster than it could be stopped"


@dataclass
class EndOutcome:
    """What ending a set of processes did."""

    signalled: list[int] = field(default_factory=list)
    escalated: bool = False
    survivors: list[tuple[int, str, str]] = field(default_factory=list)
    """(pid, command line, reason) of each process still alive at the end."""
    ended_tasks: set[str] = field(default_factory=set)
    """Ids of the tasks that had any process to end."""
    outlived: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    """The survivors of each task that has any (found again only when some process survived)."""


@dataclass(frozen=True)
class Hurry:
    """Once ``begun`` is set (the server is leaving), a grace period under way lasts at most
    ``seconds`` more."""

    begun: anyio.Event
    seconds: float


async def wait_until_gone(processes: Sequence[psutil.Process], within_seconds: float) -> list[psutil.Process]:
    """Wait up to ``within_seconds`` for the processes to exit; return those still alive (the
    platform backend's way: pidfds, or looks)."""
    return await backend.current().wait_until_gone(processes, within_seconds)


def _signal_all(processes: Sequence[psutil.Process], signum: int, denied: dict[int, str]) -> list[int]:
    """Send ``signum`` to each process; the pids it was sent to. Blocking (psutil checks each
    process's start time first, so a reused pid is never signalled)."""
    sent = []
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            denied[process.pid] = DENIED
            continue
        # Sent: it may die of it, and be reaped, before the next line runs.
        sent.append(process.pid)
        if signum == signal.SIGTERM:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
    return sent


def _stop_growth(
    find: Callable[[], list[psutil.Process]], known: Sequence[psutil.Process], denied: dict[int, str]
) -> list[psutil.Process]:
    """SIGSTOP every member, rescanning until a scan finds no member not yet stopped."""
    stopped: dict[int, psutil.Process] = {}
    fresh = list(known)
    for _ in range(MAX_FREEZE_ROUNDS):
        fresh = [process for process in fresh if process.pid not in stopped]
        if not fresh:
            break
        for process in fresh:
            _signal_all([process], signal.SIGSTOP, denied)
            stopped[process.pid] = process
        fresh = find()
    return list(stopped.values())


def _freeze_and_kill(
    leaders: Mapping[int, Leader], known: Sequence[psutil.Process], denied: dict[int, str]
) -> tuple[list[psutil.Process], bool]:
    """Freeze every tree, then SIGKILL all of it; return the processes killed, and whether any of
    them was still alive and not already dying of the stop signal (SIGKILL was needed)."""
    grouped = {pid: leader for pid, leader in leaders.items() if leader.cgroup is not None}
    scanned = {pid: leader for pid, leader in leaders.items() if leader.cgroup is None}
    killed = every_process(grouped) if grouped else []
    needed = not all(dying(process.pid) for process in killed)  # looked at before the kill
    for leader in grouped.values():
        assert leader.cgroup is not None
        leader.cgroup.freeze_and_kill()
    in_groups = pids(killed)
    others = [process for process in known if process.pid not in in_groups]
    frozen = _stop_growth(lambda: every_process(scanned) if scanned else [], others, denied)
    needed = needed or not all(dying(process.pid) for process in frozen)
    sent = set(_signal_all(frozen, signal.SIGKILL, denied))
    return killed + [process for process in frozen if process.pid in sent], needed


def _merge(known: list[psutil.Process], found: list[psutil.Process]) -> list[psutil.Process]:
    seen = pids(known)
    return known + [process for process in found if process.pid not in seen]


def _reason(process: psutil.Process, killed: set[int], denied: Mapping[int, str], waited: float) -> str:
    if process.pid in denied:
        return denied[process.pid]
    if process.pid not in killed:
        return LATE
    status: str
    try:
        status = process.status()
    except psutil.Error:
        status = "unknown"
    if status == psutil.STATUS_DISK_SLEEP:
        return UNINTERRUPTIBLE
    return f"still alive {waited:.1f} s after SIGKILL (status {status})"


async def end_trees(
    leaders: Mapping[int, Leader],
    grace_seconds: float,
    kill_wait_seconds: float,
    extra: Sequence[psutil.Process] = (),
    hurry: Hurry | None = None,
) -> EndOutcome:
    """End every process of these tasks (and ``extra`` processes) at once: SIGTERM, wait up to
    the grace period (cut short by ``hurry``), freeze and SIGKILL what is left (including processes
    started in the meantime), wait again, and report survivors."""
    outcome = EndOutcome()
    denied: dict[int, str] = {}
    found = await offload.run(offload.SCANS, find_task_processes, leaders) if leaders else {}
    outcome.ended_tasks = {task_id for task_id, group in found.items() if group}
    processes = _merge([member for group in found.values() for member in group], list(extra))
    if not processes:
        return outcome
    # Signals, scans and checks read /proc per process: all in worker threads.
    outcome.signalled.extend(await offload.run(offload.SCANS, _signal_all, processes, signal.SIGTERM, denied))
    remaining = await _grace(processes, grace_seconds, hurry)
    remaining = _merge(remaining, await offload.run(offload.SCANS, every_process, leaders))
    if not remaining:
        return outcome
    killed: set[int] = set()
    began = time.monotonic()
    deadline = began + kill_wait_seconds
    while remaining and time.monotonic() < deadline:
        now_killed, needed = await offload.run(offload.SCANS, _freeze_and_kill, leaders, remaining, denied)
        outcome.escalated = outcome.escalated or needed
        killed |= pids(now_killed)
        remaining = await wait_until_gone(_merge(remaining, now_killed), deadline - time.monotonic())
        remaining = _merge(remaining, await offload.run(offload.SCANS, every_process, leaders))
        if all(process.pid in killed or process.pid in denied for process in remaining):
            break
    outcome.signalled.extend(pid for pid in sorted(killed) if pid not in outcome.signalled)
    waited = time.monotonic() - began
    outcome.survivors = await offload.run(offload.SCANS, _survivors, remaining, killed, denied, waited)
    if outcome.survivors and leaders:
        left = await offload.run(offload.SCANS, find_task_processes, leaders)
        by_pid = {survivor[0]: survivor for survivor in outcome.survivors}
        outcome.outlived = {
            task_id: [by_pid[p.pid] for p in group if p.pid in by_pid]
            for task_id, group in left.items()
            if any(p.pid in by_pid for p in group)
        }
    return outcome


async def _grace(processes: Sequence[psutil.Process], seconds: float, hurry: Hurry | None) -> list[psutil.Process]:
    """Wait up to ``seconds`` for the processes to exit, or ``hurry.seconds`` once ``hurry`` has
    begun if that is sooner; those still alive."""
    if hurry is None:
        return await wait_until_gone(processes, seconds)
    gone: list[psutil.Process] | None = None
    with anyio.CancelScope(deadline=anyio.current_time() + seconds) as grace:
        async with anyio.create_task_group() as group:

            async def shorten() -> None:
                await hurry.begun.wait()
                grace.deadline = min(grace.deadline, anyio.current_time() + hurry.seconds)

            group.start_soon(shorten)
            gone = await wait_until_gone(processes, math.inf)
            group.cancel_scope.cancel()
    return gone if gone is not None else await offload.run(offload.SCANS, still_running, processes)


def _survivors(
    remaining: Sequence[psutil.Process], killed: set[int], denied: Mapping[int, str], waited: float
) -> list[tuple[int, str, str]]:
    return [(p.pid, describe(p), _reason(p, killed, denied, waited)) for p in remaining]
