"""Fixtures of the end-to-end tests that need a real OpenSSH server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .sshd import Sshd, missing, running_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on a loopback port, for the whole session."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def ssh_env(sshd: Sshd, home: Path, tmp_path: Path) -> dict[str, str]:
    """Server environment whose ssh config names the test sshd as "loopback" (and "stranger",
    whose host key is not known, and "nopython", whose PATH has no python3)."""
    config = tmp_path / "ssh_config"
    config.write_text(
        sshd.client_config(home, "loopback")
        + sshd.client_config(home, "stranger", known=False)
        + sshd.client_config(home, "nopython", python=False)
    )
    return {"MCP_BACKGROUNDR_SSH_CONFIG": str(config)}
