"""How much a JSON-RPC message would cost to parse, found without parsing it.

Parsing holds the interpreter lock from start to end, whatever thread it runs in: a 4 MiB POST
body of nested empty arrays held the event loop 2.9 s in pydantic's parse, and the SDK parses a
body once more, so every HTTP client waited 6 s; numbers and objects cost less, text almost
nothing. What a parse costs grows with the arrays, objects and values outside strings, and no
request of a tool needs many of them (an argv or an env is one array or object of text). So a
message longer than ``SMALL`` is weighed first, in a worker thread (Python code that gives the
lock back every half millisecond, see ``offload``), and one over ``MAX_CONTAINERS`` or
``MAX_VALUES`` is refused before it is parsed, with the request's id (searched for to the end of the message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CONTAINERS = 10_000
"""Arrays and objects a message may hold (outside strings): about 13 ms to parse at the worst (nested)."""
MAX_VALUES = 50_000
"""Values a message may hold (counted by commas outside strings): about 28 ms to parse at the worst
(an env's names and values). A command's words or an env's variables are bounded by the kernel's
ARG_MAX (2 MiB here) anyway; more than this many is a script or data to pass as a file."""
SMALL = 16 * 1024
"""A message this long or shorter cannot exceed either bound: it is not weighed."""
_BACKSLASH = ord("\\")


@dataclass(frozen=True)
class Heavy:
    """A message found too heavy to parse: the id of the request it holds, if one was found."""

    request_id: int | str | None


def too_heavy(message: str | bytes) -> Heavy | None:
    """Whether ``message`` (one JSON text) holds more arrays and objects, or more values, than a
    parse of it may cost (see the module); None when it does not. Blocking: as long as the message."""
    if len(message) <= SMALL:
        return None
    data = message.encode(errors="replace") if isinstance(message, str) else message
    containers = values = depth = 0
    heavy = False
    request_id: int | str | None = None
    position = 0
    while True:
        opening = data.find(b'"', position)
        end = len(data) if opening < 0 else opening
        opened = data.count(b"[", position, end) + data.count(b"{", position, end)
        containers += opened
        values += data.count(b",", position, end)
        depth += opened - data.count(b"]", position, end) - data.count(b"}", position, end)
        heavy = heavy or containers > MAX_CONTAINERS or values > MAX_VALUES
        if heavy and request_id is not None:
            return Heavy(request_id)
        closing = -1 if opening < 0 else _string_end(data, opening + 1)
        if closing < 0:  # the end, or not JSON (the parser says so, at once when it is light)
            return Heavy(request_id) if heavy else None
        if request_id is None and depth == 1 and data[opening + 1 : closing] == b"id":
            request_id = _id_after(data, closing + 1)
        position = closing + 1


def _string_end(data: bytes, start: int) -> int:
    """Where the string begun before ``start`` ends (its closing quote), or -1."""
    while True:
        closing = data.find(b'"', start)
        if closing < 0:
            return -1
        backslashes = 0
        while closing - backslashes - 1 >= start and data[closing - backslashes - 1] == _BACKSLASH:
            backslashes += 1
        if backslashes % 2 == 0:
            return closing
        start = closing + 1


_ID_VALUE = re.compile(rb'\s*:\s*(-?\d{1,18}(?![\d.eE])|"[^"\\]{0,200}")')
"""An id as the parse would read it, or nothing: an integer of at most 18 digits (not the start of
a longer number or of a fraction: answered so, the client would take it for another request's), or
a short string without escapes."""


def _id_after(data: bytes, start: int) -> int | str | None:
    """The request id whose key ends before ``start`` (an integer or a short plain string), if any."""
    found = _ID_VALUE.match(data, start, start + 256)
    if found is None:
        return None
    value = found.group(1).decode("utf-8", errors="replace")
    return value[1:-1] if value.startswith('"') else int(value)
