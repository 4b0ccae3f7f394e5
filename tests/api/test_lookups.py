"""Pipeline lookups over HTTP: one ID, a batch, the basis of each answer, and pinned as_of."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from werkzeug.test import TestResponse

from tests.conftest import Clock
from tests.factories import PROBLEM, Api, assert_problem

PURPOSE = "model_training"
DECISION_FIELDS = {
    "restriction_id",
    "user_id",
    "purpose",
    "allowed",
    "state",
    "basis",
    "as_of",
    "legal_basis",
    "notice_version",
}


def lookup(
    api: Api, user_id: str, as_of: str | int | None = None, *, purpose: str = PURPOSE
) -> TestResponse:
    """GET /v1/lookup/{purpose}/{user_id} as the pipeline, optionally pinned."""
    query = {} if as_of is None else {"as_of": str(as_of)}
    return api.call("GET", f"/v1/lookup/{purpose}/{user_id}", role="pipeline", query_string=query)


def decision(api: Any, user_id: str, as_of: str | int | None = None) -> dict[str, Any]:
    """One decision that must succeed."""
    resp = lookup(api, user_id, as_of)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return dict(resp.get_json())


def batch(api: Api, user_ids: list[Any], **extra: Any) -> TestResponse:
    """POST /v1/lookup/{purpose} as the pipeline."""
    return api.call(
        "POST", f"/v1/lookup/{PURPOSE}", role="pipeline", json={"user_ids": user_ids, **extra}
    )


def head(api: Any) -> int:
    """The ledger head, as the change feed reports it."""
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


def all_events(api: Any) -> list[dict[str, Any]]:
    """Every event in the ledger, oldest first."""
    return list(api.call("GET", "/v1/changes?limit=10000", role="pipeline").get_json()["events"])


def erase(api: Any, user_id: str) -> None:
    """Erase a user as the app."""
    assert api.call("DELETE", f"/v1/users/{user_id}", role="app").status_code == 200


def lift(api: Any, user_id: str, override_id: int) -> None:
    """Lift an override as support."""
    resp = api.call(
        "DELETE",
        f"/v1/users/{user_id}/overrides/{override_id}?reason=ticket+closed",
        role="support",
    )
    assert resp.status_code == 200, resp.get_json()


def patch_policy(api: Any, **changes: Any) -> None:
    """Change the purpose's default policy as admin."""
    resp = api.call("PATCH", f"/v1/purposes/{PURPOSE}", json=changes)
    assert resp.status_code == 200, resp.get_json()


# --- one decision, and its basis -----------------------------------------------------------------


@pytest.mark.parametrize("unknown_subject", ["denied", "granted"])
def test_a_never_seen_id_is_answered_with_the_unknown_subject_state(
    api: Any, unknown_subject: str
) -> None:
    api.purpose(unknown_subject=unknown_subject)
    body = decision(api, "never-seen")
    assert set(body) == DECISION_FIELDS
    assert body == {
        "user_id": "never-seen",
        "purpose": PURPOSE,
        "allowed": unknown_subject == "granted",
        "state": unknown_subject,
        "basis": "unknown",
        "as_of": head(api),
        "restriction_id": None,
        "legal_basis": "consent",
        "notice_version": None,
    }


@pytest.mark.parametrize(
    ("jurisdiction", "state"),
    [("DE", "denied"), ("NO", "denied"), ("US", "granted"), (None, "granted")],
)
def test_a_known_user_without_a_choice_gets_the_default_for_their_jurisdiction(
    api: Any, jurisdiction: str | None, state: str
) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    api.user("u1", jurisdiction=jurisdiction)
    body = decision(api, "u1")
    assert (body["state"], body["basis"], body["allowed"]) == (state, "default", state == "granted")


def test_a_users_choice_beats_the_default(api: Any) -> None:
    api.purpose(defaults={"*": "denied"})
    api.user("u1", jurisdiction="US")
    api.choose("u1", "granted")
    body = decision(api, "u1")
    assert (body["allowed"], body["state"], body["basis"]) == (True, "granted", "choice")


def test_an_override_beats_the_users_choice(api: Any) -> None:
    api.purpose()
    api.choose("u1", "granted")
    assert api.override("u1", "denied").status_code == 201
    body = decision(api, "u1")
    assert (body["allowed"], body["state"], body["basis"]) == (False, "denied", "override")


