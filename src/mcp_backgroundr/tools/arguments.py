"""Tool arguments as real clients send them, and input schemas simple clients can read.

Models and tools send arguments in habits of their own: ``null`` for a field they mean
to leave out, a number where text is expected (the Inspector CLI reads every
``--tool-arg`` value as JSON, so ``grep=404`` arrives as 404), enum values in another
case or with underscores. :func:`normalized` turns those into what the tool takes,
guided only by the tool's input schema, before validation. Everything else, and every
name a tool does not take, is still refused.

:func:`simple_schema` rewrites pydantic's input schema into the plain form every
client and model API understands: no ``$ref``/``$defs`` (each enum and nested object
inline), no titles, optional fields as their plain type (``null`` is taken as the
default anyway; a null that means something else, as a value of ``env``, stays), and
``additionalProperties: false`` so a client knows before it calls that unknown names
are refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgumentError
from .schemas import inline_definitions

_SEPARATORS = re.compile(r"[\s_\-]+")
IDENTIFIERS = frozenset({"task_id"})
"""Fields holding an id, taken without the spaces a client pasted around it."""


def simple_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a tool's input schema from pydantic) inlined and simplified; see the module docstring."""
    simplified: dict[str, Any] = _simplified(inline_definitions(schema))
    return simplified | {"additionalProperties": False}


