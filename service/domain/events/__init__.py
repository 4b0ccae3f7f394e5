"""Event kinds of the ledger: one frozen dataclass per kind, the only definition of its payload.

Events are append-only and kept for good, so a payload's shape is permanent: each class says
which columns it fills and what goes into the row's JSON `data`, `to_data()` writes exactly that
and `from_data()` reads it back (rows written before these types existed included). The writer
takes these types, and every reader (the read index, as_of, history, feeds, the console)
dispatches on them instead of on kind strings and free dicts.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.domain.events.base import EventRow, JsonData, Kind, LedgerEvent
from service.domain.events.consent import (
    ChoiceSet,
    JurisdictionChanged,
    OverrideExpired,
    OverrideLifted,
    OverridePlaced,
    SubjectErased,
    SubjectRegistered,
)
from service.domain.events.keys import KeyCreated, KeyEvent, KeyRevoked
from service.domain.events.purposes import (
    PolicyChanged,
    PolicyEvent,
    PurposeChange,
    PurposeCreated,
    PurposeUpdated,
)
from service.domain.events.restrictions import (
    NoticePublished,
    RestrictionEvent,
    RestrictionLifted,
    RestrictionPlaced,
)
from service.domain.events.runs import RunEvent, RunMembersRecorded, RunRegistered, RunRemediated
from service.domain.events.signing import SigningKeyRotated

EVENT_TYPES: Mapping[Kind, type[LedgerEvent]] = {
    t.kind: t
    for t in (
        SubjectRegistered,
        JurisdictionChanged,
        SubjectErased,
        ChoiceSet,
        OverridePlaced,
        OverrideLifted,
        OverrideExpired,
        PurposeCreated,
        PolicyChanged,
        PurposeUpdated,
        KeyCreated,
        KeyRevoked,
        RunRegistered,
        RunMembersRecorded,
        RunRemediated,
        RestrictionPlaced,
        RestrictionLifted,
        NoticePublished,
        SigningKeyRotated,
    )
}
POLICY_KINDS: tuple[Kind, ...] = (Kind.PURPOSE_CREATED, Kind.POLICY_CHANGED)
RESTRICTION_KINDS: tuple[Kind, ...] = (Kind.RESTRICTION_PLACED, Kind.RESTRICTION_LIFTED)
KEY_KINDS: frozenset[Kind] = frozenset({Kind.KEY_CREATED, Kind.KEY_REVOKED})
# The ledger's own signing keys: for admins' audit feed, nothing a pipeline acts on.
SIGNING_KEY_KINDS: frozenset[Kind] = frozenset({Kind.SIGNING_KEY_ROTATED})
JURISDICTION_KINDS: tuple[Kind, ...] = (Kind.SUBJECT_REGISTERED, Kind.JURISDICTION_CHANGED)


class UnknownEventKind(Exception):
    """A row's kind names no event type: the log holds something this code cannot read."""


def from_row(row: EventRow) -> LedgerEvent:
    """The typed event of a row of the events table."""
    try:
        kind = Kind(row.kind)
    except ValueError:
        raise UnknownEventKind(row.kind) from None
    return EVENT_TYPES[kind].from_data(row.user_id, row.purpose, row.data or {})


__all__ = [
    "ChoiceSet",
    "EVENT_TYPES",
    "EventRow",
    "JURISDICTION_KINDS",
    "JsonData",
    "JurisdictionChanged",
    "KEY_KINDS",
    "KeyCreated",
    "KeyEvent",
    "KeyRevoked",
    "Kind",
    "LedgerEvent",
    "NoticePublished",
    "OverrideExpired",
    "OverrideLifted",
    "OverridePlaced",
    "POLICY_KINDS",
    "PolicyChanged",
    "PolicyEvent",
    "PurposeChange",
    "PurposeCreated",
    "PurposeUpdated",
    "RESTRICTION_KINDS",
    "RestrictionEvent",
    "RestrictionLifted",
    "RestrictionPlaced",
    "RunEvent",
    "RunMembersRecorded",
    "RunRegistered",
    "RunRemediated",
    "SIGNING_KEY_KINDS",
    "SigningKeyRotated",
    "SubjectErased",
    "SubjectRegistered",
    "UnknownEventKind",
    "from_row",
]
