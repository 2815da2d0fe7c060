"""Calls to the agent on each SSH host: one JSON request, one JSON answer.

A quick call goes through the host's serving session (one agent that answers many requests), a
watch for exits through a second one, and a call that may take long (waits, greps, ends) through
an agent of its own. The agent's code is sent along once per host (``bundle.py``); an answer
that reports an error becomes the exception a caller can act on.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio

from ..config import Settings
from ..errors import BackgroundrError, HostUnreachableError, InvalidArgumentError, PolicyRefusedError
from .bundle import NEEDS_BUNDLE_STATUS, NO_PYTHON_STATUS, remote_command, request_bytes
from .session import AgentSession, SessionRefused
from .ssh import Connections, FollowUp, parse_destination

Answer = dict[str, Any]
SERVE_REQUEST = b'{"op": "serve"}\n'

CALL_MARGIN_SECONDS = 3.0
"""A call may take this much longer than the agent's own bound (ssh, Python's start)."""


class HostAgents:
    """The agents this server calls on SSH hosts, and the connections they are reached by."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections = Connections(settings.home)
        self._installed: set[str] = set()
        """Hosts known to hold this server's agent."""
        self._python: dict[str, str] = {}
        """The interpreter each host ran the agent with."""
        self._sessions: dict[str, AgentSession] = {}
        """The serving agent of each host, for quick calls."""
        self._watch_sessions: dict[str, AgentSession] = {}
        """A second serving agent of each host, for its watch for exits (see watches.py)."""
        self.closed = False

    async def call(
        self,
        host: str,
        request: Answer,
        seconds: float | None = None,
        *,
        quick: bool = False,
        watch: anyio.Event | None = None,
        follow_up: FollowUp | None = None,
    ) -> Answer:
        """One request to the host's agent: through its serving session (``quick``: start, status,
        check, input, remove), its watching session (``watch``: the event that wakes it), or an
        agent of its own (waits, greps, ends: calls that may take long; ``follow_up``: a line it
        reads later, as the hurry of an end)."""
        began = time.monotonic()  # the bound counts from here, whatever the call has to do first
        limit = self.settings.remote_call_seconds if seconds is None else seconds
        destination = parse_destination(host)
        line = json.dumps(request | {"deadline": limit}).encode() + b"\n"
        with_bundle = host not in self._installed
        call_limit = limit + CALL_MARGIN_SECONDS
        command = remote_command(self._python.get(host))
        if quick or watch is not None:
            sessions = self._sessions if watch is None else self._watch_sessions
            session = sessions.setdefault(host, AgentSession(self.connections, destination))
            code, output = 0, await self._ask_session(session, command, line, call_limit, watch, began)
        else:
            data = request_bytes(line, with_bundle)
            code, output = await self.connections.call(destination, command, data, call_limit, began, follow_up)
            if code == NEEDS_BUNDLE_STATUS and not with_bundle:
                again = request_bytes(line, True)
                code, output = await self.connections.call(destination, command, again, call_limit, began, follow_up)
        if code == NO_PYTHON_STATUS:
            raise _no_python(host)
        try:
            answer = json.loads(output.splitlines()[-1]) if output.strip() else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            shown = output.decode(errors="replace").strip()[-300:] or "nothing"
            raise BackgroundrError(f"host {host}: the agent answered no result (exit status {code}): {shown}")
        self._installed.add(host)
        if isinstance(answer.get("python"), str):
            self._python[host] = answer["python"]
        if answer.get("refused_by"):
            raise PolicyRefusedError(
                answer["refused_by"],
                f"{answer['error']} on host {host} (the rule applies to its paths, ~ being the remote user's home)",
                "give a cwd under one of those roots there",
            )
        if answer.get("slow_pattern") is not None:
            raise _slow_pattern(host, request, answer["slow_pattern"])
        if "error" in answer:
            raise BackgroundrError(f"host {host}: {answer['error']}")
        return answer

    async def _ask_session(
        self, session: AgentSession, command: str, line: bytes, limit: float, wake: anyio.Event | None, began: float
    ) -> bytes:
        destination = session.destination
        host = destination.text
        with_bundle = host not in self._installed
        while True:
            try:
                opening = request_bytes(SERVE_REQUEST, with_bundle)
                return await session.ask(command, opening, line, limit, wake, began)
            except SessionRefused as exc:
                if exc.code == NEEDS_BUNDLE_STATUS and not with_bundle:
                    with_bundle = True
                    continue
                if exc.code == NO_PYTHON_STATUS:
                    raise _no_python(host) from None
                raise self.connections.unreachable(
                    destination, f"its agent did not start ({exc})", sent=False
                ) from None

    async def close(self, *, only_started: bool = False) -> None:
        """End the serving sessions (a call or watch under way fails), then the masters
        (``only_started``: those started here)."""
        self.closed = True
        for session in [*self._sessions.values(), *self._watch_sessions.values()]:
            await session.close()
        await self.connections.close(only_started=only_started)


def _slow_pattern(host: str, request: Answer, budget: float) -> InvalidArgumentError:
    return InvalidArgumentError(
        request.get("pattern_field", "pattern"),
        request.get("pattern"),
        f"matching it took more than {budget:g} s of CPU on one stretch of the log (at most 1 MiB) on host {host}, "
        "whose Python re backtracks (RE2 is not there); rewrite it without nested or overlapping repetition "
        "(e.g. a+$ rather than (a+)+$)",
    )


def _no_python(host: str) -> HostUnreachableError:
    return HostUnreachableError(
        host,
        "python3 is not installed there (or not on the PATH of a non-interactive ssh session); "
        "install Python 3.9 or newer on it",
        reachable=True,
    )
