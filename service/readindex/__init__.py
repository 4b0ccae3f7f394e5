"""The in-memory read index: codes, the ID directory, building it, following the ledger."""
