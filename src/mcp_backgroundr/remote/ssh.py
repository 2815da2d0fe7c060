"""SSH connections through the user's own OpenSSH client, one multiplexed master per host.

So the user's ``~/.ssh/config``, agent, keys, ``ProxyJump`` and ``known_hosts`` all apply.
Each host gets one master connection (``ControlMaster``/``ControlPersist``, as Ansible
does), whose control socket lives in the state directory under a short hashed name (a
unix socket path holds at most about 104 bytes); every call then costs one round trip on
it, not a handshake. ``BatchMode=yes``: never a prompt; an unknown host key is refused,
with a line saying how to accept it. Every call is bounded by our own timeout as well as
ssh's ``ConnectTimeout`` and ``ServerAliveInterval``, so a cut link fails a call, never hangs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from ..errors import HostUnreachableError, InvalidArgumentError

SSH = "ssh"
CONFIG_ENV = "MCP_BACKGROUNDR_SSH_CONFIG"
"""An ssh_config file to use instead of ~/.ssh/config (ssh -F)."""
CLOSE_SECONDS = 2.0
"""At shutdown, how long closing the masters may take (it is local: the control socket)."""
SOCKET_PATH_LIMIT = 100
"""Unix socket paths must fit in about 104 bytes; longer state paths use the temp directory."""
_DESTINATION = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<name>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$"
)


@dataclass(frozen=True)
class FollowUp:
    """A line a call writes to the remote command's input after its request, once ``due`` is set
    (until then, and until the answer, its input stays open)."""

    due: anyio.Event
    line: bytes


MAX_DESTINATION_LENGTH = 253 + 1 + 256 + 6
"""The longest user@name:port: a DNS name (253), a user (LOGIN_NAME_MAX, 256) and a port. Matching a
20 MB host took the event loop 0.3 s."""


@dataclass(frozen=True)
class Destination:
    """Where a task runs: a Host alias of ~/.ssh/config, or user@name[:port]."""

    text: str
    target: str
    """What ssh connects to: [user@]name."""
    port: int | None = None

    @property
    def name(self) -> str:
        return self.target.rpartition("@")[2].strip("[]")


def parse_destination(text: str) -> Destination:
    if not text.strip():
        raise InvalidArgumentError(
            "host",
            text,
            "an empty host names no machine: leave host out (or null) to run the task here, or give "
            "a Host alias from ~/.ssh/config, or user@name[:port]",
        )
    if len(text) > MAX_DESTINATION_LENGTH:  # before the pattern, which backtracks over the whole text
        raise InvalidArgumentError(
            "host", text, f"a host is at most {MAX_DESTINATION_LENGTH} characters: give a Host alias from "
            "~/.ssh/config, or user@name[:port]",
        )  # fmt: skip
    found = _DESTINATION.match(text.strip()) if text else None
    port = int(found.group("port")) if found and found.group("port") else None
    if found is None or (port is not None and not 0 < port < 65536):
        raise InvalidArgumentError(
            "host", text, "give a Host alias from ~/.ssh/config, or user@name[:port] (e.g. me@build.example.com:2222)"
        )
    user = found.group("user")
    target = f"{user}@{found.group('name')}" if user else found.group("name")
    return Destination(text.strip(), target.replace("[", "").replace("]", ""), port)


@dataclass(frozen=True)
class SshTimeouts:
    connect_seconds: float = 8.0
    """ssh's ConnectTimeout: how long a new connection may take."""
    alive_interval_seconds: int = 3
    alive_count: int = 2
    """A master that hears nothing for interval x count seconds gives the connection up."""
    persist_seconds: int = 600
    """How long an idle master stays open."""


