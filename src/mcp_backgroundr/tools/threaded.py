"""stdio through the SDK's transport, when stdin or stdout is not a pipe (a file, a terminal), ended
as the pipe path (``pipes``) ends.

The transport reads and writes in worker threads. A write to stdout that failed (a closed
terminal: EIO; the read end of a pipe closed: EPIPE; a full disk under a file or ``/dev/full``:
ENOSPC) raised out of it, and the server went on waiting for stdin in a thread nothing could
interrupt: a client that had left, or a full disk, left it hanging until stdin ended, then it
exited 1 with a traceback. Here the answers are written by :class:`Output`, whose failure ends
serving instead: stdin's lines stop at once (:class:`Lines`; the thread still reading is left to
its read), and the server ends its tasks as when stdin ends, saying why in one line. A client
that left (EPIPE, a closed terminal) is a client leaving: exit 0; a write error is the server's:
exit 1 (``pipes.Leaving.status``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from typing import BinaryIO, cast

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from . import sdk, wire
from .pipes import Leaving

CLIENT_GONE = frozenset({errno.EPIPE, errno.ECONNRESET})
"""Write errors that mean the reader of the server's stdout has closed it."""


class Lines:
    """stdin's lines, read as the SDK's transport reads them (UTF-8 with bad bytes replaced,
    universal newlines), each in a worker thread; :meth:`stop` ends them at once, and a read still
    under way is left to its thread (``Leaving.stranded``: that thread holds the process's exit)."""

    def __init__(self, source: BinaryIO, leaving: Leaving) -> None:
        self._text = sdk.text_reader(source)
        self._leaving = leaving
        self._reading = anyio.CancelScope()
        self._stopped = False

    def __aiter__(self) -> Lines:
        return self

    async def __anext__(self) -> str:
        if not self._stopped:
            with anyio.CancelScope() as self._reading:
                try:
                    line = await anyio.to_thread.run_sync(self._text.readline, abandon_on_cancel=True)
                except OSError as exc:  # e.g. EIO: the terminal on stdin was closed
                    self._leaving.reason = f"stdin could not be read ({exc.strerror or exc})"
                    raise StopAsyncIteration from exc
                if line:
                    return line
            self._leaving.stranded = self._reading.cancel_called
        raise StopAsyncIteration

    def stop(self) -> None:
        self._stopped = True
        self._reading.cancel()


class Output:
    """stdout for the SDK's transport: each answer written and flushed in a worker thread, as the
    transport does; a failed write ends the ``lines`` and is recorded on ``leaving``, never raised."""

    def __init__(self, sink: BinaryIO, lines: Lines, leaving: Leaving) -> None:
        self._sink = sink
        self._lines = lines
        self._leaving = leaving
        self._terminal = os.isatty(sink.fileno())
        self._lost = False

    async def write(self, text: str) -> None:
        if self._lost:
            return  # the client reads no more: what the server still says is dropped
        try:
            await anyio.to_thread.run_sync(self._write, text.encode(errors="replace"))
        except OSError as exc:
            self._lost = True
            self._leaving.reason, self._leaving.status = self._why(exc)
            self._lines.stop()

    async def flush(self) -> None:
        """Each write has flushed already."""

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self._sink.flush()

    def _why(self, exc: OSError) -> tuple[str, int]:
        if exc.errno in CLIENT_GONE:
            return "client closed the server's stdout", 0
        if exc.errno == errno.EIO and self._terminal:
            return "the terminal on the server's stdout was closed", 0
        return f"cannot write answers to stdout ({exc.strerror or exc}); the client gets no more", 1


@contextlib.asynccontextmanager
async def stdio_streams() -> AsyncIterator[
    tuple[ObjectReceiveStream[SessionMessage | Exception], ObjectSendStream[SessionMessage], Leaving]
]:
    """The server's read and write streams over stdin and stdout through the SDK's transport, lines
    that are not JSON-RPC answered on the way (``wire``), and how the client left, once they end."""
    leaving = Leaving()
    with sdk.claimed_stdio() as (wire_in, wire_out):
        # closefd=False: the claim's descriptors; a reader left to its thread may still use wire_in.
        source = os.fdopen(wire_in, "rb", closefd=False)
        sink = os.fdopen(wire_out, "wb", closefd=False)
        lines = Lines(source, leaving)
        output = Output(sink, lines, leaving)
        to_replies, from_replies = anyio.create_memory_object_stream[SessionMessage]()
        checked = wire.checked_lines(lines, to_replies)
        stdin = cast("anyio.AsyncFile[str]", checked)
        async with stdio_server(stdin=stdin, stdout=cast("anyio.AsyncFile[str]", output)) as (read, write):
            checked_send, checked_receive = anyio.create_memory_object_stream[SessionMessage | Exception]()
            async with anyio.create_task_group() as group:
                group.start_soon(wire.answer_bad_lines, read, checked_send, write, from_replies)
                yield checked_receive, write, leaving
                group.cancel_scope.cancel()
