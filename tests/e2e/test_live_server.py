"""The live-server fixture itself: gunicorn answers, keys work, the database is its own."""

import json
import urllib.request
from typing import Any


def test_live_server_answers_with_a_key_per_role(live: Any) -> None:
    request = urllib.request.Request(
        f"{live.base_url}/v1/purposes",
        headers={"Authorization": f"Bearer {live.tokens['pipeline']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert json.load(response) == []
