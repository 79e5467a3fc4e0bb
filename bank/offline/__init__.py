"""What a regulator runs offline: signed notes, checkpoints and the export-bundle verifier.

This package depends only on the standard library, `cryptography`, and the stdlib-only
`bank.domain.merkle` / `bank.domain.audit` (an import-linter contract keeps it so), so it can be
run without the server or the database.
"""
