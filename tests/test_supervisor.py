from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from mcp_backgroundr.config import Settings
from mcp_backgroundr.core import starting
from mcp_backgroundr.core.supervisor import ReadRequest, StartRequest, Supervisor
from mcp_backgroundr.core.task import Measurement, Task
from mcp_backgroundr.errors import InvalidArgumentError, TaskNotFoundError
from mcp_backgroundr.models import TaskState
from mcp_backgroundr.remote import RemotePlace
from mcp_backgroundr.results import Started
from mcp_backgroundr.store.registry import Registry

pytestmark = pytest.mark.anyio


async def _start(supervisor: Supervisor, command: str, cwd: str | None = None) -> Started:
    return await supervisor.start(supervisor.check_start(StartRequest(command, cwd=cwd)))


def _registry(settings: Settings) -> Registry:
    settings.home.mkdir(parents=True, exist_ok=True)
    return Registry(settings.registry_path)


async def test_an_exit_is_recorded_in_the_registry_without_anyone_asking(settings: Settings) -> None:
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        started = await _start(supervisor, "exit 7")
        task = supervisor._state.own[started.task_id]
        with anyio.fail_after(10):
            await task.exited.wait()
            # The registry's thread writes it: the event loop does not wait for the write.
            while (record := registry.get(started.task_id)) is not None and record.running:
                await anyio.sleep(0.01)
        assert record is not None
        assert (record.state, record.exit_code) == (TaskState.FAILED, 7)
    registry.close()


async def test_shutdown_ends_running_tasks_and_records_them_killed(settings: Settings) -> None:
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        started = [await _start(supervisor, "sleep 300 & sleep 300") for _ in range(5)]
    for task in started:
        record = registry.get(task.task_id)
        assert record is not None
        assert record.state is TaskState.KILLED
        assert record.end_reason == "server shutdown"
    registry.close()


async def test_bad_requests_raise_errors_that_name_the_field(settings: Settings, tmp_path: Path) -> None:
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        with pytest.raises(InvalidArgumentError, match=r"^cwd="):
            await _start(supervisor, "true", cwd=str(tmp_path / "nope"))
        with pytest.raises(TaskNotFoundError, match="list_tasks"):
            await supervisor.read("nope")
        started = await _start(supervisor, "true")
        with pytest.raises(InvalidArgumentError, match=r"^lines="):
            await supervisor.read(started.task_id, ReadRequest(lines=-1))
        with pytest.raises(InvalidArgumentError, match=r"^grace_seconds="):
            await supervisor.end(started.task_id, grace_seconds=-1)
    registry.close()


async def test_a_task_started_in_a_relative_cwd_runs_in_its_absolute_path(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path)
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        started = await _start(supervisor, "pwd", cwd="work")
        assert started.cwd == str(tmp_path / "work")
    registry.close()


async def test_status_that_reaps_a_fast_exit_before_the_watcher_runs_breaks_nothing(settings: Settings) -> None:
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        started = await _start(supervisor, "exit 9")
        # Before any await, the watcher has not run; the exit is seen by status itself.
        with anyio.fail_after(10):
            while (await supervisor.read(started.task_id)).state is TaskState.RUNNING:
                await anyio.sleep(0.01)
        assert (await supervisor.read(started.task_id)).exit_code == 9
    record = registry.get(started.task_id)
    assert record is not None
    assert record.exit_code == 9
    registry.close()


async def test_a_task_id_is_never_read_as_a_number(settings: Settings) -> None:
    """Regression: clients that read JSON values from text sent 95743835 and 123456e7 back as numbers."""
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        task_id = await starting._new_task_id(supervisor._state)
    registry.close()
    assert task_id.startswith("t")
    with pytest.raises(json.JSONDecodeError):
        json.loads(task_id)


async def test_status_calls_that_share_a_process_scan_share_its_usage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a client polling the status of a big tree made every call read every process's usage
    (a 300-process tree: tens of ms of /proc reads holding the interpreter lock per call), though the
    process list itself was reused for USAGE_REFRESH_SECONDS."""
    counts = {"scans": 0, "measures": 0}
    scan, measure = Task.find_processes, Task.measure

    async def counted_scan(task: Task) -> list[psutil.Process]:
        counts["scans"] += 1
        return await scan(task)

    def counted_measure(task: Task, *args: Any) -> Measurement:
        counts["measures"] += 1
        return measure(task, *args)

    monkeypatch.setattr(Task, "find_processes", counted_scan)
    monkeypatch.setattr(Task, "measure", counted_measure)
    registry = _registry(settings)
    async with Supervisor(settings, registry, away=RemotePlace) as supervisor:
        started = await _start(supervisor, "for i in $(seq 20); do sleep 600 & done; wait")
        statuses = [await supervisor.read(started.task_id) for _ in range(3)]
        assert len({(status.process_count, status.cpu_percent) for status in statuses}) <= counts["scans"]
        assert counts["measures"] == counts["scans"] < 3
    registry.close()
