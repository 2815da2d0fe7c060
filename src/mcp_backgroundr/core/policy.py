"""What a server lets its clients run: the policy from ``config.toml`` and the matching flags.

A policy narrows what tasks may do; with neither file nor flags it allows what a
shell would. Every refusal is a :class:`PolicyRefusedError` naming the rule, so a
client learns why and never sees a silent drop. The deny rules are a guard
against mistakes, not a sandbox: a shell command can always be spelt another way.

``config.toml`` (in the state directory) holds any of::

    allowed_cwd = ["~/src", "/tmp"]        # roots a task's cwd must lie under (on a remote host: there)
    deny_commands = ['^sudo\\b', 'rm -rf /']  # patterns (RE2 syntax) searched in each command
    max_tasks = 20                         # tasks running at once
    default_runtime_seconds = 3600         # a task's limit when it asks for none
    max_runtime_seconds = 86400            # the most a task may ask for
    env_passthrough = ["PATH", "HOME", "LANG", "LC_*"]  # variables tasks inherit
    max_memory_bytes = 2147483648          # memory each task may use (its cgroup's limit)
    max_processes = 512                    # processes each task may have at once
    allowed_hosts = ["devbox", "me@gpu-*"]  # SSH hosts tasks may run on (none by default)

A flag given on the command line replaces the file's setting of the same name.
The two limits apply to every task (one may ask for less, never more) and need cgroups:
a server that cannot enforce them refuses to start tasks rather than ignore them.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import re2

from ..errors import BackgroundrError, InvalidArgumentError, PolicyRefusedError, plain_number, shown_value
from ..logs.patterns import PATTERN_LIMIT_NOTE, Pattern, error_text, owner_pattern

CONFIG_FILE = "config.toml"
MAX_RUNTIME_CEILING = 10 * 365 * 86400.0
"""No limit asked for or configured may exceed ten years."""
SETTINGS = (
    "allowed_cwd",
    "deny_commands",
    "max_tasks",
    "default_runtime_seconds",
    "max_runtime_seconds",
    "env_passthrough",
    "max_memory_bytes",
    "max_processes",
    "allowed_hosts",
)
LIMITS = ("max_memory_bytes", "max_processes")
"""Per-task limits, enforced by the task's cgroup."""
LIMIT_CEILINGS = {"max_memory_bytes": 1 << 60, "max_processes": 1 << 22}
LIMIT_FLOORS = {"max_memory_bytes": 1 << 20, "max_processes": 1}
"""The least a task may ask for: under 1 MiB of memory not even its shell starts (the kernel kills it
at once, which an assistant asking for 1 byte would only learn afterwards)."""
"""The most the kernel takes for each (an exbibyte; Linux's largest pid_max)."""


