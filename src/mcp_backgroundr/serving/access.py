"""Who may use a server over HTTP: its bearer token, and the Host and Origin headers it accepts.

The token comes from ``$MCP_BACKGROUNDR_TOKEN``, else from ``http-token`` in the
state directory, created (mode 0600) at the first start. It is compared in
constant time. Host and Origin are checked on every bind address, so a web page
of another origin (DNS rebinding included) cannot reach the server from a browser.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import stat
from pathlib import Path

import psutil
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings

from ..config import TOKEN_ENV
from ..errors import BackgroundrError

TOKEN_FILE = "http-token"
MIN_TOKEN_LENGTH = 16
TOKEN_BYTES = 32
CLIENT_ID = "bearer-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def server_token(home: Path) -> str:
    """The token clients must send: ``$MCP_BACKGROUNDR_TOKEN``, else the state directory's, made if missing."""
    given = os.environ.get(TOKEN_ENV)
    if given is not None:
        if len(given) < MIN_TOKEN_LENGTH or given != given.strip():
            raise BackgroundrError(
                f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters without surrounding spaces; "
                "unset it to have a strong one generated"
            )
        return given
    path = token_path(home)
    if path.exists():
        return _stored_token(path)
    # Written in full to a private file first, then linked into place: a second process
    # starting at the same moment sees either no token file or a whole one, never half.
    token = secrets.token_urlsafe(TOKEN_BYTES)
    draft = path.with_name(f".{TOKEN_FILE}.{secrets.token_hex(8)}")
    try:
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(token + "\n")
        os.link(draft, path)
    except FileExistsError:
        return _stored_token(path)
    except OSError as exc:
        raise BackgroundrError(f"cannot create {path}: {exc.strerror or exc}") from exc
    finally:
        draft.unlink(missing_ok=True)
    return token


def _stored_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeError) as exc:
        raise BackgroundrError(f"cannot read the token in {path} ({exc}); delete it to have a new one made") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BackgroundrError(f"{path} can be read by others; run: chmod 600 {path}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise BackgroundrError(f"the token in {path} is too short; delete the file to have a new one made")
    return token


class StaticTokenVerifier:
    """Accepts exactly one bearer token (the SDK's ``TokenVerifier`` protocol)."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(errors="surrogateescape"), self._expected):
            return AccessToken(token=token, client_id=CLIENT_ID, scopes=[])
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def url_host(host: str) -> str:
    """``host`` as it appears in a URL or a Host header (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def accepted_hosts(bind_host: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Host names (without port) a request may name for a server bound to ``bind_host``."""
    names = list(LOOPBACK_NAMES)
    if is_wildcard(bind_host):
        names += [socket.gethostname(), socket.getfqdn()]
        for addresses in psutil.net_if_addrs().values():
            names += [a.address.split("%")[0] for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)]
    elif not is_loopback(bind_host):
        names.append(bind_host)
    names += extra
    return list(dict.fromkeys(url_host(name) for name in names))


def header_checks(bind_host: str, extra_hosts: tuple[str, ...] = ()) -> TransportSecuritySettings:
    """Host and Origin values accepted (any port), for the SDK's DNS-rebinding protection."""
    hosts = accepted_hosts(bind_host, extra_hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[pattern for host in hosts for pattern in (host, f"{host}:*")],
        allowed_origins=[
            pattern
            for host in hosts
            for scheme in ("http", "https")
            for pattern in (f"{scheme}://{host}", f"{scheme}://{host}:*")
        ],
    )
