"""Pure ledger rules: standard library only."""
