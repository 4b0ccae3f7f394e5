"""The page's words beyond its templates: one sentence per event of the user's history, what each
refusal means for the person who sees it, and dates in their language."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from babel import Locale
from babel.dates import format_skeleton
from flask_babel import get_locale

from service.domain.explanations import OFF, ON
from service.domain.translatable import N_

# Sentence templates by what happened; `{purpose}` is the purpose's title, `{state}` On or Off.
HISTORY: Mapping[str, str] = {
    "self": N_("You turned {purpose} {state}."),
    "gpc": N_("Your browser's Global Privacy Control signal turned {purpose} {state}."),
    "app": N_("The app recorded your choice: {purpose} {state}."),
    "registered": N_("Your account was registered: {purpose} {state}."),
    "override_placed": N_("Our support team set {purpose} {state}."),
    "override_lifted": N_("Our support team's setting for {purpose} was lifted: now {state}."),
    "override_expired": N_("Our support team's setting for {purpose} ended: now {state}."),
    "restriction": N_("An order about {purpose} changed it to {state}."),
    "erased": N_("Your account was deleted: {purpose} {state}."),
    "other": N_("{purpose} is now {state}."),
}
STATES: Mapping[str | None, str] = {"granted": ON, "denied": OFF, None: OFF}
# What an event about no purpose (a jurisdiction change, say) is about.
ACCOUNT = N_("Your account")
KINDS: Mapping[str, str] = {
    "subject_registered": "registered",
    "override_placed": "override_placed",
    "override_lifted": "override_lifted",
    "override_expired": "override_expired",
    "restriction_placed": "restriction",
    "restriction_lifted": "restriction",
    "subject_erased": "erased",
}
# Dates as "Mar 12, 2026, 14:05" in English and "12. März 2026, 14:05" in German: CLDR's
# skeletons for the date and the 24-hour time, joined by the language's own pattern.
DATE_SKELETON, TIME_SKELETON = "yMMMd", "Hm"


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
    title = titles.get(purpose, purpose) if purpose else translate(ACCOUNT)
    text = translate(HISTORY[history_key(event)]).format(
        purpose=title, state=translate(STATES.get(event.get("after"), OFF))
    )
    return {"seq": event["seq"], "at": event["at"], "text": text}


def when(at: str) -> str:
    """An RFC 3339 time as a date and time in UTC, in the page's language."""
    moment = datetime.fromisoformat(at).astimezone(UTC)
    locale = get_locale() or Locale("en")
    date = format_skeleton(DATE_SKELETON, moment, tzinfo=UTC, locale=locale)
    time = format_skeleton(TIME_SKELETON, moment, tzinfo=UTC, locale=locale)
    return str(locale.datetime_formats["medium"]).format(time, date)


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a refused request means, for the person: a title and what to do (English msgids)."""

    title: str
    detail: str


# By problem slug: the refusals a person meets on /me, in their words rather than an API's.
REFUSALS: Mapping[str, Refusal] = {
    "invalid-user-token": Refusal(
        N_("This link does not work"),
        N_(
            "The link that opened this page has expired or is not valid. Links from the app "
            "work once and for a few minutes: open your privacy settings again from the app."
        ),
    ),
    "user-token-reused": Refusal(
        N_("Link already used"),
        N_("This link has been used already. Open your privacy settings again from the app."),
    ),
    "user-tokens-off": Refusal(
        N_("Privacy settings unavailable"),
        N_("This service is not set up to open privacy settings yet. Please try again later."),
    ),
    "csrf": Refusal(
        N_("Form expired or forged"),
        N_("The form's security token was missing or wrong. Reload the page and try again."),
    ),
    "bad-switch": Refusal(
        N_("Request not understood"),
        N_("That switch can only be turned on or off."),
    ),
}
# Any other refusal, by its HTTP status.
BY_STATUS: Mapping[int, Refusal] = {
    400: Refusal(N_("Request not understood"), N_("Reload the page and try again.")),
    401: REFUSALS["invalid-user-token"],
    403: Refusal(N_("Not allowed"), N_("This page cannot be used this way.")),
    404: Refusal(N_("Not found"), N_("There is nothing at this address.")),
    405: Refusal(N_("Not allowed"), N_("This page cannot be used this way.")),
    409: Refusal(
        N_("Cannot be changed"),
        N_("Your account was deleted, so your settings can no longer be changed."),
    ),
    422: Refusal(N_("Not accepted"), N_("That setting cannot be changed this way.")),
    429: Refusal(N_("Too many requests"), N_("Please wait a moment and try again.")),
    503: Refusal(N_("Unavailable"), N_("Your settings cannot be shown now; retry later.")),
}
SOMETHING_WRONG = Refusal(N_("Something went wrong"), N_("Please try again later."))


def refusal(status: int, slug: str | None = None) -> Refusal:
    """The words for a refusal: by its slug where the page knows it, else by its status."""
    if slug is not None and slug in REFUSALS:
        return REFUSALS[slug]
    return BY_STATUS.get(status, SOMETHING_WRONG)
