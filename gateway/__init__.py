"""The Handoff Gateway: hands Twilio callers and texters to live agents."""
from __future__ import annotations

import logging
import secrets

from flask import Flask
from twilio.request_validator import RequestValidator
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway.config.file import load_config
from gateway.runtime import Gateway
from gateway.settings import Settings, load_settings
from gateway.voice.spool import Spool
from gateway.voice.call_records import DATABASE_ERRORS
from gateway.storage.store import make_engine
from gateway.voice.twiml import TwimlRenderer
from gateway.infra.twilio_rest import make_client
# Aliased: `gateway.voice`, `gateway.events` and `gateway.errors` are core modules, not these.
from gateway.web import api, close_db, console, ops, sms
from gateway.web import errors as web_errors
from gateway.web import voice as voice_webhooks
from gateway.web.api import conversations as api_conversations  # noqa: F401 - adds its routes
from gateway.web.api import destinations as api_destinations  # noqa: F401 - adds its routes
from gateway.web.api import events as api_events  # noqa: F401 - adds its routes
from gateway.web.api import messaging as api_messaging  # noqa: F401 - adds its routes
from gateway.web.inbound_call import InboundCallEndpoint
from gateway.web.json_provider import StrictJSONProvider
from gateway.web.logcontext import configure_logging
from gateway.web.slow_clients import BodyDeadline

log = logging.getLogger(__name__)

#: Twilio's webhooks are small forms; anything bigger is not from Twilio.
MAX_REQUEST_BYTES = 256 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """Build a gateway: settings read once, config checked, engine and templates made once.

    A bad setting or config file raises SettingsError or ConfigError, which exit with their lines
    rather than a traceback.
    A database that is down does not stop it: calls fail open and /readyz says why until the
    database answers, and the tables are made then.
    """
    settings = settings or load_settings()
    configure_logging(settings.auth_token)
    config = load_config(settings.config_path)
    engine = make_engine(settings.database_url, busy_timeout=settings.database_busy_timeout)

    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    # Random when unset: `gunicorn --preload` builds the app once, so its workers share the key.
    app.secret_key = settings.secret_key.get_secret_value() if settings.secret_key else secrets.token_hex(32)
    app.extensions["gateway"] = Gateway(
        settings=settings,
        config=config,
        engine=engine,
        renderer=TwimlRenderer(),
        validator=RequestValidator(settings.auth_token) if settings.auth_token else None,
        twilio=make_client(settings),
        spool=Spool(settings.spool_dir),
    )
    try:
        app.extensions["gateway"].ensure_schema()
    except DATABASE_ERRORS as error:
        log.error("database not ready at start-up; serving anyway, calls fail open until it is: %s", error)
    engine.dispose()  # gunicorn --preload forks after this: workers must open their own connections
    app.extensions["gateway"].spool.create()
    if not settings.auth_token:
        log.error("TWILIO_AUTH_TOKEN is not set: Twilio webhooks will answer 503 until it is")
    app.teardown_appcontext(close_db)
    web_errors.init_app(app)
    app.register_blueprint(voice_webhooks.bp)
    app.register_blueprint(sms.bp)
    api.register(app)  # with the routes the api_* modules imported above added to its blueprint
    console.register(app)
    ops.init_app(app)
    app.wsgi_app = InboundCallEndpoint(app, app.wsgi_app)
    # Outside the call endpoint: every body, that one's too, arrives within the deadline.
    app.wsgi_app = BodyDeadline(app.wsgi_app, max_bytes=MAX_REQUEST_BYTES)
    if settings.trusted_proxies:  # outermost: every path sees the client's scheme and host
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    return app
