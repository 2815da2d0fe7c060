"""Tasks on other hosts: what :class:`~.place.RemotePlace` (and the CLI) call for a task that has a ``host``.

Each operation is one call over the host's multiplexed SSH connection: a JSON request to
the agent (``agent.py``, sent over once), a JSON answer back. The task itself runs
under the runner on the remote host, which keeps its log and exit status there, so the
connection is not the task: a cut link or a restarted server loses nothing, and the next
call learns what happened meanwhile. While a host cannot be reached, status answers from
what was last known (``host_reachable: false``); every other call fails with one line.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence

import anyio

from .. import runner
from ..config import Settings
from ..core import validation
from ..core.requests import ReadPlan
from ..core.task import Task, answer_of
from ..core.watch import ProgressReporter, port_timeout_advice, report_progress
from ..errors import BackgroundrError, HostUnreachableError
from ..logs import files
from ..logs.matches import grep_notes
from ..models import TaskRecord, TaskState, WaitReason
from ..platform import process
from ..platform.containment import Hurry
from ..platform.scans import PortHolder, PortLook
from ..results import Ended, InputWritten, Status, Survivor, Waited
from .agents import CALL_MARGIN_SECONDS, Answer, HostAgents
from .ssh import FollowUp

WATCH_SECONDS = 240.0
"""A watch for exits answers after this long with nothing ended, and is made again (the agent
gives a session up after 600 s without a request)."""
LOOK_SECONDS = 4.0
"""How long list_tasks(all=true) gives each host (all at once) to say how the tasks of servers that
are gone stand there, connection included; a host that does not answer within it is shown as
last known, with host_reachable false."""


LEFT_LOOK_SECONDS = 2.0
"""How long a listing gives each host (all at once) to say what this server's finished tasks there
left running (`server &`): a listing asks while such a task may have processes left."""
LEFT_UNASKED_SECONDS = 30.0
"""A host that did not answer that look is not asked again for this long: its tasks keep what was
last seen of them, and a cut link costs one listing the look's bound, not every listing."""


END_SCAN_SECONDS = 1.0
"""What an end on a host may take beyond its waits: finding the task's processes, twice."""


def end_seconds(grace: float, kill_wait: float) -> float:
    """How long the agent may take to end a task: SIGTERM, the grace, SIGKILL and the kill wait, then
    the runner's SIGKILL and the kill wait again (see agent_procs.end)."""
    return grace + 2 * kill_wait + END_SCAN_SECONDS


UNAFFECTED = "a lost link does not end the task there; call again once the host is reachable"
"""What a failed call that changes nothing (a read, a wait) means for the task."""


INPUT_OUTCOMES = (
    "whether the input reached the task is unknown: read its output once the host is reachable",
    "no input was sent; send it again once the host is reachable",
)
END_OUTCOMES = (
    "whether the end reached the task is unknown: end it again once the host is reachable",
    "nothing was ended there; end it again once the host is reachable",
)
REMOVE_OUTCOMES = (
    "whether its files there were deleted is unknown; its record is kept: call remove_task again later",
    "its files there and its record are kept; call remove_task again later",
)
"""What a call that failed to reach its host means for its task: (the request may have reached the
host, it surely did not)."""


def _start_outcomes(task_id: str) -> tuple[str, str]:
    return (
        f"whether task {task_id} started there is unknown (the request went out, no answer came back): once the "
        f"host is reachable, look there for its files (~/.local/state/mcp-backgroundr/hosted/{task_id}.*, or under "
        "$XDG_STATE_HOME) before starting it again",
        "the task did not start there (nothing reached the host); start it again later",
    )


@contextlib.contextmanager
def _telling(sent: str, unsent: str = UNAFFECTED) -> Iterator[None]:
    """A host that cannot be reached fails the call with what is known of its effect there: ``sent``
    when the request may have reached the host (it went out, no answer came back), else ``unsent``.
    A refusal (host key, authentication, no python3) says why already, and did nothing there."""
    try:
        yield
    except HostUnreachableError as exc:
        if exc.reachable:
            raise
        raise exc.then(sent if exc.sent else unsent) from None


