"""Start gunicorn as the Procfile does (its own flags), on loopback, for tests of real serving."""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support import ACCOUNT_SID, AUTH_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def procfile_gunicorn_arguments(port: int, app: str = "app:app") -> list[str]:
    """The Procfile's gunicorn flags, with their defaults filled in, bound to loopback, serving `app`."""
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    line = web.split("exec gunicorn", 1)[1]
    line = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", line)
    words = shlex.split(line)
    bind = words.index("--bind")
    del words[bind:bind + 2]
    words[words.index("app:app")] = app
    return [*words, "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


@contextlib.contextmanager
def gunicorn_as_in_the_procfile(tmp_path: Path, config_path: Path, app: str = "app:app", **extra_env):
    """Yield (base URL, port) of a gateway (or `app`) on SQLite in `tmp_path`; stopped at the end."""
    port = free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "TWILIO_"))},
        "GATEWAY_CONFIG": str(config_path),
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        **extra_env,
    }
    log = tmp_path / "gunicorn.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *procfile_gunicorn_arguments(port, app)],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"gunicorn exited: {log.read_text()}"
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer /healthz within 30 s"
                time.sleep(0.2)
        yield base, port
    finally:
        server.terminate()
        server.wait(timeout=30)


