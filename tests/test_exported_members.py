"""What the package exports is a deliberate decision."""

from __future__ import annotations

import mcp_backgroundr


def test_exported_members() -> None:
    assert mcp_backgroundr.__all__ == ["__version__"]
    assert isinstance(mcp_backgroundr.__version__, str)
