"""Benchmarks of Consent Ledger's read path, each measured beside its baseline."""
