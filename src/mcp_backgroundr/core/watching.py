"""Watching this server's tasks: each exit the moment it happens (a pidfd), a terminal task's
output into its log, and, as subreaper, the orphans that come back to the server."""

from __future__ import annotations

import os
import signal
import subprocess

import anyio

from .. import offload
from ..platform import process, terminal
from ..platform.containment import Level, has_exited
from ..store import orphans
from . import watchers
from .forgetting import prune_if_due
from .recording import record_exit_when_read
from .state import CoreState, TaskChange
from .task import Task

TERMINAL_DRAIN_SECONDS = 0.5


async def watch_exit(state: CoreState, task: Task, popen: subprocess.Popen[bytes], exit_handle: int | None) -> None:
    """Wait for the exit of a task this server started, record it, then tidy up after it."""
    returncode = await process.wait_for_exit(popen, exit_handle)
    if state.containment.level is Level.SUBREAPER:
        with anyio.CancelScope(shield=True):  # before the exit is recorded, so no answer misses them
            await _claim_arrivals(state)
    if task.output_done is not None:
        # Let the terminal copier catch up with what the task wrote just before exiting.
        with anyio.move_on_after(TERMINAL_DRAIN_SECONDS):
            await task.output_done.wait()
    await record_exit_when_read(state, task, returncode)
    state.end_recorded(task.record)
    reap(state)
    _cap_after_its_runner(state, task)
    await _settle_if_empty(state, task)
    state.changed(TaskChange.ENDED, task.record.task_id)
    prune_if_due(state)


async def _claim_arrivals(state: CoreState) -> None:
    """A task's main process exited and handed its orphans to us: claim them for its task
    where it can be told (see containment.Arrivals), in a worker thread."""
    popens = {t.popen.pid: t.popen for t in state.own.values() if t.popen is not None}
    leaders = {t.popen.pid: t.record.task_id for t in state.own.values() if t.popen is not None}

    def exited(pid: int) -> bool:
        return popens[pid].returncode is not None or has_exited(pid)

    others = state.helper_pids()
    async with state.arrivals_lock:
        await offload.run(offload.SCANS, state.arrivals.claim, leaders, exited, others)


async def watch_adopted(state: CoreState, task: Task) -> None:
    """Wait for the exit of an adopted task's runner (not our child); its runner says how it ended."""
    assert task.record.pid is not None
    await process.wait_until_ended(task.record.pid, task.record.pid_create_time)
    if task.running:
        await offload.run(offload.LOGS, orphans.settle_ended, task.record)
        task.exited.set()
        if not state.shutting_down:
            state.save([task.record])
    _cap_after_its_runner(state, task)
    await _settle_if_empty(state, task)
    state.changed(TaskChange.ENDED, task.record.task_id)


def _cap_after_its_runner(state: CoreState, task: Task) -> None:
    """A supervised task's runner capped its log, and has ended with its command: processes the
    command left running may write on (a new-user trial: 18 MB in 1.5 s past a 1 MiB cap)."""
    if task.record.supervised and not task.running:
        state.cap(task.record)


async def _settle_if_empty(state: CoreState, task: Task) -> None:
    """Remove an ended task's cgroup once no process is left in it, and record that none is (else
    its status does, later; or its server's exit, or the next server)."""
    cgroup = task.cgroup
    if cgroup is not None and not await offload.run(offload.CGROUPS, cgroup.populated):
        await task.settle()
        if not state.shutting_down:
            state.save([task.record])


async def copy_terminal(state: CoreState, task: Task, master: int, log_fd: int) -> None:
    """Copy what a pty task writes into its log until its terminal closes.

    The terminal's master is closed only once the task's main process has exited: closing it
    hangs the terminal up, and a program that closes its terminal on its way out (``cat`` at end
    of input closes its files, then exits) was killed by that SIGHUP in about half the closes
    sent right after its start, and recorded failed instead of completed."""

    def failed(error: OSError) -> None:
        note = f"its terminal output could not be written to its log ({watchers.failure_text(error)})"
        watchers.report(f"task {task.record.task_id}", note)
        state.note(task, note)

    try:
        if lost := await terminal.copy_output(master, log_fd, failed):
            watchers.report(f"task {task.record.task_id}", f"{lost} bytes of terminal output were lost")
            state.note(task, f"{lost} bytes of its terminal output were lost")
    finally:
        task.input_fd = None
        task.input_closed.set()  # a send waiting for room on the terminal stops
        if task.output_done is not None:
            task.output_done.set()
        try:
            await task.exited.wait()
        finally:
            os.close(master)  # hangs the terminal up: only once the task's main process has exited


async def reap_orphans(state: CoreState) -> None:
    """As subreaper, orphaned descendants of tasks become our children: collect them when
    they exit, so no zombie piles up."""
    with anyio.open_signal_receiver(signal.SIGCHLD) as exits:
        reap(state)
        async for _ in exits:
            reap(state)


def reap(state: CoreState) -> None:
    # A child spawned in a worker thread is not yet known: its exit must wait for its watcher.
    # A helper being started (an ssh) may exit before its pid is known: reaped here, its own
    # watcher (asyncio's) would find nothing to collect ("Unknown child process pid ...").
    if state.containment.level is not Level.MARKER and not state.spawns_in_flight:
        helpers = state.watched_helpers()
        if helpers is None:
            return
        own = {t.popen.pid for t in state.own.values() if t.popen is not None and t.popen.returncode is None}
        state.containment.reap(own | helpers)
