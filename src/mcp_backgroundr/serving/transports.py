"""Serving MCP: on stdio for one client, or over Streamable HTTP for many.

Tasks belong to the server process, never to a connection: an HTTP client that
goes away leaves its tasks running, and every authenticated client sees and
controls all of them. Either way, SIGTERM, SIGINT or SIGHUP end every task that
was not started with keep_running before the process exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import uvicorn
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import exits
from ..config import HOME_ENV, TOKEN_ENV, Settings
from ..core.policy import Policy
from ..core.supervisor import Supervisor
from ..errors import BackgroundrError, warn
from ..remote import RemotePlace
from ..store.registry import Registry
from ..tools import sdk
from ..tools.pipes import Leaving
from ..tools.server import BackgroundrMCPServer, ChangeNotices, build_server
from . import access, bodies, connections

MCP_PATH = "/mcp"
GRACEFUL_HTTP_SECONDS = 1
"""How long open HTTP streams may take to finish once the server is told to stop."""


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
    warn(f"{reason}; ended {ended} task(s) in {time.monotonic() - started:.2f}s")


async def _end_tasks_on_signal(supervisor: Supervisor) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if supervisor.shutting_down:
                # Ending and recording every task is under way (the client closed stdin, and
                # the SDK's client sends SIGTERM 2 s later): let it finish; the server then exits.
                continue
            await _shut_down(supervisor, f"{exits.signal_name(signum)} received")
            # The stdio transport reads stdin in a worker thread that cannot be interrupted,
            # and HTTP clients may hold streams open; once every task is ended and recorded
            # there is nothing left to wait for.
            sys.stderr.flush()
            os._exit(0)


@contextlib.contextmanager
def _registry(settings: Settings) -> Iterator[Registry]:
    prepare_home(settings)
    registry = Registry(settings.registry_path, reserve=True)
    try:
        yield registry
    finally:
        registry.close()


def _supervisor(settings: Settings, registry: Registry, policy: Policy, notices: ChangeNotices) -> Supervisor:
    """The core of a server: tasks run here, or on the hosts the policy allows (over SSH)."""
    return Supervisor(settings, registry, away=RemotePlace, policy=policy, on_change=notices.publish)


YOUNG_COLLECTION_THRESHOLD = 2_000
"""New objects (net) between two young garbage collections; Python's default is 700."""
FULL_COLLECTION_THRESHOLD = 50
"""Middle collections (every tenth young one) between two looks at whether a full one is due (Python's
default is 10): a full collection is considered every million new objects instead of every 70,000."""


def tune_garbage_collection() -> None:
    """Collect garbage as a long-lived server needs.

    Leave the objects made while starting (the SDK's and pydantic's modules, schemas and validators:
    about 90,000) out of every later cyclic garbage collection. They live as long as the server, and a
    full collection walked them all on the event loop: 40 to 70 ms during which no client was answered,
    about once per few hundred calls (docs/benchmarks.md 13); frozen, a collection walks only what
    was made since.

    And collect less often: each pending request keeps about 200 objects alive, and while a client's
    requests piled up, the young collections walked them again and again and the full ones (each
    considered every 70,000 new objects) walked all of them: 1,000 pending waits cost 0.8 ms of CPU
    each and held a list_tasks behind them 1.1 s; with these thresholds, 0.55 ms and 0.65 s
    (docs/benchmarks.md 22). What a young collection frees waits for it at most 2,000 objects longer
    (a larger young threshold, 10,000, left 3 MiB more RSS after tests/reliability/test_soak.py's
    2,000 tasks for about the same gain).
    """
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, FULL_COLLECTION_THRESHOLD)


async def serve_stdio(settings: Settings, policy: Policy) -> Leaving:
    """Serve MCP on stdin/stdout until the client leaves (it closes stdin or the server's stdout),
    answers cannot be written, or a signal arrives; every task is then ended. Returns how it ended."""
    with _registry(settings) as registry:
        notices = ChangeNotices()
        async with _supervisor(settings, registry, policy, notices) as supervisor:
            app = build_server(supervisor, notices)
            tune_garbage_collection()
            async with anyio.create_task_group() as group:
                group.start_soon(_end_tasks_on_signal, supervisor)
                # An end under way then has the shutdown's grace and kill wait left: it is answered.
                drain = settings.shutdown_grace_seconds + settings.shutdown_kill_wait_seconds
                await app.run_stdio_async(when_input_ends=supervisor.client_left, drain_seconds=drain)
                await _shut_down(supervisor, app.stdio_leaving.reason)  # signals still handled meanwhile
                group.cancel_scope.cancel()
    return app.stdio_leaving


