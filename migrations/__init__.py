"""Alembic migrations; run them with `bank db upgrade`."""
