"""One task as the supervisor holds it in memory, and how it is reported.

A :class:`Task` pairs the registry record with what only a live server knows: the
child process (when it is ours), the event set at its exit, its input descriptor,
and the samples that make repeated status calls cheap. It finds its own processes
and describes itself as plain data (``core/results.py``); starting, watching and
ending tasks is the core's other units'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import psutil

from .. import offload, runner
from ..logs import files
from ..models import ISO_TIMES_KEPT, TaskRecord, TaskState, iso_time, shown_command, socket_address
from ..platform import backend, process, scans
from ..platform.containment import Leader, TaskCgroup
from ..results import Ended, Listening, Started, Status, Summary

USAGE_REFRESH_SECONDS = 1.0
"""Status reuses a running task's process list, and what those processes use, for this long."""


_Answer = TypeVar("_Answer", Started, Status, Summary, Ended)

_Shown = Callable[[TaskRecord, float], object]

_AS_SHOWN: dict[str, _Shown] = {
    "command": lambda record, _now: shown_command(record.command, record.task_id),
    "started_at": lambda record, _now: iso_time(record.started_at) or "",
    "ended_at": lambda record, _now: iso_time(record.ended_at),
    "host_seen_at": lambda record, _now: iso_time(record.host_seen_at),
    "runtime_seconds": lambda record, now: record.runtime_seconds(now),
}
"""The record's facts that answers show otherwise than the registry holds them."""


def answer_of(kind: type[_Answer], record: TaskRecord, now: float, **facts: object) -> _Answer:
    """The answer ``kind`` (a class of ``results.py``) about ``record`` at ``now``: each of its fields
    named as one of the record's is the record's, as answers show it (the command shortened, times
    in ISO 8601 UTC); ``facts`` are the rest, which only the operation knows."""
    fields: dict[str, Any] = {name: show(record, now) for name, show in _SHOWN_FIELDS[kind]}
    fields.update(facts)
    return kind(**fields)


def _shown_fields(kind: type[Started | Status | Summary | Ended]) -> tuple[tuple[str, _Shown], ...]:
    """The fields of ``kind`` that come from a task's record, and how each is shown."""
    held = {f.name for f in dataclasses.fields(TaskRecord)}
    return tuple(
        (f.name, _AS_SHOWN.get(f.name, functools.partial(_held, f.name)))
        for f in dataclasses.fields(kind)
        if f.name in _AS_SHOWN or f.name in held
    )


def _held(name: str, record: TaskRecord, _now: float) -> object:
    return getattr(record, name)


_SHOWN_FIELDS = {kind: _shown_fields(kind) for kind in (Started, Status, Summary, Ended)}


@dataclass(frozen=True)
class CpuSample:
    at: float
    """Monotonic time of the sample."""
    cpu_seconds: float
    """CPU seconds the task's processes had used by then."""


@dataclass(frozen=True)
class ProcessesSeen:
    at: float
    """Monotonic time of the scan."""
    processes: list[psutil.Process]


@dataclass(frozen=True)
class Measurement:
    """What a task's processes use, and its run record (a supervised task's runner writes it)."""

    usage: process.TreeUsage
    run: runner.RunRecord | None


