"""Api tests."""
