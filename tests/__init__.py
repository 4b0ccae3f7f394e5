"""Test suite: unit (pure logic), integration (real database), api (over HTTP)."""
