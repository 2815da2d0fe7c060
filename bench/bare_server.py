"""Baseline for the startup benchmark: a bare MCPServer with one tool, served on stdio."""

from mcp.server import MCPServer

app = MCPServer("bare")


@app.tool()
def echo(text: str) -> str:
    """Answer with the text given."""
    return text


if __name__ == "__main__":
    app.run()
