"""Task ids never read as numbers, in JSON or anywhere a client parses text as a value."""

from __future__ import annotations

import json
from collections.abc import Callable

from mcp_backgroundr.models import new_task_id

IDS_CHECKED = 20_000
PARSERS: list[Callable[[str], object]] = [json.loads, float, lambda text: int(text, 0)]


def _parses_as_a_number(task_id: str) -> bool:
    for parse in PARSERS:
        try:
            parse(task_id)
        except ValueError:
            continue
        return True
    return False


def test_no_task_id_parses_as_a_json_or_python_number() -> None:
    # 123456e7 and 1234e567 were about 1.3 % of the old all-hex ids: read as JSON they are numbers.
    ids = {new_task_id() for _ in range(IDS_CHECKED)}
    assert len(ids) > IDS_CHECKED * 0.99
    assert [task_id for task_id in ids if _parses_as_a_number(task_id)] == []
    assert all(task_id[0].isalpha() and task_id[0].lower() not in "einx" for task_id in ids)
