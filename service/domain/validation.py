"""Domain formats shared by every entry point: user IDs, purpose keys, jurisdictions, policies."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from service.domain.errors import ValidationFailed
from service.domain.policy import COUNTRY_CODES, LEGAL_BASES, REGION_GROUPS, STATES, WILDCARD

USER_ID_PATTERN = "^[A-Za-z0-9._:@-]{1,64}$"
USER_ID_RE = re.compile(USER_ID_PATTERN)
PURPOSE_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
USER_ID_RULE = "1-64 characters from A-Z a-z 0-9 . _ : @ -"
PURPOSE_KEY_RULE = "^[a-z][a-z0-9_]{1,47}$"
# A notice's version: what a product shows beside the text, e.g. "3", "2026-01" or "v1.2".
NOTICE_VERSION_PATTERN = "^[A-Za-z0-9._-]{1,32}$"
NOTICE_VERSION_RE = re.compile(NOTICE_VERSION_PATTERN)
NOTICE_VERSION_RULE = "1-32 characters from A-Z a-z 0-9 . _ -"
# A notice's text holds something besides blanks (and no NUL); spelt without \s, which means
# other characters in Python than in the ECMA regexes of openapi.yaml.
NOTICE_TEXT_PATTERN = "^[^\\x00]*[^\\x00 \\t\\r\\n][^\\x00]*$"
NOTICE_TEXT_RE = re.compile(NOTICE_TEXT_PATTERN)
# Where a notice is published: an http(s) URL in ASCII (anything else percent-encoded).
NOTICE_URL_PATTERN = "^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][!-~]*)?$"
NOTICE_URL_RE = re.compile(NOTICE_URL_PATTERN)


def _any_case(codes: Iterable[str]) -> str:
    """A regex alternation of upper-case codes, each in any letter case, grouped by first letter.

    Spelt with character classes rather than a case-insensitive flag, so the same pattern means
    the same in Python and in the ECMA regexes of openapi.yaml, and matches ASCII letters only.
    """
    groups: dict[str, list[str]] = {}
    for code in sorted(codes):
        groups.setdefault(code[:-1], []).append(code[-1])
    return "|".join(
        "".join(f"[{c}{c.lower()}]" for c in stem) + f"[{''.join(ends)}{''.join(ends).lower()}]"
        for stem, ends in groups.items()
    )


# The concepts below are sets (ISO 3166-1, the region groups); their regexes are built from the
# sets, so the service's checks and the patterns openapi.yaml documents are one and the same.
COUNTRY_CODE_PATTERN = f"(?:{_any_case(COUNTRY_CODES)})"
# Surrounding blanks are forgiven: ' de ' is DE.
JURISDICTION_RE = re.compile(rf"^[ \t\r\n]*({COUNTRY_CODE_PATTERN})[ \t\r\n]*$")
SELECTOR_RE = re.compile(
    rf"^(?:{re.escape(WILDCARD)}|{_any_case(REGION_GROUPS)}|{COUNTRY_CODE_PATTERN})$"
)
# Every selector in its canonical (upper) case, as a default policy is stored.
SELECTORS: tuple[str, ...] = (WILDCARD, *sorted(REGION_GROUPS), *sorted(COUNTRY_CODES))


def is_user_id(value: str) -> bool:
    """Tell whether value is a well-formed user ID."""
    return USER_ID_RE.fullmatch(value) is not None


def user_id(value: str, field: str = "user_id") -> str:
    """Return value if it is a well-formed user ID, else raise a 422 naming it."""
    if not is_user_id(value):
        raise ValidationFailed(
            f"{value[:80]!r} is not a valid user ID ({USER_ID_RULE}).",
            errors={field: [f"Must be {USER_ID_RULE}."]},
        )
    return value


def purpose_key(value: str, field: str = "purpose") -> str:
    """Return value if it is a well-formed purpose key, else raise a 422 naming it."""
    if PURPOSE_KEY_RE.fullmatch(value) is None:
        raise ValidationFailed(
            f"{value[:60]!r} is not a valid purpose key.",
            errors={field: [f"Must match {PURPOSE_KEY_RULE}."]},
        )
    return value


def jurisdiction(value: str | None, field: str = "jurisdiction") -> str | None:
    """Normalise an ISO 3166-1 alpha-2 code to upper case; None means no jurisdiction."""
    if value is None:
        return None
    match = JURISDICTION_RE.fullmatch(value)
    if match is None:
        raise ValidationFailed(
            f"{value[:20]!r} is not an ISO 3166-1 alpha-2 country code.",
            errors={field: ["Must be an ISO 3166-1 alpha-2 country code (e.g. DE) or null."]},
        )
    return match.group(1).upper()


def defaults(value: Mapping[str, Any], field: str = "defaults") -> dict[str, str]:
    """Validate a default policy: selectors are countries, region groups or '*'; values states."""
    return _selector_map(
        value, field, STATES, "Must be 'granted' or 'denied'.", "The default policy is invalid."
    )


def legal_bases(value: Mapping[str, Any], field: str = "legal_bases") -> dict[str, str]:
    """Validate a purpose's legal bases: selectors as in defaults; values consent,
    legitimate_interest or not_offered. An empty map means consent everywhere."""
    rule = "Must be 'consent', 'legitimate_interest' or 'not_offered'."
    return _selector_map(value, field, LEGAL_BASES, rule, "The legal bases are invalid.")


def _selector_map(
    value: Mapping[str, Any], field: str, allowed: Iterable[str], rule: str, summary: str
) -> dict[str, str]:
    """A map from selector to one of `allowed`, selectors stored in upper case, each once."""
    problems: dict[str, list[str]] = {}
    clean: dict[str, str] = {}
    allowed = tuple(allowed)
    for raw_selector, state in value.items():
        selector = raw_selector.upper()
        if SELECTOR_RE.fullmatch(raw_selector) is None:
            problems[f"{field}.{raw_selector}"] = [
                "Selector must be an ISO 3166-1 alpha-2 code, a region group (EEA) or '*'."
            ]
        elif state not in allowed:
            problems[f"{field}.{raw_selector}"] = [rule]
        elif selector in clean:
            problems[f"{field}.{raw_selector}"] = ["Selector given twice."]
        else:
            clean[selector] = state
    if problems:
        raise ValidationFailed(summary, errors=problems)
    return clean


def notice_version(value: str, field: str = "notice_version") -> str:
    """Return value if it is a well-formed notice version, else raise a 422 naming it."""
    if NOTICE_VERSION_RE.fullmatch(value) is None:
        raise ValidationFailed(
            f"{value[:40]!r} is not a valid notice version ({NOTICE_VERSION_RULE}).",
            errors={field: [f"Must be {NOTICE_VERSION_RULE}."]},
        )
    return value
