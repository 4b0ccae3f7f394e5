"""The README walk-through, as a new user would try it, end to end over HTTP."""

from __future__ import annotations

from typing import Any


def test_readme_walkthrough_gives_each_user_the_right_state_basis_and_history(api: Any) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"}, unknown_subject="denied")
    api.user("u1", jurisdiction="DE")
    api.user("u2", jurisdiction="US")
    assert api.choose("u2", "denied").status_code == 200
    assert api.override("u1", "granted").status_code == 201
    assert api.call("DELETE", "/v1/users/u3", role="app").status_code == 200
    api.user("u4", jurisdiction="US")

    expected = {
        "u1": ("granted", "override"),
        "u2": ("denied", "choice"),
        "u3": ("denied", "erased"),
        "u4": ("granted", "default"),
    }
    for user_id, (state, basis) in expected.items():
        decision = api.consent(user_id)
        assert (decision["state"], decision["basis"]) == (state, basis), user_id
        assert decision["allowed"] is (state == "granted")

    kinds = {u: [e["kind"] for e in api.events(u)] for u in expected}
    assert kinds == {
        "u1": ["subject_registered", "override_placed"],
        "u2": ["subject_registered", "choice_set"],
        "u3": ["subject_registered", "subject_erased"],
        "u4": ["subject_registered"],
    }
    seqs = [e["seq"] for u in expected for e in api.events(u)]
    assert len(seqs) == len(set(seqs))
    override_event = api.events("u1")[1]
    assert override_event["before"] == "denied"
    assert override_event["after"] == "granted"
    assert override_event["actor"] == "support-key"
    assert override_event["role"] == "support"
    assert override_event["reason"] == "regulator request"
    assert override_event["ticket"] == "SUP-1"
    assert override_event["request_id"]


def test_a_fresh_eea_user_gets_the_eea_default(api: Any) -> None:
    api.purpose()
    api.user("fr1", jurisdiction="fr")
    decision = api.consent("fr1")
    assert decision["state"] == "denied"
    assert decision["basis"] == "default"
    assert decision["default_selector"] == "EEA"
