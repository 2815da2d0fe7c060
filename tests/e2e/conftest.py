"""Fixtures of the end-to-end tests: each runs once per platform backend, and a real OpenSSH server.

Every end-to-end test runs against both platform backends (``MCP_BACKGROUNDR_PLATFORM=linux``
and ``portable``), so the portable backend's code runs on every change, not only on a Mac. A
test that needs what only the Linux backend offers (cgroups, a subreaper, inotify limits) is
marked ``@pytest.mark.linux_backend("why")`` and runs on the linux backend alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_backgroundr.config import PLATFORM_ENV
from mcp_backgroundr.platform.backend import LINUX, PORTABLE

from .sshd import Sshd, missing, running_sshd


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each end-to-end test on both backends, or on the linux one alone when it is so marked."""
    only_linux = metafunc.definition.get_closest_marker("linux_backend")
    if only_linux is not None:
        assert only_linux.args, f"{metafunc.definition.nodeid}: say why it needs the linux backend"
    metafunc.parametrize("platform_backend", [LINUX] if only_linux else [LINUX, PORTABLE], indirect=True)


@pytest.fixture(autouse=True)
def platform_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The platform backend the servers, the CLI and the tests' own calls use."""
    name: str = request.param
    monkeypatch.setenv(PLATFORM_ENV, name)
    return name


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
