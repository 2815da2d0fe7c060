"""The hurry a leaving server sends on an end's input reaches the agent's grace wait, whether it
arrived with the request (read into the buffer of the request's read) or later, in pieces."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from mcp_backgroundr.remote.agent import HurryOnInput


@pytest.fixture
def pipe() -> Iterator[tuple[io.BufferedReader, int]]:
    """(the agent's buffered input, the descriptor the server writes to)."""
    read_end, write_end = os.pipe()
    reader = open(read_end, "rb")  # noqa: SIM115 - closed below
    try:
        yield reader, write_end
    finally:
        reader.close()
        os.close(write_end)


def test_a_hurry_sent_with_the_request_is_found_in_the_buffer_of_its_read(
    pipe: tuple[io.BufferedReader, int],
) -> None:
    reader, writer = pipe
    os.write(writer, b'{"op": "end"}\n{"hurry": 0.8}\n')
    assert reader.readline() == b'{"op": "end"}\n'  # reads the hurry into its buffer too
    assert HurryOnInput(reader)() == 0.8


def test_a_hurry_sent_later_in_pieces_is_read_without_blocking(pipe: tuple[io.BufferedReader, int]) -> None:
    reader, writer = pipe
    os.write(writer, b'{"op": "end"}\n')
    reader.readline()
    hurry = HurryOnInput(reader)
    assert hurry() is None  # nothing yet: no wait
    os.write(writer, b'{"hurry": ')
    assert hurry() is None
    os.write(writer, b"1.5}\n")
    assert hurry() == 1.5
