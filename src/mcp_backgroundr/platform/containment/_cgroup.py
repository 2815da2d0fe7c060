"""cgroups: where they are mounted, a directory per task, its members, freezing, killing, limits.

A task's cgroup is a directory under the cgroup v2 hierarchy; the limits the v2 hierarchy
cannot enforce (its memory or pids controller missing, as on hybrid systems whose
controllers are on v1) get a directory in that v1 controller's hierarchy too. The child
joins all of them between fork and exec, so every process it ever starts is a member.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import InvalidArgumentError

MOUNTINFO = "/proc/self/mountinfo"
OWN_CGROUPS = "/proc/self/cgroup"
GROUP_PREFIX = "mcp-backgroundr"

V2_MEMORY = ("memory", "memory.max")
V2_PIDS = ("pids", "pids.max")
V1_MEMORY = ("memory", "memory.limit_in_bytes")
V1_PIDS = ("pids", "pids.max")


@dataclass(frozen=True)
class Mount:
    path: Path
    fstype: str
    options: frozenset[str]


def mounts(mountinfo: str = MOUNTINFO) -> list[Mount]:
    """The cgroup file systems mounted, from mountinfo (never assumed)."""
    found = []
    with contextlib.suppress(OSError), open(mountinfo, encoding="utf-8") as file:
        for line in file:
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                mount_point = fields[4].replace("\\040", " ")
                found.append(Mount(Path(mount_point), tail[0], frozenset(tail[2].split(","))))
    return found


def own_cgroup(hierarchy: str) -> str:
    """This process's cgroup in a hierarchy ("" is v2; else a v1 controller name)."""
    with contextlib.suppress(OSError), open(OWN_CGROUPS, encoding="utf-8") as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers.split(",") == [hierarchy] or (hierarchy == "" and controllers == ""):
                return path
    return "/"


def v2_root() -> Path | None:
    found = [m.path for m in mounts() if m.fstype == "cgroup2"]
    return found[0] if found else None


def v1_root(controller: str) -> Path | None:
    found = [m.path for m in mounts() if m.fstype == "cgroup" and controller in m.options]
    return found[0] if found else None


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError:
        return ""


@dataclass(frozen=True)
class LimitsHit:
    """How often the kernel enforced a task's limits (cgroup event counters)."""

    oom_kills: int = 0
    """Processes killed for going over max_memory_bytes."""
    forks_refused: int = 0
    """Forks refused at max_processes."""


