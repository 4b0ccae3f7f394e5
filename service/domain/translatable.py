"""Marks English text that a page translates later: `N_` returns it as it is, and tells
`pybabel extract` (make translations) to put it in the translators' catalogue."""

from __future__ import annotations


# N_ is gettext's conventional name for this marker, the one extractors look for by default.
def N_(text: str) -> str:
    """The text itself: translated where it is shown, by whoever shows it (gettext)."""
    return text
