"""Prometheus metrics of one gateway, and the helpers the core calls to count what happened.

Every app has its own CollectorRegistry (tests build many apps in one process). The core does
not know which app it serves, so the web layer makes the app's `Metrics` current for the
length of each request (`activate`) and the helpers below count into it; outside a request
(the CLI, a test calling the core directly) they count nothing.

Under gunicorn each worker counts on its own. With prometheus-client's PROMETHEUS_MULTIPROC_DIR
set, every worker writes its counts to files there and `exposition_registry` sums them all,
so a scrape sees the whole server whichever worker answers it.
"""
from __future__ import annotations

import os
from contextvars import ContextVar

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

#: prometheus-client's own variable; it must be set before the gateway starts.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Webhook latencies that matter: Twilio gives up at 15 s, callers notice well before.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)


class Metrics:
    """The gateway's instruments, all in one registry that `/metrics` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer an HTTP request (Twilio webhooks and API), by URL rule.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.handoffs = Counter(
            "gateway_handoff_transitions",
            "Handoff state transitions recorded, by state entered and destination.",
            ["state", "destination"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "gateway_twilio_signature_failures",
            "Twilio webhooks refused with 403 because X-Twilio-Signature did not verify.",
            ["route"],
            registry=self.registry,
        )
        self.calls_per_commit = Histogram(
            "gateway_new_calls_per_commit",
            "New calls stored by one database commit: the calls that arrived while the commit before ran.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.sms_refusals = Counter(
            "gateway_sms_refused",
            "Outbound SMS refused before sending (opt-out, unregistered A2P 10DLC sender, ...).",
            ["reason"],
            registry=self.registry,
        )


def exposition_registry(metrics: Metrics) -> CollectorRegistry:
    """What /metrics shows: every worker's counts summed in multiprocess mode, else this app's."""
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        return metrics.registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


class DeliveryCollector:
    """Event deliveries as the database holds them, read at each scrape.

    The delivery worker is another process with no /metrics of its own; the database it
    writes is what every gateway process can read, so any scrape sees the same figures.
    `read` returns (deliveries by outcome, seconds the oldest undelivered event has waited),
    or None while the database is unavailable (the figures are then left out, not faked).
    """

    def __init__(self, read: Callable[[], tuple[dict[str, int], float] | None]) -> None:
        self.read = read

    def collect(self):
        state = self.read()
        if state is None:
            return
        counts, oldest_age = state
        by_outcome = GaugeMetricFamily(
            "gateway_event_deliveries",
            "Event deliveries by outcome: delivered, failed (stopped) or pending (not yet delivered).",
            labels=["outcome"],
        )
        for outcome, count in sorted(counts.items()):
            by_outcome.add_metric([outcome], count)
        yield by_outcome
        yield GaugeMetricFamily(
            "gateway_event_oldest_undelivered_age_seconds",
            "How long the oldest event still waiting for a delivery has waited (0 when none waits).",
            value=oldest_age,
        )


def delivery_registry(read: Callable[[], tuple[dict[str, int], float] | None]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(read))
    return registry


_current: ContextVar[Metrics | None] = ContextVar("gateway_metrics", default=None)


#: A WSGI environ key: a request carrying it counts in no metric (the console's simulated call,
#: which is deleted afterwards, would otherwise show on dashboards as a handoff that never was).
UNCOUNTED = "gateway.uncounted"


def activate(metrics: Metrics | None) -> None:
    """Count into `metrics` from now on in this context (None: count nothing)."""
    _current.set(metrics)


def handoff_recorded(state: str, destination: str | None) -> None:
    """A handoff transition was committed."""
    metrics = _current.get()
    if metrics is not None:
        metrics.handoffs.labels(state=state, destination=destination or "").inc()


def calls_committed_together(count: int) -> None:
    """One commit stored `count` new calls."""
    metrics = _current.get()
    if metrics is not None:
        metrics.calls_per_commit.observe(count)


def signature_failed(route: str) -> None:
    """A Twilio webhook was refused because its signature did not verify."""
    metrics = _current.get()
    if metrics is not None:
        metrics.signature_failures.labels(route=route).inc()


def sms_refused(reason: str) -> None:
    """An outbound SMS was refused before sending; `reason` is the API error code."""
    metrics = _current.get()
    if metrics is not None:
        metrics.sms_refusals.labels(reason=reason).inc()
