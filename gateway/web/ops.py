"""For load balancers and monitoring: /healthz, /readyz, /metrics; and per-request timing."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, request_started
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway.events import deliveries
from gateway.infra import jsonlog, metrics
from gateway.storage import store
from gateway.storage.models import utcnow
from gateway.storage.schema import DatabaseBehind
from gateway.web import current_gateway, db

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

#: Requests that matched no URL rule share one label, so probes of random paths add no series.
UNMATCHED_ROUTE = "unmatched"


def current_metrics() -> metrics.Metrics:
    return current_app.extensions["metrics"]


@bp.get("/healthz")
def healthz():
    """The process is up and answering; says nothing of the database (that is /readyz)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when the database answers, takes a write, and its schema is at head; 503 with the reason if not."""
    gateway = current_gateway()
    try:
        with gateway.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        gateway.ensure_schema()
        store.prove_writable(gateway.engine)
    except DatabaseBehind as error:
        reason = str(error)
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        reason = f"database unreachable: {type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
    else:
        return jsonify({"status": "ready"})
    log.error("not ready: %s", reason)
    return jsonify({"status": "unavailable", "reason": reason}), 503


@bp.get("/metrics")
def prometheus_metrics():
    registry = metrics.exposition_registry(current_metrics())
    body = generate_latest(registry) + generate_latest(metrics.delivery_registry(_delivery_state))
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def _delivery_state() -> tuple[dict[str, int], float] | None:
    try:
        session = db()
        return deliveries.counts_by_status(session), deliveries.oldest_pending_age(session, utcnow())
    except SQLAlchemyError as error:
        log.warning("event delivery metrics left out: database unavailable: %s", str(error).splitlines()[0])
        return None


def _start_request(_app: Flask, **_extra) -> None:
    jsonlog.clear()
    if request.environ.get(metrics.UNCOUNTED):
        metrics.activate(None)
        return
    g.request_timer = time.perf_counter()
    metrics.activate(current_metrics())


def _end_request(_error: BaseException | None = None) -> None:
    started = g.pop("request_timer", None)
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        current_metrics().request_latency.labels(route=route, method=request.method).observe(
            time.perf_counter() - started
        )
    metrics.activate(None)
    jsonlog.clear()


def init_app(app: Flask) -> None:
    """Give the app its own metrics registry, time every request, and serve the ops endpoints."""
    app.extensions["metrics"] = metrics.Metrics()
    # The request_started signal comes before URL value preprocessors, where the API authenticates.
    request_started.connect(_start_request, app)
    app.teardown_request(_end_request)
    app.register_blueprint(bp)
