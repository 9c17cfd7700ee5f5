"""The operators' web console under /console (SPEC §7): thin views over catalog, store and config.

Sessions are Flask's signed cookies; every POST carries the session's CSRF token. The route test
sends a correctly signed /voice/call through the app itself, so it exercises exactly what Twilio
would, and then removes the conversation it made.
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import math
import secrets
from xml.etree import ElementTree
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.security import check_password_hash
from werkzeug.test import Client

from gateway.events import deliveries
from gateway.handoffs import catalog
from gateway.infra import jsonlog, metrics
from gateway.storage import search, store
from gateway.voice import callflow
from gateway.web.console import overview, timeline, transcript
from gateway.voice.call_records import DATABASE_ERRORS
from gateway.config.file import NumberRoute, ProjectConfig
from gateway.config.destinations import METHOD_HELP, has_control_character
from gateway.errors import GatewayError
from gateway.handoffs.handoff import LIFECYCLE_STATES
from gateway.infra.safe_text import is_storable, whole_number
from gateway.web import current_gateway, db
from gateway.web.console import headers as console_headers
from gateway.web.signature import public_base_url, simulated_call_form

CONSOLE_PATH = "/console"

bp = Blueprint(
    "console",
    __name__,
    url_prefix=CONSOLE_PATH,
    static_folder="../../static",
    static_url_path="/static",
)

DISABLED_MESSAGE = (
    "Console disabled: set GATEWAY_CONSOLE_PASSWORD_HASH "
    "(make one with `gateway hash-password`) and restart the gateway.\n"
)
PAGE_SIZE = 25
#: How often the conversation pages re-read themselves (seconds); tests make it shorter.
LIVE_SECONDS = 5
#: Where `simulate` calls come from unless the operator says otherwise (a number Twilio never assigns).
TEST_CALLER = "+15005550006"
_PUBLIC_ENDPOINTS = {"console.sign_in", "console.static"}
#: The POSTs that act on no project; every other form says which project's page it came from.
_UNSCOPED_POSTS = {"console.sign_in", "console.sign_out", "console.switch_project"}
#: The hidden field of every project-scoped form: the project of the page it was on.
PAGE_PROJECT_FIELD = "page_project"
_FORM_FIELDS = ("name", "description", "method", "route", "timeout", "utterance", "reason", "sip_headers")


class ConsoleSessions(SecureCookieSessionInterface):
    """Only the console has sessions: webhooks and the API authenticate each request.

    Unsigning a cookie, or merely building the signer, on every webhook would cost the call
    path time for nothing; outside the console `session` is Flask's null session, which
    refuses writes, so no view can come to rely on one by accident.
    """

    def open_session(self, app, request):
        if request.path != CONSOLE_PATH and not request.path.startswith(CONSOLE_PATH + "/"):
            return None
        return super().open_session(app, request)

    def get_cookie_secure(self, app) -> bool:
        """Secure when the public URL is https, or when this request came over https."""
        return super().get_cookie_secure(app) or request.is_secure


def register(app) -> None:
    """The blueprint plus its session, with a cookie the browser sends to /console only."""
    public_url = app.extensions["gateway"].settings.public_url or ""
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_PATH=CONSOLE_PATH,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.config.setdefault("CONSOLE_LIVE_SECONDS", LIVE_SECONDS)
    app.register_blueprint(bp)
    console_headers.init_app(app, CONSOLE_PATH, Path(app.root_path, app.template_folder, "console"))


# --- sign-in, CSRF and the current project -------------------------------------------------


def _password_hash() -> str | None:
    """The configured hash, or None when the console is off (unset, or not a werkzeug hash)."""
    configured = current_gateway().settings.console_password_hash
    if not configured or not _is_werkzeug_hash(configured):
        return None
    return configured


def _storable_request() -> bool:
    sent = [value for _name, value in (*request.args.items(multi=True), *request.form.items(multi=True))]
    return all(is_storable(text) for text in (request.path, *sent))


@lru_cache(maxsize=4)
def _is_werkzeug_hash(value: str) -> bool:
    """Whether werkzeug can check passwords against `value`; asked once per value (hashing is slow)."""
    try:
        check_password_hash(value, "")
    except ValueError:
        return False
    return "$" in value


def _hash_fingerprint(password_hash: str) -> str:
    """Kept in the session so that changing the password signs every operator out."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def csrf_token() -> str:
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return session["csrf_token"]


