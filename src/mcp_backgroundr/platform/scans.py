"""Shared reads of the machine's socket and process tables, in worker threads.

Reading the socket table costs what the machine holds (psutil maps every socket to its
process through every descriptor of every process), not what a call asks for. So it runs
in a worker thread, one read serves every call for SOCKET_TABLE_SECONDS, and calls that
arrive while a read is under way wait for that read instead of starting their own; calls that
only show ports (status, lists) take the last read and leave the next one to the background.
Finding tasks' processes (every process's environment) is likewise one scan for all the callers
that arrive while the previous one runs; a task with a cgroup needs no scan.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import anyio
import psutil
from anyio.lowlevel import RunVar

from .. import offload
from . import backend, process
from .containment import Leader, find_task_processes

SOCKET_TABLE_SECONDS = 0.5
"""How long one read of the socket table answers for (listening ports in status and lists,
and whether a waited-for port is the task's own)."""
SOCKET_TABLE_STALE_SECONDS = 5.0
"""How old a table status and lists may show while a newer one is read in the background. A read
looks at every process's open files, so on a busy machine with many processes it takes as long
as a second: a call that only shows ports does not wait for it."""


class PortHolder(enum.Enum):
    """Who listens on a waited-for port, by the socket table."""

    TASK = "task"
    """A process of the task listens on it (on any local address)."""
    OTHER = "other"
    """Only other programs listen on it."""
    NOBODY = "nobody"
    """Nothing that could be seen listens on it."""


@dataclass(frozen=True)
class PortLook:
    holder: PortHolder
    others: tuple[int, ...] = ()
    """The pids of the other programs that listen on it."""
    whole_machine: bool = True
    """Whether every listening socket of the machine was seen (False: only the task's own processes')."""


@dataclass(frozen=True)
class SocketTable:
    taken_at: float
    """When its read began (time.monotonic()): a socket opened later may be missing from it."""
    sockets: list[process.Socket]
    by_task: dict[str, list[process.Socket]] = field(default_factory=dict)
    """The sockets of every task, found by the marker in their processes' environments."""


def _read() -> SocketTable:
    # Stamped when the read begins: what it shows may be that old (a socket opened while it ran,
    # after it looked, is not in it), and "read after" a moment means "began after" it.
    began = time.monotonic()
    sockets, by_task = backend.current().socket_table()
    return SocketTable(began, sockets, by_task)


class Sockets:
    """The machine's listening TCP sockets, read at most once per SOCKET_TABLE_SECONDS."""

    def __init__(
        self,
        in_background: Callable[[Callable[[], Awaitable[None]]], None] | None = None,
        read: Callable[[], SocketTable] = _read,
    ) -> None:
        self._read = read
        self._table: SocketTable | None = None
        self._lock: anyio.Lock | None = None
        self._in_background = in_background
        """Runs a read nobody waits for (None: every caller waits for its own fresh table)."""
        self._reading = False
        self._outdated_at = 0.0
        """When a table was last found not to show a socket that was there (none before it is shown)."""

    def _fresh(self, newer_than: float) -> SocketTable | None:
        table = self._table
        if (
            table is None
            or table.taken_at < max(newer_than, self._outdated_at)
            or time.monotonic() - table.taken_at >= SOCKET_TABLE_SECONDS
        ):
            return None
        return table

    async def table(self, newer_than: float = 0.0) -> SocketTable:
        """The socket table, read within SOCKET_TABLE_SECONDS and not before ``newer_than``
        (a monotonic time)."""
        if (table := self._fresh(newer_than)) is not None:
            return table
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if (table := self._fresh(newer_than)) is None:
                table = self._table = await offload.run(offload.SCANS, self._read)
            return table

    async def recent(self) -> SocketTable:
        """A table for showing ports (status, lists): the last one read, at once, while it is under
        SOCKET_TABLE_STALE_SECONDS old (past SOCKET_TABLE_SECONDS a newer one is read meanwhile, in
        the background); else a fresh one."""
        table = self._table
        if table is None or self._in_background is None or table.taken_at < self._outdated_at:
            return await self.table()
        age = time.monotonic() - table.taken_at
        if age >= SOCKET_TABLE_STALE_SECONDS:
            return await self.table()
        if age >= SOCKET_TABLE_SECONDS and not self._reading:
            self._reading = True
            self._in_background(self._read_in_background)
        return table

    def prefetch(self) -> None:
        """Have a table read in the background unless one was read within SOCKET_TABLE_SECONDS (a
        task starts: its ports are about to show), so that the next list or status finds a recent
        one: with none, or one past SOCKET_TABLE_STALE_SECONDS, it would wait for a read (20 ms of
        a 33 ms list of 100 tasks just started, docs/benchmarks.md 13)."""
        if self._in_background is None or self._reading or self._fresh(0.0) is not None:
            return
        self._reading = True
        self._in_background(self._read_in_background)

    async def _read_in_background(self) -> None:
        try:
            await self.table()
        finally:
            self._reading = False

    async def of_tasks(self, task_ids: Collection[str], newer_than: float = 0.0) -> dict[str, list[process.Socket]]:
        """The listening sockets of these tasks (nothing is read when there are none)."""
        if not task_ids:
            return {}
        by_task = (await (self.table(newer_than) if newer_than else self.recent())).by_task
        return {task_id: by_task[task_id] for task_id in task_ids if task_id in by_task}

    async def who_listens(
        self, task_id: str, port: int, newer_than: float, members: Callable[[], Awaitable[Collection[int]]]
    ) -> PortLook:
        """Who listens on ``port``, on any local address, by a read of the socket table made after
        ``newer_than``: a process of this task (one carrying its marker, else one of ``members``, the
        pids of its processes, asked only when something listens on the port), or other programs."""
        table = await self.table(newer_than)
        whole_machine = backend.current().sees_every_socket
        if any(listening == port for _, listening, _ in table.by_task.get(task_id, [])):
            return PortLook(PortHolder.TASK, whole_machine=whole_machine)
        holders = {pid for _, listening, pid in table.sockets if listening == port}
        if not holders and not whole_machine:
            # The table holds only processes that carry a task's marker: a process of the task that
            # dropped it (env -i) is asked for its sockets itself, as status asks.
            found = await offload.run(offload.SCANS, _sockets_of, await members())
            if port not in {p for _, p, _ in found}:
                return PortLook(PortHolder.NOBODY, whole_machine=False)
            # Listening since the table was read (or without the marker): a list or status made
            # after this answer must not be shown that table.
            self._outdated_at = time.monotonic()
            return PortLook(PortHolder.TASK, whole_machine=False)
        if not holders:
            return PortLook(PortHolder.NOBODY, whole_machine=whole_machine)
        if holders & set(await members()):
            return PortLook(PortHolder.TASK, whole_machine=whole_machine)
        return PortLook(PortHolder.OTHER, tuple(sorted(holders)), whole_machine)


def _sockets_of(pids: Collection[int]) -> list[process.Socket]:
    members = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            members.append(psutil.Process(pid))
    return process.own_sockets(members)


class _Batch:
    def __init__(self) -> None:
        self.leaders: dict[int, Leader] = {}
        self.scanner_chosen = False
        self.done = anyio.Event()
        self.found: dict[str, list[psutil.Process]] = {}
        self.failed: BaseException | None = None


class ProcessScans:
    """Finding tasks' processes for every concurrent caller with one scan of the machine.

    A scan reads every process's environment, so its cost grows with the machine, not with
    the call. Callers that arrive while a scan runs join the next one, which starts after all
    of them arrived (so each sees processes started before its call) and serves them all:
    fifty clients ending tasks at once cost a few scans, not fifty.
    """

    def __init__(
        self, find: Callable[[Mapping[int, Leader]], dict[str, list[psutil.Process]]] = find_task_processes
    ) -> None:
        self._find = find
        self._next = _Batch()
        self._lock = anyio.Lock()

    async def find(self, leaders: Mapping[int, Leader]) -> dict[str, list[psutil.Process]]:
        """Tasks with a cgroup are answered from their cgroups' member lists, on their own: they
        never wait for a scan of the machine that other callers' tasks need."""
        contained = {pid: leader for pid, leader in leaders.items() if leader.cgroup is not None}
        found = await offload.run(offload.SCANS, self._find, contained) if contained else {}
        if len(contained) < len(leaders):
            found |= await self._scanned({pid: leader for pid, leader in leaders.items() if pid not in contained})
        return found

    async def _scanned(self, leaders: Mapping[int, Leader]) -> dict[str, list[psutil.Process]]:
        batch = self._next
        batch.leaders.update(leaders)
        if not batch.scanner_chosen:
            batch.scanner_chosen = True
            # Shielded: the others wait on this scan, and it is bounded by the machine's size.
            with anyio.CancelScope(shield=True):
                await self._scan(batch)
        else:
            await batch.done.wait()
        if batch.failed is not None:
            raise batch.failed
        wanted = {leader.task_id for leader in leaders.values()}
        return {task_id: batch.found.get(task_id, []) for task_id in wanted}

    async def _scan(self, batch: _Batch) -> None:
        async with self._lock:  # one scan at a time; callers arriving now join the next
            self._next = _Batch()
            try:
                batch.found = await offload.run(offload.SCANS, self._find, dict(batch.leaders))
            except Exception as exc:
                batch.failed = exc
            finally:
                batch.done.set()


_PROCESS_SCANS: RunVar[ProcessScans] = RunVar("mcp_backgroundr.scans.processes")


async def task_processes(leaders: Mapping[int, Leader]) -> dict[str, list[psutil.Process]]:
    """Every live process of these tasks, keyed by task id, from a scan shared with concurrent callers."""
    try:
        scans = _PROCESS_SCANS.get()
    except LookupError:
        scans = ProcessScans()
        _PROCESS_SCANS.set(scans)
    return await scans.find(leaders)