def _simplified(node: Any) -> Any:
    if isinstance(node, list):
        return [_simplified(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {
        key: _simplified(value)
        for key, value in node.items()
        if key != "title" and not (key == "default" and value is None)
    }
    options = result.get("anyOf")
    # Only where null is the default does leaving it out mean the same: a null elsewhere (a
    # value of env, which unsets a variable) has a meaning of its own and stays in the schema.
    if isinstance(options, list) and "default" in node and node["default"] is None:
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(options):
            del result["anyOf"]
            result = {**kept[0], **result}
    return result


def normalized(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with client habits turned into what ``schema`` takes (see the module docstring).

    Names the schema does not know are passed through untouched, for the caller to refuse.
    Raises InvalidArgumentError for ``true``/``false`` where a number is expected: no habit
    explains it, and taking it as 1 or 0 would run what nobody asked for.
    """
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    result: dict[str, Any] = {}
    for name, value in arguments.items():
        spec = properties.get(name)
        if spec is None:
            result[name] = value
        elif value is None and name not in required:
            continue  # null: the default
        elif name in IDENTIFIERS and isinstance(value, str):
            result[name] = value.strip()
        else:
            result[name] = _value(spec, value, name)
    return result


def _types(spec: dict[str, Any]) -> set[str]:
    declared = spec.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for option in spec.get("anyOf", ()):
        types |= _types(option)
    return types


def _json_type(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return None


def _value(spec: dict[str, Any], value: Any, name: str) -> Any:
    """One value of field ``name`` as the schema ``spec`` takes it, when a client habit explains the difference."""
    types = _types(spec)
    scalar = _json_type(value)
    enum = spec.get("enum")
    if enum is not None:
        return _enum_value(enum, value, name)
    taken = scalar in types or (scalar == "integer" and "number" in types)
    if scalar is not None and "string" in types and not taken:
        return json.dumps(value)
    if scalar == "boolean" and not taken and types & {"integer", "number"}:
        raise InvalidArgumentError(name, value, "give a number; true and false are not numbers")
    if isinstance(value, list) and isinstance(items := _option(spec, "items"), dict):
        if _holds_text(items):
            return _texts(items, value, lambda index: f"{name}[{index}]")
        return [_value(items, item, f"{name}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict) and isinstance(values := _option(spec, "additionalProperties"), dict):
        if _holds_text(values):
            keys, items = list(value), list(value.values())
            texts = _texts(values, items, lambda index: f"{name}.{keys[index]}")
            return value if texts is items else dict(zip(keys, texts, strict=True))
        return {key: _value(values, item, f"{name}.{key}") for key, item in value.items()}
    return value


def _holds_text(spec: dict[str, Any]) -> bool:
    """Whether ``spec`` (of a list's or an object's items) takes text, and no enumeration of it."""
    return "enum" not in spec and "string" in _types(spec)


_HABITS = frozenset({bool, int, float})
"""What a client sends where text is taken, meaning its JSON text."""


def _texts(spec: dict[str, Any], items: list[Any], where: Callable[[int], str]) -> list[Any]:
    """The ``items`` of a list or an object whose items are text (``spec``): as they are when every
    one is text (or null, where ``spec`` takes it), found in C by the set of their types; numbers
    and true/false made their JSON text; anything else refused, naming the first. None is walked
    in Python on the event loop unless it must be: 500,000 words took 1.1 s, 200,000 numbers 0.35 s;
    and validation listed every item it refused (500,000 arrays: 6.8 s to make one line of 30 MB)."""
    taken = {str, type(None)} if "null" in _types(spec) else {str}
    kinds = set(map(type, items))
    if kinds <= taken:
        return items
    if not kinds <= taken | _HABITS:
        index = next(index for index, item in enumerate(items) if type(item) not in taken | _HABITS)
        raise InvalidArgumentError(
            where(index), items[index], "give text" + (" or null" if type(None) in taken else "")
        )
    return [item if type(item) in taken else _json_text(item) for item in items]


def _json_text(value: bool | float) -> str:
    """What ``json.dumps`` makes of a number or true/false, made quicker than it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if math.isfinite(value) else json.dumps(value)


def _option(spec: dict[str, Any], key: str) -> Any:
    """``spec[key]``, or the first of its ``anyOf`` options that has ``key``."""
    return next((option[key] for option in [spec, *spec.get("anyOf", ())] if key in option), None)


def _canonical(text: str) -> str:
    return _SEPARATORS.sub("", text).lower()


_BOOLEAN_MEMBERS: dict[bool, tuple[str, ...]] = {False: ("no",), True: ("on-failure",)}
"""What ``false`` and ``true`` name in an enumeration that has these members."""


SPELLING_SLACK = 2
"""How many times a member's length a spelling of it may be (separators, spaces) and still be read."""


def _enum_value(enum: list[Any], value: Any, name: str) -> Any:
    """The enum member ``value`` names, forgiving case and separators; ``false`` names ``no``,
    ``true`` the policy a client most likely means by it (``restart: true``: ``on-failure``).
    A text far longer than every member names none: it is refused before it is read (its
    separators were taken out with a regular expression on the event loop: 0.4 s for 20 MB)."""
    if isinstance(value, bool):
        meant = _BOOLEAN_MEMBERS[value]
        return next((member for member in meant if member in enum), value)
    if not isinstance(value, str):
        return value
    members = [member for member in enum if isinstance(member, str)]
    if len(value) > SPELLING_SLACK * max(map(len, members), default=0):
        raise InvalidArgumentError(name, value, f"use one of {', '.join(members)}")
    wanted = _canonical(value)
    return next((member for member in members if _canonical(member) == wanted), value)


NOT_NEEDED = {
    "background": "every task runs in the background",
    "detach": "every task runs in the background",
    "detached": "every task runs in the background",
    "async": "every task runs in the background",
    "daemon": "every task runs in the background",
    "shell": "the command always runs under /bin/sh -c",
    "use_shell": "the command always runs under /bin/sh -c",
}
"""Names models send for what always happens anyway: leave them out."""

_MEANT: dict[tuple[str, ...], tuple[str, ...]] = {
    ("id", "task", "taskid", "job", "job_id", "jobid", "process_id", "pid", "handle"): ("task_id",),
    ("cmd", "args", "argv", "command_line", "commandline", "script", "shell_command", "exec", "run"): ("command",),
    ("dir", "directory", "workdir", "working_dir", "working_directory", "workingdirectory", "path", "folder"): ("cwd",),
    ("environment", "env_vars", "envvars", "environment_variables", "envs", "variables"): ("env",),
    ("description", "label", "title", "task_name", "alias"): ("name",),
    ("timeout", "timeout_ms", "timeout_sec", "timeout_secs", "wait", "wait_seconds", "max_wait", "seconds"): (
        "timeout_seconds",
        "wait_timeout_seconds",
        "grace_seconds",
    ),
    ("pattern", "regex", "regexp", "match", "wait_for", "until", "expect", "ready_pattern", "wait_pattern"): (
        "output_pattern",
        "wait_for_pattern",
        "grep",
    ),
    ("port", "ready_port", "tcp_port", "wait_port"): ("port", "wait_for_port"),
    ("input", "data", "stdin_text", "message", "content", "keys", "line", "value", "chars"): ("text",),
    ("tail", "n", "num_lines", "last", "last_lines", "max_lines", "line_count", "count", "head"): ("lines", "limit"),
    ("cursor", "offset", "from", "after", "position", "start", "since_cursor"): ("since",),
    ("force", "signal", "kill", "grace", "sig", "wait_before_kill"): ("grace_seconds",),
    ("filter", "search", "find", "query", "contains"): ("grep", "state"),
    ("status", "states", "filter_state"): ("state",),
    ("include_all", "show_all", "everyone", "all_servers", "global"): ("all",),
    ("max", "max_results", "top", "page_size", "size"): ("limit", "lines"),
    ("keep_alive", "keepalive", "persist", "persistent", "survive", "nohup"): ("keep_running",),
    ("restart_policy", "auto_restart", "autorestart", "restart_on_failure"): ("restart",),
    ("retries", "max_retries", "restart_limit"): ("max_restarts",),
    ("max_runtime", "runtime", "time_limit", "timelimit", "deadline", "ttl", "kill_after"): ("max_runtime_seconds",),
    ("log_limit", "max_log_size", "max_output", "log_size"): ("max_log_bytes",),
    ("eof", "close_stdin", "end_input", "end"): ("close",),
    ("enter", "append_newline", "add_newline", "press_enter"): ("newline",),
    ("ansi", "color", "colors", "keep_ansi", "strip_ansi", "no_color"): ("raw",),
    ("tty", "terminal", "interactive"): ("pty", "stdin"),
    ("wait_timeout", "ready_timeout", "startup_timeout"): ("wait_timeout_seconds",),
}
LIKELY_MEANT = {name: meant for names, meant in _MEANT.items() for name in names}
"""Names models try, each mapped to the parameters it may have meant (the tool's own are hinted)."""


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).replace("-", "_").lower()


def hint(unknown: str, known: frozenset[str]) -> str | None:
    """What a tool taking ``known`` parameters probably meant by ``unknown``, if anything."""
    snake = _snake(unknown)
    if snake in known:
        return snake
    if snake in NOT_NEEDED:
        return f"nothing: {NOT_NEEDED[snake]}, leave {unknown} out"
    meant = [name for name in LIKELY_MEANT.get(snake, ()) if name in known]
    return " or ".join(meant) or None
