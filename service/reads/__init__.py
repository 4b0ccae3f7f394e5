"""The read side: decisions, as_of, history, feeds and snapshots."""
