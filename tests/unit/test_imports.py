"""The import's pure rules: its columns, each row's checks, and the events a batch becomes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from service.domain import imports
from service.domain.errors import ValidationFailed
from service.domain.policy import Policy, RestrictionFacts

AT = datetime(2026, 3, 1, tzinfo=UTC)
TRAINING = Policy.of({"EEA": "denied", "*": "granted"}, "denied")


def columns(*choices: str) -> imports.Columns:
    names = ["user_id", "jurisdiction", *(f"choice:{p}" for p in choices)]
    return imports.Columns.of(names, ["model_training", "ads"])


def batch(**cells: list[str | None]) -> pa.Table:
    return pa.table({k.replace("__", ":"): pa.array(v, pa.string()) for k, v in cells.items()})


def test_columns_name_every_choice_purpose_in_key_order() -> None:
    names = ["choice:model_training", "user_id", "choice:ads", "jurisdiction"]
    found = imports.Columns.of(names, ["ads", "model_training"])
    assert list(found.choices) == ["ads", "model_training"]
    assert found.choices["ads"] == "choice:ads"


def test_a_header_without_required_columns_or_with_strangers_names_each_problem() -> None:
    with pytest.raises(ValidationFailed) as caught:
        imports.Columns.of(["user_id", "choice:unheard_of", "email", "email"], ["model_training"])
    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"jurisdiction", "choice:unheard_of", "email"}
    assert "No purpose 'unheard_of'" in caught.value.errors["choice:unheard_of"][0]


def test_rows_are_checked_by_the_apis_own_rules_and_normalised() -> None:
    rows = imports.check_rows(
        batch(
            user_id=["a", "b.c@d", "007"],
            jurisdiction=["de", " NO ", ""],
            choice__model_training=["granted", "", "denied"],
        ),
        1,
        columns("model_training"),
    )
    assert rows.user_ids.to_pylist() == ["a", "b.c@d", "007"]
    assert [imports.JURISDICTIONS[j] for j in rows.jurisdictions] == ["DE", "NO", None]
    assert rows.choices["model_training"].tolist() == [imports.GRANTED, 0, imports.DENIED]


@pytest.mark.parametrize(
    ("cells", "row", "column", "words"),
    [
        ({"user_id": ["ok", "bad id", "x"]}, 11, "user_id", "not a valid user ID"),
        ({"user_id": ["ok", "y" * 65, "x"]}, 11, "user_id", "not a valid user ID"),
        ({"user_id": ["ok", "x", None]}, 12, "user_id", "user_id is empty"),
        ({"user_id": ["ok", "x", ""]}, 12, "user_id", "not a valid user ID"),
        ({"jurisdiction": ["DE", "XX", "DE"]}, 11, "jurisdiction", "ISO 3166-1"),
        ({"jurisdiction": ["DE", "DE", "Deu"]}, 12, "jurisdiction", "ISO 3166-1"),
        (
            {"choice__model_training": ["granted", "Granted", ""]},
            11,
            "choice:model_training",
            "granted, denied or empty",
        ),  # fmt: skip
        ({"choice__model_training": [None, "", "yes"]}, 12, "choice:model_training", "'yes'"),
    ],
)
def test_the_first_malformed_row_is_named_with_its_number_and_column(
    cells: dict[str, list[str | None]], row: int, column: str, words: str
) -> None:
    base: dict[str, list[str | None]] = {
        "user_id": ["a", "b", "c"],
        "jurisdiction": ["DE", "US", ""],
        "choice__model_training": ["", "", ""],
    }
    with pytest.raises(imports.RowError) as caught:
        imports.check_rows(batch(**{**base, **cells}), 10, columns("model_training"))
    assert caught.value.row == row
    assert caught.value.column == column
    assert caught.value.detail.startswith(f"row {row}: ")
    assert words in caught.value.detail


def test_of_two_bad_rows_the_earlier_is_named_whatever_the_column() -> None:
    with pytest.raises(imports.RowError) as caught:
        imports.check_rows(
            batch(user_id=["a", "b", "bad id"], jurisdiction=["DE", "ZZ", "DE"]), 1, columns()
        )
    assert (caught.value.row, caught.value.column) == (2, "jurisdiction")


def test_an_id_given_twice_keeps_its_first_row_only() -> None:
    rows = imports.check_rows(
        batch(user_id=["b", "a", "b", "c", "a"], jurisdiction=["DE"] * 5), 1, columns()
    )
    assert rows.first_occurrences().tolist() == [True, True, False, True, False]


def facts(**policies: Policy) -> imports.LedgerFacts:
    return imports.LedgerFacts(head=7, at=AT, policies=policies, restrictions=())


def checked(ids: list[str], jurisdictions: list[str], **choices: list[str]) -> imports.Rows:
    cells: dict[str, list[str | None]] = {"user_id": list(ids), "jurisdiction": list(jurisdictions)}
    cells.update({f"choice__{p}": list(v) for p, v in choices.items()})
    names = ["user_id", "jurisdiction", *(f"choice:{p}" for p in choices)]
    return imports.check_rows(
        batch(**cells), 1, imports.Columns.of(names, ["model_training", "ads"])
    )


def test_a_batch_registers_each_subject_then_sets_its_choices_in_seq_order() -> None:
    rows = checked(["a", "b"], ["DE", "US"], model_training=["granted", ""])
    plan = imports.plan(rows, facts(model_training=TRAINING), ("import:x", "admin"), "T")
    events = plan.events.to_pylist()
    assert [(e["seq"], e["kind"], e["user_id"], e["before"], e["after"]) for e in events] == [
        (8, "subject_registered", "a", "denied", "denied"),
        (9, "choice_set", "a", "denied", "granted"),
        (10, "subject_registered", "b", "denied", "granted"),
    ]
    assert events[1]["data"] == (
        '{"state": "granted", "previous": null, "source": "import", "version": 1}'
    )
    assert {(e["actor"], e["role"], e["at"]) for e in events} == {("import:x", "admin", "T")}
    assert plan.head == 10
    subjects = plan.subjects.to_pylist()
    assert [(s["user_id"], s["jurisdiction"], s["registered_seq"]) for s in subjects] == [
        ("a", "DE", 8),
        ("b", "US", 10),
    ]
    assert plan.choices.to_pylist() == [
        {
            "user_id": "a",
            "purpose": "model_training",
            "state": "granted",
            "source": "import",
            "version": 1,
            "updated_seq": 9,
            "updated_at": "T",
            "notice_version": None,
        }
    ]


def test_registration_writes_one_event_per_purpose_and_one_for_none_without_purposes() -> None:
    rows = checked(["a"], [""])
    none = imports.plan(rows, facts(), ("i", "admin"), "T").events.to_pylist()
    assert [(e["kind"], e["purpose"], e["before"], e["after"]) for e in none] == [
        ("subject_registered", None, None, None)
    ]
    two = imports.plan(
        rows, facts(model_training=TRAINING, ads=Policy.of({}, "granted")), ("i", "admin"), "T"
    ).events.to_pylist()
    assert [(e["purpose"], e["before"], e["after"]) for e in two] == [
        ("model_training", "denied", "granted"),
        ("ads", "granted", "denied"),  # no selector matches: denied
    ]


def test_states_follow_restrictions_and_legal_bases_as_resolution_does() -> None:
    ads = Policy.of({"*": "granted"}, "granted", {"BR": "not_offered"})
    us_order = RestrictionFacts(1, frozenset({"model_training"}), frozenset({"US"}), placed_seq=3)
    rows = checked(
        ["us", "br", "de"],
        ["US", "BR", "DE"],
        model_training=["granted", "granted", "granted"],
        ads=["granted", "granted", "denied"],
    )
    state = imports.LedgerFacts(7, AT, {"ads": ads, "model_training": TRAINING}, (us_order,))
    events = imports.plan(rows, state, ("i", "admin"), "T").events.to_pylist()
    got = {(e["user_id"], e["kind"][:6], e["purpose"]): (e["before"], e["after"]) for e in events}
    assert got[("us", "choice", "model_training")] == ("denied", "denied")  # the order beats it
    assert got[("br", "choice", "ads")] == ("denied", "denied")  # not offered in Brazil
    assert got[("de", "choice", "ads")] == ("granted", "denied")
    assert got[("de", "choice", "model_training")] == ("denied", "granted")
    assert [e["seq"] for e in events] == list(range(8, 8 + len(events)))


def test_an_empty_batch_plans_nothing_and_keeps_the_head() -> None:
    rows = checked(["a"], ["DE"]).take(np.zeros(1, dtype=np.bool_))
    plan = imports.plan(rows, facts(model_training=TRAINING), ("i", "admin"), "T")
    assert (plan.subjects.num_rows, plan.choices.num_rows, plan.events.num_rows) == (0, 0, 0)
    assert plan.head == 7