class RemoteTasks:
    """Starts, reads, waits on, feeds and ends tasks on SSH hosts, for one supervisor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agents = HostAgents(settings)
        self.connections = self.agents.connections
        self._left = _LeftRunning()

    @property
    def closed(self) -> bool:
        return self.agents.closed

    # -- start -----------------------------------------------------------------

    async def start(
        self, record: TaskRecord, env: Mapping[str, str | None], stdin: bool, cwd_roots: Sequence[str] = ()
    ) -> None:
        """Start the record's task on its host (``env`` over the remote environment; None unsets a
        variable); fills in its pid, cwd and (remote) log path. ``cwd_roots``: the policy's
        ``allowed_cwd`` as written, which the host applies to its own paths."""
        assert record.host is not None
        request = _start_request(record, env, stdin, cwd_roots) | {"keep_days": self.settings.keep_days}
        with _telling(*_start_outcomes(record.task_id)):
            answer = await self.agents.call(record.host, request, quick=True)
        record.pid, record.cwd, record.log_path = answer["pid"], answer["cwd"], answer["log_path"]
        record.containment = answer.get("containment", record.containment)  # what its host uses
        record.host_seen_at = time.time()

    # -- read ------------------------------------------------------------------

    async def status(self, task: Task, lines: int, since: int | None, raw: bool) -> tuple[Status, bool]:
        """The task's status (and whether it ended just now); from what is known when its host is away."""
        assert task.record.host is not None
        request = {
            "op": "status",
            "task_id": task.record.task_id,
            "lines": lines,
            "since": since,
            "raw": raw,
            "budget": self.settings.output_budget,
        }
        as_of = task.snapshot()
        try:
            answer = await self.agents.call(task.record.host, request, quick=True)
        except HostUnreachableError as exc:  # a refusal too (a changed host key): what is known, and why
            return _known_status(task, exc, since), False
        ended = _learn(task, answer)
        return _status_of(task, answer, as_of), ended

    async def lingering(self, task: Task) -> list[int]:
        """The processes a finished task left running on its host (its session, its marker)."""
        request = {"op": "status", "task_id": task.record.task_id, "lines": 0, "since": None, "raw": False,
                   "budget": self.settings.output_budget}  # fmt: skip
        with _telling(UNAFFECTED):
            answer = await self.agents.call(task.record.host or "", request, quick=True)
        return [] if task.running else list(answer.get("pids") or [])

    async def grep(self, task: Task, plan: ReadPlan) -> tuple[Status, bool]:
        assert task.record.host is not None
        request = {
            "op": "grep",
            "task_id": task.record.task_id,
            "pattern": plan.grep_text or "",
            "pattern_field": "grep",
            "since": plan.since,
            "budget": self.settings.output_budget,
            "last": plan.grep_last,
            "raw": plan.raw,
        }
        as_of = task.snapshot()
        with _telling(UNAFFECTED):
            found = await self.agents.call(task.record.host, request)
        ended = _learn(task, found)
        note = found.get("gone") or grep_notes(
            found["matches"], found["shown"], found["resume_at"], plan.grep_last, found["dropped"]
        )
        piece = {
            "text": found["text"],
            "cursor": found["size"],
            "size": found["size"],
            "truncated": bool(found.get("gone")) or found["shown"] < found["matches"],
            "truncation": note,
            "dropped": found["dropped"],
        }
        status = _status_of(task, found | {"slice": piece}, as_of)
        status.grep_matches = found["matches"]
        return status, ended

    async def wait(
        self, task: Task, conditions: validation.WaitConditions, since: int | None, progress: ProgressReporter | None
    ) -> tuple[Waited, bool]:
        """Wait on the remote host (the agent wakes on the exit and on log writes) and answer once."""
        assert task.record.host is not None
        pattern = getattr(conditions.pattern, "pattern", None)
        request = {
            "op": "wait",
            "task_id": task.record.task_id,
            "since": since,
            "pattern": pattern,
            "pattern_field": conditions.pattern_field,
            "port": conditions.port,
            "timeout": conditions.timeout,
            "budget": self.settings.output_budget,
            "max_lines": self.settings.max_lines,
        }
        began, as_of = time.monotonic(), task.snapshot()
        answer: Answer = {}
        failed: list[BackgroundrError] = []
        async with anyio.create_task_group() as group:

            async def ask() -> None:
                try:
                    answer.update(await self.agents.call(task.record.host or "", request, conditions.timeout))
                except BackgroundrError as exc:  # raised below, not wrapped in an exception group
                    failed.append(exc)
                group.cancel_scope.cancel()

            group.start_soon(ask)
            if progress is not None:
                group.start_soon(report_progress, progress, conditions.timeout)
        if failed:
            with _telling(UNAFFECTED):
                raise failed[0]
        ended = _learn(task, answer)
        found = answer["wait"]
        return Waited(
            reason=WaitReason(found["reason"]),
            waited_seconds=round(time.monotonic() - began, 3),
            matched_line=found.get("line"),
            matched_cursor=found.get("cursor"),
            status=_status_of(task, answer, as_of),
            advice=_port_advice(conditions.port, found.get("port_look"), task.record.host),
        ), ended

    # -- act -------------------------------------------------------------------

    async def send_input(self, task: Task, data: str, close: bool) -> InputWritten:
        assert task.record.host is not None
        request = {"op": "input", "task_id": task.record.task_id, "text": data, "close": close}
        with _telling(*INPUT_OUTCOMES):
            answer = await self.agents.call(task.record.host, request, quick=True)
        return InputWritten(
            task_id=task.record.task_id, bytes_written=answer["bytes_written"], closed=close, cursor=answer["cursor"]
        )

    async def end(self, task: Task, grace: float, reason: str, hurry: Hurry | None = None) -> tuple[Ended, bool]:
        """End the task's whole tree on its host; answer once it is gone, naming survivors. Once
        ``hurry`` has begun, the host cuts what is left of the grace to ``hurry.seconds``."""
        record = task.record
        assert record.host is not None
        kill_wait = self.settings.kill_wait_seconds
        request = {"op": "end", "task_id": record.task_id, "grace": grace, "kill_wait": kill_wait, "reason": reason,
                   "hurry_on_input": hurry is not None}  # fmt: skip
        told = None if hurry is None else FollowUp(hurry.begun, json.dumps({"hurry": hurry.seconds}).encode() + b"\n")
        with _telling(*END_OUTCOMES):
            answer = await self.agents.call(record.host, request, end_seconds(grace, kill_wait), follow_up=told)
        ended = _learn(task, answer)
        _learn_ended_tree(task, answer)
        survivors = [Survivor(pid, command, why) for pid, command, why in answer["survivors"]]
        found_by = answer.get("found_by")  # an agent from before it was answered says nothing it checked
        return answer_of(
            Ended,
            record,
            time.time(),
            signalled_pids=answer["signalled"],
            escalated=answer["escalated"],
            survivors=survivors,
            verified=f"no process {found_by} is left on {record.host}" if found_by and not survivors else "",
        ), ended

    async def end_all(self, tasks: Sequence[Task], grace: float, reason: str) -> None:
        """End these tasks' trees, one call per host, all hosts at once (for a server's shutdown;
        a host that does not answer in time keeps its tasks)."""
        by_host: dict[str, list[Task]] = {}
        for task in tasks:
            by_host.setdefault(task.record.host or "", []).append(task)
        kill_wait = self.settings.shutdown_kill_wait_seconds

        async def end_on(host: str, group: list[Task]) -> None:
            request = {"op": "end", "task_ids": [t.record.task_id for t in group], "grace": grace,
                       "kill_wait": kill_wait, "reason": reason}  # fmt: skip
            with contextlib.suppress(BackgroundrError):
                answer = await self.agents.call(host, request, end_seconds(grace, kill_wait))
                for task in group:
                    _learn(task, answer["tasks"].get(task.record.task_id, {}))
                    _learn_ended_tree(task, answer)

        async with anyio.create_task_group() as running:
            for host, group in by_host.items():
                running.start_soon(end_on, host, group)

    async def remove(self, task: Task) -> int:
        """Delete the task's files on its host; the bytes freed."""
        assert task.record.host is not None
        request = {"op": "remove", "task_id": task.record.task_id}
        with _telling(*REMOVE_OUTCOMES):
            answer = await self.agents.call(task.record.host, request, quick=True)
        return int(answer["freed_bytes"])

    async def forget(self, records: Sequence[TaskRecord]) -> list[str]:
        """Delete the files of forgotten (pruned) finished tasks on their hosts, one call per host;
        a line for each host whose files were left (it could not be reached), saying where."""
        by_host: dict[str, list[TaskRecord]] = {}
        for record in records:
            if record.host is not None:
                by_host.setdefault(record.host, []).append(record)
        left = []
        for host, group in by_host.items():
            try:
                await self.agents.call(host, {"op": "remove", "task_ids": [r.task_id for r in group]}, quick=True)
            except BackgroundrError as exc:
                where = ", ".join(r.log_path.removesuffix(".log") + ".*" for r in group)
                left.append(
                    f"the files of {len(group)} forgotten task(s) were left on host {host} ({where}): {exc}; "
                    f"its agent deletes them {self.settings.keep_days:g} days after they ended"
                )
        return left

    async def refresh(self, tasks: Sequence[Task]) -> list[Task]:
        """Learn how running remote tasks stand, all hosts at once, each within LOOK_SECONDS; those
        that ended. A host that does not answer leaves its tasks as last known (``host_seen_at`` too)."""
        running = {t.record.task_id: t for t in tasks if t.running}
        answers = await _look(self.agents, "check", [t.record for t in running.values()])
        return [task for task_id, task in running.items() if task_id in answers and _learn(task, answers[task_id])]

    async def left_running(self, records: Sequence[TaskRecord]) -> dict[str, int]:
        """How many processes each of these finished tasks left running on its host (for a listing:
        one call per host, all hosts at once, each within LOOK_SECONDS); a task whose host does not
        answer is left out."""
        return await self._left.count(self.agents, records)

    async def watch(self, host: str, tasks: Sequence[Task], wake: anyio.Event) -> list[Task]:
        """Block until one of these running tasks ends on its host, ``wake`` is set, or WATCH_SECONDS
        pass; the tasks that ended (learnt)."""
        request = {"op": "watch", "task_ids": [t.record.task_id for t in tasks], "timeout": WATCH_SECONDS}
        answer = await self.agents.call(host, request, WATCH_SECONDS + CALL_MARGIN_SECONDS, watch=wake)
        return [t for t in tasks if _learn(t, answer["tasks"].get(t.record.task_id, {}))]

    async def close(self, *, only_started: bool = False) -> None:
        """End the serving sessions (a call or watch under way fails), then the masters
        (``only_started``: those started here)."""
        await self.agents.close(only_started=only_started)


