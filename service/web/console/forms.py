"""The console's forms: fields, their validation, and the CSRF token each carries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pycountry
from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    Field,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    DataRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from service.domain.clock import isoformat
from service.domain.policy import COUNTRY_CODES, EEA, LEGAL_BASES, STATES, TIME_BASES, WILDCARD
from service.domain.runs import REMEDIATION_ACTIONS
from service.domain.validation import (
    NOTICE_TEXT_RE,
    NOTICE_URL_RE,
    NOTICE_VERSION_RE,
    NOTICE_VERSION_RULE,
)
from service.web.console.wording import window_words
from service.web.fields import MULTILINE_PATTERN, ONE_LINE_PATTERN

STATE_CHOICES = list(STATES)
REASON_LENGTH = Length(min=3, max=2000, message="Write at least 3 characters (at most 2,000).")
# What the API's Text fields admit, so a form never hands the database a NUL byte.
ONE_LINE = Regexp(ONE_LINE_PATTERN, message="Must be one line without control characters.")
MULTILINE = Regexp(MULTILINE_PATTERN, message="Must be text without NUL bytes.")


def _country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    return str(getattr(country, "common_name", None) or country.name) if country else code


# A restriction's jurisdictions: everywhere and the EEA, then every country by code.
SELECTOR_CHOICES: list[SelectChoice] = [
    SelectChoice(WILDCARD, "* — everywhere, never-seen IDs included", optgroup="Groups"),
    SelectChoice(
        "EEA", f"EEA — the {len(EEA)} countries of the European Economic Area", optgroup="Groups"
    ),
    *(
        SelectChoice(code, f"{code} — {_country_name(code)}", optgroup="Countries")
        for code in sorted(COUNTRY_CODES)
    ),
]


class SignInForm(FlaskForm):  # type: ignore[misc]
    """A support or admin key."""

    token = PasswordField("API key", validators=[DataRequired("Paste your API key.")])


class SignOutForm(FlaskForm):  # type: ignore[misc]
    """Nothing but the CSRF token."""


class ConfirmedForm(FlaskForm):  # type: ignore[misc]
    """A form shown once more on a confirmation page before it is acted on."""

    confirmed = HiddenField()

    @property
    def is_confirmed(self) -> bool:
        """Whether this submission comes from the confirmation page."""
        return bool(self.confirmed.data == "yes")


class OverrideForm(ConfirmedForm):
    """Place an override."""

    purpose = SelectField("Purpose", validators=[DataRequired()])
    state = RadioField("State", choices=STATE_CHOICES, validators=[DataRequired("Pick a state.")])
    reason = TextAreaField("Reason", validators=[DataRequired("A reason is required."), MULTILINE])
    ticket = StringField(
        "Ticket", validators=[DataRequired("A ticket is required."), Length(max=100), ONE_LINE]
    )
    expires_at = DateTimeLocalField(
        "Expires (UTC, optional)", format="%Y-%m-%dT%H:%M", validators=[Optional()]
    )

    def expiry(self) -> datetime | None:
        """The expiry as an aware UTC time (the field is labelled UTC)."""
        value = self.expires_at.data
        return None if value is None else value.replace(tzinfo=UTC)


class LiftForm(ConfirmedForm):
    """Lift an override."""

    reason = TextAreaField(
        "Reason for lifting",
        validators=[DataRequired("A reason is required."), REASON_LENGTH, MULTILINE],
    )


def parse_selector_lines(text: str, values: Iterable[str], example: str) -> dict[str, str]:
    """Parse 'SELECTOR=value' lines (e.g. 'EEA=denied') into a map, each value one of `values`.

    Selectors themselves are checked by the domain (service.domain.validation), which names
    the bad one; here only the shape of each line is.
    """
    allowed = tuple(values)
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        selector, sep, value = line.partition("=")
        if not sep or not selector.strip() or value.strip() not in allowed:
            raise ValidationError(
                f"Line {number}: write SELECTOR={' or SELECTOR='.join(allowed)}, e.g. {example}."
            )
        found[selector.strip().upper()] = value.strip()
    return found


def parse_defaults(text: str) -> dict[str, str]:
    """Parse 'SELECTOR=state' lines (e.g. 'EEA=denied', '*=granted') into a defaults map."""
    return parse_selector_lines(text, STATES, "EEA=denied")


def parse_legal_bases(text: str) -> dict[str, str]:
    """Parse 'SELECTOR=basis' lines (e.g. 'EEA=not_offered') into a legal-bases map."""
    return parse_selector_lines(text, LEGAL_BASES, "EEA=not_offered")


def format_selector_map(values: dict[str, str]) -> str:
    """A defaults or legal-bases map as the 'SELECTOR=value' lines the form edits."""
    return "\n".join(f"{k}={v}" for k, v in values.items())


class PurposeForm(ConfirmedForm):
    """Edit a purpose's policy: defaults, legal bases, and the never-seen setting."""

    defaults = TextAreaField("Defaults, one SELECTOR=state per line")
    legal_bases = TextAreaField(
        "Legal bases, one SELECTOR=basis per line (consent where none matches)"
    )
    unknown_subject = SelectField("Never-seen IDs (unknown_subject)", choices=STATE_CHOICES)

    def validate_defaults(self, field: Field) -> None:
        """Refuse lines that are not SELECTOR=state."""
        parse_defaults(field.data or "")

    def validate_legal_bases(self, field: Field) -> None:
        """Refuse lines that are not SELECTOR=basis."""
        parse_legal_bases(field.data or "")

    def policy(self) -> dict[str, Any]:
        """The changes to send to purposes.update."""
        return {
            "defaults": parse_defaults(self.defaults.data or ""),
            "legal_bases": parse_legal_bases(self.legal_bases.data or ""),
            "unknown_subject": self.unknown_subject.data,
        }

    def facts(self, purpose: dict[str, Any]) -> dict[str, str]:
        """The policy now and after, as the confirmation page lists it."""
        after = self.policy()
        everywhere = "(none: consent everywhere)"
        return {
            "Defaults now": format_selector_map(purpose["defaults"]) or "(none)",
            "Defaults after": format_selector_map(after["defaults"]) or "(none)",
            "Legal bases now": format_selector_map(purpose["legal_bases"]) or everywhere,
            "Legal bases after": format_selector_map(after["legal_bases"]) or everywhere,
            "Never-seen IDs": f"{purpose['unknown_subject']} → {after['unknown_subject']}",
        }