def test_an_erased_user_is_denied_whatever_their_choice_override_or_the_unknown_policy(
    api: Any,
) -> None:
    api.purpose(defaults={"*": "granted"}, unknown_subject="granted")
    api.choose("u1", "granted")
    api.override("u1", "granted")
    erase(api, "u1")
    erase(api, "never-registered")
    for user_id in ("u1", "never-registered"):
        body = decision(api, user_id)
        assert (body["allowed"], body["state"], body["basis"]) == (False, "denied", "erased")


@pytest.mark.parametrize(
    "raw", ["a" * 65, "bad%20id", "%C3%BC", "a%2Cb", "tab%09", "new%0Aline", "semi;colon"]
)
def test_a_malformed_user_id_is_a_422(api: Any, raw: str) -> None:
    api.purpose(unknown_subject="granted")
    body = assert_problem(lookup(api, raw), 422)
    assert "user_id" in body["errors"]


def test_an_unknown_purpose_is_a_404_naming_it(api: Any) -> None:
    api.purpose()
    body = assert_problem(lookup(api, "u1", purpose="no_such_purpose"), 404)
    assert "no_such_purpose" in body["detail"]


@pytest.mark.parametrize(("role", "status"), [("app", 403), ("support", 403), ("pipeline", 200)])
def test_only_pipeline_keys_may_look_up(api: Any, role: str, status: int) -> None:
    api.purpose()
    single = api.call("GET", f"/v1/lookup/{PURPOSE}/u1", role=role)
    many = api.call("POST", f"/v1/lookup/{PURPOSE}", role=role, json={"user_ids": ["u1"]})
    assert (single.status_code, many.status_code) == (status, status)


def test_a_lookup_without_a_key_is_a_401(api: Any) -> None:
    api.purpose()
    assert_problem(api.client.get(f"/v1/lookup/{PURPOSE}/u1"), 401)


# --- as_of ---------------------------------------------------------------------------------------


def test_as_of_a_seq_answers_as_the_ledger_stood_then(api: Any) -> None:
    api.purpose(defaults={"*": "denied"})
    api.user("u1", jurisdiction="US")
    registered = head(api)
    api.choose("u1", "granted")
    granted = head(api)
    api.choose("u1", "denied")

    at_registration = decision(api, "u1", registered)
    assert (at_registration["state"], at_registration["basis"]) == ("denied", "default")
    assert at_registration["as_of"] == registered
    at_grant = decision(api, "u1", granted)
    assert (at_grant["allowed"], at_grant["basis"], at_grant["as_of"]) == (True, "choice", granted)
    assert decision(api, "u1")["allowed"] is False


@pytest.mark.parametrize("style", ["Z", "z", "+00:00", "+02:00", "-05:30"])
def test_as_of_an_rfc3339_time_answers_as_of_the_last_event_at_or_before_it(
    api: Any, style: str
) -> None:
    api.purpose(defaults={"*": "denied"})
    api.choose("u1", "granted")
    api.choose("u1", "denied")
    events = all_events(api)
    grant = next(e for e in events if e["kind"] == "choice_set" and e["after"] == "granted")
    when = datetime.fromisoformat(grant["at"])
    if style in ("Z", "z"):
        text = when.astimezone(UTC).isoformat().replace("+00:00", style)
    else:
        hours, minutes = int(style[1:3]), int(style[4:6])
        offset = timedelta(hours=hours, minutes=minutes) * (1 if style[0] == "+" else -1)
        text = when.astimezone(timezone(offset)).isoformat()
        assert text.endswith(style)
    expected = max(e["seq"] for e in events if datetime.fromisoformat(e["at"]) <= when)

    body = decision(api, "u1", text)
    assert body["as_of"] == expected
    assert (body["allowed"], body["basis"]) == (True, "choice")


def test_as_of_a_time_before_any_event_is_seq_zero_where_no_purpose_exists_yet(api: Any) -> None:
    api.purpose()
    body = assert_problem(lookup(api, "u1", "2001-01-01T00:00:00Z"), 404)
    assert PURPOSE in body["detail"]


def test_as_of_a_seq_beyond_the_head_is_a_422(api: Any) -> None:
    api.purpose()
    body = assert_problem(lookup(api, "u1", head(api) + 1), 422)
    assert "as_of" in body["errors"]
    assert_problem(lookup(api, "u1", "99999999999999999999999"), 422)


