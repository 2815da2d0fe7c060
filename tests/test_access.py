"""access: the HTTP token (made once, whole, private) and the Host/Origin values accepted."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_backgroundr.config import TOKEN_ENV
from mcp_backgroundr.errors import BackgroundrError
from mcp_backgroundr.serving.access import TOKEN_FILE, header_checks, server_token

STARTERS = 6


def test_servers_starting_together_all_get_the_one_whole_token(tmp_path: Path) -> None:
    program = (
        "from pathlib import Path; from mcp_backgroundr.serving.access import server_token; "
        f"print(server_token(Path({str(tmp_path)!r})))"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(STARTERS)
    ]
    answers = [starter.communicate(timeout=60) for starter in starters]
    assert all(starter.returncode == 0 for starter in starters), answers
    tokens = {out.strip() for out, _ in answers}
    assert tokens == {(tmp_path / TOKEN_FILE).read_text().strip()}
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [TOKEN_FILE]  # no drafts left


def test_a_token_others_can_read_or_a_short_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / TOKEN_FILE
    token.write_text("x" * 40)
    token.chmod(0o644)
    with pytest.raises(BackgroundrError, match="chmod 600"):
        server_token(tmp_path)
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(BackgroundrError, match="at least 16"):
        server_token(tmp_path)


def test_loopback_binds_accept_loopback_names_on_any_port_only() -> None:
    checks = header_checks("127.0.0.1")
    assert "localhost:*" in checks.allowed_hosts and "[::1]:*" in checks.allowed_hosts
    assert "http://localhost:*" in checks.allowed_origins
    assert not any("0.0.0.0" in host for host in checks.allowed_hosts)