@dataclass
class Task:
    record: TaskRecord
    popen: subprocess.Popen[bytes] | None
    exited: anyio.Event = field(default_factory=anyio.Event)
    cpu_sample: CpuSample | None = None
    """The tree's CPU seconds at the previous status call."""
    processes_seen: ProcessesSeen | None = None
    """What the last scan for a running task found."""
    usage_seen: tuple[ProcessesSeen, Measurement, float | None] | None = None
    """What the processes of that scan used, and the CPU share shown for it: status calls reuse it as
    long as the scan (reading a tree of 300 processes' usage took tens of ms of /proc reads and parsing,
    holding the interpreter lock, per call of a client polling it)."""
    input_fd: int | None = None
    """Where send_task_input writes: the stdin pipe, or the terminal's master side."""
    terminal: bool = False
    partial_line_bytes: int = 0
    """How much of a line a terminal task's input left unfinished (the terminal holds it back until it ends)."""
    output_done: anyio.Event | None = None
    """Set once a terminal task's output has all been copied to its log."""
    input_closed: anyio.Event = field(default_factory=anyio.Event)
    input_lock: anyio.Lock = field(default_factory=anyio.Lock)
    """One send at a time: sends bigger than a pipe holds, made together, reached the task interleaved."""
    """Set once its stdin pipe is closed (by a call, or as it ended): a write waiting for room stops."""
    _scan_lock: anyio.Lock = field(default_factory=anyio.Lock)
    leftovers_end: anyio.Event | None = None
    """While the processes a finished task left behind are ended for a reason its record will say
    (max_runtime_seconds): set once that reason is recorded (see :meth:`ending_leftovers`)."""
    leftovers_ends: int = 0
    """How many such ends have been recorded."""

    @contextlib.asynccontextmanager
    async def ending_leftovers(self) -> AsyncIterator[None]:
        """The processes this finished task left behind are ended, and why recorded, within the block:
        a status read meanwhile must not pair processes seen before the end with the reason recorded
        after it, nor the reverse (see :func:`.reading.read`)."""
        self.leftovers_end = done = anyio.Event()
        try:
            yield
        finally:
            self.leftovers_ends += 1
            self.leftovers_end = None
            done.set()

    def close_input_pipe(self) -> None:
        if self.popen is not None and self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            if not self.terminal:
                self.input_fd = None
                self.input_closed.set()

    @property
    def running(self) -> bool:
        return self.record.state is TaskState.RUNNING

    @property
    def lingering_known_empty(self) -> bool:
        """Once no process of a finished task is left (found so, or ended), none can appear again: the
        record says so (``leftovers_ended``), for the next server too."""
        return not self.running and self.record.leftovers_ended

    @property
    def cgroup(self) -> TaskCgroup | None:
        return TaskCgroup.decode(self.record.cgroup)

    def leader(self) -> Leader:
        reaped_at = self.record.ended_at if self.exited.is_set() else None
        return Leader(self.record.task_id, reaped_at, self.cgroup)

    async def find_processes(self) -> list[psutil.Process]:
        """Every live process of the task, from a scan of the machine's processes in a worker
        thread, shared with the other calls that look at the same moment."""
        if self.record.pid is None or self.lingering_known_empty:
            return []
        return (await scans.task_processes({self.record.pid: self.leader()}))[self.record.task_id]

    async def lingering(self) -> list[psutil.Process]:
        """Processes of a finished task that are still alive (found in a worker thread)."""
        if self.running or self.lingering_known_empty or self.record.pid is None:
            return []
        found = await self.find_processes()
        if not found:
            await self.settle()
        return found

    async def settle(self) -> None:
        """Note that a finished task has no process left (its record says so once it is saved), and
        remove its (empty) cgroup (in a worker thread)."""
        self.record.leftovers_ended = True
        cgroup = self.cgroup
        if cgroup is not None:
            await offload.run(offload.CGROUPS, cgroup.remove)

    async def live_processes(self) -> list[psutil.Process]:
        """The processes of a running task, or the lingering ones of a finished task.

        Finding them scans every process of the machine, in a worker thread; for a running
        task the answer is reused for USAGE_REFRESH_SECONDS, and concurrent calls share one
        scan, so a client polling status stays cheap.
        """
        if not self.running:
            return await self.lingering()
        async with self._scan_lock:
            now = time.monotonic()
            if self.processes_seen is None or now - self.processes_seen.at > USAGE_REFRESH_SECONDS:
                found = await self.find_processes()
                self.processes_seen = ProcessesSeen(time.monotonic(), found)
            return self.processes_seen.processes

    def cpu_percent(self, cpu_seconds: float) -> float:
        """CPU use since the previous status call (or since the start), from the tree's CPU seconds."""
        now = time.monotonic()
        if self.cpu_sample is None:
            since, used = now - max(0.001, self.record.runtime_seconds(time.time())), cpu_seconds
        else:
            since, used = self.cpu_sample.at, cpu_seconds - self.cpu_sample.cpu_seconds
        self.cpu_sample = CpuSample(now, cpu_seconds)
        return round(max(0.0, used) / max(now - since, 0.001) * 100, 1)

    async def measured(
        self, processes: list[psutil.Process], sockets: Sequence[process.Socket]
    ) -> tuple[Measurement, float | None]:
        """What ``processes`` use (measured in a worker thread, or the measurement of the same scan of a
        running task), and their CPU share since the previous measurement. A supervised task's is
        measured every time: it carries its runner's account (restarts), which the runner rewrites."""
        seen = self.processes_seen if self.running and not self.record.supervised else None
        if seen is None or seen.processes is not processes:
            seen = None
        elif self.usage_seen is not None and self.usage_seen[0] is seen:
            return self.usage_seen[1], self.usage_seen[2]
        measurement = await offload.run(offload.SCANS, self.measure, processes, sockets)
        usage = measurement.usage
        cpu = self.cpu_percent(usage.cpu_seconds) if usage.process_count else None
        if seen is not None:
            self.usage_seen = (seen, measurement, cpu)
        return measurement, cpu

    def measure(self, processes: list[psutil.Process], sockets: Sequence[process.Socket]) -> Measurement:
        """What ``processes`` use (the cgroup's own accounting, when there is one) and the task's
        run record (a supervised task's runner writes it): reads of /proc and files, for a worker thread."""
        usage = backend.current().tree_usage(processes, sockets)
        run = runner.read_run_record(self.record.run_record_path) if self.record.supervised else None
        cgroup = self.cgroup if processes else None
        memory, cpu = cgroup.usage() if cgroup is not None else (None, None)
        if memory is not None or cpu is not None:
            rss = usage.rss_bytes if memory is None else memory
            usage = dataclasses.replace(usage, rss_bytes=rss, cpu_seconds=usage.cpu_seconds if cpu is None else cpu)
        return Measurement(usage, run)

    def snapshot(self) -> TaskRecord:
        """The record as it stands now, for an answer whose output and processes are read next.

        The task may exit while they are read (in worker threads): an answer must not pair that
        later exit with output and processes read while it still ran, so it reports this copy.
        """
        return dataclasses.replace(self.record)

    def describe(
        self,
        piece: files.OutputSlice,
        usage: process.TreeUsage,
        lingering: list[int],
        run: runner.RunRecord | None,
        as_of: TaskRecord | None = None,
        cpu_percent: float | None = None,
    ) -> Status:
        """The task's status: its record ``as_of`` the reads began (see :meth:`snapshot`; by default,
        as it stands), ``piece`` of its output, what its processes use (their CPU share: ``cpu_percent``,
        else since the previous call), the pids that outlive its main process and its runner's account,
        wherever it runs."""
        record = self.record if as_of is None else as_of
        if cpu_percent is None and usage.process_count:
            cpu_percent = self.cpu_percent(usage.cpu_seconds)
        return answer_of(
            Status,
            record,
            time.time(),
            output=piece.text,
            cursor=piece.cursor,
            output_bytes=piece.size,
            truncated=piece.truncated,
            truncation=piece.truncation,
            lingering_pids=lingering,
            listening=_listening(usage.listening),
            cpu_percent=cpu_percent,
            memory_rss_bytes=usage.rss_bytes if usage.process_count else None,
            process_count=usage.process_count,
            restarts=run.restarts if run else 0,
            dropped_bytes=piece.dropped,
            next_start_at=iso_time(run.next_start_at) if run else None,
        )


