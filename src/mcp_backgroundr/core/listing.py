"""Listing tasks: this server's, or every task in the registry, with the ports they listen on and,
for a finished task, the processes it left running."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import psutil

from .. import offload
from ..models import TaskRecord, TaskState
from ..platform import scans
from ..platform.containment import Leader
from ..results import Listing
from ..store import orphans
from .place import Place
from .recording import refresh_all
from .state import CoreState
from .task import Task, summary_of


def own_records(state: CoreState) -> list[TaskRecord]:
    """The records of this server's tasks, oldest first (cheap: nothing is read)."""
    return [task.record for task in state.own.values()]


async def every_record(state: CoreState) -> list[TaskRecord]:
    """Every record of the registry, newest first (read in a worker thread)."""
    return await offload.run(offload.REGISTRY, state.registry.records)


async def list_tasks(
    state: CoreState,
    wanted: TaskState | None,
    everyone: bool,
    limit: int | None,
    everything: list[TaskRecord] | None = None,
) -> Listing:
    """This server's tasks (or, with ``everyone``, every task in the registry: ``everything``, as
    read, else read now) in state ``wanted`` (None: any), newest first, at most ``limit`` of them."""
    await refresh_all(state)  # a place that watches exits needs no call for this server's tasks
    records = own_records(state)
    asked: dict[str, bool] = {}
    if everyone:
        if everything is None:
            everything = await every_record(state)
        others = [r for r in everything if r.task_id not in state.own]
        asked = await _settle_left(state, others)
        records += await offload.run(offload.SCANS, lambda: [orphans.as_it_stands(r) for r in others])
    lingering = await _lingering_counts(state, records)
    now = time.time()
    matching = sorted((r for r in records if _in_state(r, wanted, lingering)), key=lambda r: r.started_at, reverse=True)
    shown = matching[:limit]
    ports = await state.sockets.of_tasks({r.task_id for r in shown if r.running or r.task_id in lingering})
    summaries = [
        summary_of(r, now, ports.get(r.task_id, []), asked.get(r.task_id), lingering.get(r.task_id)) for r in shown
    ]
    return Listing(tasks=summaries, total=len(matching))


def _in_state(record: TaskRecord, wanted: TaskState | None, lingering: dict[str, int]) -> bool:
    """Whether a task is listed for ``wanted``: running lists the finished tasks whose processes still
    run too, so that no listing says nothing runs while a task's processes do (`server &`)."""
    if wanted is None or record.state is wanted:
        return True
    return wanted is TaskState.RUNNING and record.task_id in lingering


async def _lingering_counts(state: CoreState, records: list[TaskRecord]) -> dict[str, int]:
    """How many processes each finished task left running, for those that left some, among the
    finished tasks not yet known to have none left: each place looks (all at once) for its own."""
    unsettled = [r for r in records if not r.running and not r.leftovers_ended and r.pid is not None]
    if not unsettled:
        return {}
    counts: dict[str, int] = {}

    async def look(place: Place, at_place: list[TaskRecord]) -> None:
        counts.update(await place.left_running(at_place))

    async with anyio.create_task_group() as looking:
        for place in state.places:
            if at_place := [r for r in unsettled if state.place_of(r) is place]:
                looking.start_soon(look, place, at_place)
    return counts


async def left_here(state: CoreState, unsettled: Sequence[TaskRecord]) -> dict[str, int]:
    """How many processes each of these finished tasks on this machine left running, for those that
    left some: looked for in one scan (a task with a cgroup: in its cgroup); this server's tasks
    found with none are settled, and not looked for again."""
    own = {r.task_id: state.own[r.task_id] for r in unsettled if r.task_id in state.own}
    others = await offload.run(offload.SCANS, orphans.leaders_of, [r for r in unsettled if r.task_id not in own])
    found: dict[str, list[psutil.Process]] = {}
    mine = [(t.record.pid, t.leader()) for t in own.values() if t.record.pid is not None]
    for leaders in _without_shared_pids(mine + others):
        found |= await scans.task_processes(leaders)
    for task_id, task in own.items():
        if not found.get(task_id):
            await task.settle()
    return {task_id: len(processes) for task_id, processes in found.items() if processes}


def _without_shared_pids(leaders: list[tuple[int, Leader]]) -> list[dict[int, Leader]]:
    """The leaders in as few maps by pid as hold each once (old finished tasks may share a reused pid)."""
    batches: list[dict[int, Leader]] = []
    for pid, leader in leaders:
        batch = next((b for b in batches if pid not in b), None)
        if batch is None:
            batches.append(batch := {})
        batch[pid] = leader
    return batches


async def _settle_left(state: CoreState, records: list[TaskRecord]) -> dict[str, bool]:
    """Ask each place how the running tasks of servers that are gone stand (a remote place: all
    its hosts at once, each briefly; one that does not answer keeps its tasks as last known), and
    record those that ended. Answers, for each remote task asked about (one with a ``host_seen_at``),
    whether its host answered now."""
    running = [r for r in records if r.running]
    gone = await offload.run(offload.SCANS, orphans.gone_owners, {r.owner for r in running})
    left = [Task(r, None) for r in running if r.owner in gone]
    began = time.time()
    for place in state.places:
        if at_place := [task for task in left if state.place_of(task.record) is place]:
            state.save([task.record for task in await place.refresh(at_place)])
    return {t.record.task_id: seen >= began for t in left if (seen := t.record.host_seen_at) is not None}
