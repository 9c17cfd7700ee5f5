"""A receiver in another language verifies real deliveries: Node's `standardwebhooks` from npm.

The package is installed into tests/node/node_modules from its package-lock.json when missing
(`.ci/run` does it too). Without node and npm on the machine the test skips, saying so.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from gateway.events import deliver
from tests.events_support import LIFECYCLE_TYPES, SECRET, SECRET_ENV, call_with_fallback, subscribe, wait_for

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_receiver_installed() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed (apt-get install nodejs npm); the Node receiver cannot run")
    if not (NODE_DIR / "node_modules" / "standardwebhooks").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=300
        )
    return Path(node)


@pytest.fixture
def node_receiver(node_receiver_installed):
    """The Node receiver running on 127.0.0.1; yields (url, a queue of its JSON lines)."""
    process = subprocess.Popen(
        [str(node_receiver_installed), "receiver.mjs", SECRET_ENV],
        cwd=NODE_DIR,
        env={**os.environ, SECRET_ENV: SECRET},
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(json.loads(line)) for line in process.stdout], daemon=True)
    reader.start()
    try:
        port = lines.get(timeout=30)["port"]
        yield f"http://127.0.0.1:{port}/hooks", lines
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)
        process.stdout.close()


def test_nodes_standardwebhooks_verifies_every_real_delivery(make_app, config_path, node_receiver):
    url, lines = node_receiver
    subscribe(config_path, url)
    app = make_app()
    call_with_fallback(app.test_client(), "CA" + "9e" * 16)
    gateway = app.extensions["gateway"]
    worker = deliver.Deliverer(gateway.engine, gateway.config, deliver.signers(gateway.config, {SECRET_ENV: SECRET}))

    seen: list[dict] = []

    def drained() -> bool:
        worker.run_once()
        while not lines.empty():
            seen.append(lines.get())
        return len(seen) >= len(LIFECYCLE_TYPES)

    assert wait_for(drained, timeout=30)
    assert [line["verified"] for line in seen] == [True] * 5, seen
    assert [line["type"] for line in seen] == LIFECYCLE_TYPES


def test_nodes_standardwebhooks_refuses_a_tampered_delivery(node_receiver):
    """The other side of the check: the same library says no when the body was changed."""
    url, lines = node_receiver
    body = json.dumps({"id": "evt_1", "type": "handoff.completed", "data": {}})
    now = datetime.now(timezone.utc)
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": deliver.Webhook(SECRET).sign("evt_1", now, body),
    }
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 204
    tampered = body.replace("handoff.completed", "handoff.failed")
    assert requests.post(url, data=tampered, headers=headers, timeout=10).status_code == 400
    assert lines.get(timeout=10)["verified"] is True
    refused = lines.get(timeout=10)
    assert refused["verified"] is False and "signature" in refused["error"].lower()