def test_as_of_a_time_in_the_future_is_a_422(api: Any) -> None:
    api.purpose()
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    body = assert_problem(lookup(api, "u1", future), 422)
    assert "as_of" in body["errors"]


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "-1",
        "1.5",
        "0x10",
        "1e3",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00",  # no offset: the instant is a guess
        "2024-01-01",
        pytest.param("²", id="a-unicode-digit-that-is-no-seq"),
        pytest.param("9" * 5000, id="more-digits-than-python-converts-to-int"),
    ],
)
def test_a_malformed_as_of_is_a_422(api: Any, raw: str) -> None:
    api.purpose()
    body = assert_problem(lookup(api, "u1", raw), 422)
    assert "as_of" in body["errors"]


@pytest.mark.parametrize("misspelt", ["asof", "as-of", "As_Of", "as_of_seq"])
def test_a_misspelt_as_of_is_a_422_not_an_answer_at_the_head(api: Any, misspelt: str) -> None:
    api.purpose()
    api.choose("u1", "granted")
    resp = api.call("GET", f"/v1/lookup/{PURPOSE}/u1?{misspelt}=1", role="pipeline")
    assert_problem(resp, 422)


def test_a_purpose_created_after_the_as_of_seq_is_a_404(api: Any) -> None:
    api.purpose()
    api.user("u1")
    before = head(api)
    api.purpose(key="ads_ranking")
    assert decision(api, "u1", before)["purpose"] == PURPOSE
    body = assert_problem(lookup(api, "u1", before, purpose="ads_ranking"), 404)
    assert "ads_ranking" in body["detail"]
    assert lookup(api, "u1", purpose="ads_ranking").status_code == 200


# --- answers pinned to an as_of never change -----------------------------------------------------


def _world(api: Any) -> dict[str, int]:
    """Users whose answers each later write below would change at the head; returns override ids."""
    api.purpose(defaults={"EEA": "denied", "*": "granted"}, unknown_subject="denied")
    api.user("chooser", jurisdiction="US")
    api.choose("chooser", "granted")
    api.user("defaulted", jurisdiction="DE")
    api.user("mover", jurisdiction="US")
    api.user("overridden", jurisdiction="US")
    api.choose("overridden", "granted")
    lifted = api.override("lifted", "granted").get_json()["id"]
    api.user("erasable", jurisdiction="US")
    api.choose("erasable", "granted")
    return {"lifted": lifted}


WATCHED = ["chooser", "defaulted", "mover", "overridden", "lifted", "erasable", "newcomer", "1001"]

LATER_WRITES: dict[str, Callable[[Any, dict[str, int]], None]] = {
    "a choice changes": lambda api, ids: api.choose("chooser", "denied"),
    "the default policy changes": lambda api, ids: patch_policy(
        api, defaults={"*": "denied", "DE": "granted"}
    ),
    "the unknown_subject policy changes": lambda api, ids: patch_policy(
        api, unknown_subject="granted"
    ),
    "a jurisdiction changes": lambda api, ids: api.user("mover", jurisdiction="FR"),
    "an override is placed": lambda api, ids: api.override("overridden", "denied"),
    "an override is lifted": lambda api, ids: lift(api, "lifted", ids["lifted"]),
    "a user is erased": lambda api, ids: erase(api, "erasable"),
    "a new user grants": lambda api, ids: api.choose("newcomer", "granted"),
}


def _answers(api: Any, as_of: int) -> dict[str, Any]:
    singles = {u: decision(api, u, as_of) for u in WATCHED}
    many = batch(api, WATCHED, as_of=as_of)
    assert many.status_code == 200, many.get_json()
    return {"single": singles, "batch": many.get_json()}


@pytest.mark.parametrize("write", [*LATER_WRITES, "all of them"])
def test_answers_pinned_to_a_seq_never_change_whatever_is_written_later(
    api: Any, write: str
) -> None:
    ids = _world(api)
    pinned = head(api)
    before = _answers(api, pinned)
    head_before = {u: decision(api, u) for u in WATCHED}

    for name, change in LATER_WRITES.items():
        if write in (name, "all of them"):
            change(api, ids)

    assert head(api) > pinned
    assert _answers(api, pinned) == before
    # The write did change the answer at the head, so the pin is what kept the answer.
    head_after = {u: decision(api, u) for u in WATCHED}
    assert any(
        (head_before[u]["state"], head_before[u]["basis"])
        != (head_after[u]["state"], head_after[u]["basis"])
        for u in WATCHED
    )


