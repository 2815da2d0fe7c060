"""The containment level chosen at start, the cgroup mounts found, and a task cgroup's record."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_backgroundr.errors import InvalidArgumentError
from mcp_backgroundr.platform.containment import Containment, Level, Limits, TaskCgroup
from mcp_backgroundr.platform.containment._cgroup import mounts

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_a_bad_level_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidArgumentError, match='MCP_BACKGROUNDR_CONTAINMENT="sandbox"'):
        Containment.choose("sandbox", None)


def test_the_marker_level_is_taken_when_asked_and_refuses_limits() -> None:
    chosen = Containment.choose("MARKER", None)
    assert chosen.level is Level.MARKER
    assert chosen.place("t1", Limits()).cgroup is None
    with pytest.raises(InvalidArgumentError, match=r"max_processes=8 is invalid: .*marker level"):
        chosen.place("t1", Limits(processes=8))


@pytest.mark.parametrize("wanted", ["cgroup", "auto"])
def test_a_delegated_directory_that_cannot_be_written_gives_no_cgroup(tmp_path: Path, wanted: str) -> None:
    """Refused, naming the setting, whether cgroups are asked for or only allowed (auto fell back to
    the subreaper level in silence)."""
    with pytest.raises(InvalidArgumentError, match=r"MCP_BACKGROUNDR_CGROUP=.* is invalid: it is not a cgroup v2"):
        Containment.choose(wanted, str(tmp_path / "missing"))


def test_cgroup_mounts_are_read_from_mountinfo(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(HYBRID)
    found = {(str(m.path), m.fstype) for m in mounts(str(mountinfo))}
    assert found == {
        ("/sys/fs/cgroup/memory", "cgroup"),
        ("/sys/fs/cgroup/pids", "cgroup"),
        ("/sys/fs/cgroup/unified", "cgroup2"),
    }


def test_a_task_cgroup_is_recorded_and_read_back() -> None:
    cgroup = TaskCgroup((Path("/sys/fs/cgroup/unified/a b/task-1"), Path("/sys/fs/cgroup/pids/x/task-1")))
    assert TaskCgroup.decode(cgroup.encode()) == cgroup
    assert TaskCgroup.decode(None) is None
