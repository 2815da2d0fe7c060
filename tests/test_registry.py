from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mcp_backgroundr.errors import RegistryError, RegistryFullError
from mcp_backgroundr.models import TaskRecord, TaskState
from mcp_backgroundr.store.registry import RETRY_FULL_SECONDS, Registry

from .disks import fill_disk


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


def test_a_registry_from_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, name TEXT, command TEXT NOT NULL, cwd TEXT NOT NULL,"
            " log_path TEXT NOT NULL, owner TEXT NOT NULL, started_at REAL NOT NULL, state TEXT NOT NULL,"
            " pid INTEGER, pid_create_time REAL, exit_code INTEGER, signal TEXT,"
            " kill_requested INTEGER NOT NULL DEFAULT 0, ended_at REAL, end_reason TEXT);"
            "INSERT INTO tasks (task_id, command, cwd, log_path, owner, started_at, state)"
            " VALUES ('old', 'true', '/', '/tmp/old.log', 'me', 1.0, 'completed');"
            "PRAGMA user_version = 1;"
        )
    old.close()
    registry = Registry(path)
    record = registry.get("old")
    assert record is not None
    assert (record.restart, record.keep_running, record.max_log_bytes) == ("no", False, 0)
    registry.close()


def _two_writers(tmp_path: Path) -> tuple[Registry, Registry, TaskRecord, TaskRecord]:
    """Two connections to one registry, as a server and the CLI's stop (or another server) hold
    them, and each one's copy of the same task's record."""
    server, other = Registry(tmp_path / "r.sqlite3"), Registry(tmp_path / "r.sqlite3")
    server.insert(record := _record("t1", time.time()))
    copy = other.get("t1")
    assert copy is not None
    return server, other, record, copy


def test_an_older_copy_of_a_record_never_turns_a_recorded_exit_back_into_running(tmp_path: Path) -> None:
    server, cli, record, copy = _two_writers(tmp_path)
    record.state, record.exit_code, record.ended_at = TaskState.COMPLETED, 0, time.time()
    server.update([record])
    copy.kill_requested, copy.end_reason = True, "mcp-backgroundr stop"
    cli.update([copy])
    stored = server.get("t1")
    assert stored is not None
    assert (stored.state, stored.exit_code, stored.kill_requested, stored.end_reason) == (
        TaskState.COMPLETED,
        0,
        False,
        None,
    )
    server.close()
    cli.close()


def test_an_update_writes_only_what_changed(tmp_path: Path) -> None:
    server, other, record, copy = _two_writers(tmp_path)
    copy.end_reason = "a note from another server"
    other.update([copy])
    record.max_runtime_seconds = 5.0
    server.update([record])
    stored = other.get("t1")
    assert stored is not None
    assert (stored.end_reason, stored.max_runtime_seconds) == ("a note from another server", 5.0)
    server.close()
    other.close()


def test_changes_given_to_update_soon_are_written_in_order_and_none_is_lost(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    registry.insert(record := _record("t1", time.time()))
    record.state, record.exit_code = TaskState.FAILED, 1
    registry.update_soon([record])
    record.end_reason = "noted after the exit"  # a second change before the first may be written
    registry.update_soon([record])
    registry.flush()
    assert registry.get("t1") == record
    registry.close()


def test_a_registry_closed_cleanly_then_on_a_full_disk_is_read_and_written_once_there_is_space(
    small_disk: Path,
) -> None:
    path = small_disk / "r.sqlite3"
    first = Registry(path)
    first.insert(_record("t1", time.time()))
    first.close()  # the last user: SQLite folds the WAL back in and deletes -wal and -shm
    ballast = fill_disk(small_disk)
    registry = Registry(path)
    assert [r.task_id for r in registry.records()] == ["t1"]
    with pytest.raises(RegistryFullError, match="disk is full"):
        registry.insert(_record("t2", time.time()))
    ballast.unlink()
    registry.insert(_record("t2", time.time()))
    assert [r.task_id for r in registry.records()] == ["t2", "t1"]  # the reader sees the writes
    registry.close()


def test_changes_that_failed_on_a_full_disk_are_kept_and_written_once_there_is_space(small_disk: Path) -> None:
    registry = Registry(small_disk / "r.sqlite3")
    errors: list[RegistryError] = []
    registry.on_write_error = errors.append
    registry.insert(record := _record("t1", time.time()))
    ballast = fill_disk(small_disk)
    record.state, record.exit_code = TaskState.FAILED, 3
    registry.update_soon([record])
    registry.flush()
    assert [type(e) for e in errors] == [RegistryFullError]
    ballast.unlink()
    other = Registry(small_disk / "r.sqlite3")
    deadline = time.monotonic() + 10 * RETRY_FULL_SECONDS
    while (stored := other.get("t1")) is not None and stored.exit_code is None:
        assert time.monotonic() < deadline, "the kept change was not written once there was space"
        time.sleep(0.05)
    assert stored is not None and (stored.state, stored.exit_code) == (TaskState.FAILED, 3)
    registry.close()
    other.close()
