"""On the remote host: a task's processes, their usage and listening sockets, and ending them.

Runs on the remote host with the standard library only (it is sent over the
connection with the agent). On Linux a task's processes are found the way the
server finds local ones: its session (the runner leads it), the marker
``MCP_BACKGROUNDR_TASK_ID`` in a process's environment, which survives ``setsid``
and double forks, and every process below the runner, which is a child subreaper there:
what leaves the session and drops the marker (``env -i setsid``) stays in its tree while
it runs. Elsewhere only the runner's process group is known, and the
answers say so by listing no more than that.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Mapping

from ..platform.dying import dying

PROC = "/proc"
TASK_ID_ENV = "MCP_BACKGROUNDR_TASK_ID"
SETTLE_STEP_SECONDS = 0.02
"""While an end waits for processes to go: how often it looks (only during that end)."""
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as file:
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (None where /proc is missing)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` still names the process that started at ``ticks`` (not a zombie)."""
    fields = _stat_fields(pid)
    if fields is None:
        if os.path.isdir(PROC):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] != "Z" and (ticks is None or int(fields[19]) == ticks)


def _markers_in(pid: int, markers: dict[bytes, str]) -> list[str]:
    """The tasks (marker -> task id) whose marker the process's environment carries."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as file:
            return [markers[item] for item in set(file.read().split(b"\0")) if item in markers]
    except OSError:
        return []


Started = Mapping[str, "int | None"]
"""When each task's leader started (task id -> clock ticks since boot, None: not recorded)."""


def earliest(started: Started) -> int | None:
    """When the earliest of these leaders started, if every one's start is recorded (else None)."""
    known = [ticks for ticks in started.values() if ticks is not None]
    return min(known) if known and len(known) == len(started) else None


def members(leader: int, task_id: str, since: int | None = None) -> list[int]:
    """Live processes of a task: in the leader's session, or carrying its marker (``since``: when
    the leader started)."""
    return all_members({task_id: leader}, since, {task_id: since})


def all_members(leaders: dict[str, int], since: int | None = None, started: Started | None = None) -> list[int]:
    """Live processes of these tasks (task id -> leader pid), in one look at the process table."""
    return sorted(set[int]().union(*members_by_task(leaders, since, started).values()))


def members_by_task(
    leaders: dict[str, int], since: int | None = None, started: Started | None = None
) -> dict[str, list[int]]:
    """Live processes of each of these tasks (task id -> leader pid), in one look at the process table.
    ``since``: when the earliest leader started (clock ticks since boot); a process started
    before it cannot carry a marker, so its environment is not read (most of a scan's cost).
    ``started``: when each leader started; a leader's pid that now names another process (its
    runner ended, and the pid was given to a new one) is no longer the task's: what is in its
    session or below it is not looked at (the kernel gives a pid out again only once no process
    is left in the session it named)."""
    if not os.path.isdir(PROC):
        alive: dict[str, list[int]] = {}
        for task_id, leader in leaders.items():
            try:
                os.killpg(leader, 0)
            except OSError:
                alive[task_id] = []
            else:
                alive[task_id] = [leader]
        return alive
    sessions: dict[int, list[str]] = {}
    for task_id, leader in leaders.items():
        sessions.setdefault(leader, []).append(task_id)
    markers = {f"{TASK_ID_ENV}={task_id}".encode(): task_id for task_id in leaders}
    found: dict[str, set[int]] = {task_id: set() for task_id in leaders}
    in_session: dict[str, set[int]] = {task_id: set() for task_id in leaders}
    leader_ticks: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        fields = _stat_fields(pid)
        if fields is None or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(pid)
        if pid in sessions:
            leader_ticks[pid] = int(fields[19])
        recent = since is None or int(fields[19]) >= since
        if session_of := sessions.get(int(fields[3])):
            for task_id in session_of:
                in_session[task_id].add(pid)
        elif recent:
            for task_id in _markers_in(pid, markers):
                found[task_id].add(pid)
    for task_id, leader in leaders.items():
        recorded = (started or {}).get(task_id)
        if recorded is not None and leader in leader_ticks and leader_ticks[leader] != recorded:
            continue  # its pid names another process now
        found[task_id] |= in_session[task_id] | _descendants({leader}, children)
    return {task_id: sorted(pids) for task_id, pids in found.items()}


def _descendants(roots: set[int], children: dict[int, list[int]]) -> set[int]:
    """Every process below ``roots`` (parent pid -> child pids): what left the task's session
    and dropped its marker is still below its runner, a child subreaper on Linux."""
    below: set[int] = set()
    pending = [child for root in roots for child in children.get(root, [])]
    while pending:
        pid = pending.pop()
        if pid not in below:
            below.add(pid)
            pending.extend(children.get(pid, []))
    return below