class NoticeForm(ConfirmedForm):
    """Publish a new version of a purpose's notice (what users are shown)."""

    version = StringField(
        "Version",
        validators=[
            DataRequired("A version is required."),
            Regexp(NOTICE_VERSION_RE, message=f"Must be {NOTICE_VERSION_RULE}."),
        ],
    )
    text = TextAreaField(
        "Text users are shown",
        validators=[
            DataRequired("The text is required."),
            Length(max=20000),
            Regexp(NOTICE_TEXT_RE, message="Must not be blank (and no NUL bytes)."),
        ],
    )
    url = StringField(
        "URL of the full notice (optional)",
        validators=[
            Optional(),
            Length(max=2000),
            Regexp(
                NOTICE_URL_RE,
                message="Must be an http or https URL (ASCII; percent-encode the rest).",
            ),
        ],
    )

    def __init__(self, *args: Any, published: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published = frozenset(published)

    def validate_version(self, field: Field) -> None:
        """A published version never changes: refuse one already published."""
        if field.data in self.published:
            raise ValidationError(
                f"Version {field.data} is published already and never changes; "
                "publish a new version."
            )


class RestrictionForm(ConfirmedForm):
    """Place a restriction: an order denying purposes for some jurisdictions."""

    # Made by the confirmation page: a second click on its button replays the first answer
    # instead of placing the same order twice.
    once = HiddenField(validators=[Optional(), Regexp(r"^[A-Za-z0-9_-]{16,64}$")])

    authority = StringField(
        "Authority",
        validators=[DataRequired("Name the authority."), Length(max=200), ONE_LINE],
    )
    instrument = StringField(
        "Instrument (order, decision, undertaking)",
        validators=[DataRequired("Name the instrument."), Length(max=200), ONE_LINE],
    )
    purposes = SelectMultipleField(
        "Purposes", validators=[DataRequired("Pick at least one purpose.")]
    )
    jurisdictions = SelectMultipleField(
        "Jurisdictions",
        choices=SELECTOR_CHOICES,
        validators=[DataRequired("Pick at least one jurisdiction.")],
    )
    window_from = DateTimeLocalField(
        "Window from (UTC, inclusive)", format="%Y-%m-%dT%H:%M", validators=[Optional()]
    )
    window_to = DateTimeLocalField(
        "Window to (UTC, exclusive)", format="%Y-%m-%dT%H:%M", validators=[Optional()]
    )
    time_basis = RadioField(
        "The window is about the content's",
        choices=[SelectChoice(b, f"{b} time") for b in TIME_BASES],
        default=TIME_BASES[0],
        validators=[DataRequired("Pick which time of the content the window is about.")],
    )
    reason = TextAreaField(
        "Reason",
        validators=[DataRequired("A reason is required."), REASON_LENGTH, MULTILINE],
    )
    ticket = StringField(
        "Ticket", validators=[DataRequired("A ticket is required."), Length(max=100), ONE_LINE]
    )

    def validate(self, extra_validators: Any = None) -> bool:
        """The fields, then the window: both ends or none (the domain checks their order).

        Checked here because an empty optional field stops its own validators."""
        valid = bool(super().validate(extra_validators))
        start, end = self.window_from, self.window_to
        if not (start.errors or end.errors) and (start.data is None) != (end.data is None):
            (end if end.data is None else start).errors.append(
                "Give both ends of the window, or neither."
            )
            return False
        return valid

    def window(self) -> dict[str, str] | None:
        """The window as the API takes it (RFC 3339, UTC as labelled), or None."""
        start, end = self.window_from.data, self.window_to.data
        if start is None or end is None:
            return None
        return {
            "from": str(isoformat(start.replace(tzinfo=UTC))),
            "to": str(isoformat(end.replace(tzinfo=UTC))),
            "time_basis": str(self.time_basis.data),
        }

    def scope(self) -> dict[str, Any]:
        """Purposes, jurisdictions and window, as restriction_impact.placing takes them."""
        return {
            "purposes": list(self.purposes.data or ()),
            "jurisdictions": list(self.jurisdictions.data or ()),
            "window": self.window(),
        }

    def order(self) -> dict[str, Any]:
        """The whole order, as restrictions.place takes it."""
        return {
            "authority": self.authority.data,
            "instrument": self.instrument.data,
            "reason": self.reason.data,
            "ticket": self.ticket.data,
            **self.scope(),
        }

    def facts(self) -> dict[str, str]:
        """The order as its confirmation page lists it."""
        window = self.window()
        return {
            "Authority": self.authority.data,
            "Instrument": self.instrument.data,
            "Purposes": ", ".join(self.purposes.data or ()),
            "Jurisdictions": ", ".join(self.jurisdictions.data or ()),
            "Denies": window_words(window) + ("" if window is None else ", or of no given time"),
            "Reason": self.reason.data,
            "Ticket": self.ticket.data,
        }


class RestrictionLiftForm(ConfirmedForm):
    """Lift a restriction."""

    reason = TextAreaField(
        "Reason for lifting",
        validators=[DataRequired("A reason is required."), REASON_LENGTH, MULTILINE],
    )


class RemediationForm(ConfirmedForm):
    """Declare a run's affected members up to a seq handled."""

    action = SelectField("Action", choices=list(REMEDIATION_ACTIONS), validators=[DataRequired()])
    through_seq = IntegerField(
        "Through seq",
        validators=[DataRequired("A seq is required."), NumberRange(min=0, max=2**63 - 1)],
    )
    reason = TextAreaField(
        "Reason", validators=[DataRequired("A reason is required."), Length(min=3, max=2000)]
    )
    ticket = StringField("Ticket (optional)", validators=[Optional(), Length(max=100)])
