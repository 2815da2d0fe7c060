"""The code sent to remote hosts runs on a bare Python 3: standard library only, nothing missing."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from mcp_backgroundr.remote import bundle

BARE_PYTHON = "/usr/bin/python3"
"""The system's Python: none of this project's dependencies are installed for it."""


def test_every_module_of_the_bundle_imports_on_a_bare_python(tmp_path: Path) -> None:
    digest, data = bundle.bundle()
    archive = tmp_path / f"{digest}.zip"
    archive.write_bytes(data)
    with zipfile.ZipFile(archive) as opened:
        modules = [
            name.removesuffix(".py").replace("/", ".")
            for name in opened.namelist()
            if name.startswith("mcp_backgroundr/")
        ]
    imports = "; ".join(f"import {module.removesuffix('.__init__')}" for module in modules)
    probe = f"import sys; sys.path.insert(0, {str(archive)!r}); {imports}; import mcp, psutil"
    result = subprocess.run([BARE_PYTHON, "-I", "-c", probe], capture_output=True, text=True, timeout=30, check=False)
    assert "No module named 'mcp'" in result.stderr or "No module named 'psutil'" in result.stderr, result.stderr
    assert "mcp_backgroundr" not in result.stderr, result.stderr


def test_the_remote_command_is_one_posix_shell_line() -> None:
    command = bundle.remote_command()
    assert "\n" not in command.split("'", 1)[0]
    result = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
