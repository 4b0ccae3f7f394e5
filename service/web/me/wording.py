"""The user's history in plain words: one sentence per event, who did what to which purpose."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Sentence templates by what happened; `{purpose}` is the purpose's title, `{state}` On or Off.
HISTORY: Mapping[str, str] = {
    "self": "You turned {purpose} {state}.",
    "gpc": "Your browser's Global Privacy Control signal turned {purpose} {state}.",
    "app": "The app recorded your choice: {purpose} {state}.",
    "registered": "Your account was registered: {purpose} {state}.",
    "override_placed": "Our support team set {purpose} {state}.",
    "override_lifted": "Our support team's setting for {purpose} was lifted: now {state}.",
    "override_expired": "Our support team's setting for {purpose} ended: now {state}.",
    "restriction": "An order about {purpose} changed it to {state}.",
    "erased": "Your account was deleted: {purpose} {state}.",
    "other": "{purpose} is now {state}.",
}
STATES: Mapping[str | None, str] = {"granted": "On", "denied": "Off", None: "Off"}
KINDS: Mapping[str, str] = {
    "subject_registered": "registered",
    "override_placed": "override_placed",
    "override_lifted": "override_lifted",
    "override_expired": "override_expired",
    "restriction_placed": "restriction",
    "restriction_lifted": "restriction",
    "subject_erased": "erased",
}


def history_key(event: Mapping[str, Any]) -> str:
    """Which sentence tells this event."""
    if event["kind"] == "choice_set":
        source = (event.get("data") or {}).get("source")
        if source == "gpc":
            return "gpc"
        return "self" if str(event.get("actor", "")).startswith("user:") else "app"
    return KINDS.get(event["kind"], "other")


def history_words(
    event: Mapping[str, Any],
    titles: Mapping[str, str],
    translate: Callable[[str], str] = lambda text: text,
) -> dict[str, Any]:
    """An event as the page lists it: {at, seq, text}."""
    purpose = event.get("purpose")
    title = titles.get(purpose, purpose) if purpose else translate("Your account")
    text = translate(HISTORY[history_key(event)]).format(
        purpose=title, state=translate(STATES.get(event.get("after"), "Off"))
    )
    return {"seq": event["seq"], "at": event["at"], "text": text}
