"""Every event kind has one type whose payload survives the row it is stored in, unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from service.domain import events as ev
from service.domain.policy import Policy

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)

EXAMPLES: list[ev.LedgerEvent] = [
    ev.SubjectRegistered(user_id="u1", purpose="p", jurisdiction="DE"),
    ev.SubjectRegistered(user_id="u1", purpose=None, jurisdiction=None),
    ev.JurisdictionChanged(user_id="u1", purpose="p", previous="DE", jurisdiction=None),
    ev.SubjectErased(user_id="u1", purpose="p"),
    ev.ChoiceSet(user_id="u1", purpose="p", state="denied", previous=None, source="api", version=3),
    ev.OverridePlaced(user_id="u1", purpose="p", override_id=7, state="granted", expires_at=AT),
    ev.OverridePlaced(user_id="u1", purpose="p", override_id=8, state="denied", expires_at=None),
    ev.OverrideLifted(user_id="u1", purpose="p", override_id=7),
    ev.OverrideExpired(user_id="u1", purpose="p", override_id=7, expires_at=AT),
    ev.PurposeCreated(purpose="p", title="P", defaults={"*": "granted"}, unknown_subject="denied"),
    ev.PolicyChanged(
        purpose="p",
        before={"defaults": {"*": "granted"}},
        after={"defaults": {"*": "denied"}},
        defaults={"*": "denied"},
        unknown_subject="denied",
    ),
    ev.PurposeUpdated(
        purpose="p",
        before={"title": "P"},
        after={"title": "Q"},
        defaults={"*": "denied"},
        unknown_subject="denied",
    ),
    ev.KeyCreated(name="alice", role="support"),
    ev.KeyRevoked(name="alice", role="support"),
    ev.SigningKeyRotated(kid="k2", previous_kid="k1", previous_expires_at=AT),
    ev.SigningKeyRotated(kid="k1"),
    ev.RunRegistered(
        purpose="p",
        run_id=3,
        name="llm-2026-03",
        as_of=41,
        model="m-7b",
        dataset={"uri": "s3://b/k", "sha256": "ab" * 32, "rows_in": 10, "rows_kept": 8},
    ),
    ev.RunRegistered(purpose="p", run_id=4, name="bare", as_of=0, model=None, dataset=None),
    ev.RunMembersRecorded(
        purpose="p", run_id=3, name="llm-2026-03", members=8, not_allowed=1, sha256="cd" * 32
    ),
    ev.RunRemediated(
        purpose="p",
        run_id=3,
        name="llm-2026-03",
        remediation_id=1,
        action="excluded_from_next",
        through_seq=90,
    ),
    ev.RestrictionPlaced(
        purpose="p",
        restriction_id=2,
        authority="DPC",
        instrument="undertaking 2024-08",
        purposes=("p", "q"),
        jurisdictions=("EEA",),
        window_from=datetime(2024, 5, 16, tzinfo=UTC),
        window_to=datetime(2024, 8, 1, tzinfo=UTC),
        time_basis="processed",
        changed=12,
    ),
    ev.RestrictionPlaced(
        purpose="q",
        restriction_id=3,
        authority="legal",
        instrument="hold",
        purposes=("q",),
        jurisdictions=("*",),
    ),
    ev.RestrictionLifted(purpose="p", restriction_id=2, changed=12),
    ev.NoticePublished(purpose="p", version="2024-06", text="We train on posts.", url=None),
    ev.ChoiceSet(
        user_id="u1",
        purpose="p",
        state="granted",
        previous="denied",
        source="settings",
        version=4,
        notice_version="2024-06",
    ),
    ev.PolicyChanged(
        purpose="p",
        before={"legal_bases": {}},
        after={"legal_bases": {"EEA": "not_offered"}},
        defaults={"*": "denied"},
        unknown_subject="denied",
        legal_bases={"EEA": "not_offered"},
    ),
]


@dataclass
class Row:
    """The columns of a stored event that typing it reads."""

    kind: str
    user_id: str | None
    purpose: str | None
    data: dict[str, Any] | None


def stored(event: ev.LedgerEvent) -> Row:
    return Row(event.kind.value, event.user_id, event.purpose, event.to_data())


def test_every_kind_has_exactly_one_type() -> None:
    assert set(ev.EVENT_TYPES) == set(ev.Kind)
    assert {type(e) for e in EXAMPLES} == set(ev.EVENT_TYPES.values())


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_event_read_back_from_its_row_equals_the_event_written(event: ev.LedgerEvent) -> None:
    assert ev.from_row(stored(event)) == event


def test_payloads_keep_the_shape_rows_were_written_in_before_types_existed() -> None:
    # These dicts are what earlier releases stored; the log keeps them for good.
    assert stored(EXAMPLES[2]).data == {"from": "DE", "to": None}
    assert stored(EXAMPLES[3]).data is None
    assert stored(EXAMPLES[5]).data == {
        "override_id": 7,
        "state": "granted",
        "expires_at": "2026-03-01T12:30:00Z",
    }
    assert stored(EXAMPLES[4]).data == {
        "state": "denied",
        "previous": None,
        "source": "api",
        "version": 3,
    }


def test_a_policy_event_carries_the_policy_in_force_after_it() -> None:
    event = ev.from_row(stored(EXAMPLES[10]))
    assert isinstance(event, ev.PolicyEvent)
    assert event.policy == Policy({"*": "denied"}, "denied")


def test_a_row_of_a_kind_no_type_knows_is_refused_by_name() -> None:
    with pytest.raises(ev.UnknownEventKind, match="subject_teleported"):
        ev.from_row(Row("subject_teleported", "u1", None, {}))
