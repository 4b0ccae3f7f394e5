"""Legal bases and not_offered: the pure rule, their validation, and the read index's overlay
(as of any seq, for known and never-seen IDs) with the notice versions it keeps per row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from service.domain import events as ev
from service.domain import validation
from service.domain.errors import ValidationFailed
from service.domain.policy import (
    OverrideFacts,
    Policy,
    RestrictionFacts,
    SubjectFacts,
    legal_basis_for,
    resolve,
)
from service.readindex import codes as cd
from service.readindex.index import ConsentIndex, RecordedEvent

AT = datetime(2026, 1, 1, tzinfo=UTC)
SEQ = 10
DEFAULTS = {"EEA": "denied", "*": "granted"}
# Country beats region beats '*': DE offered on consent, the rest of the EEA not offered,
# everywhere else on legitimate interest.
BASES = {"DE": "consent", "EEA": "not_offered", "*": "legitimate_interest"}
POLICY = Policy.of(DEFAULTS, "granted", BASES)
OVERRIDE = OverrideFacts(id=1, state="granted", placed_seq=5)


def decide(
    jurisdiction: str | None,
    *,
    policy: Policy = POLICY,
    erased: bool = False,
    choice: str | None = None,
    overrides: tuple[OverrideFacts, ...] = (),
    known: bool = True,
) -> tuple[str, str, str]:
    """(state, basis, legal_basis) of one resolution."""
    subject = SubjectFacts(jurisdiction, erased) if known else None
    res = resolve(subject, choice, overrides, policy, SEQ, AT, purpose="p")
    return res.state, res.basis, res.legal_basis


# --- the pure rule ------------------------------------------------------------------------------


def test_not_offered_denies_whatever_the_users_choice() -> None:
    assert decide("FR", choice="granted") == ("denied", "not_offered", "not_offered")


def test_not_offered_beats_an_active_override() -> None:
    assert decide("FR", overrides=(OVERRIDE,)) == ("denied", "not_offered", "not_offered")


def test_erasure_beats_not_offered() -> None:
    assert decide("FR", erased=True, choice="granted") == ("denied", "erased", "not_offered")


def test_a_restriction_beats_not_offered() -> None:
    order = RestrictionFacts(
        id=7, purposes=frozenset({"p"}), jurisdictions=frozenset({"EEA"}), placed_seq=3
    )
    res = resolve(
        SubjectFacts("FR", False),
        "granted",
        (),
        POLICY,
        SEQ,
        AT,
        purpose="p",
        restrictions=(order,),
    )
    assert (res.basis, res.legal_basis, res.restriction) == ("restriction", "not_offered", order)


def test_where_offered_the_usual_order_holds_and_says_its_legal_basis() -> None:
    assert decide("DE", choice="denied") == ("denied", "choice", "consent")
    assert decide("US", overrides=(OVERRIDE,), choice="denied") == (
        "granted",
        "override",
        "legitimate_interest",
    )
    assert decide("US") == ("granted", "default", "legitimate_interest")


def test_the_most_specific_selector_decides_the_legal_basis() -> None:
    assert legal_basis_for(POLICY, "DE") == "consent"  # the country over its region
    assert legal_basis_for(POLICY, "NO") == "not_offered"  # the region over '*'
    assert legal_basis_for(POLICY, "BR") == "legitimate_interest"
    assert legal_basis_for(POLICY, None) == "legitimate_interest"  # no jurisdiction: '*' alone


def test_a_purpose_without_legal_bases_is_consent_everywhere() -> None:
    plain = Policy.of(DEFAULTS, "denied")
    assert decide("FR", policy=plain, choice="granted") == ("granted", "choice", "consent")
    assert decide(None, policy=plain, known=False) == ("denied", "unknown", "consent")


def test_never_seen_ids_are_not_offered_only_under_a_wildcard() -> None:
    eea_only = Policy.of(DEFAULTS, "granted", {"EEA": "not_offered"})
    assert decide(None, policy=eea_only, known=False) == ("granted", "unknown", "consent")
    everywhere = Policy.of(DEFAULTS, "granted", {"*": "not_offered", "US": "consent"})
    assert decide(None, policy=everywhere, known=False) == (
        "denied",
        "not_offered",
        "not_offered",
    )
    # A subject without a jurisdiction is judged like a never-seen ID: by '*'.
    assert decide(None, policy=everywhere, choice="granted") == (
        "denied",
        "not_offered",
        "not_offered",
    )


# --- validation --------------------------------------------------------------------------------


def test_legal_bases_are_stored_with_upper_case_selectors() -> None:
    assert validation.legal_bases({"eea": "not_offered", "*": "consent"}) == {
        "EEA": "not_offered",
        "*": "consent",
    }
    assert validation.legal_bases({}) == {}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"XX": "consent"}, "legal_bases.XX"),
        ({"EU": "consent"}, "legal_bases.EU"),
        ({"DE": "granted"}, "legal_bases.DE"),
        ({"DE": "consent", "de": "not_offered"}, "legal_bases.de"),
    ],
)
def test_bad_legal_bases_name_the_selector(value: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.legal_bases(value)
    assert caught.value.errors is not None
    assert list(caught.value.errors) == [field]


@pytest.mark.parametrize("version", ["1", "v1.2", "2026-01_b", "A" * 32])
def test_well_formed_notice_versions_are_accepted(version: str) -> None:
    assert validation.notice_version(version) == version


@pytest.mark.parametrize("version", ["", "A" * 33, "v 1", "1/2", "ü", "1\n"])
def test_malformed_notice_versions_are_refused(version: str) -> None:
    with pytest.raises(ValidationFailed):
        validation.notice_version(version)


# --- the read index ---------------------------------------------------------------------------


class Ledger:
    """Feeds numbered typed events to an index, each one second after the last."""

    def __init__(self) -> None:
        self.index, self.seq = ConsentIndex(), 0

    def __call__(self, event: ev.LedgerEvent) -> int:
        self.seq += 1
        self.index.apply([RecordedEvent(self.seq, AT + timedelta(seconds=self.seq), event)])
        return self.seq

    def policy(self, legal_bases: dict[str, str], *, create: bool = False) -> int:
        if create:
            return self(
                ev.PurposeCreated(
                    purpose="p",
                    title="P",
                    defaults=DEFAULTS,
                    unknown_subject="granted",
                    legal_bases=legal_bases,
                )
            )
        return self(
            ev.PolicyChanged(
                purpose="p", defaults=DEFAULTS, unknown_subject="granted", legal_bases=legal_bases
            )
        )

    def register(self, user_id: str, jurisdiction: str | None) -> int:
        return self(ev.SubjectRegistered(user_id=user_id, purpose="p", jurisdiction=jurisdiction))

    def choose(self, user_id: str, state: str, notice: str | None = None) -> int:
        return self(
            ev.ChoiceSet(
                user_id=user_id,
                purpose="p",
                state=state,
                previous=None,
                source="t",
                version=1,
                notice_version=notice,
            )
        )


@pytest.fixture
def ledger() -> Ledger:
    led = Ledger()
    led.policy({}, create=True)
    for user_id, jurisdiction in (("1", "DE"), ("2", "FR"), ("3", "US"), ("4", None)):
        led.register(user_id, jurisdiction)
        led.choose(user_id, "granted")
    led.register("5", "FR")
    led(ev.SubjectErased(user_id="5", purpose="p"))
    return led


IDS = ["1", "2", "3", "4", "5", "never", None]


def bulk(index: ConsentIndex, seq: int) -> list[str]:
    """The basis of each of IDS, from the vectorised path (text and numbers agree)."""
    codes, stale = index.codes("p", seq, pa.array(IDS, pa.string()))
    assert stale == []
    numbers, _ = index.number_codes("p", seq, np.array([1, 2, 3, 4, 5], dtype=np.int64))
    assert numbers.tolist() == codes[:5].tolist()
    return [cd.Code(int(c)).basis for c in codes]


def one(index: ConsentIndex, seq: int) -> list[tuple[str, str]]:
    """(basis, legal_basis) of each well-formed ID of IDS, one at a time."""
    out = []
    for user_id in IDS[:-1]:
        answer = index.answer_of("p", seq, str(user_id))
        assert answer is not None
        out.append((answer.code.basis, answer.legal_basis))
    return out


def test_not_offered_is_laid_over_the_codes_and_answers_earlier_seqs_by_their_policy(
    ledger: Ledger,
) -> None:
    before = ledger.seq
    ledger.policy({"EEA": "not_offered", "*": "legitimate_interest"})
    changed = ledger.seq
    ledger.policy({"*": "not_offered", "DE": "consent"})
    expected_before = ["choice"] * 4 + ["erased", "unknown", "invalid"]
    assert bulk(ledger.index, before) == expected_before
    assert bulk(ledger.index, changed) == [
        "not_offered",
        "not_offered",
        "choice",
        "choice",
        "erased",
        "unknown",
        "invalid",
    ]
    assert bulk(ledger.index, ledger.seq) == [
        "choice",
        "not_offered",
        "not_offered",
        "not_offered",
        "erased",
        "not_offered",
        "invalid",
    ]
    assert one(ledger.index, before) == [(b, "consent") for b in expected_before[:-1]]
    assert one(ledger.index, changed) == [
        ("not_offered", "not_offered"),
        ("not_offered", "not_offered"),
        ("choice", "legitimate_interest"),
        ("choice", "legitimate_interest"),
        ("erased", "not_offered"),
        ("unknown", "legitimate_interest"),
    ]
    assert one(ledger.index, ledger.seq)[0] == ("choice", "consent")
    assert one(ledger.index, ledger.seq)[-1] == ("not_offered", "not_offered")


def test_stored_codes_never_hold_not_offered(ledger: Ledger) -> None:
    ledger.policy({"*": "not_offered"})
    ledger.choose("3", "denied")  # recomputed under a not_offered policy
    p = ledger.index.purposes["p"]
    stored = {cd.Code(int(c)).basis for c in p.eff[: ledger.index.n_rows]}
    assert "not_offered" not in stored
    assert bulk(ledger.index, ledger.seq)[2] == "not_offered"


def test_snapshot_pages_put_not_offered_subjects_in_the_denied_set(ledger: Ledger) -> None:
    ledger.policy({"EEA": "not_offered"})
    found: dict[str, cd.Code] = {}
    for ids, codes, _ in ledger.index.snapshot_pages("p", ledger.seq):
        found.update(zip(ids.to_pylist(), (cd.Code(int(c)) for c in codes), strict=True))
    assert (found["2"].basis, found["2"].allowed) == ("not_offered", False)
    assert (found["3"].basis, found["3"].allowed) == ("choice", True)


def test_a_policy_without_legal_bases_keeps_no_legal_table(ledger: Ledger) -> None:
    bulk(ledger.index, ledger.seq)
    one(ledger.index, ledger.seq)
    assert ledger.index.purposes["p"].legal == {}


def test_notice_versions_are_kept_only_once_a_choice_names_one(ledger: Ledger) -> None:
    p = ledger.index.purposes["p"]
    assert p.notice is None
    ledger.choose("3", "granted", notice="v1")
    ledger.choose("1", "denied", notice="v2")
    ledger.choose("4", "granted", notice="v1")
    assert p.notice is not None
    assert p.notice_versions == ["v1", "v2"]
    answers = {u: ledger.index.answer_of("p", ledger.seq, u) for u in ("1", "2", "3", "4")}
    assert {u: a.notice_version for u, a in answers.items() if a} == {
        "1": "v2",
        "2": None,
        "3": "v1",
        "4": "v1",
    }
    ledger.choose("3", "denied")  # a new choice without a notice version clears it
    answer = ledger.index.answer_of("p", ledger.seq, "3")
    assert answer is not None
    assert answer.notice_version is None


def test_a_notice_version_is_given_only_when_the_choice_decides(ledger: Ledger) -> None:
    ledger.choose("2", "granted", notice="v1")
    ledger.policy({"FR": "not_offered"})
    answer = ledger.index.answer_of("p", ledger.seq, "2")
    assert answer is not None
    assert (answer.code.basis, answer.notice_version) == ("not_offered", None)


def test_notice_versions_survive_growth_and_new_rows(ledger: Ledger) -> None:
    ledger.choose("1", "granted", notice="v1")
    for n in range(3000):
        ledger.register(f"u{n}", "US")
    ledger.choose("u2999", "granted", notice="v2")
    for user_id, version in (("1", "v1"), ("u2999", "v2"), ("u5", None)):
        answer = ledger.index.answer_of("p", ledger.seq, user_id)
        assert answer is not None
        assert answer.notice_version == version


def test_more_notice_versions_than_a_small_int_holds_widen_the_array(ledger: Ledger) -> None:
    p = ledger.index.purposes["p"]
    p.set_notice(0, "v0")
    p.notice_versions.extend(f"x{n}" for n in range(70_000))
    p.notice_codes.update({f"x{n}": n + 2 for n in range(70_000)})
    p.set_notice(1, "last")
    assert p.notice is not None
    assert p.notice.dtype == np.uint32
    assert (p.notice_of(0), p.notice_of(1)) == ("v0", "last")
