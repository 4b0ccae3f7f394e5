"""The /me page's language (Flask-Babel): the user's explicit choice (`?lang=`, then remembered in
a cookie scoped to /me), else the best match of Accept-Language, else English.

Only /me is translated: everywhere else (the console, the JSON APIs) the locale is English
whatever a request asks for, so no other blueprint's output can change with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flask import Flask, Response, current_app, request
from flask_babel import Babel

from service.web.me.sessions import ME_PREFIX, on_me

# Each language the page is offered in, by its code, with its name in that language (the switch).
LANGUAGES: Mapping[str, str] = {"en": "English", "de": "Deutsch"}
DEFAULT = "en"
PARAM = "lang"
COOKIE = "consent_me_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
TRANSLATIONS = Path(__file__).resolve().parent / "translations"


def chosen() -> str | None:
    """The language the user picked: by `?lang=` now, or earlier (the cookie); None if neither.

    A language the page lacks (a product's link may pass its app's, say `fr`) is no choice, so
    Accept-Language decides rather than an error that would waste a single-use link.
    """
    for asked in (request.args.get(PARAM), request.cookies.get(COOKIE)):
        if asked in LANGUAGES:
            return asked
    return None


def select_locale() -> str:
    """Flask-Babel's locale selector: the page's language on /me, English everywhere else."""
    if not on_me(request.path):
        return DEFAULT
    return chosen() or request.accept_languages.best_match(list(LANGUAGES), DEFAULT)


def remember(response: Response) -> Response:
    """Keep a `?lang=` choice in a cookie for /me only (Strict: no other site can set it)."""
    asked = request.args.get(PARAM)
    if asked is not None and asked in LANGUAGES and request.cookies.get(COOKIE) != asked:
        response.set_cookie(
            COOKIE,
            asked,
            max_age=COOKIE_MAX_AGE,
            path=ME_PREFIX,
            secure=current_app.session_interface.get_cookie_secure(current_app),
            httponly=True,
            samesite="Strict",
        )
    return response


def init_app(app: Flask) -> None:
    """Bind Flask-Babel with the page's catalogues and locale selector."""
    Babel(
        app,
        default_locale=DEFAULT,
        default_translation_directories=str(TRANSLATIONS),
        locale_selector=select_locale,
    )
