from __future__ import annotations

import time
from pathlib import Path

from mcp_backgroundr.models import TaskRecord, TaskState
from mcp_backgroundr.registry import Registry


def _record(task_id: str, started_at: float) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        name=None,
        command="true",
        cwd="/",
        log_path=f"/tmp/{task_id}.log",
        owner="me",
        started_at=started_at,
    )


def test_records_round_trip_and_list_newest_first(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    now = time.time()
    registry.insert(_record("old", now - 10))
    registry.insert(_record("new", now))
    record = registry.get("old")
    assert record is not None
    record.state, record.exit_code, record.signal, record.kill_requested = TaskState.KILLED, 143, "SIGTERM", True
    registry.update([record])
    again = Registry(tmp_path / "r.sqlite3")
    assert again.get("old") == record
    assert [r.task_id for r in again.records()] == ["new", "old"]
    assert again.records(owner="someone else") == []
    assert again.get("missing") is None
    registry.close()
    again.close()


def test_registry_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    registry = Registry(path)
    registry.insert(_record("a", time.time()))
    assert path.stat().st_mode & 0o777 == 0o600
    assert Path(f"{path}-wal").stat().st_mode & 0o777 == 0o600
    registry.close()