class _LeftRunning:
    """What this server's finished remote tasks left running, as listings ask their hosts."""

    def __init__(self) -> None:
        self._known: dict[str, int] = {}
        """What each finished task was last seen to have left running on its host."""
        self._unasked_until: dict[str, float] = {}
        """Hosts that did not answer a listing's look, by when (monotonic) they are asked again."""

    async def count(self, agents: HostAgents, records: Sequence[TaskRecord]) -> dict[str, int]:
        """The count of each of these finished tasks: asked of its host unless the host did not
        answer within LEFT_UNASKED_SECONDS, else (or when it does not answer now) as last known."""
        finished = [r for r in records if not r.running and r.host is not None]
        now = time.monotonic()
        asked = [r for r in finished if self._unasked_until.get(r.host or "", 0.0) <= now]
        answers = await _look(agents, "left", asked, LEFT_LOOK_SECONDS)
        for host in {r.host or "" for r in asked}:
            if any(r.task_id in answers for r in asked if r.host == host):
                self._unasked_until.pop(host, None)
            else:  # a cut link would cost every listing the look's bound
                self._unasked_until[host] = now + LEFT_UNASKED_SECONDS
        self._known.update((task_id, int(count)) for task_id, count in answers.items())
        return {r.task_id: self._known[r.task_id] for r in finished if r.task_id in self._known}


