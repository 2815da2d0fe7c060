"""How the server is reached: MCP over stdio and Streamable HTTP, connections, access control."""
