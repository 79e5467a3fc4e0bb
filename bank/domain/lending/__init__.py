"""The lending book's pure domain: products and terms, day counts, schedules, and the
replay-based loan engine. Standard library only; no database, no transport."""
