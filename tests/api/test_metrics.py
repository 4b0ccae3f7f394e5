"""GET /metrics: Prometheus text with requests by route and status, decisions by basis, the head."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from tests.factories import Api, ledger_state


def scrape(client: FlaskClient) -> dict[str, float]:
    """Every sample of /metrics by its name and labels, as Prometheus prints them."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    samples: dict[str, float] = {}
    for line in resp.get_data(as_text=True).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_need_no_key_and_count_requests_by_route_pattern_and_status(api: Api) -> None:
    api.purpose()
    route = 'route="/v1/lookup/<purpose_key:purpose>/<user_id:user_id>"'
    key = f'consent_http_requests_total{{method="GET",{route},status="200"}}'
    before = scrape(api.client).get(key, 0.0)
    for user in ("alice-1", "bob-2", "carol-3"):
        assert (
            api.call("GET", f"/v1/lookup/model_training/{user}", role="pipeline").status_code == 200
        )
    after = scrape(api.client)
    assert after[key] == before + 3
    assert after[key.replace("requests_total", "request_duration_seconds_count")] >= 3
    # Label values are route patterns: no user ID ever becomes one.
    text = api.client.get("/metrics").get_data(as_text=True)
    assert not re.search(r"alice-1|bob-2|carol-3", text)


def test_decisions_are_counted_by_basis_and_answer(api: Api) -> None:
    api.purpose(defaults={"*": "granted"})
    api.choose("u1", "denied")
    api.user("u2", jurisdiction="US")
    label = 'consent_decisions_total{{allowed="{}",basis="{}",purpose="model_training"}}'
    keys = {
        "choice": label.format("false", "choice"),
        "default": label.format("true", "default"),
        "invalid": label.format("false", "invalid"),
    }
    before = {k: scrape(api.client).get(v, 0.0) for k, v in keys.items()}
    api.call("POST", "/v1/lookup/model_training", role="pipeline", json={"user_ids": ["u1", "u2"]})
    api.client.post(
        "/v1/filter/model_training",
        data=b"u1\nu2\nnot an id\n",
        content_type="text/plain",
        headers={"Authorization": f"Bearer {api.tokens['pipeline']}"},
    ).get_data()
    after = scrape(api.client)
    assert {k: after.get(v, 0.0) - before[k] for k, v in keys.items()} == {
        "choice": 2,
        "default": 2,
        "invalid": 1,
    }


def test_the_ledger_head_and_the_index_lag_are_exposed(api: Api) -> None:
    api.purpose()
    api.choose("u1", "granted")
    samples = scrape(api.client)
    assert samples["consent_ledger_head_seq"] == ledger_state(api.app)["head"]


def test_a_refused_request_is_counted_too(api: Api) -> None:
    key = 'consent_http_requests_total{method="GET",route="/v1/purposes",status="401"}'
    before = scrape(api.client).get(key, 0.0)
    assert api.client.get("/v1/purposes").status_code == 401
    assert scrape(api.client)[key] == before + 1
