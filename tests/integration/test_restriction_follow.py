"""A polled index and restrictions: the writer counts with the index caught up inside its own
transaction, and the index reflects placing and lifting as soon as it follows the events."""

from __future__ import annotations

from typing import Any

from flask import Flask

from service.readindex.follow import Follower
from tests.factories import Api
from tests.integration.test_index_follower import eventually, lookup, polled  # noqa: F401

ORDER = {
    "authority": "Regulator",
    "instrument": "Order",
    "purposes": ["model_training"],
    "jurisdictions": ["US"],
    "window": None,
    "reason": "court order",
    "ticket": "LEG-1",
}


def test_a_restriction_reaches_the_polled_index_and_counts_with_it(
    polled: tuple[Flask, Api],  # noqa: F811
) -> None:
    app, api = polled
    api.purpose()
    for user_id in ("1", "2", "3"):
        api.user(user_id, jurisdiction="US")
    api.choose("3", "denied")
    follower: Follower = app.extensions["consent_index"]
    assert eventually(lambda: lookup(api, "1")["basis"] == "default")
    assert eventually(lambda: follower.index is not None)
    # Written after the index's last poll, perhaps: the writer follows it up to its head.
    api.user("4", jurisdiction="US")
    placed = api.call("POST", "/v1/restrictions", json=ORDER)
    assert placed.status_code == 201, placed.get_json()
    body: dict[str, Any] = placed.get_json()
    assert body["changed"]["placed"] == {"model_training": 3}  # 1, 2 and 4; 3 chose denied
    assert eventually(lambda: lookup(api, "2")["basis"] == "restriction")
    assert lookup(api, "2")["restriction_id"] == body["id"]
    lifted = api.call("DELETE", f"/v1/restrictions/{body['id']}?reason=withdrawn")
    assert lifted.get_json()["changed"]["lifted"] == {"model_training": 3}
    assert eventually(lambda: lookup(api, "2")["basis"] == "default")
