"""Alembic migration scripts, numbered 0001_..."""
