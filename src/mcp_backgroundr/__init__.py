"""mcp-backgroundr: an MCP server that runs shell commands in the background."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mcp-backgroundr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
