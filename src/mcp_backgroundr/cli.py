"""Command line entry point: ``mcp-backgroundr`` with no command serves MCP on stdio; ``ps``,
``logs``, ``status``, ``stop`` and ``prune`` are for the person at the keyboard."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

import anyio

from . import __version__, commands
from .config import HOME_ENV, Settings
from .errors import BackgroundrError
from .registry import Registry
from .server import build_server
from .supervisor import Supervisor


def terminal_hint() -> str:
    executable = shutil.which(sys.argv[0]) or os.path.abspath(sys.argv[0])
    return (
        "mcp-backgroundr is an MCP server speaking JSON-RPC on stdin/stdout and is waiting for a client. "
        f"Add it to one instead, e.g.: claude mcp add backgroundr -- {executable}  (Ctrl-C to quit)"
    )


class _OneLineErrors(argparse.ArgumentParser):
    """Bad options get one clear line (and exit status 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


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
    commands.add_parser("serve", help="serve MCP on stdin/stdout (the default)", description="Serve MCP on stdio.")
    ps = commands.add_parser("ps", help="list running tasks", description="List tasks, newest first.")
    ps.add_argument("--all", "-a", action="store_true", help="finished tasks too")
    logs = commands.add_parser("logs", help="print a task's output", description="Print a task's output.")
    logs.add_argument("task_id")
    logs.add_argument("-n", "--lines", type=_non_negative_int, default=50, help="last N lines (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    status = commands.add_parser("status", help="show one task", description="Show a task's record.")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="as JSON")
    stop = commands.add_parser("stop", help="end a task and its processes", description="End a task's process tree.")
    stop.add_argument("task_id")
    stop.add_argument("--grace", type=_non_negative_float, default=5.0, help="seconds before SIGKILL (default 5)")
    prune = commands.add_parser(
        "prune", help="forget finished tasks and delete their logs", description="Prune finished tasks."
    )
    prune.add_argument("--keep", type=_non_negative_int, default=None, help="finished tasks to keep (newest)")
    prune.add_argument("--days", type=_non_negative_float, default=None, help="forget finished tasks older than this")
    return root


def _run_command(arguments: argparse.Namespace, settings: Settings) -> None:
    match arguments.command:
        case "ps":
            print(commands.ps(settings, arguments.all))
        case "logs":
            commands.logs_command(settings, arguments.task_id, arguments.lines, arguments.follow)
        case "status":
            print(commands.status(settings, arguments.task_id, arguments.json))
        case "stop":
            print(commands.stop(settings, arguments.task_id, arguments.grace))
        case "prune":
            keep = settings.keep_finished if arguments.keep is None else arguments.keep
            days = settings.keep_days if arguments.days is None else arguments.days
            print(commands.prune(settings, keep, days))


def prepare_home(settings: Settings) -> None:
    """Create the state directory, private to its owner."""
    try:
        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(settings.home, 0o700)
        settings.logs_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BackgroundrError(
            f"cannot use {settings.home} as the state directory ({exc.strerror or exc}); "
            f"set {HOME_ENV} to a directory you can write"
        ) from exc


async def _shut_down(supervisor: Supervisor, reason: str) -> None:
    started = time.monotonic()
    ended = await supervisor.shutdown()
    print(f"mcp-backgroundr: {reason}; ended {ended} task(s) in {time.monotonic() - started:.2f}s", file=sys.stderr)


async def _end_tasks_on_signal(supervisor: Supervisor) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            await _shut_down(supervisor, f"{signal.Signals(signum).name} received")
            # The SDK reads stdin in a worker thread that cannot be interrupted; once every
            # task is ended and recorded there is nothing left to wait for.
            sys.stderr.flush()
            os._exit(0)


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin or a signal arrives."""
    prepare_home(settings)
    registry = Registry(settings.registry_path)
    try:
        async with Supervisor(settings, registry) as supervisor:
            app = build_server(supervisor)
            async with anyio.create_task_group() as group:
                group.start_soon(_end_tasks_on_signal, supervisor)
                await app.run_stdio_async()
                group.cancel_scope.cancel()
            await _shut_down(supervisor, "client closed stdin")
    finally:
        registry.close()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    settings = Settings()
    try:
        if arguments.command in (None, "serve"):
            if sys.stdin.isatty():
                print(terminal_hint(), file=sys.stderr)
            anyio.run(serve_stdio, settings)
        else:
            _run_command(arguments, settings)
    except BackgroundrError as exc:
        print(f"mcp-backgroundr: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mcp-backgroundr logs ID | head`
        sys.stderr.close()
        return 0
    return 0
