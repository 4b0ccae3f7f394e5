"""Console pages: thin views that parse a form, call one capability function, and render."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar, cast

import sqlalchemy.exc as sa_exc
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from service.domain.errors import ConsentError, ValidationFailed
from service.ledger import notices, overrides, purposes, restrictions, runs
from service.ledger.transaction import Actor, IdempotencyRequest
from service.reads import impact, restriction_impact, run_streams
from service.reads import runs as run_reads
from service.web.console import sessions
from service.web.console.forms import (
    LiftForm,
    NoticeForm,
    OverrideForm,
    PurposeForm,
    RemediationForm,
    RestrictionForm,
    RestrictionLiftForm,
    SignInForm,
    SignOutForm,
    format_selector_map,
)
from service.web.console.records import restriction_list, restriction_record, user_record
from service.web.console.wording import (
    basis_words,
    legal_basis_words,
    restriction_words,
    subjects,
    time_words,
    window_words,
)

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
csrf = CSRFProtect()

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@bp.before_request
def _protect() -> None:
    # Every console POST carries the form's CSRF token; a missing or wrong one is a 400 page.
    csrf.protect()


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.app_template_global()
def sign_out_form() -> FlaskForm:
    """The sign-out button's form, on every page."""
    return SignOutForm()


for _words in (basis_words, legal_basis_words, restriction_words, time_words, window_words):
    bp.add_app_template_filter(_words)


def staff(*roles: str) -> Callable[[F], F]:
    """Let a page be seen only by a signed-in key of these roles (admin sees everything)."""
    allowed = frozenset(roles) | {"admin"}

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            actor = sessions.current_staff()
            if actor is None:
                flash("Please sign in with a support or admin key.")
                return redirect(url_for("console.sign_in"))
            if actor.role not in allowed:
                abort(403, "This page is for admins only.")
            g.staff = actor
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def current() -> Actor:
    """The staff member this request is from."""
    return cast(Actor, g.staff)


@bp.errorhandler(ConsentError)
def _consent_error(error: ConsentError) -> tuple[str, int]:
    return _error_page(error.status, error.title, error.detail, error.errors or {})


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    return _error_page(
        400,
        "Form expired or forged",
        "The form's security token was missing or wrong. Reload the page and try again.",
    )


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    return _error_page(status, error.name, error.description or "")


@bp.errorhandler(sa_exc.OperationalError)
@bp.errorhandler(sa_exc.InterfaceError)
def _database_error(error: Exception) -> tuple[str, int]:
    log.error("database unavailable: %s", type(error).__name__)
    return _error_page(503, "Database unavailable", "The ledger cannot answer now; retry later.")


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> tuple[str, int]:
    log.exception("unhandled console error")
    return _error_page(500, "Something went wrong", "An unexpected error occurred.")


def _error_page(
    status: int, title: str, detail: str, errors: dict[str, Any] | None = None
) -> tuple[str, int]:
    back = request.view_args.get("user_id") if request.view_args else None
    return (
        render_template(
            "console/error.html",
            status=status,
            title=title,
            detail=detail,
            errors=errors or {},
            user_id=back,
        ),
        status,
    )


@bp.get("/")
def index() -> BaseResponse:
    """Send staff to the user search, everyone else to sign in."""
    if sessions.current_staff() is None:
        return redirect(url_for("console.sign_in"))
    return redirect(url_for("console.find_user"))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """Sign in with a support or admin key."""
    form = SignInForm()
    problem = None
    if form.validate_on_submit():
        problem = sessions.sign_in(form.token.data)
        if problem is None:
            return redirect(url_for("console.find_user"))
    status = 401 if problem else 200
    return render_template("console/sign_in.html", form=form, problem=problem), status


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    """End the session."""
    sessions.sign_out()
    flash("You are signed out.")
    return redirect(url_for("console.sign_in"))


@bp.get("/users")
@staff("support")
def find_user() -> Any:
    """Search a user by ID."""
    user_id = request.args.get("user_id", "").strip()
    if user_id:
        return redirect(url_for("console.user", user_id=user_id))
    return render_template("console/find.html")


