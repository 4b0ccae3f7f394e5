"""The console's forms: fields, their validation, and the CSRF token each carries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    Field,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from service.domain.policy import STATES
from service.domain.runs import REMEDIATION_ACTIONS

STATE_CHOICES = list(STATES)


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
    reason = TextAreaField("Reason", validators=[DataRequired("A reason is required.")])
    ticket = StringField(
        "Ticket", validators=[DataRequired("A ticket is required."), Length(max=100)]
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

    reason = TextAreaField("Reason for lifting", validators=[DataRequired("A reason is required.")])


def parse_defaults(text: str) -> dict[str, str]:
    """Parse 'SELECTOR=state' lines (e.g. 'EEA=denied', '*=granted') into a defaults map."""
    defaults: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        selector, sep, state = line.partition("=")
        if not sep or not selector.strip() or state.strip() not in STATES:
            raise ValidationError(
                f"Line {number}: write SELECTOR=granted or SELECTOR=denied, e.g. EEA=denied."
            )
        defaults[selector.strip().upper()] = state.strip()
    return defaults


def format_defaults(defaults: dict[str, str]) -> str:
    """The defaults map as the 'SELECTOR=state' lines the form edits."""
    return "\n".join(f"{k}={v}" for k, v in defaults.items())


class PurposeForm(ConfirmedForm):
    """Edit a purpose's default policy."""

    defaults = TextAreaField("Defaults, one SELECTOR=state per line")
    unknown_subject = SelectField("Never-seen IDs (unknown_subject)", choices=STATE_CHOICES)

    def validate_defaults(self, field: Field) -> None:
        """Refuse lines that are not SELECTOR=state."""
        parse_defaults(field.data or "")

    def policy(self) -> dict[str, Any]:
        """The changes to send to purposes.update."""
        return {
            "defaults": parse_defaults(self.defaults.data or ""),
            "unknown_subject": self.unknown_subject.data,
        }


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