@dataclass
class Connections:
    """The OpenSSH masters of one server, and calls over them."""

    state_dir: Path
    timeouts: SshTimeouts = field(default_factory=SshTimeouts)
    seen_at: dict[str, float] = field(default_factory=dict)
    """When each host last answered (time.time())."""
    _locks: dict[str, anyio.Lock] = field(default_factory=dict)
    _opened: set[Destination] = field(default_factory=set)
    """Masters in use: those started here and those found open."""
    _started: set[Destination] = field(default_factory=set)
    _children: set[int] = field(default_factory=set)
    _starting: int = 0
    """ssh processes being started (their pids not known yet)."""
    _masters: dict[Destination, int] = field(default_factory=dict)
    _paths: dict[Destination, Path] = field(default_factory=dict)
    """Each host's control socket path, worked out (and its directory made) once."""

    def control_path(self, destination: Destination) -> Path:
        path = self._paths.get(destination)
        if path is None:
            digest = hashlib.sha256(destination.text.encode()).hexdigest()[:12]
            directory = self.state_dir / "ssh"
            if len(str(directory)) + 14 > SOCKET_PATH_LIMIT:
                directory = Path(tempfile.gettempdir()) / f"mcp-backgroundr-{os.getuid()}"
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self._paths[destination] = directory / digest
        return path

    def options(self, destination: Destination) -> list[str]:
        """ssh's arguments for this destination, before the remote command."""
        config = os.environ.get(CONFIG_ENV)
        t = self.timeouts
        return [
            *(["-F", config] if config else []),
            *(["-p", str(destination.port)] if destination.port else []),
            *("-o", "BatchMode=yes", "-o", f"ConnectTimeout={t.connect_seconds:g}"),
            *("-o", f"ServerAliveInterval={t.alive_interval_seconds}", "-o", f"ServerAliveCountMax={t.alive_count}"),
            *("-o", f"ControlPath={self.control_path(destination)}"),
        ]

    def accept_hint(self, destination: Destination) -> str:
        config = os.environ.get(CONFIG_ENV)
        flags = (f"-F {config} " if config else "") + (f"-p {destination.port} " if destination.port else "")
        return f"ssh {flags}{destination.target} true"

    async def _open(self, destination: Destination) -> None:
        """Start the host's master connection unless it runs (bounded by ConnectTimeout)."""
        _check_config(destination)
        lock = self._locks.setdefault(destination.text, anyio.Lock())
        async with lock:
            control = self.control_path(destination)
            if control.exists():
                self._opened.add(destination)  # a master left by an earlier server: ours to close now
                return
            errors = control.with_suffix(".err")
            argv = [
                SSH,
                *self.options(destination),
                "-o",
                "ControlMaster=yes",
                "-o",
                f"ControlPersist={self.timeouts.persist_seconds}",
                "-f",
                "-N",
                destination.target,
            ]
            began = time.monotonic()
            with _private(errors) as sink:
                async with self._child(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink) as ssh:
                    try:
                        with anyio.fail_after(self.timeouts.connect_seconds + 2):
                            code = await ssh.wait()
                    except TimeoutError:
                        limit = self.timeouts.connect_seconds
                        raise self.unreachable(destination, f"no connection within {limit:g} s", sent=False) from None
            if code != 0:
                stderr = errors.read_text(errors="replace")
                raise self.refused(destination, stderr, sent=False, after=time.monotonic() - began)
            self._opened.add(destination)
            self._started.add(destination)
            await self._find_master(destination)

    async def _find_master(self, destination: Destination) -> None:
        """Note the pid of the host's master (``ssh -O check``): a server that is child subreaper
        inherits it, and must neither reap it as an orphan nor end it as a stray."""
        argv = [SSH, *self.options(destination), "-O", "check", destination.target]
        with anyio.move_on_after(CLOSE_SECONDS):
            async with self._child(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ) as ssh:
                output, errors = bytearray(), bytearray()
                async with anyio.create_task_group() as group:
                    group.start_soon(_drain, ssh.stdout, output)
                    group.start_soon(_drain, ssh.stderr, errors)
                await ssh.wait()
        found = re.search(rb"pid=(\d+)", bytes(errors) + bytes(output))
        if found:
            self._masters[destination] = int(found.group(1))

    async def open_channel(self, destination: Destination, command: str) -> anyio.abc.Process:
        """A long-lived ``command`` on the host over its master, with pipes to its stdin and stdout
        (stderr is dropped); :meth:`release` ends it."""
        await self._open(destination)
        argv = [SSH, *self.options(destination), "-o", "ControlMaster=no", "-T", destination.target, command]
        return await self._spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    async def release(self, process: anyio.abc.Process) -> int | None:
        """End a channel from :meth:`open_channel` (if it still runs) and reap it; its exit status."""
        with anyio.CancelScope(shield=True):
            await _reap(process)
        self._children.discard(process.pid)
        return process.returncode

    def helper_pids(self) -> set[int]:
        """The ssh processes of this server: masters and calls under way."""
        return self._children | set(self._masters.values())

    def watched_children(self) -> set[int] | None:
        """The ssh processes that are this server's children, whose exits their watchers (asyncio's)
        collect; None while one is being started. The masters are not: daemonized by ``ssh -f``,
        one that exits is an orphan for a server that is child subreaper to collect."""
        return None if self._starting else set(self._children)

    async def _spawn(self, argv: list[str], **streams: Any) -> anyio.abc.Process:
        """Start an ssh process, known as ours from the moment it can exit (see watched_children)."""
        self._starting += 1
        try:
            with anyio.CancelScope(shield=True):  # once started, it must be known, to be reaped
                process = await anyio.open_process(argv, **streams)
                self._children.add(process.pid)
        finally:
            self._starting -= 1
        return process

    @contextlib.asynccontextmanager
    async def _child(self, argv: list[str], **streams: Any) -> AsyncIterator[anyio.abc.Process]:
        """An ssh process, known as ours while it runs, ended and reaped on the way out."""
        process = await self._spawn(argv, **streams)
        try:
            yield process
        finally:
            with anyio.CancelScope(shield=True):
                await _reap(process)
            self._children.discard(process.pid)

    async def call(
        self,
        destination: Destination,
        command: str,
        data: bytes,
        limit: float,
        began: float | None = None,
        follow_up: FollowUp | None = None,
    ) -> tuple[int, bytes]:
        """Run ``command`` on the host with ``data`` on its stdin (and ``follow_up`` once it is
        due); (exit status, stdout). Once the first line of stdout (the agent's answer) is in, the
        call is over: the status is 0, and the remote process is not waited for (its exit costs
        tens of ms: teardown, an inotify descriptor's close).

        ``limit`` bounds the whole call from ``began`` (time.monotonic(); default: now), a master
        connection started or waited for (another call's) included: a master that hangs costs no more."""
        began = time.monotonic() if began is None else began
        argv = [SSH, *self.options(destination), "-o", "ControlMaster=no", "-T", destination.target, command]
        output, errors = bytearray(), bytearray()
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        sent = False
        try:
            with anyio.fail_after(max(0.0, began + limit - time.monotonic())):
                await self._open(destination)
                async with self._child(argv, **pipes) as process:
                    sent = True
                    async with anyio.create_task_group() as group:
                        feeding = anyio.CancelScope()

                        async def answer() -> None:
                            await _drain_answer(process.stdout, output, group.cancel_scope)
                            feeding.cancel()  # no answer will come: nothing more to send

                        group.start_soon(answer)
                        group.start_soon(_drain, process.stderr, errors)
                        assert process.stdin is not None
                        with feeding:
                            await _feed(process.stdin, data, follow_up)
                    code = 0 if b"\n" in output else await process.wait()
        except TimeoutError:
            raise self.unreachable(destination, f"no answer within {limit:g} s", sent=sent) from None
        if code == 255:
            raise self.refused(destination, errors.decode(errors="replace"), after=time.monotonic() - began)
        self.seen_at[destination.text] = time.time()
        return code, bytes(output) or bytes(errors)

    def unreachable(self, destination: Destination, what: str, *, sent: bool = True) -> HostUnreachableError:
        """The host did not answer (``sent``: after the request may have reached it). What that means
        for the task, which only the caller knows, is said by the caller (see tasks.py)."""
        seen = self.seen_at.get(destination.text)
        when = f"; last answered {time.time() - seen:.0f} s ago" if seen else ""
        return HostUnreachableError(destination.text, f"{what}{when}", sent=sent)

    def refused(
        self, destination: Destination, stderr: str, *, sent: bool = True, after: float | None = None
    ) -> HostUnreachableError:
        """Why ssh failed (exit status 255), from what it said on ``stderr`` ``after`` seconds."""
        text = stderr.strip()
        if "IDENTIFICATION HAS CHANGED" in text:  # ssh says "Host key verification failed" then too
            removal = re.search(r"ssh-keygen (?:-f \S+ )?-R \S+", text)
            return HostUnreachableError(
                destination.text,
                "its host key has CHANGED since it was recorded in known_hosts (someone may be intercepting the "
                "connection, or the host was reinstalled); find out why; if the change is expected, remove the old "
                f"key with: {removal.group(0) if removal else f'ssh-keygen -R {destination.name}'}, then accept the "
                f"new one once in a terminal with: {self.accept_hint(destination)}",
                reachable=True,
            )
        if "Host key verification failed" in text or "No matching host key" in text:
            return HostUnreachableError(
                destination.text,
                "its host key is not in known_hosts (never accepted silently); check its fingerprint and "
                f"accept it once in a terminal with: {self.accept_hint(destination)}",
                reachable=True,
            )
        if "Permission denied" in text:
            return HostUnreachableError(
                destination.text,
                "ssh was refused (Permission denied): BatchMode allows no "
                "password; load a key into ssh-agent or set IdentityFile",
                reachable=True,
            )
        if not text:  # a master that gave a silent peer up (ServerAlive) ends its calls without a word
            waited = f"within {after:.0f} s " if after is not None else ""
            return self.unreachable(
                destination, f"the host did not answer {waited}(ssh gave the connection up)", sent=sent
            )
        return self.unreachable(destination, text.splitlines()[-1], sent=sent)

    async def close(self, *, only_started: bool = False) -> None:
        """Stop the masters in use (``only_started``: those started here), within CLOSE_SECONDS."""
        with anyio.move_on_after(CLOSE_SECONDS):
            for destination in list(self._started if only_started else self._opened):
                argv = [SSH, *self.options(destination), "-O", "exit", destination.target]
                with contextlib.suppress(OSError):
                    streams = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                    async with self._child(argv, **streams) as ssh:
                        await ssh.wait()
                self._opened.discard(destination)
                self._masters.pop(destination, None)
                self._started.discard(destination)