@bp.get("/users/<path:user_id>")
@staff("support")
def user(user_id: str) -> Any:
    """A user's record, consent per purpose in words, overrides and history."""
    page = request.args.get("page", "1")
    record = user_record(user_id, int(page) if page.isdigit() else 1)
    form = OverrideForm()
    form.purpose.choices = [c["purpose"] for c in record["consents"]]
    return render_template(
        "console/user.html", record=record, override_form=form, lift_form=LiftForm()
    )


@bp.post("/users/<path:user_id>/overrides")
@staff("support")
def place_override(user_id: str) -> Any:
    """Place an override, after a confirmation page."""
    form = OverrideForm()
    form.purpose.choices = [p["key"] for p in purposes.list_all()]
    if not form.validate():
        return _form_problem(form, user_id)
    if not form.is_confirmed:
        return _confirm(
            "Place this override?",
            {
                "User": user_id,
                "Purpose": form.purpose.data,
                "State": form.state.data,
                "Reason": form.reason.data,
                "Ticket": form.ticket.data,
                "Expires": request.form.get("expires_at") or "never",
            },
            url_for("console.place_override", user_id=user_id),
            "Place override",
            user_id,
        )
    overrides.place(
        current(),
        user_id,
        form.purpose.data,
        form.state.data,
        form.reason.data,
        form.ticket.data,
        form.expiry(),
    )
    flash(f"Override placed: {form.purpose.data} is {form.state.data} (ticket {form.ticket.data}).")
    return redirect(url_for("console.user", user_id=user_id))


@bp.post("/users/<path:user_id>/overrides/<int:override_id>/lift")
@staff("support")
def lift_override(user_id: str, override_id: int) -> Any:
    """Lift an override, after a confirmation page."""
    form = LiftForm()
    if not form.validate():
        return _form_problem(form, user_id)
    if not form.is_confirmed:
        return _confirm(
            "Lift this override?",
            {"User": user_id, "Override": str(override_id), "Reason": form.reason.data},
            url_for("console.lift_override", user_id=user_id, override_id=override_id),
            "Lift override",
            user_id,
        )
    overrides.lift(current(), user_id, override_id, form.reason.data)
    flash(f"Override {override_id} lifted.")
    return redirect(url_for("console.user", user_id=user_id))


@bp.get("/purposes")
@staff("admin")
def purpose_list() -> Any:
    """Every purpose: its defaults, legal bases and current notice."""
    return render_template("console/purposes.html", purposes=purposes.list_all())


@bp.route("/purposes/<key>", methods=["GET", "POST"])
@staff("admin")
def purpose_edit(key: str) -> Any:
    """Edit a purpose's defaults and legal bases; the confirmation page says how many subjects
    would change."""
    purpose = purposes.get(key)
    form = PurposeForm()
    if request.method == "GET":
        form.defaults.data = format_selector_map(purpose["defaults"])
        form.legal_bases.data = format_selector_map(purpose["legal_bases"])
        form.unknown_subject.data = purpose["unknown_subject"]
    elif form.validate():
        changes = form.policy()
        try:
            if not form.is_confirmed:
                return _confirm(
                    f"Change the policy of {key}?",
                    form.facts(purpose),
                    url_for("console.purpose_edit", key=key),
                    "Save policy",
                    None,
                    impact=impact.default_change(key, changes["defaults"], changes["legal_bases"]),
                )
            purposes.update(current(), key, changes)
        except ValidationFailed as error:
            _attach(form, error, {"defaults": "defaults", "legal_bases": "legal_bases"})
        else:
            flash(f"Policy of {key} saved.")
            return redirect(url_for("console.purpose_list"))
    status = 422 if form.errors else 200
    return render_template("console/purpose_edit.html", purpose=purpose, form=form), status


@bp.get("/purposes/<key>/notices")
@staff("support")
def purpose_notices(key: str) -> Any:
    """A purpose's notice: the current version and every one before it."""
    return _notices_page(key, NoticeForm())