def summary_of(
    record: TaskRecord,
    now: float,
    listening: Sequence[tuple[str, int, int]],
    reachable: bool | None = None,
    lingering: int | None = None,
) -> Summary:
    """One line of list_tasks (``reachable``: whether its host answered, when it was asked;
    ``lingering``: how many processes a finished task left running, when it left some): what
    :func:`answer_of` would make of it, field by field, at a third of its cost (a listing makes one
    per task per call; ``tests/test_answers.py`` holds the two equal)."""
    command, started_at, host_seen_at = _shown_facts(
        record.task_id, record.command, record.started_at, record.host_seen_at
    )
    return Summary(
        task_id=record.task_id,
        name=record.name,
        command=command,
        state=record.state,
        pid=record.pid,
        exit_code=record.exit_code,
        started_at=started_at,
        runtime_seconds=record.runtime_seconds(now),
        listening=[socket_address(address, port) for address, port, _ in listening] if listening else [],
        owner=record.owner,
        containment=record.containment,
        host=record.host,
        host_reachable=reachable,
        host_seen_at=host_seen_at,
        lingering=lingering,
    )


@functools.lru_cache(maxsize=ISO_TIMES_KEPT)
def _shown_facts(
    task_id: str, command: str, started_at: float, host_seen_at: float | None
) -> tuple[str, str, str | None]:
    """A listed task's command and times as answers show them, made once per task (and again when its
    host answers) rather than once per task per listing."""
    return shown_command(command, task_id), iso_time(started_at) or "", iso_time(host_seen_at)


def _listening(sockets: Sequence[tuple[str, int, int]]) -> list[Listening]:
    return [Listening(address, port, pid) for address, port, pid in sockets]