@dataclass(frozen=True)
class HttpOptions:
    """How ``serve --http`` listens and whom it lets in."""

    host: str = "127.0.0.1"
    port: int = 8765
    auth: bool = True
    allow_remote: bool = False
    extra_hosts: tuple[str, ...] = ()
    """More Host names clients may use (e.g. a DNS name of this machine)."""

    def check(self) -> list[str]:
        """Refuse exposures nobody should get by accident; answer warnings for the ones allowed."""
        if access.is_loopback(self.host):
            return [] if self.auth else ["--no-auth: any program on this machine can run commands as you"]
        if not self.allow_remote:
            raise BackgroundrError(
                f"{self.host} is not a loopback address: anyone who reaches it could run commands as you; "
                "add --allow-remote if that is what you want (a token is then required)"
            )
        if not self.auth:
            raise BackgroundrError("--no-auth is refused off loopback; drop it (clients then need the token)")
        return [f"serving beyond this machine on {self.host}: use TLS in front of it (e.g. a reverse proxy)"]


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (IPv6 hosts in brackets) as (host, port); the host defaults to 127.0.0.1."""
    host, _, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not [HOST:]PORT with a port from 0 to 65535")
    return host, int(port_text)


class _HeadersFirst:
    """Check Host and Origin before anything else, so a foreign page gets 403 whatever it sends."""

    def __init__(self, app: ASGIApp, checks: TransportSecuritySettings) -> None:
        self._app = app
        self._checks = TransportSecurityMiddleware(checks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._checks.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)


class _UvicornWithoutSignals(uvicorn.Server):
    """Signals are ours: they end the tasks first (uvicorn would re-raise them and skip that)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # A wildcard IPv6 bind takes IPv4 clients too, as 0.0.0.0 does for IPv4.
        return socket.create_server((host, port), family=family, dualstack_ipv6=host == "::")
    except OSError as exc:
        raise BackgroundrError(
            f"cannot listen on {access.url_host(host)}:{port} ({exc.strerror or exc}); "
            "choose another port, or stop what uses it"
        ) from exc


def _banner(url: str, options: HttpOptions, settings: Settings, policy: Policy) -> str:
    server: dict[str, object] = {"type": "http", "url": url}
    lines = [f"mcp-backgroundr: serving MCP over Streamable HTTP at {url}"]
    if options.auth:
        server["headers"] = {"Authorization": f"Bearer ${{{TOKEN_ENV}}}"}
        where = f"${TOKEN_ENV}" if TOKEN_ENV in os.environ else str(access.token_path(settings.home))
        lines.append(
            f"Clients must send the header 'Authorization: Bearer <token>'; the token is in {where} "
            "and `mcp-backgroundr token` prints it."
        )
    lines.append("Client configuration (e.g. .mcp.json):")
    lines.append(json.dumps({"mcpServers": {"backgroundr": server}}, indent=2))
    header = ' --header "Authorization: Bearer $(mcp-backgroundr token)"' if options.auth else ""
    lines.append(f"Claude Code: claude mcp add --transport http backgroundr {url}{header}")
    lines += [f"policy {rule}" for rule in policy.describe()]
    return "\n".join(lines)


def http_app(app: BackgroundrMCPServer, options: HttpOptions) -> ASGIApp:
    checks = access.header_checks(options.host, options.extra_hosts)
    # Host and Origin are checked once, in front of everything; the SDK's transport keeps
    # only its own Content-Type check.
    already_checked = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    inner = app.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=already_checked)
    sdk.check_http_bodies(app, bodies.CheckedBodies)
    return _HeadersFirst(inner, checks)


async def serve_http(settings: Settings, policy: Policy, options: HttpOptions) -> None:
    """Serve MCP over Streamable HTTP at ``/mcp`` until a signal arrives."""
    warnings = options.check()
    listener = _listen(options.host, options.port)
    port = listener.getsockname()[1]
    # A wildcard address is no address a client can name: show this machine's name instead.
    shown_host = socket.gethostname() if access.is_wildcard(options.host) else options.host
    url = f"http://{access.url_host(shown_host)}:{port}{MCP_PATH}"
    with _registry(settings) as registry:
        token = access.server_token(settings.home) if options.auth else None
        notices = ChangeNotices()
        async with _supervisor(settings, registry, policy, notices) as supervisor:
            if token is None:
                app = build_server(supervisor, notices)
            else:
                auth = AuthSettings(issuer_url=AnyHttpUrl(url.removesuffix(MCP_PATH)), resource_server_url=None)
                app = build_server(supervisor, notices, auth, access.StaticTokenVerifier(token))
            config = uvicorn.Config(
                http_app(app, options),
                http=connections.BoundedH11Protocol,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=GRACEFUL_HTTP_SECONDS,
                timeout_keep_alive=int(connections.IDLE_SECONDS),
            )
            tune_garbage_collection()
            for warning in warnings:
                warn(f"warning: {warning}")
            print(_banner(url, options, settings, policy), file=sys.stderr, flush=True)
            async with anyio.create_task_group() as group:
                group.start_soon(_end_tasks_on_signal, supervisor)
                await _UvicornWithoutSignals(config).serve(sockets=[listener])
                await _shut_down(supervisor, "HTTP server stopped")  # signals still handled meanwhile
                group.cancel_scope.cancel()
