"""stdio served on the event loop: the wire's pipes read and written without worker threads.

The SDK's stdio transport reads each line in a worker thread and writes and flushes each
answer in two more, so every call pays three hand-offs between threads, each a wake-up of a
sleeping thread and of the event loop: about half of a small call's round trip on a quiet
machine (docs/benchmarks.md 13, fifth pass). When stdin and stdout are pipes or sockets, as an
MCP client's are, this reads and writes them with the event loop's own readiness events
instead, and answers lines that are not JSON-RPC on the way (``wire``). Anything else (a file
or a terminal on stdin, or stdout) is served by the SDK's transport (``threaded``).

It keeps what the SDK's transport does: descriptors 0 and 1 point at the null device and at
stderr while it serves (``sdk.claimed_stdio``); input is UTF-8 with bad bytes replaced and
``\\r\\n`` or a lone ``\\r`` ending a line too; a line may be of any length; reading waits
while the server is busy (nothing is read ahead without bound), and writing waits while the
client does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.shared.message import SessionMessage

from . import sdk, wire

READ_CHUNK_BYTES = 1 << 20
"""Input the transport holds before the server takes it; a longer line is gathered in pieces."""
CLOSE_SECONDS = 1.0
"""How long closing waits for the last answers to reach a client that has stopped reading."""


def event_loop_can_serve() -> bool:
    """Whether stdin and stdout are pipes or sockets, not one socket for both, and this runs on an
    asyncio event loop. One socket on both (socat's EXEC, a socketpair; inetd-style activation)
    goes to the SDK's transport: asyncio's write side watches its descriptor for reading, to see
    the reader close it, and took the client's next message for that."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return all(_is_pipe(descriptor) for descriptor in (0, 1)) and not _one_socket()


def _one_socket() -> bool:
    try:
        given, taken = os.fstat(0), os.fstat(1)
    except OSError:
        return False
    return stat.S_ISSOCK(given.st_mode) and (given.st_dev, given.st_ino) == (taken.st_dev, taken.st_ino)


def _is_pipe(descriptor: int) -> bool:
    try:
        mode = os.fstat(descriptor).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Output(asyncio.Protocol):
    """The wire's write side: whether the client still reads it, and how far behind it is."""

    def __init__(self) -> None:
        self._resumed: asyncio.Event | None = None
        self.closed = False
        self.finished = asyncio.Event()
        """Set once the transport has written what it held and let go of the descriptor."""

    def pause_writing(self) -> None:
        self._resumed = asyncio.Event()

    def resume_writing(self) -> None:
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.finished.set()
        self.resume_writing()

    async def drained(self) -> None:
        if self._resumed is not None:
            await self._resumed.wait()


@dataclass
class Leaving:
    """How serving stdio ended: the client ended the server's stdin or closed its stdout, or the
    server could not write its answers (``threaded``)."""

    reason: str = "client closed stdin"
    status: int = 0
    """The server's exit status: 0 when the client left, 1 when answers could not be written."""
    stranded: bool = False
    """A worker thread was left blocked reading stdin: it would hold the process's exit."""


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[str]:
    """The lines of the wire as the SDK's transport reads them (a text file's universal newlines)."""
    while True:
        pieces: list[bytes] = []
        while True:
            try:
                pieces.append(await reader.readuntil(b"\n"))
                break
            except asyncio.LimitOverrunError as longer:
                pieces.append(await reader.readexactly(longer.consumed))
            except asyncio.IncompleteReadError as end:
                pieces.append(end.partial)
                break
        line = b"".join(pieces).decode("utf-8", errors="replace")
        if not line:
            return
        if "\r" in line:
            for part in line.replace("\r\n", "\n").replace("\r", "\n").splitlines(keepends=True):
                yield part
        else:
            yield line


async def _read(
    reader: asyncio.StreamReader,
    server: ObjectSendStream[SessionMessage | Exception],
    replies: ObjectSendStream[SessionMessage],
) -> None:
    async with server, replies:
        async for line in _lines(reader):
            if (refusal := await wire.too_heavy(line)) is not None:
                await replies.send(SessionMessage(refusal))
                continue
            try:
                message = wire.parsed(line)
            except wire.Refused as refused:
                await replies.send(SessionMessage(refused.answer))
                continue
            except Exception as exc:
                await server.send(exc)
                continue
            await server.send(SessionMessage(message))


async def _read_while_heard(
    reader: asyncio.StreamReader,
    server: ObjectSendStream[SessionMessage | Exception],
    replies: ObjectSendStream[SessionMessage],
    output: _Output,
    leaving: Leaving,
) -> None:
    """Read the wire until it ends, or until the client closes the server's stdout: a client that
    reads no more answers has left, as one that ended stdin has (the server then ends its tasks)."""
    async with anyio.create_task_group() as group:

        async def stop_when_unheard() -> None:
            await output.finished.wait()
            leaving.reason = "client closed the server's stdout"
            group.cancel_scope.cancel()

        group.start_soon(stop_when_unheard)
        await _read(reader, server, replies)
        group.cancel_scope.cancel()


async def _write(
    messages: ObjectReceiveStream[SessionMessage], transport: asyncio.WriteTransport, output: _Output
) -> None:
    """Write each answer, waiting while the client does not read; once it has closed the server's
    stdout, what the server still sends is dropped (it has left: see :func:`_read_while_heard`)."""
    async with messages:
        async for session_message in messages:
            if output.closed:
                continue
            text = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
            transport.write(text.encode() + b"\n")
            await output.drained()


@contextlib.asynccontextmanager
async def stdio_streams() -> AsyncIterator[
    tuple[ObjectReceiveStream[SessionMessage | Exception], ObjectSendStream[SessionMessage], Leaving]
]:
    """The server's read and write streams over stdin and stdout (see :func:`event_loop_can_serve`),
    and how the client left, once the read stream has ended."""
    loop = asyncio.get_running_loop()
    with sdk.claimed_stdio() as (wire_in, wire_out):
        reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES)
        # closefd=False: the descriptors are the claim's, which restores fd 0 and 1 from them.
        source = os.fdopen(wire_in, "rb", buffering=0, closefd=False)
        sink = os.fdopen(wire_out, "wb", buffering=0, closefd=False)
        reading, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), source)
        writing, output = await loop.connect_write_pipe(_Output, sink)
        to_server, from_wire = anyio.create_memory_object_stream[SessionMessage | Exception]()
        to_wire, from_server = anyio.create_memory_object_stream[SessionMessage]()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_write, from_server, writing, output)
                async with anyio.create_task_group() as readers:
                    leaving = Leaving()
                    readers.start_soon(_read_while_heard, reader, to_server, to_wire.clone(), output, leaving)
                    try:
                        yield from_wire, to_wire, leaving
                    finally:
                        readers.cancel_scope.cancel()
                to_wire.close()  # the writer ends once what the server sent is written
        finally:
            reading.close()
            writing.close()
            with anyio.move_on_after(CLOSE_SECONDS, shield=True):
                await output.finished.wait()
            # The event loop made them non-blocking; the claim hands them back to fd 0 and 1.
            for descriptor in (wire_in, wire_out) if output.finished.is_set() else (wire_in,):
                with contextlib.suppress(OSError):
                    os.set_blocking(descriptor, True)