async def _look(agents: HostAgents, op: str, records: Sequence[TaskRecord], within: float = LOOK_SECONDS) -> Answer:
    """Ask each host of these tasks about them (``op`` with their ``task_ids``), all hosts at once,
    each within ``within`` seconds; what the hosts that answered said of each task, by task id."""
    by_host: dict[str, list[str]] = {}
    for record in records:
        if record.host is not None:
            by_host.setdefault(record.host, []).append(record.task_id)
    answers: Answer = {}

    async def look(host: str, task_ids: list[str]) -> None:
        with anyio.move_on_after(within), contextlib.suppress(BackgroundrError):
            answer = await agents.call(host, {"op": op, "task_ids": task_ids}, within, quick=True)
            said = answer["tasks"]
            answers.update((task_id, said[task_id]) for task_id in task_ids if task_id in said)

    async with anyio.create_task_group() as looking:
        for host, task_ids in by_host.items():
            looking.start_soon(look, host, task_ids)
    return answers


def _start_request(
    record: TaskRecord, env: Mapping[str, str | None], stdin: bool, cwd_roots: Sequence[str]
) -> dict[str, object]:
    return {
        "op": "start",
        "task_id": record.task_id,
        "command": record.command,
        "cwd": record.cwd or None,
        "env": dict(env),
        "stdin": stdin,
        "restart": record.restart,
        "max_restarts": record.max_restarts,
        "max_log_bytes": record.max_log_bytes,
        "cwd_roots": list(cwd_roots),
    }


