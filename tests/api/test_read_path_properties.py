"""Property test: every pipeline read agrees with an independent replay of the ledger's events.

Hypothesis generates random histories (registrations, jurisdiction changes, choices, overrides
placed, lifted and expiring, policy changes, erasures, time passing). The test keeps its own
model of what each operation should do, replays the events the ledger recorded with its own
resolution rule, and checks single lookup, batch lookup, the text and Arrow filters, snapshots
and the change feed against that replay, at the head and at random earlier `as_of` values.
Training runs are registered at random seqs among them, with members drawn from the users, the
bystanders and never-seen IDs, and remediated: each run's not_allowed, violations, affected
list (with the event that denied each member), outstanding count and each user's runs are
checked against the same replay. Restrictions (whole-jurisdiction and windowed) are placed and
lifted, policy changes carry legal bases (not_offered among them), notices are published and
choices name the notice shown: every read is asked with and without content times (inside,
outside and on the edges of the windows), and each decision's basis, legal_basis,
restriction_id and notice_version are checked against the replay.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import service.ledger.transaction
from service import create_app
from service.domain.events import KEY_KINDS
from service.runtime.extensions import db
from tests.conftest import ON_POSTGRES, Clock, app_config, clean_database
from tests.factories import Api

PURPOSE = "model_training"
USERS = ("u0", "u1", "u2", "u3")
NEVER_SEEN = "never-seen-7"
# Registered before the index is built and never touched again: they reach the index through
# its build, and only policy changes move their answers.
BYSTANDERS = {"100": "DE", "20": "US", "by:stander": None, "3": "NO"}
JURISDICTIONS = (None, "DE", "NO", "US", "BR")
# Written out here, independently of the service's own table.
EEA = set(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
) | {"IS", "LI", "NO"}
STATES = ("granted", "denied")
MEMBER_POOL = (*USERS, *BYSTANDERS, NEVER_SEEN, "55")
ACTIONS = ("retrained", "excluded_from_next", "unlearned", "retained")
SELECTORS = ("DE", "US", "EEA", "*")
LEGAL = ("consent", "legitimate_interest", "not_offered")
# Window edges and content times: the probe times fall inside, outside and exactly on the edges.
EDGES = tuple(datetime(2024, m, 1, tzinfo=UTC) for m in (3, 6, 8))
PROBE_TIMES: tuple[datetime | None, ...] = (
    None,
    datetime(2024, 1, 15, tzinfo=UTC),
    *EDGES,
    datetime(2024, 7, 1, tzinfo=UTC),
    datetime(2025, 1, 1, tzinfo=UTC),
)
NOTICES = ("v1", "v2", "2024-06")
Window = tuple[datetime, datetime] | None

# ---------------------------------------------------------------- operations ----------------

users = st.sampled_from(USERS)
states = st.sampled_from(STATES)
policies = st.tuples(
    st.dictionaries(st.sampled_from(SELECTORS), states, max_size=4),
    states,
    # Mostly no legal bases: not_offered everywhere would hide every other branch.
    st.one_of(
        st.just({}),
        st.dictionaries(st.sampled_from(SELECTORS), st.sampled_from(LEGAL), max_size=2),
    ),
)
windows = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(EDGES), st.sampled_from(EDGES)).filter(lambda w: w[0] < w[1]),
)
overrides = st.tuples(st.just("override"), users, states, st.one_of(st.none(), st.integers(1, 90)))
operations = st.one_of(
    st.tuples(st.just("register"), users, st.sampled_from(JURISDICTIONS)),
    st.tuples(st.just("choose"), users, states, st.one_of(st.none(), st.sampled_from(NOTICES))),
    st.tuples(
        st.just("restrict"),
        st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=2, unique=True),
        windows,
    ),
    st.tuples(st.just("unrestrict"), st.integers(0, 3)),
    st.tuples(st.just("notice"), st.sampled_from(NOTICES)),
    # Overrides and lifts twice as likely: their seq boundaries are where as_of bugs hide.
    overrides,
    overrides,
    st.tuples(st.just("lift"), users),
    st.tuples(st.just("lift"), users),
    st.tuples(st.just("policy"), policies),
    st.tuples(st.just("erase"), users),
    st.tuples(st.just("tick"), st.integers(1, 60)),
    st.tuples(
        st.just("run"),
        st.lists(st.sampled_from(MEMBER_POOL), max_size=6, unique=True),
        st.floats(0, 1),
    ),
    st.tuples(st.just("remediate"), st.integers(0, 3), st.floats(0, 1), st.sampled_from(ACTIONS)),
)


# ---------------------------------------------------------------- reference model -----------


@dataclass
class Ref:
    """State as the test understands it: built by replaying events, or by applying operations."""

    policy: tuple[dict[str, str], str, dict[str, str]] | None = None
    subjects: dict[str, str | None] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    choices: dict[str, str] = field(default_factory=dict)
    # override id -> (user, state, expires_at, placed order)
    overrides: dict[int, tuple[str, str, datetime | None]] = field(default_factory=dict)
    # restriction id -> (selectors, window); ids grow with placing order
    restrictions: dict[int, tuple[frozenset[str], Window]] = field(default_factory=dict)
    notices: set[str] = field(default_factory=set)
    choice_notice: dict[str, str | None] = field(default_factory=dict)

    def copy(self) -> Ref:
        """A deep enough copy for replay snapshots."""
        return replace(
            self,
            subjects=dict(self.subjects),
            erased=set(self.erased),
            choices=dict(self.choices),
            overrides=dict(self.overrides),
            restrictions=dict(self.restrictions),
            notices=set(self.notices),
            choice_notice=dict(self.choice_notice),
        )

    def legal_basis(self, user: str) -> str:
        """The purpose's legal basis for the user's jurisdiction (consent where none is set)."""
        assert self.policy is not None
        return lookup_selector(self.policy[2], self.subjects.get(user)) or "consent"

    def restriction(self, user: str, when: datetime | None) -> int | None:
        """The restriction denying the user's content of this time (the first placed), if any."""
        j = self.subjects.get(user)
        for rid, (selectors, window) in sorted(self.restrictions.items()):
            covered = "*" in selectors or (j is not None and (j in selectors or (
                j in EEA and "EEA" in selectors)))  # fmt: skip
            if covered and (window is None or when is None or window[0] <= when < window[1]):
                return rid
        return None

    def effective(self, user: str, at: datetime, when: datetime | None = None) -> tuple[str, str]:
        """(state, basis) for a user at a time, for content of time `when`, by DESIGN.md."""
        assert self.policy is not None
        defaults, unknown, _ = self.policy
        if user in self.erased:
            return "denied", "erased"
        if self.restriction(user, when) is not None:
            return "denied", "restriction"
        if self.legal_basis(user) == "not_offered":
            return "denied", "not_offered"
        if user not in self.subjects:
            return unknown, "unknown"
        live = [
            (oid, s)
            for oid, (u, s, exp) in self.overrides.items()
            if u == user and (exp is None or exp > at)
        ]
        if live:
            return max(live)[1], "override"
        if user in self.choices:
            return self.choices[user], "choice"
        return lookup_selector(defaults, self.subjects[user]) or "denied", "default"


