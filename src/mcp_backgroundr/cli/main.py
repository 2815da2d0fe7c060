"""Command line entry point: ``mcp-backgroundr`` with no command serves MCP on stdio, ``serve
--http`` over Streamable HTTP; ``ps``, ``logs``, ``status``, ``send``, ``stop``, ``prune``, ``token`` and
``policy`` are for the person at the keyboard."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import anyio

from .. import __version__
from ..config import HOME_ENV, MAX_GRACE_SECONDS, MAX_KEEP_DAYS, MAX_KEEP_FINISHED, MAX_LINES, Settings
from ..core import policy
from ..errors import BackgroundrError, plain_number, printable, warn
from ..platform import backend
from . import commands


def terminal_hint() -> str:
    # Absolute: a client starts the server from a directory of its own.
    executable = os.path.abspath(shutil.which(sys.argv[0]) or sys.argv[0])
    return (
        "mcp-backgroundr is an MCP server speaking JSON-RPC on stdin/stdout and is waiting for a client. "
        f"Add it to one instead, e.g.: claude mcp add backgroundr -- {executable}  (Ctrl-C to quit)"
    )


class _OneLineErrors(argparse.ArgumentParser):
    """Bad options get one clear line (and exit status 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {printable(message)}; see {self.prog} --help\n")


def _whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A parser of a whole number from ``minimum`` (to ``maximum``): one past them is a bad option
    (exit status 2), not a value refused once the command has begun (status 1)."""
    bounds = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {bounds}")
        return value

    return parse


def _amount(unit: str, above_zero: bool, maximum: float) -> Callable[[str], float]:
    """A parser of a number of ``unit`` (seconds, days), above or at least 0, at most ``maximum``."""
    bounds = f"above 0 and at most {plain_number(maximum)}" if above_zero else f"from 0 to {plain_number(maximum)}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value <= maximum or (above_zero and value == 0):  # NaN too
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit} {bounds}")
        return value

    return parse


def _limit(name: str) -> Callable[[str], int]:
    """A parser of a task limit the policy sets (``max_memory_bytes``, ``max_processes``), in its bounds."""
    return _whole_number(policy.LIMIT_FLOORS[name], policy.LIMIT_CEILINGS[name])


_lines = _whole_number(0, MAX_LINES)
_grace = _amount("seconds", above_zero=False, maximum=MAX_GRACE_SECONDS)
_runtime = _amount("seconds", above_zero=True, maximum=policy.MAX_RUNTIME_CEILING)
_keep, _days = _whole_number(0, MAX_KEEP_FINISHED), _amount("days", above_zero=False, maximum=MAX_KEEP_DAYS)


def _address(text: str) -> tuple[str, int]:
    from ..serving import transports  # see _serve

    try:
        return transports.parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_name(text: str) -> str:
    if not text or "/" in text or (":" in text and not text.startswith("[") and text.count(":") == 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name (give it without a port: any port is accepted)")
    return text.removeprefix("[").removesuffix("]")


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    http = serve.add_argument_group("HTTP (instead of stdio)")
    http.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        type=_address,
        help="serve MCP over Streamable HTTP at http://HOST:PORT/mcp (host 127.0.0.1 unless given; port 0: any free)",
    )
    http.add_argument("--allow-remote", action="store_true", help="allow a HOST that is not loopback (token required)")
    http.add_argument("--no-auth", action="store_true", help="no bearer token (refused off loopback)")
    http.add_argument(
        "--allowed-host",
        action="append",
        type=_host_name,
        default=[],
        metavar="NAME",
        help="another Host name clients may use for this server (repeatable)",
    )
    rules = serve.add_argument_group(f"policy (each flag replaces that setting of {policy.CONFIG_FILE})")
    rules.add_argument(
        "--allowed-cwd", action="append", metavar="DIR", help="root a task's cwd must lie under (repeatable)"
    )
    rules.add_argument(
        "--deny-command",
        action="append",
        dest="deny_commands",
        metavar="REGEX",
        help="refuse commands that match this RE2 pattern (repeatable)",
    )
    rules.add_argument("--max-tasks", type=_whole_number(1), metavar="N", help="most tasks running at once")
    rules.add_argument("--default-runtime-seconds", type=_runtime, metavar="S", help="limit when none asked")
    rules.add_argument("--max-runtime-seconds", type=_runtime, metavar="S", help="most a task may ask for")
    rules.add_argument(
        "--env-passthrough", action="append", metavar="NAMES", help="comma-separated variables tasks inherit (LC_*)"
    )
    rules.add_argument(
        "--max-memory-bytes", type=_limit("max_memory_bytes"), metavar="N", help="memory each task may use (cgroup)"
    )
    rules.add_argument(
        "--max-processes", type=_limit("max_processes"), metavar="N", help="processes each task may have (cgroup)"
    )
    rules.add_argument(
        "--allowed-ssh-host",
        action="append",
        dest="allowed_hosts",
        metavar="HOST",
        help="SSH host (alias or user@name[:port]; * patterns) tasks may run on (repeatable; setting allowed_hosts)",
    )


def parser() -> argparse.ArgumentParser:
    """The command line: no command (or ``serve``) serves MCP; the others are for people."""
    root = _OneLineErrors(
        prog="mcp-backgroundr",
        description="MCP server that runs shell commands in the background. "
        "With no command it serves MCP on stdin/stdout for an MCP client.",
        epilog=f"State (registry and logs) lives in ${HOME_ENV}, else the user state directory.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineErrors)
    serve = commands.add_parser(
        "serve",
        help="serve MCP on stdin/stdout (the default), or over HTTP",
        description="Serve MCP on stdio, or with --http over Streamable HTTP for many clients.",
    )
    _add_serve_options(serve)
    commands.add_parser("token", help="print the HTTP bearer token", description="Print the HTTP bearer token.")
    commands.add_parser("policy", help="show the policy in force", description="Show the policy a server applies.")
    ps = commands.add_parser("ps", help="list running tasks", description="List tasks, newest first.")
    ps.add_argument("--all", "-a", action="store_true", help="finished tasks too")
    logs = commands.add_parser("logs", help="print a task's output", description="Print a task's output.")
    logs.add_argument("task_id")
    logs.add_argument("-n", "--lines", type=_lines, default=50, help="last N lines (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    status = commands.add_parser("status", help="show one task", description="Show a task's record.")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="as JSON")
    send = commands.add_parser(
        "send",
        help="write a line to a task's input",
        description="Write TEXT and a newline to the input of a keep_running task started with stdin=true.",
    )
    send.add_argument("task_id")
    send.add_argument("text")
    send.add_argument("--no-newline", action="store_true", help="write TEXT without a newline")
    send.add_argument("--close", action="store_true", help="close its input afterwards (end of input)")
    stop = commands.add_parser("stop", help="end a task and its processes", description="End a task's process tree.")
    stop.add_argument("task_id")
    stop.add_argument("--grace", type=_grace, default=5.0, help="seconds before SIGKILL (default 5)")
    prune = commands.add_parser(
        "prune", help="forget finished tasks and delete their logs", description="Prune finished tasks."
    )
    prune.add_argument("--keep", type=_keep, default=None, help="finished tasks to keep (newest)")
    prune.add_argument("--days", type=_days, default=None, help="forget finished tasks older than this")
    return root


def _run_command(arguments: argparse.Namespace, settings: Settings) -> None:
    match arguments.command:
        case "ps":
            print(commands.ps(settings, arguments.all))
        case "logs":
            commands.logs_command(settings, arguments.task_id, arguments.lines, arguments.follow)
        case "status":
            print(commands.status(settings, arguments.task_id, arguments.json))
        case "send":
            print(commands.send(settings, arguments.task_id, arguments.text, not arguments.no_newline, arguments.close))
        case "stop":
            print(commands.stop(settings, arguments.task_id, arguments.grace))
        case "token":
            from ..serving import access, transports  # see _serve

            transports.prepare_home(settings)
            print(access.server_token(settings.home))
        case "policy":
            rules = policy.load_policy(settings.home / policy.CONFIG_FILE).describe()
            print("\n".join(rules) if rules else "no policy: tasks may run anything, anywhere, for any time")
        case "prune":
            keep = settings.keep_finished if arguments.keep is None else arguments.keep
            days = settings.keep_days if arguments.days is None else arguments.days
            print(commands.prune(settings, keep, days))


def _serve(arguments: argparse.Namespace, settings: Settings) -> int:
    """Serve until the client leaves or a signal arrives; the exit status."""
    # Tasks run as the same user: without this they could read the server's environment
    # (its token, the variables env_passthrough keeps from them) and memory under /proc.
    backend.current().protect_server()
    # Imported only to serve: it brings the MCP SDK, which would make ps, logs and the other
    # commands for people take five times the CPU just to start (about 1 s instead of 0.2 s).
    from ..serving import transports

    transports.prepare_home(settings)
    flags = {name: getattr(arguments, name, None) for name in policy.SETTINGS}
    rules = policy.load_policy(settings.home / policy.CONFIG_FILE, flags)
    address = getattr(arguments, "http", None)
    if address is None:
        if sys.stdin.isatty():
            print(terminal_hint(), file=sys.stderr)
        leaving = anyio.run(transports.serve_stdio, settings, rules)
        if leaving.stranded:
            # A worker thread still blocks reading stdin, and the interpreter would wait for it
            # at exit; every task is ended and recorded, so nothing is left to wait for.
            sys.stderr.flush()
            os._exit(leaving.status)
        return leaving.status
    host, port = address
    options = transports.HttpOptions(
        host=host,
        port=port,
        auth=not arguments.no_auth,
        allow_remote=arguments.allow_remote,
        extra_hosts=tuple(arguments.allowed_host),
    )
    anyio.run(transports.serve_http, settings, rules, options)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        settings = Settings()
        if arguments.command in (None, "serve"):
            return _serve(arguments, settings)
        else:
            _run_command(arguments, settings)
    except BackgroundrError as exc:
        warn(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mcp-backgroundr logs ID | head`
        sys.stderr.close()
        return 0
    return 0
