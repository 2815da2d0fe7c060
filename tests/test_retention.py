from __future__ import annotations

from pathlib import Path

from mcp_backgroundr.models import TaskRecord, TaskState
from mcp_backgroundr.store import retention
from mcp_backgroundr.store.registry import Registry

NOW = 1_800_000_000.0
DAY = retention.SECONDS_PER_DAY


def _record(task_id: str, age_days: float, state: TaskState, logs: Path) -> TaskRecord:
    started = NOW - age_days * DAY
    log = logs / f"{task_id}.log"
    log.write_text("output\n")
    return TaskRecord(
        task_id=task_id, name=None, command="true", cwd="/", log_path=str(log), owner="o", started_at=started,
        state=state, ended_at=None if state is TaskState.RUNNING else started + 1,
    )  # fmt: skip


def test_beyond_the_count_or_the_age_oldest_first_never_running(tmp_path: Path) -> None:
    records = [
        _record("new", 0.1, TaskState.COMPLETED, tmp_path),
        _record("mid", 1, TaskState.FAILED, tmp_path),
        _record("old", 2, TaskState.KILLED, tmp_path),
        _record("ancient", 30, TaskState.COMPLETED, tmp_path),
        _record("busy", 60, TaskState.RUNNING, tmp_path),
    ]
    chosen = retention.prunable(records, keep=2, max_age_days=7, now=NOW)
    assert [r.task_id for r in chosen] == ["ancient", "old"]
    assert retention.prunable(records, keep=10, max_age_days=7, now=NOW)[0].task_id == "ancient"


def test_prune_deletes_rows_and_logs(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    record = _record("gone", 0, TaskState.COMPLETED, tmp_path)
    kept = _record("kept", 0, TaskState.RUNNING, tmp_path)
    registry.insert(record)
    registry.insert(kept)
    pruned = retention.prune(registry, keep=0, max_age_days=7, pruner="o")
    assert [r.task_id for r in pruned] == ["gone"]
    assert not Path(record.log_path).exists()
    assert registry.get("gone") is None
    assert registry.get("kept") is not None
    registry.close()
