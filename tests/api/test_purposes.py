"""Purposes over HTTP: creation, default policies, changes as policy_changed events."""

from __future__ import annotations

from typing import Any

from flask import Flask

from service.runtime.extensions import db
from service.runtime.models import Event


def test_a_purpose_is_created_read_and_listed(api: Any) -> None:
    created = api.purpose(defaults={"EEA": "denied", "*": "granted"})
    assert created["defaults"] == {"EEA": "denied", "*": "granted"}
    assert created["unknown_subject"] == "denied"
    assert created["version"] == 1
    got = api.call("GET", "/v1/purposes/model_training", role="pipeline").get_json()
    assert got == created
    listed = api.call("GET", "/v1/purposes", role="app").get_json()
    assert [p["key"] for p in listed] == ["model_training"]


def test_selectors_are_normalised_and_invalid_ones_refused(api: Any) -> None:
    created = api.purpose(key="p_lower", defaults={"de": "granted", "*": "denied"})
    assert created["defaults"] == {"DE": "granted", "*": "denied"}
    resp = api.call(
        "POST",
        "/v1/purposes",
        json={"key": "p_bad", "title": "Bad", "defaults": {"ZZ": "granted", "EU": "denied"}},
    )
    assert resp.status_code == 422
    assert set(resp.get_json()["errors"]) == {"defaults.ZZ", "defaults.EU"}


def test_changing_defaults_changes_answers_and_writes_policy_changed(app: Flask, api: Any) -> None:
    api.purpose(defaults={"*": "granted"})
    api.user("u1", jurisdiction="US")
    resp = api.call("PATCH", "/v1/purposes/model_training", json={"defaults": {"*": "denied"}})
    assert resp.status_code == 200
    assert resp.get_json()["version"] == 2
    assert api.consent("u1")["state"] == "denied"
    with app.app_context():
        last = db.session.query(Event).order_by(Event.seq.desc()).first()
        assert last is not None
        assert last.kind == "policy_changed"
        assert last.purpose == "model_training"
        assert last.data is not None
        assert last.data["before"] == {"defaults": {"*": "granted"}}
        assert last.data["after"] == {"defaults": {"*": "denied"}}


def test_a_title_change_is_purpose_updated_and_a_no_op_patch_writes_nothing(
    app: Flask, api: Any
) -> None:
    api.purpose()
    api.call("PATCH", "/v1/purposes/model_training", json={"title": "Model training"})
    api.call("PATCH", "/v1/purposes/model_training", json={"title": "Model training"})
    with app.app_context():
        kinds = [e.kind for e in db.session.query(Event).order_by(Event.seq)]
    assert kinds[-2:] == ["purpose_created", "purpose_updated"]


def test_an_empty_patch_and_an_unknown_purpose_are_refused(api: Any) -> None:
    api.purpose()
    assert api.call("PATCH", "/v1/purposes/model_training", json={}).status_code == 422
    missing = api.call("PATCH", "/v1/purposes/nope_nope", json={"title": "x"})
    assert missing.status_code == 404


def test_unknown_subject_policy_applies_to_never_seen_ids_only(api: Any) -> None:
    api.purpose(unknown_subject="granted", defaults={"*": "denied"})
    api.user("known", jurisdiction="US")
    assert api.consent("known")["state"] == "denied"
