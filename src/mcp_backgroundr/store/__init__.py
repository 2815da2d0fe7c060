"""What outlives a server: the SQLite registry, retention, recovery of what a dead server left."""
