"""The reason for a decision in plain words: a stable code, its values, and the English text."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.explanations import REASONS, explain, words


def decision(basis: str, allowed: bool, **facts: Any) -> dict[str, Any]:
    return {
        "basis": basis,
        "allowed": allowed,
        "state": "granted" if allowed else "denied",
        **facts,
    }


@pytest.mark.parametrize(
    ("given", "code", "text"),
    [
        (decision("erased", False), "erased", "Off — your account was deleted"),
        (
            decision("restriction", False, restriction_id=3),
            "restriction_unnamed",
            "Off — an order restricts this",
        ),
        (decision("not_offered", False), "not_offered", "Off — this is not used where you live"),
        (decision("override", True), "override", "On — set by our support team"),
        (decision("choice", True, source="self_service"), "choice_on", "On — you turned it on"),
        (decision("choice", False, source="settings"), "choice_off", "Off — you turned it off"),
        (
            decision("choice", False, source="gpc"),
            "gpc",
            "Off — your browser's Global Privacy Control signal asked for this",
        ),
        (
            decision("default", False, default_selector="EEA"),
            "default_region",
            "Off — the default in your region (EEA)",
        ),
        (
            decision("default", True, default_selector="US"),
            "default_country",
            "On — the default in your country (US)",
        ),
        (decision("default", True, default_selector="*"), "default", "On — the default"),
        (
            decision("default", False, default_selector=None),
            "no_default",
            "Off — no default applies, so it stays off",
        ),
        (
            decision("unknown", False),
            "unknown",
            "Off — we hold no record of you yet, so the setting for new accounts applies",
        ),
    ],
)
def test_each_basis_is_explained_with_a_stable_code_and_an_english_sentence(
    given: dict[str, Any], code: str, text: str
) -> None:
    explanation = explain(given)
    assert (explanation.code, explanation.text) == (code, text)
    assert explanation.code in REASONS


def test_a_restriction_names_the_authority_whose_order_it_is() -> None:
    explanation = explain(decision("restriction", False, restriction_id=1), authority="DPC")
    assert explanation.document() == {
        "code": "restriction",
        "params": {"authority": "DPC"},
        "text": "Off — an order by DPC restricts this",
    }


def test_a_translation_rebuilds_the_sentence_from_the_code_and_its_values() -> None:
    german = {
        "On": "An",
        "Off": "Aus",
        REASONS["default_region"]: "die Voreinstellung in Ihrer Region ({region})",
    }
    explanation = explain(decision("default", False, default_selector="EEA"))
    sentence = words(
        explanation.code, False, explanation.params, lambda text: german.get(text, text)
    )
    assert sentence == "Aus — die Voreinstellung in Ihrer Region (EEA)"
