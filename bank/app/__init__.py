"""Use cases: one command, one unit of work."""
