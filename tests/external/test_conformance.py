"""The official MCP conformance suite against ``serve --http``, at both protocol revisions.

The suite cannot send a bearer token, so it runs against ``--no-auth`` on loopback;
tests/e2e/test_http.py covers the token. Checks that need the suite's own fixture
tools, prompts and resources, or capabilities this server does not offer, are listed
with their reason in conformance-<revision>.yaml; every other check must pass, and a
listed check that starts passing fails the run too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import anyio
import pytest

from ..e2e.harness import call, connect_http, http_server
from .npm_tools import NpmTools

pytestmark = [pytest.mark.npm, pytest.mark.timeout(900)]

HERE = Path(__file__).parent
DOCS = HERE.parents[1] / "docs" / "conformance.md"
SUITE_SECONDS = 600


@pytest.mark.anyio
@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
async def test_the_conformance_suite_passes_all_that_applies(
    npm_tools: NpmTools, server_command: str, tmp_path: Path, revision: str
) -> None:
    with http_server(server_command, tmp_path, "--no-auth") as server:
        # One running task, so that resources/list has a log and resources/read is exercised.
        async with connect_http(server.url, None) as client:
            await call(client, "run_background_task", command="echo ready; sleep 600")
        with anyio.fail_after(SUITE_SECONDS):
            result = await anyio.run_process(
                [
                    *npm_tools.conformance,
                    "server",
                    "--url",
                    server.url,
                    "--requirements",
                    revision,
                    "--expected-failures",
                    str(HERE / f"conformance-{revision}.yaml"),
                    "--output-dir",
                    str(tmp_path / "results"),
                ],
                check=False,
            )
    output = result.stdout.decode()
    assert result.returncode == 0, output[output.find("=== SUMMARY ===") :] + result.stderr.decode()[-2000:]
    assert "Baseline check passed" in output


def test_docs_give_a_verdict_for_every_scenario_of_the_suite(npm_tools: NpmTools) -> None:
    listed = subprocess.run(
        [*npm_tools.conformance, "list", "--server"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    scenarios = re.findall(r"^\s+- (\S+)", listed, re.MULTILINE)
    assert len(scenarios) > 30
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOCS.read_text(), re.MULTILINE))
    assert sorted(set(scenarios) - documented) == []