def lookup_selector(values: dict[str, str], j: str | None) -> str | None:
    """A selector map's value for a jurisdiction: country, then EEA, then `*`."""
    if j is not None and j in values:
        return values[j]
    if j is not None and j in EEA and "EEA" in values:
        return values["EEA"]
    return values.get("*")


def parse_time(text: str) -> datetime:
    """RFC 3339 as the API writes it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Replay:
    """The ledger's events replayed: the state after each seq, and each event's time."""

    events: list[dict[str, Any]]
    after: dict[int, Ref] = field(default_factory=dict)
    at: dict[int, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ref = Ref()
        for e in self.events:
            before = ref.copy()
            self._apply(ref, e)
            self.after[e["seq"]] = ref.copy()
            self.at[e["seq"]] = parse_time(e["at"])
            self._check_before_after(before, ref, e)

    @staticmethod
    def _apply(ref: Ref, e: dict[str, Any]) -> None:
        kind, user, data = e["kind"], e["user_id"], e["data"] or {}
        if kind in ("purpose_created", "policy_changed"):
            legal = dict(data.get("legal_bases") or {})
            ref.policy = (dict(data["defaults"]), data["unknown_subject"], legal)
        elif kind == "restriction_placed":
            w = data["window"]
            window = None if w is None else (parse_time(w["from"]), parse_time(w["to"]))
            ref.restrictions[data["restriction_id"]] = (frozenset(data["jurisdictions"]), window)
        elif kind == "restriction_lifted":
            del ref.restrictions[data["restriction_id"]]
        elif kind == "notice_published":
            ref.notices.add(data["version"])
        elif kind == "subject_registered":
            ref.subjects[user] = data["jurisdiction"]
        elif kind == "jurisdiction_changed":
            ref.subjects[user] = data["to"]
        elif kind == "choice_set":
            ref.choices[user] = data["state"]
            ref.choice_notice[user] = data.get("notice_version")
        elif kind == "override_placed":
            expires = parse_time(data["expires_at"]) if data["expires_at"] else None
            ref.overrides[data["override_id"]] = (user, data["state"], expires)
        elif kind == "override_lifted":
            del ref.overrides[data["override_id"]]
        elif kind == "subject_erased":
            ref.erased.add(user)

    def _check_before_after(self, before: Ref, after: Ref, e: dict[str, Any]) -> None:
        if e["user_id"] is None or e["purpose"] is None:
            return
        at = parse_time(e["at"])
        then = at
        if e["kind"] == "override_expired":
            then = parse_time(e["data"]["expires_at"]) - timedelta(microseconds=1)
        assert e["before"] == before.effective(e["user_id"], then)[0], e
        assert e["after"] == after.effective(e["user_id"], at)[0], e

    def state(self, seq: int) -> tuple[Ref, datetime]:
        """State and event time as of seq."""
        if seq == 0:
            return Ref(), datetime(1970, 1, 1, tzinfo=UTC)
        return self.after[seq], self.at[seq]


# ---------------------------------------------------------------- the system under test -----


@dataclass
class World:
    """The app, its API keys, the test's own model of the operations, and the clock."""

    api: Api
    clock: Clock
    model: Ref = field(default_factory=Ref)
    next_override: dict[str, int] = field(default_factory=dict)
    # run id -> the members sent (the replay says everything else about the run)
    runs: dict[int, list[str]] = field(default_factory=dict)
    remediated: dict[int, int] = field(default_factory=dict)  # run id -> last through_seq
    purpose_seq: int = 1  # runs can use answers from here on

    def head(self) -> int:
        """The ledger head now."""
        return int(self.pipeline("GET", "/v1/changes?limit=1").get_json()["head"])

    def run(self, op: tuple[Any, ...]) -> None:  # noqa: C901  (one branch per operation)
        """Apply one operation to the ledger and to the model; their outcomes must agree."""
        kind = op[0]
        m = self.model
        if kind == "tick":
            self.clock.now += timedelta(minutes=op[1])
            return
        if kind in ("run", "remediate"):
            self.run_op(op)
            return
        if kind == "policy":
            (defaults, unknown, legal) = op[1]
            resp = self.api.call(
                "PATCH",
                f"/v1/purposes/{PURPOSE}",
                json={"defaults": defaults, "unknown_subject": unknown, "legal_bases": legal},
            )
            assert resp.status_code == 200, resp.get_json()
            m.policy = (dict(defaults), unknown, dict(legal))
            return
        if kind in ("restrict", "unrestrict", "notice"):
            self.order_op(op)
            return
        user = op[1]
        erased = user in m.erased
        if kind == "register":
            resp = self.api.call(
                "PUT", f"/v1/users/{user}", role="app", json={"jurisdiction": op[2]}
            )
            assert resp.status_code == (409 if erased else 200), resp.get_json()
            if not erased:
                m.subjects[user] = op[2]
        elif kind == "choose":
            notice = op[3]
            body: dict[str, Any] = {"state": op[2], "source": "settings"}
            if notice is not None:
                body["notice_version"] = notice
            resp = self.api.call(
                "PUT", f"/v1/users/{user}/consents/{PURPOSE}", role="app", json=body
            )
            unknown_notice = notice is not None and notice not in m.notices
            status = 422 if unknown_notice else 409 if erased else 200
            # Either refusal may come first for an erased user naming an unknown notice.
            allowed = {409, 422} if unknown_notice and erased else {status}
            assert resp.status_code in allowed, resp.get_json()
            if resp.status_code == 200:
                m.subjects.setdefault(user, None)
                m.choices[user] = op[2]
                m.choice_notice[user] = notice
        elif kind == "override":
            expires = None if op[3] is None else self.clock.now + timedelta(minutes=op[3])
            active = [
                oid
                for oid, (u, _, exp) in m.overrides.items()
                if u == user and (exp is None or exp > self.clock.now)
            ]
            extra = {} if expires is None else {"expires_at": expires.isoformat()}
            resp = self.api.override(user, op[2], **extra)
            assert resp.status_code == (409 if erased or active else 201), resp.get_json()
            if resp.status_code == 201:
                m.subjects.setdefault(user, None)
                m.overrides[resp.get_json()["id"]] = (user, op[2], expires)
        elif kind == "lift":
            active = sorted(
                oid
                for oid, (u, _, exp) in m.overrides.items()
                if u == user and (exp is None or exp > self.clock.now)
            )
            if not active or erased:
                return
            resp = self.api.call(
                "DELETE",
                f"/v1/users/{user}/overrides/{active[-1]}?reason=property+test",
                role="support",
            )
            assert resp.status_code == 200, resp.get_json()
            del m.overrides[active[-1]]
        elif kind == "erase":
            resp = self.api.call("DELETE", f"/v1/users/{user}", role="app")
            assert resp.status_code == 200, resp.get_json()
            m.subjects.setdefault(user, None)
            m.erased.add(user)

    def order_op(self, op: tuple[Any, ...]) -> None:
        """Place or lift a restriction, or publish a notice version."""
        m = self.model
        if op[0] == "notice":
            resp = self.api.call(
                "PUT",
                f"/v1/purposes/{PURPOSE}/notice",
                json={"version": op[1], "text": f"Notice {op[1]}: we train on your posts."},
            )
            assert resp.status_code in (200, 201), resp.get_json()
            m.notices.add(op[1])
            return
        if op[0] == "restrict":
            window: Window = op[2]
            body: dict[str, Any] = {
                "authority": "DPC",
                "instrument": "undertaking",
                "purposes": [PURPOSE],
                "jurisdictions": op[1],
                "window": None
                if window is None
                else {
                    "from": window[0].isoformat(),
                    "to": window[1].isoformat(),
                    "time_basis": "processed",
                },
                "reason": "property test",
                "ticket": "REG-1",
            }
            resp = self.api.call("POST", "/v1/restrictions", json=body)
            assert resp.status_code == 201, resp.get_json()
            m.restrictions[resp.get_json()["id"]] = (frozenset(op[1]), window)
            return
        if not m.restrictions:
            return
        rid = sorted(m.restrictions)[op[1] % len(m.restrictions)]
        resp = self.api.call("DELETE", f"/v1/restrictions/{rid}?reason=property+test")
        assert resp.status_code == 200, resp.get_json()
        del m.restrictions[rid]

    def run_op(self, op: tuple[Any, ...]) -> None:
        """Register a run at a random earlier seq and record its members, or remediate one."""
        head = self.head()
        if op[0] == "run":
            as_of = max(self.purpose_seq, round(op[2] * head))
            resp = self.pipeline(
                "POST",
                "/v1/runs",
                json={"name": f"run-{len(self.runs)}", "purpose": PURPOSE, "as_of": as_of},
            )
            assert resp.status_code == 201, resp.get_json()
            run_id = resp.get_json()["id"]
            recorded = self.pipeline(
                "PUT",
                f"/v1/runs/{run_id}/members",
                data="".join(f"{u}\n" for u in op[1]).encode(),
                headers={"Content-Type": "text/plain"},
            )
            assert recorded.status_code == 201, recorded.get_json()
            self.runs[run_id] = list(op[1])
            return
        if not self.runs:
            return
        run_id = sorted(self.runs)[op[1] % len(self.runs)]
        run = self.pipeline("GET", f"/v1/runs/{run_id}").get_json()
        low = self.remediated.get(run_id, run["as_of"])
        through = low + round(op[2] * (head - low))
        resp = self.api.call(
            "POST",
            f"/v1/runs/{run_id}/remediations",
            role="support",
            json={"action": op[3], "through_seq": through, "reason": "property test"},
        )
        assert resp.status_code == 201, resp.get_json()
        self.remediated[run_id] = through

    def pipeline(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request as the pipeline."""
        return self.api.call(method, path, role="pipeline", **kwargs)


def all_events(world: World, feed: str = "audit", role: str = "admin") -> list[dict[str, Any]]:
    """A whole feed (by default the audit feed: every event), followed page by page."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = world.api.call("GET", f"/v1/{feed}?after={after}&limit=7", role=role).get_json()
        events.extend(page["events"])
        after = page["next_after"]
        if not page["has_more"]:
            return events


def arrow_body(ids: list[str | None]) -> bytes:
    """An Arrow IPC stream of one string column, in two batches."""
    sink = io.BytesIO()
    schema = pa.schema([("user_id", pa.string())])
    with pa.ipc.new_stream(sink, schema) as writer:
        half = len(ids) // 2
        for part in (ids[:half], ids[half:]):
            writer.write_batch(pa.record_batch([pa.array(part, pa.string())], schema=schema))
    return sink.getvalue()


def check_reads_as_of(world: World, replay: Replay, seq: int, as_of: str) -> None:
    """Every read as of seq (asked as `as_of`) agrees with the replay."""
    ref, at = replay.state(seq)
    probe = [*USERS, *BYSTANDERS, NEVER_SEEN]
    if ref.policy is None:
        resp = world.pipeline("GET", f"/v1/lookup/{PURPOSE}/u0?as_of={as_of}")
        assert resp.status_code == 404
        return
    expected = {u: ref.effective(u, at) for u in probe}
    allowed = [u for u in probe if expected[u][0] == "granted"]

    for u in probe:
        got = world.pipeline("GET", f"/v1/lookup/{PURPOSE}/{u}?as_of={as_of}").get_json()
        assert (got["state"], got["basis"]) == expected[u], (u, seq, got)
        assert got["allowed"] is (expected[u][0] == "granted")
        assert got["as_of"] == seq
        check_decision_facts(ref, u, None, got)
    check_reads_with_times(world, ref, at, seq, as_of, probe)

    batch = world.pipeline(
        "POST", f"/v1/lookup/{PURPOSE}", json={"user_ids": probe, "as_of": as_of}
    ).get_json()
    assert batch["allowed"] == allowed
    assert batch["as_of"] == seq
    assert batch["denied"] == [u for u in probe if u not in allowed]

    lines = [*probe, "not valid!", "", *reversed(probe)]
    text = world.pipeline(
        "POST",
        f"/v1/filter/{PURPOSE}?as_of={as_of}",
        data="\n".join(lines).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert text.headers["Consent-As-Of"] == str(seq)
    assert text.data.decode().splitlines() == [u for u in lines if u in allowed]

    arrow_ids: list[str | None] = [*probe, None, "bad id"]
    arrow = world.pipeline(
        "POST",
        f"/v1/filter/{PURPOSE}?as_of={as_of}",
        data=arrow_body(arrow_ids),
        headers={"Content-Type": "application/vnd.apache.arrow.stream"},
    )
    mask = pa.ipc.open_stream(arrow.data).read_all().column("allowed").to_pylist()
    assert mask == [u in allowed for u in arrow_ids]

    for set_name in ("allowed", "denied"):
        snap = world.pipeline(
            "GET", f"/v1/snapshots/{PURPOSE}?set={set_name}&format=csv&as_of={as_of}"
        )
        assert snap.headers["Consent-As-Of"] == str(seq)
        rows = list(csv.DictReader(io.StringIO(snap.data.decode())))
        want = sorted(
            u for u in ref.subjects if (expected[u][0] == "granted") == (set_name == "allowed")
        )
        assert [r["user_id"] for r in rows] == want
        assert all(r["basis"] == expected[r["user_id"]][1] for r in rows)


def rfc3339(when: datetime) -> str:
    """A time as the API takes it."""
    return when.isoformat().replace("+00:00", "Z")


def check_decision_facts(ref: Ref, user: str, when: datetime | None, got: dict[str, Any]) -> None:
    """A decision's legal basis, restriction and notice version agree with the replay."""
    assert got["legal_basis"] == ref.legal_basis(user), (user, got)
    if got["basis"] == "restriction":
        assert got["restriction_id"] == ref.restriction(user, when), (user, got)
    if got["basis"] == "choice":
        assert got.get("notice_version") == ref.choice_notice.get(user), (user, got)


def check_reads_with_times(
    world: World, ref: Ref, at: datetime, seq: int, as_of: str, probe: list[str]
) -> None:
    """Single, batch, text and Arrow filter reads with content times agree with the replay."""
    pairs = [(u, t) for u in probe for t in PROBE_TIMES]
    want = [ref.effective(u, at, t) for u, t in pairs]
    for (u, t), expected in zip(pairs, want, strict=True):
        if t is None:
            continue
        got = world.pipeline(
            "GET", f"/v1/lookup/{PURPOSE}/{u}?as_of={as_of}&content_time={rfc3339(t)}"
        ).get_json()
        assert (got["state"], got["basis"]) == expected, (u, t, seq, got)
        check_decision_facts(ref, u, t, got)

    # Batch: distinct IDs only, so one time each, a different one per user and seq.
    times: dict[str, datetime | None] = {
        u: PROBE_TIMES[(i + seq) % len(PROBE_TIMES)] for i, u in enumerate(probe)
    }
    batch = world.pipeline(
        "POST",
        f"/v1/lookup/{PURPOSE}",
        json={
            "user_ids": probe,
            "content_times": [None if t is None else rfc3339(t) for t in times.values()],
            "as_of": as_of,
        },
    ).get_json()
    assert batch["allowed"] == [
        u for u in probe if ref.effective(u, at, times[u])[0] == "granted"
    ], (seq, batch)

    lines = [u if t is None else f"{u}\t{rfc3339(t)}" for u, t in pairs]
    text = world.pipeline(
        "POST",
        f"/v1/filter/{PURPOSE}?as_of={as_of}",
        data="\n".join(lines).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert text.status_code == 200, text.data
    allowed = [u for (u, _), e in zip(pairs, want, strict=True) if e[0] == "granted"]
    assert text.data.decode().splitlines() == allowed, seq

    sink = io.BytesIO()
    schema = pa.schema([("user_id", pa.string()), ("content_time", pa.timestamp("us", "UTC"))])
    with pa.ipc.new_stream(sink, schema) as writer:
        half = len(pairs) // 2
        for part in (pairs[:half], pairs[half:]):
            ids = pa.array([u for u, _ in part], pa.string())
            ts = pa.array([t for _, t in part], pa.timestamp("us", "UTC"))
            writer.write_batch(pa.record_batch([ids, ts], schema=schema))
    arrow = world.pipeline(
        "POST",
        f"/v1/filter/{PURPOSE}?as_of={as_of}",
        data=sink.getvalue(),
        headers={"Content-Type": "application/vnd.apache.arrow.stream"},
    )
    assert arrow.status_code == 200, arrow.data
    mask = pa.ipc.open_stream(arrow.data).read_all().column("allowed").to_pylist()
    assert mask == [e[0] == "granted" for e in want], seq


def member_order(user_id: str) -> tuple[int, int, str]:
    """Numeric IDs (canonical, at most 18 digits) by value first, then the rest by byte order."""
    numeric = (
        user_id.isascii()
        and user_id.isdigit()
        and (user_id == "0" or user_id[0] != "0")
        and len(user_id) <= 18
    )
    return (0, int(user_id), "") if numeric else (1, 0, user_id)


def denied_since(replay: Replay, user: str, as_of: int, seq: int) -> int | None:
    """The seq in (as_of, seq] that began the user's denial still in force at seq, or None
    when they were denied all along since as_of."""
    for s in range(seq, as_of, -1):
        before, at = replay.state(s - 1)
        if before.effective(user, at)[0] == "granted":
            return s
    return None


def check_runs_as_of(world: World, replay: Replay, seq: int) -> None:
    """Every run read as of seq agrees with the replay: counts, violations, affected lists
    (with the event that denied each member) and each user's runs."""
    registered = {e["data"]["run_id"]: e for e in replay.events if e["kind"] == "run_registered"}
    recorded = {
        e["data"]["run_id"]: e["seq"] for e in replay.events if e["kind"] == "run_members_recorded"
    }
    used: dict[str, list[tuple[int, bool]]] = {u: [] for u in MEMBER_POOL}
    ref, at = replay.state(seq)
    for run_id, members in world.runs.items():
        event = registered[run_id]
        resp = world.pipeline("GET", f"/v1/runs/{run_id}?as_of={seq}")
        if event["seq"] > seq:
            assert resp.status_code == 404
            continue
        doc = resp.get_json()
        if recorded[run_id] > seq:
            assert doc["members"] is None, doc
            assert doc["affected"] is None, doc
            continue
        as_of = event["data"]["as_of"]
        then, then_at = replay.state(as_of)
        ordered = sorted(members, key=member_order)
        violations = [u for u in ordered if then.effective(u, then_at)[0] != "granted"]
        assert doc["members"] == len(members), doc
        assert doc["not_allowed"] == len(violations), doc
        lines = world.pipeline("GET", f"/v1/runs/{run_id}/violations?as_of={seq}").data
        assert lines.decode().splitlines() == [
            f"{u}\t{then.effective(u, then_at)[1]}" for u in violations
        ]

        affected = [u for u in ordered if ref.effective(u, at)[0] == "denied"]
        want = [
            {
                "user_id": u,
                "basis": ref.effective(u, at)[1],
                "seq": denied_since(replay, u, as_of, seq),
            }
            for u in affected
        ]
        got = world.pipeline("GET", f"/v1/runs/{run_id}/affected?format=ndjson&as_of={seq}")
        assert got.headers["Consent-As-Of"] == str(seq)
        assert [json.loads(line) for line in got.data.decode().splitlines()] == want, run_id
        throughs = [
            e["data"]["through_seq"]
            for e in replay.events
            if e["kind"] == "run_remediated" and e["data"]["run_id"] == run_id and e["seq"] <= seq
        ]
        outstanding = [
            r for r in want if not throughs or (r["seq"] is not None and r["seq"] > throughs[-1])
        ]
        assert (doc["affected"], doc["outstanding"]) == (len(want), len(outstanding)), doc
        for u in members:
            used[u].append((run_id, u in affected))

    for user, runs in used.items():
        resp = world.pipeline("GET", f"/v1/users/{user}/runs?as_of={seq}").get_json()
        expected = [(run_id, hit) for run_id, hit in sorted(runs, reverse=True)]
        assert [(r["id"], r["affected"]) for r in resp["runs"]] == expected, user


def check_batch_as_of(world: World, replay: Replay, seq: int) -> None:
    """Batch lookup as of seq agrees with the replay (or is a 404 before the purpose existed)."""
    ref, at = replay.state(seq)
    probe = [*USERS, *BYSTANDERS, NEVER_SEEN]
    resp = world.pipeline("POST", f"/v1/lookup/{PURPOSE}", json={"user_ids": probe, "as_of": seq})
    if ref.policy is None:
        assert resp.status_code == 404
        return
    allowed = [u for u in probe if ref.effective(u, at)[0] == "granted"]
    assert resp.get_json()["allowed"] == allowed, (seq, resp.get_json())


@contextmanager
def fresh_world(template_db: str, directory: Path, clock: Clock, index: str) -> Iterator[World]:
    """A new app on a clean database for one generated history."""
    config = {**app_config(clean_database(template_db, directory)), "CONSENT_INDEX": index}
    app: Flask = create_app(config)
    try:
        world = World(Api(app, app.test_client()), clock)
        world.api.purpose(defaults={"EEA": "denied", "*": "granted"})
        world.model.policy = ({"EEA": "denied", "*": "granted"}, "denied", {})
        world.purpose_seq = world.head()
        for user_id, jurisdiction in BYSTANDERS.items():
            world.api.user(user_id, jurisdiction=jurisdiction)
            world.model.subjects[user_id] = jurisdiction
        # A first read builds the in-memory index now, so the whole history after it reaches
        # the index as events and earlier as_of values are answered from it, corrected.
        assert world.pipeline("GET", f"/v1/lookup/{PURPOSE}/u0").status_code == 200
        yield world
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("index", ["sync", "off"], ids=["in-memory-index", "database"])
@settings(
    max_examples=20 if ON_POSTGRES else 30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(operations, min_size=1, max_size=30),
    picks=st.lists(st.floats(0, 1), min_size=2, max_size=4),
)
def test_every_read_agrees_with_a_replay_of_the_events_at_any_as_of(
    index: str,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    history: list[tuple[Any, ...]],
    picks: list[float],
) -> None:
    clock = Clock(datetime.now(UTC) - timedelta(days=2))
    monkeypatch.setattr(service.ledger.transaction, "utcnow", clock)
    with fresh_world(template_db, tmp_path, clock, index) as world:
        for op in history:
            world.run(op)
        events = all_events(world)
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), "the feed skipped or repeated a seq"
        changes = all_events(world, "changes", "pipeline")
        assert changes == [e for e in events if e["kind"] not in KEY_KINDS]
        replay = Replay(events)
        head = seqs[-1]

        # The events tell the same story as the operations did.
        final, _ = replay.state(head)
        assert final.subjects == world.model.subjects
        assert final.erased == world.model.erased
        assert final.choices == {u: s for u, s in world.model.choices.items()}
        assert final.policy == world.model.policy
        assert set(final.overrides) == set(world.model.overrides)
        assert final.restrictions == world.model.restrictions
        assert final.notices == world.model.notices
        assert {u: final.choice_notice.get(u) for u in final.choices} == {
            u: world.model.choice_notice.get(u) for u in world.model.choices
        }

        # The cheapest read at every seq, every read at the head and a few random seqs.
        for seq in range(head + 1):
            check_batch_as_of(world, replay, seq)
        check_reads_as_of(world, replay, head, str(head))
        check_runs_as_of(world, replay, head)
        for p in picks:
            seq = round(p * head)
            check_reads_as_of(world, replay, seq, str(seq))
            check_runs_as_of(world, replay, seq)
        # As an RFC 3339 time: the last seq whose event happened at or before it.
        when = replay.at[max(1, round(picks[0] * head))]
        by_time = max(s for s in seqs if replay.at[s] <= when)
        check_reads_as_of(world, replay, by_time, when.isoformat().replace("+00:00", "Z"))
