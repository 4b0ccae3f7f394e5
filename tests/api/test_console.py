"""The support console over the Flask test client: sessions, CSRF, roles, wording, impact."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.ledger import keys as api_keys
from service.reads import impact
from service.runtime.extensions import db
from service.web.console.sessions import persisted_secret
from service.web.console.wording import basis_words
from tests.api.console_client import CSRF_RE, Console
from tests.conftest import app_config
from tests.factories import Api


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The application with a fixed session secret, as a deployment would set one."""
    app = create_app({**app_config(database_url), "SECRET_KEY": "test-secret"})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def console(client: FlaskClient) -> Console:
    """A console client, not yet signed in."""
    return Console(client)


@pytest.fixture
def staffed(api: Api, console: Console) -> Console:
    """A console signed in as support, with a purpose and a user in the EEA."""
    api.purpose()
    api.user("u1", jurisdiction="DE")
    assert console.sign_in(api.tokens["support"]).status_code == 302
    return console


def test_every_console_page_carries_the_security_headers(console: Console) -> None:
    resp = console.get("/console/sign-in")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    with console.get("/console/static/console.css") as css:
        assert css.headers["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_or_style(staffed: Console) -> None:
    html = staffed.text("/console/users/u1")
    assert "<script" not in html
    assert "style=" not in html
    assert "<style" not in html


def test_signing_in_sets_a_strict_httponly_expiring_cookie_without_the_token(
    api: Api, console: Console
) -> None:
    resp = console.sign_in(api.tokens["support"])
    assert resp.status_code == 302
    assert resp.location.endswith("/console/users")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Expires=" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie
    assert api.tokens["support"] not in cookie


def test_the_cookie_is_secure_when_the_request_came_over_https(
    api: Api, client: FlaskClient
) -> None:
    page = client.get("/console/sign-in", base_url="https://localhost")
    token = CSRF_RE.search(page.get_data(as_text=True))
    assert token
    resp = client.post(
        "/console/sign-in",
        base_url="https://localhost",
        data={"csrf_token": token.group(1), "token": api.tokens["admin"]},
        # Over HTTPS Flask-WTF also checks the Referer is this site, as browsers send it.
        headers={"Referer": "https://localhost/console/sign-in"},
    )
    assert "Secure" in resp.headers["Set-Cookie"]


@pytest.mark.parametrize("role", ["app", "pipeline"])
def test_other_roles_are_refused_with_a_clear_message_and_no_session(
    api: Api, console: Console, role: str
) -> None:
    resp = console.sign_in(api.tokens[role])
    assert resp.status_code == 401
    assert "sign in with a support or admin key" in resp.get_data(as_text=True)
    assert console.get("/console/users").status_code == 302


def test_a_bad_key_is_refused_with_a_clear_message(console: Console) -> None:
    resp = console.sign_in("cl_not-a-key")
    assert resp.status_code == 401
    assert "not valid or has been revoked" in resp.get_data(as_text=True)


def test_a_form_without_its_csrf_token_is_refused(api: Api, client: FlaskClient) -> None:
    resp = client.post("/console/sign-in", data={"token": api.tokens["support"]})
    assert resp.status_code == 400
    assert "security token" in resp.get_data(as_text=True)
    assert "Set-Cookie" not in resp.headers or "key_id" not in resp.headers["Set-Cookie"]


def test_a_write_with_a_forged_csrf_token_changes_nothing(api: Api, staffed: Console) -> None:
    before = api.events("u1")
    resp = staffed.client.post(
        "/console/users/u1/overrides",
        data={
            "csrf_token": "forged",
            "purpose": "model_training",
            "state": "granted",
            "reason": "r",
            "ticket": "T-1",
            "confirmed": "yes",
        },
    )
    assert resp.status_code == 400
    assert api.events("u1") == before


def test_the_json_api_needs_no_csrf_token(api: Api) -> None:
    api.purpose()
    assert api.override("u9", "granted").status_code == 201


def test_pages_need_a_session(console: Console) -> None:
    resp = console.get("/console/users/u1")
    assert resp.status_code == 302
    assert resp.location.endswith("/console/sign-in")


def test_a_session_ends_after_its_absolute_lifetime(staffed: Console) -> None:
    with staffed.client.session_transaction("/console/") as session:
        session["signed_in_at"] = time.time() - 9 * 3600
    assert staffed.get("/console/users/u1").status_code == 302


def test_revoking_the_key_ends_its_session_on_the_next_request(
    app: Flask, staffed: Console
) -> None:
    assert staffed.get("/console/users/u1").status_code == 200
    with app.app_context():
        api_keys.revoke_key("support-key")
    assert staffed.get("/console/users/u1").status_code == 302


def test_signing_out_ends_the_session(staffed: Console) -> None:
    resp = staffed.post("/console/sign-out", {}, form_page="/console/users")
    assert resp.status_code == 302
    assert staffed.get("/console/users").status_code == 302


def test_support_may_not_edit_purposes(staffed: Console) -> None:
    resp = staffed.get("/console/purposes")
    assert resp.status_code == 403
    assert "admins only" in resp.get_data(as_text=True)


def test_the_user_page_says_the_basis_in_words(api: Api, staffed: Console) -> None:
    api.purpose(key="ads_research", defaults={"*": "granted"})
    api.choose("u1", "granted", purpose="ads_research")
    html = staffed.text("/console/users/u1")
    assert "Denied — default for EEA" in html
    assert "Granted — user&#39;s choice (settings)" in html


def test_an_override_is_placed_only_after_confirmation_and_shows_in_the_api_history(
    api: Api, staffed: Console
) -> None:
    form = {"purpose": "model_training", "state": "granted", "reason": "Regulator request"}
    form["ticket"] = "SUP-123"
    page = staffed.post("/console/users/u1/overrides", form, form_page="/console/users/u1")
    assert page.status_code == 200
    assert "Place this override?" in page.get_data(as_text=True)
    assert api.consent("u1")["basis"] == "default"

    done = staffed.post(
        "/console/users/u1/overrides", {**form, "confirmed": "yes"}, form_page="/console/users/u1"
    )
    assert done.status_code == 302
    assert "Granted — override by support-key, ticket SUP-123, no expiry" in staffed.text(
        "/console/users/u1"
    )
    placed = api.events("u1")[-1]
    assert (placed["kind"], placed["actor"], placed["role"]) == (
        "override_placed",
        "support-key",
        "support",
    )


def test_lifting_an_override_needs_a_reason_and_a_confirmation(api: Api, staffed: Console) -> None:
    override_id = api.override("u1", "granted").get_json()["id"]
    path = f"/console/users/u1/overrides/{override_id}/lift"
    missing = staffed.post(path, {"reason": ""}, form_page="/console/users/u1")
    assert missing.status_code == 422
    assert "reason is required" in missing.get_data(as_text=True)
    ask = staffed.post(path, {"reason": "Resolved"}, form_page="/console/users/u1")
    assert "Lift this override?" in ask.get_data(as_text=True)
    staffed.post(path, {"reason": "Resolved", "confirmed": "yes"}, form_page="/console/users/u1")
    lifted = api.events("u1")[-1]
    assert (lifted["kind"], lifted["reason"], lifted["actor"]) == (
        "override_lifted",
        "Resolved",
        "support-key",
    )


def test_the_timeline_is_newest_first_and_paged(api: Api, staffed: Console) -> None:
    for i in range(55):
        api.choose("u1", "granted" if i % 2 else "denied")
    first = staffed.text("/console/users/u1")
    seqs = [int(s) for s in re.findall(r'class="seq">#(\d+)', first)]
    assert len(seqs) == 50
    assert seqs == sorted(seqs, reverse=True)
    assert "Older" in first
    second = staffed.text("/console/users/u1?page=2")
    assert [int(s) for s in re.findall(r'class="seq">#(\d+)', second)][0] < seqs[-1]


@pytest.mark.parametrize("path", ["/console/users/bad%20id!", "/console/users/" + "x" * 65])
def test_a_malformed_user_id_gets_a_clear_message_not_a_500(staffed: Console, path: str) -> None:
    resp = staffed.get(path)
    assert resp.status_code == 422
    assert "is not a valid" in resp.get_data(as_text=True) or "user_id" in resp.get_data(
        as_text=True
    )


def test_a_never_seen_user_shows_the_unknown_subject_state(staffed: Console) -> None:
    assert "Denied — unknown subject" in staffed.text("/console/users/nobody")


def test_a_bad_override_form_gets_a_clear_message(staffed: Console) -> None:
    resp = staffed.post(
        "/console/users/u1/overrides",
        {"purpose": "nope", "state": "maybe", "reason": "", "ticket": ""},
        form_page="/console/users/u1",
    )
    assert resp.status_code == 422
    assert "A ticket is required." in resp.get_data(as_text=True)


def test_an_admin_sees_the_impact_before_saving_defaults(api: Api, console: Console) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    for user_id, country in [("de1", "DE"), ("de2", "DE"), ("fr1", "FR"), ("us1", "US")]:
        api.user(user_id, jurisdiction=country)
    console.sign_in(api.tokens["admin"])
    edit = "/console/purposes/model_training"
    page = console.post(edit, {"defaults": "EEA=granted\n*=granted", "unknown_subject": "denied"})
    assert "<strong>3</strong> known subjects would change" in page.get_data(as_text=True)
    assert api.call("GET", "/v1/purposes/model_training").get_json()["defaults"]["EEA"] == "denied"
    done = console.post(
        edit,
        {"defaults": "EEA=granted\n*=granted", "unknown_subject": "denied", "confirmed": "yes"},
    )
    assert done.status_code == 302
    assert api.call("GET", "/v1/purposes/model_training").get_json()["defaults"]["EEA"] == "granted"


def test_bad_defaults_get_a_clear_message(api: Api, console: Console) -> None:
    api.purpose()
    console.sign_in(api.tokens["admin"])
    edit = "/console/purposes/model_training"
    resp = console.post(edit, {"defaults": "EEA maybe", "unknown_subject": "denied"})
    assert resp.status_code == 422
    assert "SELECTOR=granted" in resp.get_data(as_text=True)
    resp = console.post(edit, {"defaults": "XX=denied", "unknown_subject": "denied"})
    assert resp.status_code == 422
    assert "ISO 3166-1" in resp.get_data(as_text=True)


def test_impact_counts_only_subjects_on_their_default(api: Api, app: Flask) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    for user_id in ("a", "b", "c", "d", "e"):
        api.user(user_id, jurisdiction="DE")
    api.user("none")  # no jurisdiction: judged by '*'
    api.choose("b", "denied")
    api.override("c", "denied")
    api.call("DELETE", "/v1/users/d", role="app")
    with app.app_context():
        counted = impact.default_change("model_training", {"*": "granted"})
        unchanged = impact.default_change("model_training", {"EEA": "denied", "*": "granted"})
        to_denied = impact.default_change("model_training", {"*": "denied"})
    assert counted == {
        "purpose": "model_training",
        "on_default": 3,
        "with_own_state": 0,
        "to_granted": 2,
        "to_denied": 0,
        "changed": 2,
        "under_restriction": 0,
    }
    assert unchanged["changed"] == 0
    assert (to_denied["to_denied"], to_denied["to_granted"]) == (1, 0)


def test_an_expired_override_no_longer_shields_a_subject_from_the_impact(
    api: Api, app: Flask
) -> None:
    api.purpose(defaults={"*": "denied"})
    api.user("a", jurisdiction="US")
    expires = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
    placed = api.override("a", "granted", expires_at=expires)
    assert placed.status_code == 201, placed.get_json()
    with app.app_context():
        assert impact.default_change("model_training", {"*": "granted"})["changed"] == 0
        time.sleep(0.4)  # expired, though no write has recorded it yet
        assert impact.default_change("model_training", {"*": "granted"})["changed"] == 1


@pytest.mark.parametrize(
    ("decision", "words"),
    [
        ({"state": "denied", "basis": "erased"}, "Denied — erased"),
        ({"state": "granted", "basis": "unknown"}, "Granted — unknown subject"),
        ({"state": "granted", "basis": "default", "default_selector": "*"}, "Granted — default"),
        ({"state": "denied", "basis": "default", "default_selector": None}, "Denied — no default"),
        (
            {
                "state": "granted",
                "basis": "override",
                "override": {"placed_by": "alice", "ticket": "SUP-1", "expires_at": "2030-01-01"},
            },
            "Granted — override by alice, ticket SUP-1, expires 2030-01-01",
        ),
    ],
)
def test_every_basis_has_words(decision: dict[str, Any], words: str) -> None:
    assert basis_words(decision).startswith(words)


def test_the_generated_secret_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = persisted_secret(str(tmp_path))
    assert persisted_secret(str(tmp_path)) == first
    assert len(first) == 64
    assert (tmp_path / "console-secret-key").stat().st_mode & 0o777 == 0o600


def test_the_api_never_opens_a_session_even_for_a_signed_in_browser(
    api: Api, staffed: Console
) -> None:
    resp = staffed.client.get(
        "/v1/purposes", headers={"Authorization": f"Bearer {api.tokens['pipeline']}"}
    )
    assert resp.status_code == 200
    assert "Set-Cookie" not in resp.headers
    assert "Cookie" not in resp.headers.get("Vary", "")


def _run_with_members(api: Api, name: str, members: list[str]) -> int:
    """Register a run as the pipeline at the head and record its members."""
    head = api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"]
    run = api.call(
        "POST",
        "/v1/runs",
        role="pipeline",
        json={"name": name, "purpose": "model_training", "as_of": head, "model": "m-7b"},
    ).get_json()
    resp = api.call(
        "PUT",
        f"/v1/runs/{run['id']}/members",
        role="pipeline",
        data="\n".join(members).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 201, resp.get_json()
    return int(run["id"])


def test_a_users_page_lists_the_runs_that_used_their_data(api: Api, staffed: Console) -> None:
    api.user("u2", jurisdiction="US")
    _run_with_members(api, "first-run", ["u1", "u2"])
    _run_with_members(api, "second-run", ["u2"])
    u1 = staffed.text("/console/users/u1")
    assert "first-run" in u1
    assert "second-run" not in u1
    assert "Yes</strong> — denied (default)" in u1  # u1 is in the EEA: denied by default
    u2 = staffed.text("/console/users/u2")
    assert "first-run" in u2
    assert "second-run" in u2
    assert "Yes</strong>" not in u2
    assert "No recorded run used" in staffed.text("/console/users/never-seen")


def test_the_runs_page_shows_affected_and_outstanding_counts(api: Api, staffed: Console) -> None:
    api.user("u2", jurisdiction="US")
    run_id = _run_with_members(api, "llm-run", ["u1", "u2"])
    api.choose("u2", "denied")
    html = staffed.text("/console/runs")
    assert "llm-run" in html
    assert f"/console/runs/{run_id}" in html
    assert re.findall(r'class="run-affected">([\d,]+)<', html) == ["2"]
    assert re.findall(r'class="run-outstanding">([\d,]+)<', html) == ["2"]
    assert "<script" not in html
    assert "style=" not in html


def test_a_runs_page_links_to_its_affected_list_and_records_remediations(
    api: Api, staffed: Console
) -> None:
    api.user("u2", jurisdiction="US")
    run_id = _run_with_members(api, "llm-run", ["u1", "u2"])
    through = api.choose("u2", "denied").get_json()["as_of"]
    page = f"/console/runs/{run_id}"
    html = staffed.text(page)
    assert "llm-run" in html
    assert "m-7b" in html
    assert "None." in html
    download = staffed.get(f"{page}/affected.text")
    assert download.status_code == 200
    assert download.get_data(as_text=True) == f"u1\tdefault\t\nu2\tchoice\t{through}\n"

    form = {"action": "excluded_from_next", "through_seq": str(through), "reason": "next run"}
    ask = staffed.post(page, form)
    assert "Record a remediation of run" in ask.get_data(as_text=True)
    assert api.call("GET", f"/v1/runs/{run_id}", role="support").get_json()["remediations"] == []
    done = staffed.post(page, {**form, "confirmed": "yes"})
    assert done.status_code == 302
    after = staffed.text(page)
    assert "excluded_from_next" in after
    assert re.findall(r'class="run-outstanding">([\d,]+)', after) == ["0"]
    run = api.call("GET", f"/v1/runs/{run_id}", role="support").get_json()
    assert [(r["action"], r["recorded_by"]) for r in run["remediations"]] == [
        ("excluded_from_next", "support-key")
    ]


def test_a_remediation_beyond_the_head_gets_a_clear_message(api: Api, staffed: Console) -> None:
    run_id = _run_with_members(api, "llm-run", ["u1"])
    resp = staffed.post(
        f"/console/runs/{run_id}",
        {"action": "retrained", "through_seq": "999999", "reason": "too far", "confirmed": "yes"},
    )
    assert resp.status_code == 422
    assert "beyond the ledger head" in resp.get_data(as_text=True)
    assert staffed.get("/console/runs/4242").status_code == 404
