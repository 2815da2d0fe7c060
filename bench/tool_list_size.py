"""What a model reads of the tools on every turn: tool descriptions, input schemas and the
server's instructions, in bytes of compact JSON text (output schemas go to the client, not the
model). Peers' figures, measured the same way on their tools/list, are in docs/benchmarks.md.
"""

from __future__ import annotations

import json

from _harness import Figure, main, serve

NAME = "tool_list_size"
BUDGET_BYTES = 8000


def _bytes(text: str) -> int:
    return len(text.encode())


async def measure(quick: bool) -> list[Figure]:
    async with serve() as server:
        tools = (await server.client.list_tools(cache_mode="bypass")).tools
        instructions = server.client.instructions or ""
    per_tool = {
        t.name: _bytes(t.description or "") + _bytes(json.dumps(t.input_schema, separators=(",", ":"))) for t in tools
    }
    total = sum(per_tool.values()) + _bytes(instructions)
    listing = sum(len(json.dumps(t.model_dump(mode="json", by_alias=True, exclude_none=True))) for t in tools)
    return [
        Figure(NAME, "model-visible: descriptions + input schemas + instructions", f"{total} bytes",
               f"<= {BUDGET_BYTES} bytes", total <= BUDGET_BYTES),
        Figure(NAME, "whole tools/list answer (with output schemas)", f"{listing} bytes"),
        *(Figure(NAME, f"  {name}", f"{size} bytes") for name, size in per_tool.items()),
    ]  # fmt: skip


if __name__ == "__main__":
    main(measure)