def flat_keys(path: Path) -> dict[str, int]:
    """A cgroup file of ``key value`` lines (cgroup.events, memory.events, cpu.stat) as a dict."""
    values = {}
    for line in read_text(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _subtree(directory: Path) -> list[Path]:
    """A cgroup and the cgroups a task (as root) may have made inside it, deepest last."""
    found = []
    for parent, _, _ in os.walk(directory):
        found.append(Path(parent))
    return found or [directory]


def members(directory: Path) -> list[int]:
    """Process ids in a cgroup and the cgroups below it (empty once it is removed)."""
    return [int(pid) for group in _subtree(directory) for pid in read_text(group / "cgroup.procs").split()]


def enabled_controllers(parent: Path) -> set[str]:
    """Controllers a v2 cgroup's children get: enabled on demand where the parent offers them."""
    offered = set(read_text(parent / "cgroup.controllers").split())
    enabled = set(read_text(parent / "cgroup.subtree_control").split())
    for name in ("memory", "pids"):
        if name in offered and name not in enabled:
            with contextlib.suppress(OSError):
                _write(parent / "cgroup.subtree_control", f"+{name}")
                enabled.add(name)
    return enabled


@dataclass(frozen=True)
class Limits:
    """Per-task limits enforced by the kernel through the task's cgroups."""

    memory_bytes: int | None = None
    processes: int | None = None

    def __bool__(self) -> bool:
        return self.memory_bytes is not None or self.processes is not None


def _limit_files(base: Path, limits: Limits) -> list[tuple[Path | None, str, str]]:
    """(hierarchy root or None for v2, file, value) of each limit, v2 where it can, else v1."""
    enabled = enabled_controllers(base)
    wanted: list[tuple[tuple[str, str], tuple[str, str], int, str]] = []
    if limits.memory_bytes is not None:
        wanted.append((V2_MEMORY, V1_MEMORY, limits.memory_bytes, "max_memory_bytes"))
    if limits.processes is not None:
        wanted.append((V2_PIDS, V1_PIDS, limits.processes, "max_processes"))
    files: list[tuple[Path | None, str, str]] = []
    for v2, v1, value, name in wanted:
        if v2[0] in enabled:
            files.append((None, v2[1], str(value)))
            continue
        root = v1_root(v1[0])
        if root is None or not os.access(root / own_cgroup(v1[0]).lstrip("/"), os.W_OK):
            raise InvalidArgumentError(
                name,
                value,
                f"it cannot be enforced here: the {v2[0]} controller is neither enabled for cgroup v2 at {base} "
                "nor writable on a v1 hierarchy; drop the limit, or run the server where the controller is available",
            )
        files.append((root, v1[1], str(value)))
    return files


def _v1_directory(root: Path, controller: str, name: str) -> Path:
    return root / own_cgroup(controller).lstrip("/") / GROUP_PREFIX / name


@dataclass(frozen=True)
class TaskCgroup:
    """The cgroup directories of one task: the v2 one first, then any v1 ones holding its limits."""

    directories: tuple[Path, ...]

    @property
    def main(self) -> Path:
        return self.directories[0]

    @classmethod
    def create(cls, base: Path, name: str, limits: Limits) -> TaskCgroup:
        """Make the task's directories under ``base`` (v2) and apply ``limits``."""
        planned = _limit_files(base, limits) if limits else []
        directories = [base / name]
        settings: list[tuple[Path, str]] = []
        for root, file, value in planned:
            directory = base / name if root is None else _v1_directory(root, file.split(".")[0], name)
            if directory not in directories:
                directories.append(directory)
            settings.append((directory / file, value))
        made: list[Path] = []
        try:
            for directory in directories:
                directory.mkdir(parents=True)
                made.append(directory)
            for path, value in settings:
                _write(path, value)
                if path.name == "memory.limit_in_bytes":
                    # Without a swap limit too, the kernel swaps the task out instead of killing it.
                    with contextlib.suppress(OSError):
                        _write(path.with_name("memory.memsw.limit_in_bytes"), value)
        except OSError:
            TaskCgroup(tuple(made)).remove()
            raise
        return cls(tuple(directories))

    def joiner(self) -> Callable[[], None]:
        """What the child runs between fork and exec to join every directory (so it is a member
        before it can start anything)."""
        targets = [os.fsencode(directory / "cgroup.procs") for directory in self.directories]

        def join() -> None:
            for target in targets:
                descriptor = os.open(target, os.O_WRONLY)
                try:
                    os.write(descriptor, b"0")
                finally:
                    os.close(descriptor)

        return join

    def members(self) -> list[int]:
        return members(self.main)

    def populated(self) -> bool:
        return flat_keys(self.main / "cgroup.events").get("populated", 0) == 1 or bool(self.members())

    def freeze_and_kill(self) -> None:
        """Freeze the cgroup (nothing in it can fork any more), then SIGKILL every member at once."""
        with contextlib.suppress(OSError):
            _write(self.main / "cgroup.freeze", "1")
        try:
            _write(self.main / "cgroup.kill", "1")
        except OSError:  # before Linux 5.14: the frozen members are killed one by one
            for pid in self.members():
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)

    def limits_hit(self) -> LimitsHit:
        """How often the kernel enforced the task's limits: memory kills, and forks refused."""
        return LimitsHit(
            oom_kills=self._event_count(("memory.events", "memory.oom_control"), "oom_kill"),
            forks_refused=self._event_count(("pids.events",), "max"),
        )

    def _event_count(self, files: tuple[str, ...], key: str) -> int:
        return sum(flat_keys(directory / file).get(key, 0) for directory in self.directories for file in files)

    def usage(self) -> tuple[int | None, float | None]:
        """(memory bytes, CPU seconds) from the cgroups' own accounting, where they keep it."""
        memory: int | None = None
        for directory in self.directories:
            for file in ("memory.current", "memory.usage_in_bytes"):
                text = read_text(directory / file).strip()
                if text.isdigit():
                    memory = int(text)
        usec = flat_keys(self.main / "cpu.stat").get("usage_usec")
        return memory, None if usec is None else usec / 1e6

    def remove(self) -> bool:
        """Remove the (empty) directories; True when none is left."""
        for directory in reversed(self.directories):
            for group in reversed(_subtree(directory)):
                with contextlib.suppress(FileNotFoundError):
                    try:
                        group.rmdir()
                    except OSError:
                        return False
        return True

    def removed(self) -> list[Path]:
        """Its directories that are gone: a finished task's are removed once no process is left in them."""
        return [directory for directory in self.directories if not directory.is_dir()]

    def encode(self) -> str:
        return "\n".join(str(directory) for directory in self.directories)

    @classmethod
    def decode(cls, text: str | None) -> TaskCgroup | None:
        return cls(tuple(Path(part) for part in text.split("\n"))) if text else None


def writable_base(setting: str | None) -> Path | None:
    """Where this server can create task cgroups: the delegated directory of the setting; as
    root, ``mcp-backgroundr/`` under our own cgroup; in a cgroup delegated to us (a
    ``systemd-run --user --scope -p Delegate=yes`` scope), our own cgroup, after moving
    ourselves into a leaf of it (so its controllers can be enabled for the tasks)."""
    if setting:
        base = Path(setting)
        return base if os.access(base / "cgroup.procs", os.W_OK) and os.access(base, os.W_OK) else None
    root = v2_root()
    if root is None:
        return None
    own = root / own_cgroup("").lstrip("/")
    if not os.access(own, os.W_OK) or not os.access(own / "cgroup.procs", os.W_OK):
        return None
    if os.geteuid() == 0:
        base = own / GROUP_PREFIX
        with contextlib.suppress(OSError):
            base.mkdir(exist_ok=True)
        return base if os.access(base, os.W_OK) else None
    leaf = own / f"{GROUP_PREFIX}-server"
    try:
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", "0")
    except OSError:
        return None
    return own