@dataclass(frozen=True)
class Policy:
    """The rules one server applies to every task it starts."""

    allowed_cwd: tuple[Path, ...] = ()
    """Resolved roots a task's resolved cwd must lie under; empty: anywhere."""
    allowed_cwd_as_written: tuple[str, ...] = ()
    """The same roots as configured, for a remote host, which resolves them itself (``~`` there is
    the remote user's home)."""
    deny_commands: tuple[Pattern, ...] = ()
    max_tasks: int | None = None
    default_runtime_seconds: float | None = None
    max_runtime_seconds: float | None = None
    env_passthrough: tuple[str, ...] | None = None
    """Names (shell-style patterns allowed) of server variables tasks inherit; None: all."""
    max_memory_bytes: int | None = None
    max_processes: int | None = None
    allowed_hosts: tuple[str, ...] = ()
    """SSH destinations (shell-style patterns) tasks may run on; empty: none, only this machine."""

    def check_host(self, host: str) -> None:
        """Refuse a remote host that no ``allowed_hosts`` entry names."""
        name = host.rpartition("@")[2].rsplit(":", 1)[0] if host.count(":") == 1 else host.rpartition("@")[2]
        if any(fnmatchcase(host, entry) or fnmatchcase(name, entry) for entry in self.allowed_hosts):
            return
        if not self.allowed_hosts:
            raise PolicyRefusedError(
                "allowed_hosts",
                f"host {shown_value(host)}: no remote host is allowed by default",
                f"run it without host, or ask the server's owner to add it to allowed_hosts in {CONFIG_FILE} "
                "(or --allowed-ssh-host)",
            )
        raise PolicyRefusedError(
            f"allowed_hosts ({', '.join(self.allowed_hosts)})",
            f"host {shown_value(host)} is not among them",
            "use one of those hosts, or ask the server's owner to add this one",
        )

    def check_command(self, command: str) -> None:
        for rule in self.deny_commands:
            if rule.search(command):
                raise PolicyRefusedError(
                    f"deny_commands '{rule.pattern}'",
                    "the command matches it",
                    "run a different command, or ask the server's owner to change the rule",
                )

    def checked_cwd(self, cwd: str) -> str:
        """The directory to run in: ``cwd``, or with roots set, its resolved path if under one
        (so that the directory checked is the one the task runs in, whatever links change)."""
        if not self.allowed_cwd:
            return cwd
        resolved = Path(os.path.realpath(cwd))
        if any(resolved.is_relative_to(root) for root in self.allowed_cwd):
            return str(resolved)
        shown = cwd if str(resolved) == cwd else f"{cwd} (resolves to {resolved})"
        raise PolicyRefusedError(
            "allowed_cwd",
            f"cwd {shown} is not under {', '.join(map(str, self.allowed_cwd))}",
            "give a cwd under one of those roots",
        )

    def check_room(self, running: int) -> None:
        if self.max_tasks is not None and running >= self.max_tasks:
            raise PolicyRefusedError(
                f"max_tasks ({self.max_tasks})",
                f"{running} task{'s are' if running != 1 else ' is'} running or starting",
                "end one you no longer need (list_tasks shows them), then start this again",
            )

    def runtime_limit(self, requested: float | None) -> float | None:
        """The runtime limit of a new task: what it asked for, else the default, else the maximum."""
        if requested is None:
            default = self.default_runtime_seconds
            return default if default is not None else self.max_runtime_seconds
        if not math.isfinite(requested) or not 0 < requested <= MAX_RUNTIME_CEILING:
            raise InvalidArgumentError(
                "max_runtime_seconds", requested, f"use seconds above 0, at most {MAX_RUNTIME_CEILING:.0f}, or omit it"
            )
        if self.max_runtime_seconds is not None and requested > self.max_runtime_seconds:
            raise PolicyRefusedError(
                f"max_runtime_seconds ({plain_number(self.max_runtime_seconds)})",
                f"max_runtime_seconds={plain_number(requested)} asks for more",
                f"ask for {plain_number(self.max_runtime_seconds)} seconds or less",
            )
        return requested

    def task_limit(self, name: str, requested: int | None) -> int | None:
        """A new task's ``max_memory_bytes`` or ``max_processes``: what it asked for, at most the
        policy's, which is also the limit of a task that asks for none."""
        ceiling: int | None = getattr(self, name)
        if requested is None:
            return ceiling
        if isinstance(requested, bool) or not LIMIT_FLOORS[name] <= requested <= LIMIT_CEILINGS[name]:
            floor = f"{LIMIT_FLOORS[name]} (1 MiB)" if name == "max_memory_bytes" else str(LIMIT_FLOORS[name])
            raise InvalidArgumentError(
                name, requested, f"use a whole number from {floor} to {LIMIT_CEILINGS[name]}, or omit it"
            )
        if ceiling is not None and requested > ceiling:
            raise PolicyRefusedError(
                f"{name} ({ceiling})", f"{name}={requested} asks for more", f"ask for {ceiling} or less"
            )
        return requested

    def adopted_limit(self, limit: float | None) -> float | None:
        """The runtime limit of a task this server adopts: its own, but no more than the maximum."""
        ceiling = self.max_runtime_seconds
        if ceiling is not None and (limit is None or limit > ceiling):
            return ceiling
        return limit

    def environment(self, server_environment: Mapping[str, str]) -> dict[str, str]:
        """The part of the server's environment a task inherits."""
        if self.env_passthrough is None:
            return dict(server_environment)
        return {
            name: value
            for name, value in server_environment.items()
            if any(fnmatchcase(name, pattern) for pattern in self.env_passthrough)
        }

    def describe(self) -> list[str]:
        """One line per rule in force, for the server's start-up message and ``policy``."""
        lines = []
        if self.allowed_cwd:
            lines.append(f"allowed_cwd: {', '.join(map(str, self.allowed_cwd))}")
        if self.deny_commands:
            quoted = [f"'{rule.pattern}'" for rule in self.deny_commands]
            lines.append(f"deny_commands: {', '.join(quoted)}")
        for name in ("max_tasks", "default_runtime_seconds", "max_runtime_seconds", *LIMITS):
            value = getattr(self, name)
            if value is not None:
                lines.append(f"{name}: {plain_number(value)}")
        if self.env_passthrough is not None:
            lines.append(f"env_passthrough: {', '.join(self.env_passthrough) or '(nothing)'}")
        if self.allowed_hosts:
            lines.append(f"allowed_hosts: {', '.join(self.allowed_hosts)}")
        return lines