def test_answers_pinned_to_a_time_never_change_whatever_is_written_later(api: Any) -> None:
    ids = _world(api)
    last = all_events(api)[-1]
    when = last["at"]
    before = decision(api, "chooser", when)
    assert before["as_of"] == last["seq"]
    for change in LATER_WRITES.values():
        change(api, ids)
    assert decision(api, "chooser", when) == before
    assert decision(api, "chooser")["allowed"] is False


def test_an_override_expiring_later_does_not_change_answers_pinned_before_it(
    api: Any, clock: Clock
) -> None:
    api.purpose(defaults={"*": "denied"})
    api.user("u1", jurisdiction="US")
    expires = clock.now + timedelta(hours=1)
    assert api.override("u1", "granted", expires_at=expires.isoformat()).status_code == 201
    placed = head(api)
    clock.now += timedelta(minutes=30)
    api.user("bystander")
    during = head(api)

    pinned_answers = {seq: decision(api, "u1", seq) for seq in (placed, during)}
    for answer in pinned_answers.values():
        assert (answer["allowed"], answer["basis"]) == (True, "override")

    clock.now = expires + timedelta(seconds=1)
    api.user("another-bystander")
    kinds = [e["kind"] for e in all_events(api) if e["seq"] > during]
    assert "override_expired" in kinds

    for seq, answer in pinned_answers.items():
        assert decision(api, "u1", seq) == answer
    now = decision(api, "u1")
    assert (now["allowed"], now["basis"]) == (False, "default")


# --- batch lookup --------------------------------------------------------------------------------


def test_a_batch_puts_every_distinct_input_id_in_exactly_one_list(api: Any) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    api.user("by-default", jurisdiction="US")
    api.user("eea", jurisdiction="DE")
    api.choose("chose-yes", "granted")
    api.choose("chose-no", "denied")
    api.override("overridden", "granted")
    erase(api, "erased")
    ids = ["by-default", "eea", "chose-yes", "chose-no", "overridden", "erased", "never-seen"]

    resp = batch(api, ids)
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"purpose", "as_of", "allowed", "denied"}
    assert (body["purpose"], body["as_of"]) == (PURPOSE, head(api))
    assert sorted(body["allowed"]) == sorted(["by-default", "chose-yes", "overridden"])
    assert sorted(body["denied"]) == sorted(["eea", "chose-no", "erased", "never-seen"])
    assert len(body["allowed"]) + len(body["denied"]) == len(ids)
    # Each agrees with the single lookup.
    for user_id in ids:
        assert (user_id in body["allowed"]) is decision(api, user_id)["allowed"]


def test_duplicates_in_a_batch_are_answered_once(api: Any) -> None:
    api.purpose(defaults={"*": "denied"})
    api.choose("yes", "granted")
    body = batch(api, ["yes", "no", "yes", "no", "no", "yes"]).get_json()
    assert (body["allowed"], body["denied"]) == (["yes"], ["no"])


def test_integers_in_a_batch_are_numeric_ids(api: Any) -> None:
    api.purpose(defaults={"*": "denied"})
    api.choose("1001", "granted")
    api.choose("1002", "denied")
    body = batch(api, [1001, "1001", 1002, 0, 12345678901234567890]).get_json()
    assert body["allowed"] == ["1001"]
    assert sorted(body["denied"]) == sorted(["1002", "0", "12345678901234567890"])


def test_a_negative_integer_is_not_a_numeric_id(api: Any) -> None:
    """Numeric IDs are digit strings: -7 must not be read as the (valid) string ID '-7'."""
    api.purpose(defaults={"*": "denied"})
    api.choose("-7", "granted")
    body = assert_problem(batch(api, ["fine", -7]), 422)
    assert bad_indexes(body["errors"]) == {1}


def test_a_batch_of_10000_ids_is_answered_and_10001_is_a_413_saying_what_to_do(api: Any) -> None:
    api.purpose(defaults={"*": "granted"})
    api.user("u5")
    ok = batch(api, [f"u{i}" for i in range(10_000)])
    assert ok.status_code == 200
    assert ok.get_json()["allowed"] == ["u5"]
    assert len(ok.get_json()["denied"]) == 9_999

    body = assert_problem(batch(api, [f"u{i}" for i in range(10_001)]), 413)
    assert "10001" in body["detail"]
    assert "10000" in body["detail"]
    assert "/v1/filter" in body["detail"]


