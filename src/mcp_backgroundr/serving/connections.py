"""HTTP connections: answered without Nagle's delay, and held only as long as they are used.

uvicorn's HTTP/1.1 protocol (h11) is used as it is, with what it lacks here:

- ``TCP_NODELAY`` on every accepted connection. The listening socket comes from
  ``socket.create_server``, whose protocol number is 0, so asyncio never sets it, and a
  response on a reused connection waited about 40 ms for the client's delayed ACK.
- A deadline for each request head: uvicorn times out only a connection that is idle after a
  response, and any byte resets that timer, so a client that never sends a whole request (one
  header byte every 2 s, or nothing at all) was held forever. Now the head of each request,
  the first and every later one, must be complete within HEAD_SECONDS.
- A bound on open connections: past MAX_CONNECTIONS a new connection is closed at once.

uvicorn's own ``timeout_keep_alive`` (IDLE_SECONDS) still closes a connection left idle after
a response, and h11 refuses a request head larger than 16 KiB (400).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_SECONDS = 10.0
"""Longest time a request head (request line and headers) may take to arrive."""
IDLE_SECONDS = 5.0
"""Longest time a connection may stay idle between requests (uvicorn's keep-alive timeout)."""
MAX_CONNECTIONS = 1000
"""Most connections held at once; more are closed as soon as they are accepted."""


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with TCP_NODELAY, a request-head deadline and a connection bound."""

    _head_deadline: asyncio.TimerHandle | None = None
    _cycle_when_armed: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._cycle_when_armed = self.cycle
        self._head_deadline = self.loop.call_later(HEAD_SECONDS, self._head_too_slow)

    def _head_too_slow(self) -> None:
        # A new request cycle means its head arrived in time.
        if self.cycle is self._cycle_when_armed and not self.transport.is_closing():
            self.transport.close()