def load_policy(config_path: Path, overrides: Mapping[str, object] | None = None) -> Policy:
    """The policy in ``config_path`` (absent: none), with ``overrides`` (flags) replacing its settings."""
    settings = _read_config(config_path)
    flags = {name: value for name, value in (overrides or {}).items() if value is not None}
    settings.update(flags)
    try:
        policy = Policy(
            allowed_cwd=tuple(_root(text) for text in _strings(settings, "allowed_cwd") or ()),
            allowed_cwd_as_written=tuple(_strings(settings, "allowed_cwd") or ()),
            deny_commands=tuple(_rule(i, text) for i, text in enumerate(_strings(settings, "deny_commands") or ())),
            max_tasks=_count(settings, "max_tasks"),
            default_runtime_seconds=_seconds(settings, "default_runtime_seconds"),
            max_runtime_seconds=_seconds(settings, "max_runtime_seconds"),
            env_passthrough=_names(_strings(settings, "env_passthrough")),
            max_memory_bytes=_limit(settings, "max_memory_bytes"),
            max_processes=_limit(settings, "max_processes"),
            allowed_hosts=tuple(_strings(settings, "allowed_hosts") or ()),
        )
    except _BadSetting as exc:
        where = "its command-line flag" if exc.name in flags else str(config_path)
        raise BackgroundrError(f"policy setting {exc.problem} (from {where})") from None
    default, ceiling = policy.default_runtime_seconds, policy.max_runtime_seconds
    if default is not None and ceiling is not None and default > ceiling:
        raise BackgroundrError(
            f"policy setting default_runtime_seconds={plain_number(default)} is above max_runtime_seconds="
            f"{plain_number(ceiling)}; lower it"
        )
    return policy


class _BadSetting(Exception):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(problem)
        self.name, self.problem = name, problem


def _read_config(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            settings = tomllib.load(file)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BackgroundrError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BackgroundrError(f"{path} is not valid TOML ({exc}); fix or remove it") from exc
    except UnicodeDecodeError as exc:
        raise BackgroundrError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); fix or remove it"
        ) from exc
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise BackgroundrError(f"{path}: unknown setting {', '.join(unknown)}; the settings are {', '.join(SETTINGS)}")
    return settings


def _strings(settings: Mapping[str, object], name: str) -> list[str] | None:
    value = settings.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise _BadSetting(name, f"{name}={shown_value(value)} is invalid: use a list of strings")
    if name == "allowed_cwd" and not value:
        raise _BadSetting(name, "allowed_cwd=[] is ambiguous: list the roots, or remove the setting to allow any cwd")
    return list(value)


def _root(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise _BadSetting("allowed_cwd", f"allowed_cwd entry {text!r} is invalid: use an absolute path (or ~/...)")
    return Path(os.path.realpath(path))


def _rule(index: int, text: str) -> Pattern:
    """A deny rule, compiled by RE2: it is searched in every command a client sends, and a
    backtracking engine let a natural-looking rule (``^(\\S+\\s*)*sudo\b``) stall every client for
    seconds on a 32-character command (a new-user trial)."""
    try:
        return owner_pattern(text)
    except re2.error as exc:
        raise _BadSetting(
            "deny_commands",
            f"deny_commands[{index}]={text!r} is not a valid pattern in {PATTERN_LIMIT_NOTE}: {error_text(exc)}",
        ) from None


def _count(settings: Mapping[str, object], name: str) -> int | None:
    value = settings.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadSetting(name, f"{name}={shown_value(value)} is invalid: use a whole number of at least 1")
    return value


def _limit(settings: Mapping[str, object], name: str) -> int | None:
    """A per-task limit, in the bounds a task may ask for: under the floor no task could start."""
    value = _count(settings, name)
    if value is not None and not LIMIT_FLOORS[name] <= value <= LIMIT_CEILINGS[name]:
        advice = f"use {LIMIT_FLOORS[name]} to {LIMIT_CEILINGS[name]}"
        raise _BadSetting(name, f"{name}={value} is invalid: {advice}")
    return value


def _seconds(settings: Mapping[str, object], name: str) -> float | None:
    value = settings.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_RUNTIME_CEILING:
        advice = f"use seconds above 0, at most {plain_number(MAX_RUNTIME_CEILING)}"
        raise _BadSetting(name, f"{name}={shown_value(value)} is invalid: {advice}")
    return float(value)


def _names(entries: list[str] | None) -> tuple[str, ...] | None:
    """Variable names, each entry possibly a comma-separated list (as flags give them)."""
    if entries is None:
        return None
    return tuple(name.strip() for entry in entries for name in entry.split(",") if name.strip())