@pytest.mark.parametrize(
    ("ids", "bad"),
    [
        (["ok", "bad id", "ok2", "ü"], {1, 3}),
        (["ok", "a" * 65], {1}),
        (["", "ok"], {0}),
        (["ok", True], {1}),
        (["ok", 1.5], {1}),
        (["ok", None], {1}),
        (["ok", ["nested"]], {1}),
        (["ok", {"id": "x"}], {1}),
        ([10**80], {0}),
    ],
)
def test_a_malformed_id_in_a_batch_is_a_422_naming_its_index(
    api: Any, ids: list[Any], bad: set[int]
) -> None:
    api.purpose(unknown_subject="granted")
    body = assert_problem(batch(api, ids), 422)
    assert bad_indexes(body["errors"]) == bad


def bad_indexes(errors: dict[str, Any]) -> set[int]:
    """The user_ids indexes a 422 names, as "user_ids.3" keys or as {"user_ids": {"3": ...}}."""
    flat = {int(k.split(".", 1)[1]) for k in errors if k.startswith("user_ids.")}
    nested = errors.get("user_ids")
    if isinstance(nested, dict):
        flat |= {int(k) for k in nested}
    return flat


@pytest.mark.parametrize(
    "body", [{}, {"user_ids": "u1"}, {"user_ids": ["u1"], "unexpected": 1}, {"user_ids": None}]
)
def test_a_batch_body_of_the_wrong_shape_is_a_422(api: Any, body: dict[str, Any]) -> None:
    api.purpose()
    resp = api.call("POST", f"/v1/lookup/{PURPOSE}", role="pipeline", json=body)
    assert_problem(resp, 422)


def test_a_batch_with_an_integer_too_long_to_parse_is_an_error_not_a_500(api: Any) -> None:
    api.purpose()
    raw = b'{"user_ids": ["u1"], "as_of": ' + b"9" * 5000 + b"}"
    resp = api.call(
        "POST",
        f"/v1/lookup/{PURPOSE}",
        role="pipeline",
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code in (400, 422), resp.get_data(as_text=True)
    assert resp.mimetype == PROBLEM


def test_a_batch_for_an_unknown_purpose_is_a_404(api: Any) -> None:
    api.purpose()
    resp = api.call("POST", "/v1/lookup/no_such_purpose", role="pipeline", json={"user_ids": []})
    assert_problem(resp, 404)


@pytest.mark.parametrize("form", ["int", "str", "time"])
def test_a_batch_can_be_pinned_with_as_of_in_the_body(api: Any, form: str) -> None:
    api.purpose(defaults={"*": "denied"})
    api.choose("u1", "granted")
    last = all_events(api)[-1]
    api.choose("u1", "denied")
    api.choose("u2", "granted")
    as_of: Any = {"int": last["seq"], "str": str(last["seq"]), "time": last["at"]}[form]

    body = batch(api, ["u1", "u2"], as_of=as_of).get_json()
    assert body == {"purpose": PURPOSE, "as_of": last["seq"], "allowed": ["u1"], "denied": ["u2"]}
    now = batch(api, ["u1", "u2"]).get_json()
    assert (now["allowed"], now["denied"]) == (["u2"], ["u1"])


@pytest.mark.parametrize("as_of", [-1, True, 1.5, "soon", ["1"], "99999999"])
def test_a_batch_with_a_bad_as_of_is_a_422(api: Any, as_of: Any) -> None:
    api.purpose()
    body = assert_problem(batch(api, ["u1"], as_of=as_of), 422)
    assert "as_of" in body["errors"]


def test_an_empty_batch_for_a_purpose_that_does_not_exist_is_404(api: Any) -> None:
    # Found by the contract fuzzer: with no IDs to decide, the purpose went unchecked (200).
    api.purpose()
    resp = api.call("POST", "/v1/lookup/no_such_purpose", role="pipeline", json={"user_ids": []})
    assert_problem(resp, 404)
    ok = api.call("POST", "/v1/lookup/model_training", role="pipeline", json={"user_ids": []})
    assert ok.status_code == 200
    assert ok.get_json()["allowed"] == []
