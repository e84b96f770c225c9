"""The dashboard's templates: a jinja2 environment on the aiohttp app (aiohttp-jinja2, under a key of its own),
autoescape on for every template (a host name, a model string or a hook's output is always text, never
markup), gettext through jinja2's i18n extension in its "newstyle" form (``_("... %(name)s", name=value)``:
the value is escaped, the translation is ours), the request's language and its number formats.

Templates and static files are package data of ``provision.dashboard`` (``templates/``, ``static/``), found
with ``jinja2.PackageLoader`` and ``importlib.resources``: a checkout and an installed wheel alike.
"""

from __future__ import annotations

import gettext
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from provision.dashboard.i18n import COOKIE, LANGUAGES, Formats, choose, translations
from provision.dashboard.reasons import N_, Explanation
from provision.dashboard.views import DESTINATION_WORDS, FORM_WORDS, STAGE_WORDS, Views
from provision.images import ImageStore
from provision.recipes import RecipeSet

TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("dashboard_templates", jinja2.Environment)
SESSION_KEY = "provision.session"  # request[SESSION_KEY]: the logged-in session (provision.web.auth sets it)
DONE_ACTIONS = ("reimage", "ready", "forget", "rerun", "lot", "destination")  # ?done=ACTION after a form: said next
COOKIE_AGE = 365 * 86400
REFRESH_SECONDS = 10  # the page without JavaScript reloads itself this often (<noscript> meta refresh)


# what each refusal means for the person at the screen, and what to do (gettext msgids: the dashboard's catalogue)
ERROR_TITLES = {
    500: N_("Something went wrong"),
    400: N_("This value cannot be used"),
    401: N_("Log in to do this"),
    403: N_("This form cannot be used"),
    404: N_("Not found"),
    409: N_("Not possible now"),
    429: N_("Too many failed logins"),
}
ERROR_ADVICE = {
    500: N_("Try again; if it happens again, the server's log says why."),
    400: N_("The reason is below. Go back, correct the value and try again."),
    401: N_(
        "Reading the rack needs no login; actions, lots, the report, certificates and labels do. "
        "Log in, then try again."
    ),
    403: N_("The page was out of date or the form came from elsewhere. Reload the page and try again."),
    404: N_("Check the address, or go back to the rack."),
    409: N_("The machine is busy or in a state that does not allow this. Wait, reload the page and try again."),
    429: N_("Wait a few minutes, then try again. Ask the IT agent if you forgot your password."),
}


@dataclass
class Dashboard:
    """What the dashboard's handlers read: the view models' builder, the image store, the recipes."""

    views: Views
    images: ImageStore | None
    recipes: Callable[[], RecipeSet] | None


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)


def own_path(request: web.Request) -> str:
    """The page's path as the browser sent it (still percent-encoded: a lot named ``A/B`` stays one segment),
    for its own links (the language switch); never a scheme-relative ``//host`` link."""
    path = request.raw_path.split("?", 1)[0]
    return "/" + path.lstrip("/")


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    tr: gettext.NullTranslations = context["tr"]
    return tr.gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, count: int) -> str:
    tr: gettext.NullTranslations = context["tr"]
    return tr.ngettext(singular, plural, count)


def setup_templates(app: web.Application) -> jinja2.Environment:
    env = aiohttp_jinja2.setup(
        app,
        app_key=TEMPLATES,
        loader=jinja2.PackageLoader("provision.dashboard", "templates"),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        default_helpers=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["stage_words"] = STAGE_WORDS
    env.globals["form_words"] = FORM_WORDS
    env.globals["destination_words"] = DESTINATION_WORDS
    env.globals["languages"] = LANGUAGES
    env.globals["refresh_seconds"] = REFRESH_SECONDS
    return env


def language(request: web.Request) -> str:
    return choose(request.query.get("lang"), request.cookies.get(COOKIE), request.headers.get("Accept-Language"))


def context(request: web.Request, lang: str, **values: Any) -> dict[str, Any]:
    """What every template gets: the language, its translations and formats, the page's path, the logged-in
    session (None: nobody; its CSRF token goes in every form) and the action just done (``?done=``)."""
    tr = translations(lang)

    def reason(explanation: Explanation) -> tuple[str, str]:
        return explanation.render(tr.gettext)

    done = request.query.get("done")
    base = {"lang": lang, "tr": tr, "fmt": Formats(lang), "path": own_path(request), "reason": reason}
    extra = {"session": request.get(SESSION_KEY), "done": done if done in DONE_ACTIONS else None}
    extra["done_ok"] = request.query.get("ok") != "0"
    return {**base, **extra, **values}


def page(request: web.Request, template: str, values: Mapping[str, Any], status: int = 200) -> web.Response:
    """A page in the request's language; ``?lang=`` also sets the ``lang`` cookie."""
    lang = language(request)
    response = aiohttp_jinja2.render_template(
        template, request, context(request, lang, **values), app_key=TEMPLATES, status=status
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Language"] = lang
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(COOKIE, lang, max_age=COOKIE_AGE, path="/", httponly=True, samesite="Lax")
    return response


def fragment(request: web.Request, template: str, lang: str, values: Mapping[str, Any]) -> str:
    """A template rendered alone (a tile for a live update)."""
    return aiohttp_jinja2.render_string(template, request, context(request, lang, **values), app_key=TEMPLATES)
