"""The /me page: a user's own consent settings, history, runs and signed record, server-rendered.

Views are thin, as the console's: parse a form, call one self_service function, render. Who acts
is the session's user only (a token is exchanged once, on GET /me?token=…); a form never names
a user, so nothing posted can reach another user's record.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import sqlalchemy.exc as sa_exc
from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from wtforms import HiddenField
from wtforms.validators import AnyOf

from service.domain.errors import ConsentError
from service.domain.explanations import words
from service.ledger import self_service
from service.web.api.me import gpc_signal, record_response
from service.web.console.views import SECURITY_HEADERS, csrf
from service.web.me import language, sessions
from service.web.me.wording import history_words, refusal, when

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint(
    "me_page",
    __name__,
    url_prefix=sessions.ME_PREFIX,
    template_folder="templates",
    static_folder="static",
)


class SwitchForm(FlaskForm):  # type: ignore[misc]
    """One purpose's switch: the state to set, and the notice version the user was shown."""

    state = HiddenField(validators=[AnyOf(["granted", "denied"])])
    notice_version = HiddenField()


class SignOutForm(FlaskForm):  # type: ignore[misc]
    """Nothing but the CSRF token."""


@bp.before_request
def _protect() -> None:
    # Every POST carries its form's CSRF token; a missing or wrong one is a 400 page.
    csrf.protect()


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    # The exchange URL held a token: it must never reach another site in a Referer.
    response.headers["Referrer-Policy"] = "no-referrer"
    # The same URL answers in the language of a cookie or of Accept-Language.
    response.vary.update(("Cookie", "Accept-Language"))
    return language.remember(response)


@bp.context_processor
def _language() -> dict[str, Any]:
    # <html lang> and the switch: every page names its language and offers the others.
    return {"locale": str(get_locale() or language.DEFAULT), "languages": language.LANGUAGES}


def signed_in(view: F) -> F:
    """Let a page be seen only in a session; without one, say how to open the page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user_id = sessions.current_user_id()
        if user_id is None:
            return _page("me/signed_out.html", 401)
        g.me_user_id = user_id
        g.me_actor = self_service.user_actor(user_id, g.get("request_id"))
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), status


def _error_page(status: int, slug: str | None = None) -> tuple[str, int]:
    """The refusal in the person's words and language (an API's detail is for developers)."""
    words = refusal(status, slug)
    return _page("me/error.html", status, title=gettext(words.title), detail=gettext(words.detail))


@bp.errorhandler(ConsentError)
def _consent_error(error: ConsentError) -> tuple[str, int]:
    return _error_page(error.status, error.slug)


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError) -> tuple[str, int]:
    return _error_page(400, "csrf")


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    return _error_page(error.code or 500)


@bp.errorhandler(sa_exc.OperationalError)
@bp.errorhandler(sa_exc.InterfaceError)
def _database_error(error: Exception) -> tuple[str, int]:
    log.error("database unavailable: %s", type(error).__name__)
    return _error_page(503)


@bp.get("")
def page() -> Any:
    """Exchange a product's link (?token=…) for a session, or show the user's settings."""
    token = request.args.get("token")
    if token is not None:
        return _exchange(token)
    return _settings()


def _exchange(token: str) -> Any:
    user = sessions.redeem(token)
    sessions.open_session(user)
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        # After a redirect on a link from another site, browsers withhold SameSite=Strict
        # cookies; a page of our own that moves on (meta refresh) is a same-site navigation.
        return _page("me/continue.html", next_url=url_for("me_page.page"))
    return redirect(url_for("me_page.page"), 303)


@signed_in
def _settings() -> Any:
    user_id: str = g.me_user_id
    recorded = self_service.honour_gpc(g.me_actor, user_id) if gpc_signal() else []
    document = self_service.me_document(user_id)
    consents = [
        {
            **c,
            "reason": words(
                c["explanation"]["code"],
                bool(c["allowed"]),
                c["explanation"]["params"],
                translate=gettext,
            ),
            "form": SwitchForm(
                formdata=None,
                state="denied" if c["allowed"] else "granted",
                notice_version=(c.get("notice") or {}).get("version") or "",
            ),
        }
        for c in document["consents"]
    ]
    titles = {c["purpose"]: c["title"] for c in document["consents"]}
    history = self_service.all_own_events(user_id)
    runs = self_service.own_runs(user_id)["runs"]
    return render_template(
        "me/page.html",
        me=document,
        consents=consents,
        titles=titles,
        history=[
            {**history_words(e, titles, translate=gettext), "when": when(e["at"])}
            for e in reversed(history)
        ],
        runs=runs,
        gpc=gpc_signal(),
        gpc_recorded=[titles.get(p, p) for p in recorded],
        sign_out_form=SignOutForm(),
    )


@bp.post("/consents/<purpose>")
@signed_in
def switch(purpose: str) -> Any:
    """Turn one purpose on or off (source self_service), then show the page again."""
    form = SwitchForm()
    if not form.validate():
        return _error_page(400, "bad-switch")
    self_service.set_own_choice(
        g.me_actor,
        g.me_user_id,
        purpose,
        form.state.data,
        notice_version=form.notice_version.data or None,
    )
    return redirect(url_for("me_page.page", _anchor=f"purpose-{purpose}"), 303)


@bp.get("/record")
@signed_in
def record() -> Response:
    """Download the user's signed consent record."""
    return record_response(g.me_user_id)


@bp.post("/sign-out")
def sign_out() -> Any:
    """End the session."""
    SignOutForm()  # the CSRF token was checked before the view
    sessions.sign_out()
    return _page("me/signed_out.html", 200, signed_out=True)