def command_line(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode("utf-8", "replace").strip() or "?"
    except OSError:
        return "?"


def usage(pids: list[int]) -> dict[str, float]:
    """Resident memory and CPU seconds of these processes together."""
    rss, cpu = 0, 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS
        rss += int(fields[21]) * _PAGE
    return {"rss_bytes": rss, "cpu_seconds": round(cpu, 3)}


def _listening_table() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of the host."""
    table = {}
    for name, width in (("tcp", 8), ("tcp6", 32)):
        try:
            with open(f"{PROC}/net/{name}", encoding="ascii") as file:
                rows = file.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if len(parts) > 9 and parts[3] == "0A":
                address, port = parts[1].split(":")
                table[parts[9]] = (_address(address, width), int(port, 16))
    return table


def _address(hexadecimal: str, width: int) -> str:
    raw = bytes.fromhex(hexadecimal)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
    if width == 8:
        return ".".join(str(b) for b in words)
    return str(ipaddress.IPv6Address(words))


def listened_on(port: int) -> bool:
    """Whether anything on the host listens on ``port``, on any address (the table is read: nothing
    connects to the port, which a server that serves one client would take for its client)."""
    return any(listening == port for _, listening in _listening_table().values())


def listening(pids: list[int]) -> list[tuple[str, int, int]]:
    """[address, port, pid] of each TCP socket these processes listen on."""
    return _sockets_in(pids, _listening_table() if pids else {})


def port_look(port: int, task_pids: list[int]) -> dict[str, object]:
    """Who listens on ``port`` (for a wait for it that timed out), as the server's local look says:
    ``holder`` a process of the task, ``other`` programs (``others``: those whose sockets could be
    read, every one for root) or ``nobody``; ``whole_machine``: every listening socket was seen."""
    if not os.path.isdir(PROC):
        return {"holder": "nobody", "whole_machine": False}
    table = {inode: where for inode, where in _listening_table().items() if where[1] == port}
    if not table:
        return {"holder": "nobody", "whole_machine": True}
    if _sockets_in(task_pids, table):
        return {"holder": "task", "whole_machine": True}
    every = [int(name) for name in os.listdir(PROC) if name.isdigit()]
    holders = sorted({pid for _, _, pid in _sockets_in(every, table)})
    return {"holder": "other", "others": holders, "whole_machine": True}


def _sockets_in(pids: list[int], table: dict[str, tuple[str, int]]) -> list[tuple[str, int, int]]:
    """[address, port, pid] of each socket of ``table`` (inode -> (address, port)) these processes hold."""
    found = []
    for pid in pids:
        try:
            descriptors = os.listdir(f"{PROC}/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                target = os.readlink(f"{PROC}/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in table:
                address, port = table[target[8:-1]]
                found.append((address, port, pid))
    return sorted(found, key=lambda item: (item[1], item[0]))


def _signal(pids: list[int], signum: int, denied: dict[int, str]) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue
        except PermissionError:
            denied[pid] = "permission denied: the process belongs to another user"
            continue
        sent.append(pid)
        if signum == signal.SIGTERM:
            # A stopped process cannot act on SIGTERM. One that did at once may be reaped already.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return sent


Hurry = Callable[[], "float | None"]
"""Asked while a grace period runs: None, or how long at most it may last from now (the server is leaving)."""


def _wait_gone(
    leaders: dict[str, int],
    seconds: float,
    since: int | None,
    known: dict[int, int | None],
    hurry: Hurry | None = None,
    started: Started | None = None,
) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _still_here(leaders, since, known, started)) and time.monotonic() < deadline:
        if hurry is not None and (most := hurry()) is not None:
            deadline, hurry = min(deadline, time.monotonic() + most), None
        time.sleep(SETTLE_STEP_SECONDS)
    return left


def _still_here(
    leaders: dict[str, int], since: int | None, known: dict[int, int | None], started: Started | None = None
) -> list[int]:
    """The tasks' processes now, and those found before that still live: one found only below
    its runner is no longer below it once the runner has ended."""
    still = {pid for pid, ticks in known.items() if is_alive(pid, ticks)}
    return sorted(set(all_members(leaders, since, started)) | still)


def found_by() -> str:
    """How this host finds a task's processes (for the answer that none is left)."""
    if os.path.isdir(PROC):
        return "in its session, below its runner or carrying its marker"
    return "in its runner's process group"


def end(
    leaders: dict[str, int],
    grace: float,
    kill_wait: float,
    since: int | None = None,
    hurry: Hurry | None = None,
    started: Started | None = None,
) -> dict[str, object]:
    """SIGTERM every process of these tasks (task id -> leader pid), SIGKILL what is left after
    ``grace`` (cut short once ``hurry`` says so; processes started meanwhile included), and name
    the survivors.

    The leaders are the tasks' runners, which record how their tasks' runs ended: SIGKILLed with
    the rest, a runner could not, and the run would end with no exit code. So the runners are
    SIGKILLed last, only if they have not recorded the run and exited within ``kill_wait``."""
    denied: dict[int, str] = {}
    found = all_members(leaders, since, started)
    known = {pid: start_ticks(pid) for pid in found}
    signalled = _signal(found, signal.SIGTERM, denied)
    escalated = False
    left = _wait_gone(leaders, grace, since, known, hurry, started) if found else []
    runners = set(leaders.values())
    for spared in (runners, set()):
        if not left:
            break
        known.update((pid, start_ticks(pid)) for pid in left if pid not in known)
        doomed = {pid for pid in left if dying(pid)}  # looked at before the kill
        killed = _signal([pid for pid in left if pid not in spared], signal.SIGKILL, denied)
        escalated = escalated or any(pid not in doomed for pid in killed)
        signalled += [pid for pid in killed if pid not in signalled]
        left = _wait_gone(leaders, kill_wait, since, known, started=started)
    survivors = [
        [pid, command_line(pid), denied.get(pid, "still alive after SIGKILL (maybe in uninterruptible sleep)")]
        for pid in left
    ]
    return {"signalled": signalled, "escalated": escalated, "survivors": survivors, "found_by": found_by()}
