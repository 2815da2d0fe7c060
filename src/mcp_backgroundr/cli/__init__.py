"""The human command line: ``mcp-backgroundr`` (serve, ps, logs, stop, send, ...) and its entry point."""