@bp.post("/purposes/<key>/notices")
@staff("admin")
def publish_notice(key: str) -> Any:
    """Publish a new version of a purpose's notice, after a confirmation page."""
    published = [n["version"] for n in notices.list_for(key)]
    form = NoticeForm(published=published)
    if form.validate():
        url = form.url.data or None
        if not form.is_confirmed:
            return _confirm(
                f"Publish version {form.version.data} of the notice of {key}?",
                {
                    "Version": form.version.data,
                    "Text": form.text.data,
                    "URL": url or "none",
                    "Current version": published[-1] if published else "none yet",
                },
                url_for("console.publish_notice", key=key),
                "Publish notice",
                None,
                cancel=url_for("console.purpose_notices", key=key),
                note="A published version never changes. Choices made from now on may cite it.",
            )
        try:
            notices.publish(current(), key, form.version.data, form.text.data, url)
        except ConsentError as error:
            _attach(form, error, {"version": "version", "text": "text", "url": "url"})
        else:
            flash(f"Notice version {form.version.data} of {key} published.")
            return redirect(url_for("console.purpose_notices", key=key))
    return _notices_page(key, form, 422)


def _notices_page(key: str, form: NoticeForm, status: int = 200) -> tuple[str, int]:
    purpose = purposes.get(key)
    versions = notices.list_for(key)
    return render_template(
        "console/notices.html", purpose=purpose, notices=versions[::-1], form=form
    ), status


@bp.get("/restrictions")
@staff("support")
def restriction_list_page() -> Any:
    """Every restriction, active and lifted."""
    return render_template("console/restrictions.html", listing=restriction_list())


# Where the domain's field names (service.domain.restrictions) are on the form.
RESTRICTION_FIELDS = {
    "purposes": "purposes",
    "jurisdictions": "jurisdictions",
    "window.from": "window_from",
    "window.to": "window_to",
    "window.time_basis": "time_basis",
}


@bp.route("/restrictions/new", methods=["GET", "POST"])
@staff("admin")
def restriction_new() -> Any:
    """Place a restriction; the confirmation page says how many subjects' answers it denies."""
    form = RestrictionForm()
    form.purposes.choices = [p["key"] for p in purposes.list_all()]
    if request.method == "POST" and form.validate():
        try:
            if not form.is_confirmed:
                return _confirm(
                    "Place this restriction?",
                    form.facts(),
                    url_for("console.restriction_new"),
                    "Place restriction",
                    None,
                    impact=restriction_impact.placing(**form.scope()),
                    cancel=url_for("console.restriction_list_page"),
                    once=True,
                )
            order, once = form.order(), form.once.data
            placed = restrictions.place(
                current(),
                **order,
                idempotency=IdempotencyRequest.of(once, "POST", request.path, order)
                if once
                else None,
            )
        except ValidationFailed as error:
            _attach(form, error, RESTRICTION_FIELDS)
        else:
            denied = sum(placed["changed"]["placed"].values())
            flash(f"Restriction #{placed['id']} placed: {subjects(denied)} denied.")
            return redirect(url_for("console.restriction_page", restriction_id=placed["id"]))
    status = 422 if form.errors else 200
    return render_template("console/restriction_new.html", form=form), status


RESTRICTION_ID = "<int(max=2147483647):restriction_id>"


@bp.get(f"/restrictions/{RESTRICTION_ID}")
@staff("support")
def restriction_page(restriction_id: int) -> Any:
    """A restriction: its order, scope, window, who placed and lifted it, and its events."""
    return _restriction_page(restriction_id, RestrictionLiftForm())


@bp.post(f"/restrictions/{RESTRICTION_ID}/lift")
@staff("admin")
def restriction_lift(restriction_id: int) -> Any:
    """Lift a restriction; the confirmation page says how many answers it allows again."""
    form = RestrictionLiftForm()
    if not form.validate():
        return _restriction_page(restriction_id, form, 422)
    if not form.is_confirmed:
        preview = restriction_impact.lifting(restriction_id)
        record = restriction_record(restriction_id)
        return _confirm(
            f"Lift restriction #{restriction_id}?",
            {
                "Order": f"{record['authority']}, {record['instrument']}",
                "Purposes": ", ".join(record["purposes"]),
                "Jurisdictions": ", ".join(record["jurisdictions"]),
                "Reason for lifting": form.reason.data,
            },
            url_for("console.restriction_lift", restriction_id=restriction_id),
            "Lift restriction",
            None,
            impact=preview,
            cancel=url_for("console.restriction_page", restriction_id=restriction_id),
        )
    lifted = restrictions.lift(current(), restriction_id, form.reason.data)
    allowed = sum((lifted["changed"]["lifted"] or {}).values())
    flash(f"Restriction #{restriction_id} lifted: {subjects(allowed)} allowed again.")
    return redirect(url_for("console.restriction_page", restriction_id=restriction_id))


