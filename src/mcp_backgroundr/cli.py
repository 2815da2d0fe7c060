"""Command line entry point: ``mcp-backgroundr`` with no arguments serves MCP on stdio."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence

import anyio

from . import __version__
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-backgroundr",
        description="MCP server that runs shell commands in the background. "
        "With no arguments it serves MCP on stdin/stdout for an MCP client.",
        epilog=f"State (registry and logs) lives in ${HOME_ENV}, else the user state directory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


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
    _parser().parse_args(argv)
    if sys.stdin.isatty():
        print(terminal_hint(), file=sys.stderr)
    try:
        anyio.run(serve_stdio, Settings())
    except BackgroundrError as exc:
        print(f"mcp-backgroundr: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
