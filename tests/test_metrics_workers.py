"""/metrics under a real gunicorn with two workers: with PROMETHEUS_MULTIPROC_DIR, every scrape
shows the whole server's counts, whichever worker answers it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ACCOUNT_SID, AUTH_TOKEN, call_params, sign

ROOT = Path(__file__).resolve().parent.parent
#: Enough calls, sent 8 at a time, that both workers answer some; the test checks they did.
MAX_CALLS = 400


def test_every_scrape_sums_all_workers_counts(config_path, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = _free_port()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "TWILIO_"))},
        "GATEWAY_CONFIG": str(config_path),
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    log = tmp_path / "gunicorn.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "app:app", "--preload", "--workers", "2",
             "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, server, log)
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
    finally:
        server.terminate()
        server.wait(timeout=30)


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


def _wait_until_up(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, f"gunicorn exited: {log.read_text()}"
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not answer /healthz within 30 s")


def _free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]
