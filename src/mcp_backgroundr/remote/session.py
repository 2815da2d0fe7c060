"""A long-lived agent per host for the quick calls: one ssh channel, one request at a time.

Starting ``python3`` on the remote host and importing the agent costs far more than the
round trip itself, and status is the call clients make most. So each host gets one agent
that stays up (``serve``), reading a JSON request per line and answering with one line,
over a channel of the host's multiplexed connection. Quick calls (status, the batched
check, input, remove, start) go through it; waits, greps and ends, which may take long,
still run as one agent per call. Every request is bounded twice: by our own timeout, after
which the session is dropped (the next call starts a new one), and by an alarm in the
agent, which ends it if a request runs past its deadline.
"""

from __future__ import annotations

import contextlib
import time

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import HostUnreachableError
from .ssh import Connections, Destination

MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""Longest answer line a session accepts (answers are bounded far below this)."""
STOP_SECONDS = 1.0
"""How long a session's agent gets to exit after its input ends, before its ssh is killed."""
IDLE_SECONDS = 300.0
"""A session unused for this long is replaced rather than trusted (the agent gives up at 600 s)."""


class AgentSession:
    """The serving agent on one host, started on first use and again after it ends."""

    def __init__(self, connections: Connections, destination: Destination) -> None:
        self.connections = connections
        self.destination = destination
        self._process: anyio.abc.Process | None = None
        self._answers: BufferedByteReceiveStream | None = None
        self._lock = anyio.Lock()
        self._used_at = 0.0
        self._failure: tuple[float, str, bool] | None = None
        """When a call last failed to reach the host (time.monotonic()), why, and whether ssh got
        an answer (a refusal) or none."""

    async def ask(
        self,
        command: str,
        opening: bytes,
        request: bytes,
        limit: float,
        wake: anyio.Event | None = None,
        began: float | None = None,
    ) -> bytes:
        """Send one request line; return the answer line. ``opening`` is what the agent reads
        first when a session starts (the bundle header and the serve request). Once ``wake`` is
        set, an empty line goes to the agent, which makes a watch under way answer now.

        ``limit`` bounds the whole call, a wait for another call on this session included; a
        call that waited while another one found the host unreachable fails at once, with why. It
        counts from ``began`` (time.monotonic(); default: now): an earlier attempt of the same call counts."""
        arrived = time.monotonic() if began is None else began
        sent: list[bool] = []
        try:
            with anyio.fail_after(max(0.0, arrived + limit - time.monotonic())):
                async with self._lock:
                    if self._failure is not None and self._failure[0] > arrived:
                        _, what, reachable = self._failure
                        raise HostUnreachableError(self.destination.text, what, reachable=reachable, sent=False)
                    return await self._ask_now(command, opening, request, limit, wake, sent)
        except TimeoutError:
            failure = self.connections.unreachable(self.destination, f"no answer within {limit:g} s", sent=bool(sent))
            self._failure = (time.monotonic(), failure.what, False)
            raise failure from None
        except HostUnreachableError as exc:
            self._failure = (time.monotonic(), exc.what, exc.reachable)
            raise

    async def _ask_now(
        self, command: str, opening: bytes, request: bytes, limit: float, wake: anyio.Event | None, sent: list[bool]
    ) -> bytes:
        """Ask on the session (started first if need be); ``sent`` gets True once the request goes out."""
        if self._process is None or self._process.returncode is not None or self._idle():
            await self._stop()
            await self._start(command, opening, limit)
        process, answers = self._process, self._answers
        if process is None or answers is None:  # closed meanwhile: the server is shutting down
            raise self.connections.unreachable(self.destination, "its session was closed", sent=False)
        assert process.stdin is not None
        answered = False
        try:
            sent.append(True)
            await process.stdin.send(request)
            answer = await _answer(process, answers, wake)
            answered = True
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.IncompleteRead):
            raise self.connections.unreachable(self.destination, "the connection to its agent closed") from None
        finally:
            if not answered:  # failed, or cancelled (out of time): an answer may be on its way, never to be read
                await self._stop(patient=False)
        self._used_at = time.monotonic()
        self.connections.seen_at[self.destination.text] = time.time()
        return answer

    def _idle(self) -> bool:
        return time.monotonic() - self._used_at > IDLE_SECONDS

    async def _start(self, command: str, opening: bytes, limit: float) -> None:
        process = await self.connections.open_channel(self.destination, command)
        assert process.stdin is not None
        assert process.stdout is not None
        answers = BufferedByteReceiveStream(process.stdout)
        self._process, self._answers = process, answers
        ready = False
        try:
            with anyio.fail_after(limit):
                await process.stdin.send(opening)
                await answers.receive_until(b"\n", MAX_ANSWER_BYTES)  # the agent says it is ready
            ready = True
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
            raise SessionRefused(await self._stop()) from None
        finally:
            if not ready:  # cancelled from outside (a failure has stopped it already)
                await self._stop(patient=False)

    async def _stop(self, *, patient: bool = True) -> int | None:
        """End the session (its agent sees the end of its input and exits); its exit status.
        Not ``patient`` (a call failed or ran out of time: the link may hang), its ssh is killed at once."""
        process, self._process, self._answers = self._process, None, None
        if process is None:
            return None
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await process.stdin.aclose()
            with anyio.move_on_after(STOP_SECONDS if patient else 0):
                await process.wait()
            code = await self.connections.release(process)
        return code

    async def close(self) -> None:
        """End the session now, without waiting for a request under way (which then fails)."""
        await self._stop()


async def _answer(process: anyio.abc.Process, answers: BufferedByteReceiveStream, wake: anyio.Event | None) -> bytes:
    if wake is None:
        return await answers.receive_until(b"\n", MAX_ANSWER_BYTES)

    async def wake_up() -> None:
        await wake.wait()
        assert process.stdin is not None
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.send(b"\n")

    answer: list[bytes] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as group:
        group.start_soon(wake_up)
        try:
            answer.append(await answers.receive_until(b"\n", MAX_ANSWER_BYTES))
        except Exception as exc:  # raised below, not wrapped in an exception group
            failed.append(exc)
        group.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return answer[0]


class SessionRefused(Exception):
    """The serving agent did not start; ``code`` is how its ssh ended (97: no python3, 98: the
    agent is not on the host yet, 255: ssh itself failed)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"ssh exit status {code}")
        self.code = code
