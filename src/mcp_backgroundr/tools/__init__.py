"""The MCP tools: thin adapters over the core, their schemas, arguments, answers, and the wire guard."""
