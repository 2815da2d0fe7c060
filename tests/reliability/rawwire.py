"""A server on raw pipes: write any bytes to its stdin, read its JSON-RPC answers one line at a time."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any

ANSWER_SECONDS = 30.0
"""Longest wait for one answer (the first one includes the server's start)."""


class RawServer:
    """``mcp-backgroundr`` with pipes for stdin and stdout and nothing in between."""

    def __init__(
        self,
        command: str,
        stderr: IO[bytes] | int = subprocess.DEVNULL,
        stdout: IO[bytes] | int = subprocess.PIPE,
        args: Sequence[str] = (),
        process_group: int | None = None,
    ) -> None:
        """``stdout``: a pipe read by :meth:`answer`, or where the server's answers go instead;
        ``args``: the server's command line arguments; ``process_group``: 0 to start it in a process
        group of its own (as ``timeout`` or a shell's job control does), which it leads."""
        self.process = subprocess.Popen(
            [command, *args], stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, process_group=process_group
        )
        self._pending = b""
        self._next_id = 1000

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(ANSWER_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line if line.endswith(b"\n") else line + b"\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a well-formed request and return its answer."""
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode())
        answer = self.answer()
        assert answer.get("id") == self._next_id, answer
        return answer

    def answer(self) -> dict[str, Any]:
        """The next line the server writes, parsed (bounded wait)."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + ANSWER_SECONDS
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no answer within {ANSWER_SECONDS} s"
            readable, _, _ = select.select([descriptor], [], [], remaining)
            if readable:
                chunk = os.read(descriptor, 1 << 16)
                assert chunk, f"the server closed stdout (exit {self.process.poll()})"
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def initialize(self) -> None:
        answer = self.request(
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
        )
        assert "result" in answer, answer
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