def _restriction_page(
    restriction_id: int, form: RestrictionLiftForm, status: int = 200
) -> tuple[str, int]:
    record = restriction_record(restriction_id)
    return render_template("console/restriction.html", r=record, lift_form=form), status


@bp.get("/runs")
@staff("support")
def run_list() -> Any:
    """Training runs, newest first, with their affected and outstanding counts."""
    before = request.args.get("before", "")
    page = run_reads.list_runs(None, None, None, 50, int(before) if before.isdigit() else None)
    return render_template("console/runs.html", page=page)


@bp.route("/runs/<int(max=2147483647):run_id>", methods=["GET", "POST"])
@staff("support")
def run_page(run_id: int) -> Any:
    """A run's facts and remediations; support records a remediation after a confirmation."""
    form = RemediationForm()
    if request.method == "POST":
        if not form.validate():
            return _form_problem(form, None)
        if not form.is_confirmed:
            return _confirm(
                f"Record a remediation of run {run_id}?",
                {
                    "Action": form.action.data,
                    "Through seq": str(form.through_seq.data),
                    "Reason": form.reason.data,
                    "Ticket": form.ticket.data or "none",
                },
                url_for("console.run_page", run_id=run_id),
                "Record remediation",
                None,
                cancel=url_for("console.run_page", run_id=run_id),
            )
        runs.remediate(
            current(),
            run_id,
            form.action.data,
            form.through_seq.data,
            form.reason.data,
            form.ticket.data or None,
        )
        flash(f"Remediation recorded: {form.action.data} through seq {form.through_seq.data}.")
        return redirect(url_for("console.run_page", run_id=run_id))
    run = run_reads.get_run(run_id, None)
    if form.through_seq.data is None:
        form.through_seq.data = run["counts_as_of"]
    return render_template("console/run.html", run=run, form=form)


@bp.get("/runs/<int(max=2147483647):run_id>/affected.<any(text, ndjson, parquet):fmt>")
@staff("support")
def run_affected(run_id: int, fmt: str) -> Response:
    """Download a run's affected members as of the head (the same stream as the API's)."""
    seq, body = run_streams.affected_stream(run_id, None, fmt)
    return Response(
        stream_with_context(body),
        mimetype=run_streams.MEDIA_TYPES[fmt].split(";")[0],
        headers={
            "Consent-As-Of": str(seq),
            "Content-Disposition": f'attachment; filename="run-{run_id}-affected-{seq}.{fmt}"',
        },
    )


def _attach(form: FlaskForm, error: ConsentError, fields: dict[str, str]) -> None:
    """Show a refusal from the capability module beside the form's fields it names (by the
    API's field names, e.g. `window.to`), and the rest at the top of the form."""
    named = error.errors or {}
    for name, messages in named.items():
        field = fields.get(name) or fields.get(name.split(".")[0])
        target = form[field].errors if field else form.form_errors
        target.extend(messages)
    if not named:
        form.form_errors.append(error.detail)


def _form_problem(form: FlaskForm, user_id: str | None) -> tuple[str, int]:
    errors = {name: list(messages) for name, messages in form.errors.items()}
    return _error_page(422, "Check the form", "Some fields need attention.", errors)


def _confirm(
    question: str,
    facts: dict[str, Any],
    action: str,
    button: str,
    user_id: str | None,
    impact: dict[str, Any] | None = None,
    cancel: str | None = None,
    note: str | None = None,
    once: bool = False,
) -> str:
    # The same fields go back as hidden inputs (every value of a multi-select), with
    # confirmed=yes: the confirmation page needs no script and the second POST is validated
    # again from scratch.
    fields = [
        (k, v)
        for k, v in request.form.items(multi=True)
        if k not in ("csrf_token", "confirmed", "once")
    ]
    if once:
        fields.append(("once", secrets.token_urlsafe(24)))
    return render_template(
        "console/confirm.html",
        question=question,
        facts=facts,
        fields=fields,
        action=action,
        button=button,
        user_id=user_id,
        impact=impact,
        cancel=cancel,
        note=note,
    )