@bp.before_request
def _guard():
    """Console off → 503; a POST without this session's CSRF token → 400; signed out → sign-in."""
    password_hash = _password_hash()
    if password_hash is None:
        if current_gateway().settings.console_password_hash:
            current_app.logger.error(
                "GATEWAY_CONSOLE_PASSWORD_HASH is not a werkzeug password hash; console disabled"
            )
        return Response(DISABLED_MESSAGE, 503, mimetype="text/plain")
    if not _storable_request():  # PostgreSQL would fail the query on a NUL
        return render_template(
            "console/error.html", title="Bad request", message="The address or the form holds a NUL character (%00); remove it."
        ), 400
    if has_control_character(request.values.get("next", "")):  # it would become a Location header
        return render_template(
            "console/error.html", title="Bad request", message="The next address holds a line break or another control character; remove it."
        ), 400
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf_token", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            return render_template(
                "console/error.html",
                title="Form expired",
                message="This form is out of date or came from another site. Go back, reload the page and try again.",
            ), 400
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    if session.get("operator") != _hash_fingerprint(password_hash):
        return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
    g.project = _current_project()
    if request.method == "POST" and request.endpoint not in _UNSCOPED_POSTS:
        return _refuse_if_another_projects_form()
    return None


def _refuse_if_another_projects_form():
    """A form acts on the project of its page, never on one the session switched to since (409).

    The project lives in the session, which every tab shares: without this, a Delete pressed on
    one project's page after another tab switched would delete the other project's namesake.
    """
    sent = request.form.get(PAGE_PROJECT_FIELD, "")
    if sent == g.project.key:
        return None
    origin = f"project {sent}" if sent else "a page that does not say its project"
    return render_template(
        "console/error.html",
        title="Project switched",
        message=f"This form came from {origin}, but this browser has switched to project {g.project.key} "
        "since (in another tab, perhaps). Nothing was changed. Reload the page to work on "
        f"{g.project.key}, or switch back to the other project and try again.",
    ), 409


def _current_project() -> ProjectConfig:
    config = current_gateway().config
    return config.project_by_key(session.get("project", "")) or config.projects[0]


@bp.app_template_global()
def console_csrf_token() -> str:
    return csrf_token()


