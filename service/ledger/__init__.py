"""The write side: one transaction per change, with its events beside it."""