def _check_config(destination: Destination) -> None:
    """Refuse, before anything is sent, when the ssh config file the environment names is missing
    (ssh would say only that it cannot read it, and every call would seem to fail for a while)."""
    config = os.environ.get(CONFIG_ENV)
    if config and not os.path.isfile(config):
        raise HostUnreachableError(
            destination.text,
            f"the ssh config file that {CONFIG_ENV} names, {config}, does not exist (nothing was sent); "
            f"create it, or point {CONFIG_ENV} at one (unset: ~/.ssh/config)",
            reachable=True,
            sent=False,
        )


@contextlib.contextmanager
def _private(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for writing, emptied, readable by its owner alone (an older one too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as sink:
        yield sink


async def _feed(stdin: anyio.abc.ByteSendStream, data: bytes, follow_up: FollowUp | None) -> None:
    """Write ``data``, then ``follow_up`` once it is due, and close the input."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stdin.send(data)
        if follow_up is not None:
            await follow_up.due.wait()
            await stdin.send(follow_up.line)
        await stdin.aclose()


async def _drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        async for chunk in stream:
            into.extend(chunk)


async def _drain_answer(stream: anyio.abc.ByteReceiveStream | None, into: bytearray, done: anyio.CancelScope) -> None:
    """Read ``stream`` up to its first line (then cancel ``done``) or its end."""
    if stream is None:
        return
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        async for chunk in stream:
            into.extend(chunk)
            if b"\n" in chunk:
                done.cancel()
                return


async def _reap(process: anyio.abc.Process) -> None:
    """End and reap ``process`` and close its pipes now: left to the garbage collector, they
    would be closed after the event loop (a command's) has ended: "Event loop is closed"."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.aclose()
