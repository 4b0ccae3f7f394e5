"""Single lookups of random known and unknown IDs, checked against the population."""

from __future__ import annotations

import numpy as np

from bench import clients
from bench.population import BASIS_NAMES, ID_BASE
from bench.traffic import draw_indices
from bench.workloads.session import Session

SPOT_CHECKS = 200


def spot_check_lookups(s: Session) -> None:
    """Compare single-lookup answers for random known and unknown IDs with the population."""
    rng = np.random.default_rng(11)
    indices = draw_indices(s.population, SPOT_CHECKS, rng)
    expected = s.population.allowed_for(indices)
    basis = s.population.basis
    conn = clients.connect(s.server.port, timeout=30)
    wrong: list[str] = []
    try:
        for index, allowed in zip(indices.tolist(), expected.tolist(), strict=True):
            uid = str(ID_BASE + index)
            status, body = clients.request_json(conn, "GET", s.lookup_path(uid), s.pipeline_token)
            known = index < s.population.size
            want_basis = BASIS_NAMES[basis[index]] if known else "unknown"
            if (
                status != 200
                or body.get("allowed") is not allowed
                or body.get("basis") != want_basis
                or body.get("user_id") != uid
                or not isinstance(body.get("as_of"), int)
            ):
                got = f"{status} {str(body)[:120]}"
                wrong.append(f"{uid}: got {got}, want allowed={allowed} basis={want_basis}")
    finally:
        conn.close()
    s.result.check(
        f"single lookup answers {SPOT_CHECKS} random IDs right",
        not wrong,
        f"{len(wrong)} wrong, e.g. {wrong[0]}" if wrong else "",
    )
