"""The server, with the moment each request line is read off stdin and each answer written recorded.

Run in place of the console script (``python bench/_call_split.py [server arguments]``, with
``CALL_SPLIT_FILE=PATH``): a line ``R <monotonic> <id> <tool> <task_id>`` when the worker thread
that reads stdin has a request line, ``W <monotonic> <id>`` when an answer is about to be
written. The clock is CLOCK_MONOTONIC, the one a client on the same machine reads, so a client's
own times split each call into: to the server (the client's write, the pipe, the reader thread
waking and getting the interpreter lock), in the server (the event loop and its worker threads,
up to the answer), and back (the writer thread, the pipe, the client reading and validating).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from mcp.server import stdio

_OUT = open(os.environ["CALL_SPLIT_FILE"], "a", buffering=1)  # noqa: SIM115 (open for the process's life)


def _fields(line: str) -> tuple[Any, str, str]:
    try:
        message = json.loads(line)
    except ValueError:
        return None, "", ""
    params = message.get("params") or {}
    return message.get("id"), str(params.get("name")), str((params.get("arguments") or {}).get("task_id"))


class _Timed(stdio._UnownedTextWrapper):
    def readline(self, size: int | None = -1, /) -> str:  # type: ignore[override]
        line = super().readline(-1 if size is None else size)
        request, tool, task_id = _fields(line)
        _OUT.write(f"R {time.monotonic():.6f} {request} {tool} {task_id}\n")
        return line

    def __next__(self) -> str:  # type: ignore[override]
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def write(self, text: str, /) -> int:
        _OUT.write(f"W {time.monotonic():.6f} {_fields(text)[0]}\n")
        return super().write(text)


if __name__ == "__main__":
    setattr(stdio, "_UnownedTextWrapper", _Timed)  # noqa: B010 (the SDK's class replaced)
    from mcp_backgroundr.cli.main import main

    sys.exit(main(sys.argv[1:]))
