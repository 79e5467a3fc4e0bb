"""Adapters: SQL storage, clock, ids."""