def _port_advice(port: int | None, look: Answer | None, host: str) -> str | None:
    """For a wait for a port that timed out: who listens on it there, as its host saw at the end."""
    if port is None or look is None:
        return None
    seen = PortLook(PortHolder(look["holder"]), tuple(look.get("others") or ()), bool(look.get("whole_machine")))
    return port_timeout_advice(port, seen, where=f"on host {host}")


def _learn(task: Task, answer: Answer) -> bool:
    """Record what the host says about the task; True when it has ended just now.

    The host's account wins: its runner records ``killed`` only when the end reached the run, so a
    run that had ended by itself before an end was asked (a server's shutdown, end_background_task,
    the CLI's stop) stays ``completed`` or ``failed``, without the reason of an end it never met."""
    record = task.record
    record.host_seen_at = time.time()
    if not record.running or answer.get("state", "running") == "running":
        return False
    state = TaskState(answer["state"])
    asked = state is TaskState.KILLED and record.kill_requested
    if state is not TaskState.KILLED:
        record.withdraw_end_request()
    record.exit_code, record.signal = answer.get("exit_code"), answer.get("signal")
    # As a local exit is recorded: the reason first, then the notes gathered while it ran (the end
    # of a limit that could not be enforced while the link was down, ...).
    record.mark_ended(state, None if asked else answer.get("end_reason"), answer.get("ended_at") or None)
    task.exited.set()
    return True


def _learn_ended_tree(task: Task, answer: Answer) -> None:
    """After an end on its host: a finished task none of whose processes survived has none left."""
    if not task.running and not answer.get("survivors"):
        task.record.leftovers_ended = True


def _status_of(task: Task, answer: Answer, as_of: TaskRecord) -> Status:
    """A task's status from its host's answer, of the moment the host answered for: a task the host saw
    running whose end was learnt meanwhile (by the host's watch) is shown as recorded when the call was
    made (``as_of``), not ended with the processes it ran shown as left behind."""
    ran = answer.get("state", "running") == "running"
    piece = answer["slice"]
    pids = list(answer.get("pids") or [])
    usage = process.TreeUsage(
        len(pids),
        int(answer.get("rss_bytes") or 0),
        float(answer.get("cpu_seconds") or 0),
        [(str(a), int(p), int(pid)) for a, p, pid in answer.get("listening") or []],
    )
    run = runner.RunRecord(restarts=int(answer.get("restarts") or 0), next_start_at=answer.get("next_start_at"))
    status = task.describe(
        files.OutputSlice(
            piece["text"], piece["cursor"], piece["size"], piece["truncated"], piece["truncation"], piece["dropped"]
        ),
        usage,
        [] if ran else pids,
        run,
        as_of if ran and not task.running else None,
    )
    status.host_reachable = True
    task.record.host_output_bytes, task.record.host_dropped_bytes = int(piece["size"]), int(piece["dropped"] or 0)
    return status


def _known_status(task: Task, problem: HostUnreachableError, since: int | None) -> Status:
    """What is known of a task whose host cannot be reached now: its output's size and the cursor
    as its host last told them (a read from ``since`` reads nothing and stays there), its processes
    unknown."""
    record = task.record
    size = max(record.host_output_bytes or 0, since or 0)
    piece = files.OutputSlice("", size if since is None else since, size, False, None, record.host_dropped_bytes)
    status = task.describe(piece, process.TreeUsage(0, 0, 0.0, []), [], None)
    status.host_reachable = False
    status.host_problem = str(problem if problem.reachable else problem.then(UNAFFECTED))
    status.process_count = None
    return status