@bp.app_template_filter("when")
def _when(moment: datetime | None) -> str:
    moment = store.as_utc(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


@bp.app_template_filter("duration")
def _duration(seconds: int) -> str:
    """42 s, 3 min 05 s, 1 h 02 min: how long a call lasted, read at a glance."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


@bp.context_processor
def _page_globals() -> dict:
    return {
        "projects": current_gateway().config.projects,
        "project": g.get("project"),
        "live_seconds": current_app.config["CONSOLE_LIVE_SECONDS"],
        "rendered_at": datetime.now(timezone.utc),
    }


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect to another site."""
    if not target:
        return url_for("console.handoffs")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/") or target.startswith("//"):
        return url_for("console.handoffs")
    return target


@bp.route("/login", methods=["GET", "POST"])
def sign_in():
    if request.method == "GET":
        return _sign_in_page()
    throttle = current_gateway().sign_in_throttle
    # Behind a trusted proxy this is X-Forwarded-For's text: keep it printable and the column's size.
    address = jsonlog.printable(request.remote_addr or "unknown")[:100]
    wait = throttle.begin_attempt(db(), address)
    if wait:
        current_app.logger.warning("console sign-in from %s refused unchecked: too many wrong passwords", address)
        minutes = math.ceil(wait / 60)
        message = f"Too many wrong passwords from your address. Try again in {minutes} minute{'s' * (minutes > 1)}."
        return _sign_in_page(message, 429, {"Retry-After": str(wait)})
    password_hash = _password_hash()
    if check_password_hash(password_hash, request.form.get("password", "")):
        throttle.succeeded(db(), address)
        session.clear()
        session.permanent = True
        session["operator"] = _hash_fingerprint(password_hash)
        csrf_token()
        return redirect(_safe_next(request.form.get("next")))
    current_app.logger.warning("console sign-in refused from %s", address)
    return _sign_in_page("That password is not right.", 401)


def _sign_in_page(error: str | None = None, status: int = 200, headers: dict | None = None):
    page = render_template("console/login.html", error=error, next=request.values.get("next", ""))
    return page, status, headers or {}


@bp.post("/logout")
def sign_out():
    session.clear()
    flash("Signed out.")
    return redirect(url_for("console.sign_in"))


@bp.get("/")
def home():
    return redirect(url_for("console.handoffs"))


@bp.post("/project")
def switch_project():
    project = current_gateway().config.project_by_key(request.form.get("project", ""))
    if project is None:
        flash("That project is not in the config file.", "error")
    else:
        session["project"] = project.key
    return redirect(_safe_next(request.form.get("next")))


# --- Call Handoffs -------------------------------------------------------------------------


def _blank_form() -> dict:
    return {"name": "", "description": "", "method": "refer", "route": "", "timeout": "",
            "utterance": "", "reason": "", "headers": [("", "")]}


def _form_of(destination) -> dict:
    return {
        "name": destination.name,
        "description": destination.description,
        "method": destination.method,
        "route": destination.route or "",
        "timeout": "" if destination.timeout is None else str(destination.timeout),
        "utterance": destination.utterance or "",
        "reason": destination.reason or "",
        "headers": list(destination.sip_headers.items()) or [("", "")],
    }


def _read_form(form: MultiDict) -> tuple[dict, dict, dict[str, str]]:
    """The form as typed (to show again) and as a destination body; errors the body cannot express."""
    typed = {key: form.get(key, "").strip() for key in ("name", "description", "method", "route",
                                                        "timeout", "utterance", "reason")}
    rows = list(zip(form.getlist("header_name"), form.getlist("header_value")))
    typed["headers"] = [(name.strip(), value.strip()) for name, value in rows] or [("", "")]
    errors: dict[str, str] = {}
    headers: dict[str, str] = {}
    for name, value in typed["headers"]:
        if not name and not value:
            continue
        if not name:
            errors["sip_headers"] = f"the header with value {value!r} needs a name such as X-Reason"
        elif name in headers:
            errors["sip_headers"] = f"the header {name} is given twice; keep one"
        headers[name] = value
    body = {
        "name": typed["name"],
        "description": typed["description"],
        "method": typed["method"] or "refer",
        "sip_headers": headers,
    }
    # The route is hidden for BYE: whatever was left in it is not part of a BYE destination.
    if body["method"] != "bye" and typed["route"]:
        body["route"] = typed["route"]
    for key in ("utterance", "reason"):
        if typed[key]:
            body[key] = typed[key]
    if typed["timeout"]:
        if (seconds := whole_number(typed["timeout"])) is not None:
            body["timeout"] = seconds
        else:
            errors["timeout"] = "write whole seconds, for example 20"
    return typed, body, errors


def _field_errors(error: GatewayError) -> dict[str, str]:
    """Put the catalog's error beside its field; one without a field goes at the top of the form."""
    field = (error.field or "").split(".")[0]
    if field in _FORM_FIELDS:
        return {field: error.message.removeprefix(f"{error.field}: ")}
    return {"form": error.message}


def _render_handoff_form(form: dict, errors: dict, *, editing: str | None = None, status: int = 200):
    return render_template(
        "console/handoff_form.html", form=form, errors=errors, editing=editing, method_help=METHOD_HELP
    ), status


@bp.get("/handoffs")
def handoffs():
    entries = catalog.list_destinations(db(), g.project)
    return render_template(
        "console/handoffs.html",
        entries=entries,
        config_path=current_gateway().config.path,
        method_help=METHOD_HELP,
        orders=_transfer_orders(g.project),
    )


def _transfer_orders(project: ProjectConfig) -> dict[str, list[str]]:
    """Each number's destinations in the order a failing call tries them, attempt by attempt."""
    orders = {}
    for number in project.numbers:
        route = NumberRoute(project, number)
        order = [callflow.next_destination(project, route, attempt, None) for attempt in range(project.max_attempts)]
        orders[number.number] = [name for name in order if name is not None]
    return orders


@bp.route("/handoffs/new", methods=["GET", "POST"])
def new_handoff():
    if request.method == "GET":
        return _render_handoff_form(_blank_form(), {})
    typed, body, errors = _read_form(request.form)
    if request.form.get("action") == "add_header":
        typed["headers"].append(("", ""))
        return _render_handoff_form(typed, {})
    if errors:
        return _render_handoff_form(typed, errors, status=400)
    try:
        destination = catalog.create(db(), g.project, body)
        db().commit()
    except GatewayError as error:
        return _render_handoff_form(typed, _field_errors(error), status=error.status)
    flash(f"Added {destination.name}.")
    return redirect(url_for("console.handoffs"))


@bp.route("/handoffs/edit/<path:name>", methods=["GET", "POST"])
def edit_handoff(name: str):
    entry = catalog.find(db(), g.project, name)
    if entry is None:
        abort(404)
    if entry.source == "config":
        flash(f"{name} comes from the config file ({current_gateway().config.path}); change it there.", "error")
        return redirect(url_for("console.handoffs"))
    if request.method == "GET":
        return _render_handoff_form(_form_of(entry.destination), {}, editing=name)
    typed, body, errors = _read_form(request.form)
    if request.form.get("action") == "add_header":
        typed["headers"].append(("", ""))
        return _render_handoff_form(typed, {}, editing=name)
    if errors:
        return _render_handoff_form(typed, errors, editing=name, status=400)
    # Every form field is sent, so what was cleared must be cleared (PATCH keeps absent keys).
    body.setdefault("route", None)
    body.setdefault("utterance", None)
    body.setdefault("reason", None)
    body.setdefault("timeout", None)
    try:
        destination = catalog.update(db(), g.project, name, body)
        db().commit()
    except GatewayError as error:
        return _render_handoff_form(typed, _field_errors(error), editing=name, status=error.status)
    flash(f"Saved {destination.name}.")
    return redirect(url_for("console.handoffs"))


@bp.post("/handoffs/delete/<path:name>")
def delete_handoff(name: str):
    try:
        catalog.delete(db(), g.project, name)
        db().commit()
    except GatewayError as error:
        flash(error.message, "error")
    else:
        flash(f"Deleted {name}.")
    return redirect(url_for("console.handoffs"))


# --- Numbers and the route test ------------------------------------------------------------


@bp.get("/numbers")
def numbers():
    return render_template("console/numbers.html", test_caller=TEST_CALLER)


def simulate_call(to_number: str, from_number: str) -> tuple[int, str]:
    """POST a /voice/call signed as Twilio signs it through the whole app, then forget that call.

    It runs in a fresh context, so the simulated request gets its own app context and database
    session exactly like a request from Twilio; nothing here skips or weakens the signature check.
    It counts in no metric: the call it makes never happened.
    """
    token = current_gateway().settings.auth_token
    base = public_base_url()
    account_sid = current_gateway().settings.twilio_account_sid
    params = simulated_call_form(account_sid=account_sid, from_number=from_number, to_number=to_number)
    call_sid = params["CallSid"]
    signature = RequestValidator(token).compute_signature(base + "/voice/call", params)
    client = Client(current_app._get_current_object())
    try:
        response = contextvars.Context().run(
            client.post,
            "/voice/call",
            base_url=base,
            data=params,
            headers={"X-Twilio-Signature": signature},
            environ_overrides={metrics.UNCOUNTED: True},
        )
        return response.status_code, response.get_data(as_text=True)
    finally:
        store.delete_call(db(), call_sid)
        db().commit()


@bp.post("/numbers/test")
def test_route():
    number = request.form.get("number", "")
    from_number = request.form.get("from", "").strip() or TEST_CALLER
    route = current_gateway().config.route_for(number)
    if route is None or route.project.key != g.project.key:
        abort(404)
    if current_gateway().settings.auth_token is None:
        flash("TWILIO_AUTH_TOKEN is not set, so Twilio's calls (and this test) are refused with 503.", "error")
        return redirect(url_for("console.numbers"))
    status, twiml = simulate_call(number, from_number)
    return render_template(
        "console/route_test.html",
        number=route.number,
        from_number=from_number,
        status=status,
        twiml=_indented(twiml),
    )


def _indented(twiml: str) -> str:
    """One element a line, so an operator can read it; anything that is not XML is shown as is."""
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError:
        return twiml
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode")


# --- Conversations -------------------------------------------------------------------------


def _filters_from(args) -> tuple[store.ConversationFilter, dict[str, str]]:
    errors: dict[str, str] = {}
    state = args.get("state") or None
    if state is not None and state not in LIFECYCLE_STATES:
        errors["state"] = "choose a state from the list"
        state = None
    since = until = None
    if args.get("date"):
        try:
            day = date.fromisoformat(args["date"])
        except ValueError:
            errors["date"] = "write the date as YYYY-MM-DD"
        else:
            since, until = overview.day_bounds(day)
    filters = store.ConversationFilter(
        state=state,
        topic=args.get("topic", "").strip() or None,
        to_number=args.get("number") or None,
        from_number=args.get("caller", "").strip() or None,
        since=since,
        until=until,
        search=search.terms_for(args.get("q", ""), (number.number for number in g.project.numbers)),
    )
    return filters, errors


def _cursor(args) -> tuple[datetime, str] | None:
    """`before` is `<started_at ISO>~<id>` of the last row of the previous page."""
    raw = args.get("before", "")
    moment, _, conversation_id = raw.partition("~")
    if not moment or not conversation_id:
        return None
    try:
        return datetime.fromisoformat(moment), conversation_id
    except ValueError:
        return None


@bp.get("/conversations")
def conversations():
    filters, errors = _filters_from(request.args)
    rows = store.list_conversations(
        db(), g.project.key, filters, limit=PAGE_SIZE + 1, after=_cursor(request.args)
    )
    if filters.search is not None and len(rows) == 1 and "before" not in request.args:
        return redirect(url_for("console.conversation", conversation_id=rows[0].id))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    filter_args = {key: value for key, value in request.args.items() if key != "before" and value}
    next_args = None
    if more:
        last = rows[-1]
        next_args = {**filter_args, "before": f"{store.as_utc(last.started_at).isoformat()}~{last.id}"}
    return render_template(
        "console/conversations.html",
        rows=rows,
        openers=transcript.openers(db(), rows),
        args=request.args,
        errors=errors,
        states=LIFECYCLE_STATES,
        next_args=next_args,
        filter_args=filter_args,
        paged="before" in request.args,
    )


@bp.get("/conversations/<conversation_id>")
def conversation(conversation_id: str):
    found = store.find_conversation(db(), g.project.key, conversation_id=conversation_id)
    if found is None:
        abort(404)
    return render_template(
        "console/conversation.html",
        conversation=found,
        entries=timeline.build(db(), found),
        turns=transcript.turns(db(), found),
    )


# --- Overview ------------------------------------------------------------------------------


OUTCOME_TITLES = {"handoff_completed": "Reached an agent", "handoff_failed": "Failed", "handoff_initiated": "In progress"}


@bp.get("/overview")
def day_overview():
    today = datetime.now(timezone.utc).date()
    day, error = today, None
    if request.args.get("day"):
        try:
            day = date.fromisoformat(request.args["day"])
        except ValueError:
            day, error = today, "write the day as YYYY-MM-DD"
        if day > today:
            day, error = today, "that day has not come yet (days are UTC); here is today"
    return render_template(
        "console/overview.html",
        figures=overview.for_day(db(), g.project.key, day),
        error=error,
        outcome_titles=OUTCOME_TITLES,
        previous_day=day - timedelta(days=1) if day > date.min else None,
        next_day=day + timedelta(days=1) if day < today else None,
    )


# --- Event deliveries ----------------------------------------------------------------------


@bp.get("/events")
def event_deliveries():
    """Each subscription's recent deliveries: status, attempts, last error, next retry."""
    by_url: dict[str, list] = {}
    for row in deliveries.recent(db(), project_key=g.project.key, limit=200):
        by_url.setdefault(row.url, []).append(row)
    return render_template("console/events.html", by_url=by_url)


@bp.post("/events/deliveries/<int:delivery_id>/redeliver")
def redeliver(delivery_id: int):
    if deliveries.redeliver(db(), delivery_id, project_key=g.project.key) is None:
        abort(404)
    flash(f"Delivery {delivery_id} will be sent again as soon as gateway deliver is free.")
    return redirect(url_for("console.event_deliveries"))


def _database_unavailable(error: Exception):
    current_app.logger.error("database unavailable on %s (%s: %s)", request.path, type(error).__name__, error)
    return render_template(
        "console/error.html",
        title="Database unavailable",
        message="The gateway's database is not answering, so this page cannot be shown. Try again in a moment.",
    ), 503


for _database_error in DATABASE_ERRORS:
    bp.register_error_handler(_database_error, _database_unavailable)


@bp.errorhandler(404)
def _not_found(_error):
    return render_template(
        "console/error.html", title="Not found", message="Nothing here in this project; it may be in another one."
    ), 404
