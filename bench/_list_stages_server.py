"""The server, with how long each stage of a list_tasks answer takes recorded (``list_stages.py``).

Run in place of the console script (``python bench/_list_stages_server.py [server arguments]``,
with ``LIST_STAGES_FILE=PATH``): a line ``STAGE SECONDS`` each time a stage ends. The stages, in a
call's order: the core's listing (its records refreshed, sorted and summarised), the answer's text
and rows (ours), then the SDK's dump of the answer, its check and dump of that through its
protocol version's model, and the JSON line. The tools module takes ``listing_answer`` and
``describe_list`` by name when it is imported, so they are wrapped before it is.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

_OUT = open(os.environ["LIST_STAGES_FILE"], "a", buffering=1)  # noqa: SIM115 (open for the process's life)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _noted(stage: str, function: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(function)
    def noted(*arguments: _P.args, **options: _P.kwargs) -> _R:
        started = time.perf_counter()
        try:
            return function(*arguments, **options)
        finally:
            _OUT.write(f"{stage} {time.perf_counter() - started:.9f}\n")

    return noted


def _noted_async(stage: str, function: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    @functools.wraps(function)
    async def noted(*arguments: _P.args, **options: _P.kwargs) -> _R:
        started = time.perf_counter()
        try:
            return await function(*arguments, **options)
        finally:
            _OUT.write(f"{stage} {time.perf_counter() - started:.9f}\n")

    return noted


def _wrap() -> None:
    from mcp.server import runner
    from mcp_types import JSONRPCResponse, methods
    from pydantic import BaseModel

    from mcp_backgroundr.core import listing
    from mcp_backgroundr.tools import answers

    listing.list_tasks = _noted_async("ours: the core's listing", listing.list_tasks)
    answers.describe_list = _noted("ours: the text", answers.describe_list)
    answers.listing_answer = _noted("ours: the rows, the answer", answers.listing_answer)
    methods.serialize_server_result = _noted("SDK: per-version check and dump", methods.serialize_server_result)
    dump = runner._dump_result
    dump_model = _noted("SDK: dump of the answer", dump)

    def dump_result(result: Any) -> dict[str, Any]:
        return dump_model(result) if isinstance(result, BaseModel) else dump(result)

    runner._dump_result = dump_result
    JSONRPCResponse.model_dump_json = _noted("SDK: JSON line", JSONRPCResponse.model_dump_json)  # type: ignore[method-assign]


if __name__ == "__main__":
    _wrap()
    from mcp_backgroundr.cli.main import main

    sys.exit(main(sys.argv[1:]))
