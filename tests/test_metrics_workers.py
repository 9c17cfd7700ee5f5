"""/metrics under a real gunicorn with two workers: with PROMETHEUS_MULTIPROC_DIR, every scrape
shows the whole server's counts, whichever worker answers it."""
from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from tests.gunicorn_support import gunicorn_as_in_the_procfile
from tests.support import call_params, sign

#: Enough calls, sent 8 at a time, that both workers answer some; the test checks they did.
MAX_CALLS = 400


def test_every_scrape_sums_all_workers_counts(config_path, tmp_path):
    metrics_dir = tmp_path / "metrics"
    with gunicorn_as_in_the_procfile(tmp_path, config_path) as (base, _port):  # two workers
        calls = 0
        with ThreadPoolExecutor(8) as pool:
            while len(_worker_pids(metrics_dir)) < 2:
                assert calls < MAX_CALLS, "one worker answered every call; cannot show the sum"
                statuses = list(pool.map(lambda n: _signed_call(base, f"CA{n:032x}"), range(calls, calls + 40)))
                assert statuses == [200] * 40
                calls += 40

        for _ in range(6):  # each scrape lands on either worker
            initiated = _scrape(base)[("gateway_handoff_transitions_total", "handoff_initiated")]
            assert initiated == calls


def _signed_call(base: str, call_sid: str) -> int:
    params = call_params(call_sid)
    request = urllib.request.Request(
        f"{base}/voice/call",
        data=urlencode(params).encode(),
        headers={"X-Twilio-Signature": sign(f"{base}/voice/call", params)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _scrape(base: str) -> dict[tuple[str, str], float]:
    """{(sample name, state label): value summed over the other labels}."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("state", ""))
            totals[key] = totals.get(key, 0) + sample.value
    return totals


def _worker_pids(metrics_dir: Path) -> set[str]:
    """prometheus-client names each process's file after its pid: counter_<pid>.db."""
    return {path.stem.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
