"""The built wheel serves calls: installed outside the checkout and started as SPEC §6 says.

The wheel is built from a copy of the working tree and installed without its dependencies into
a fresh venv in a temporary folder. The dependencies come from the test venv through a .pth
line: a plain path entry, so the test venv's editable install of the gateway (a .pth hook of
its own) is not loaded and `gateway` can only be imported from the wheel. That keeps the run
to seconds and off the network; `pip install` of the wheel itself is what is under test.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from twilio.twiml.voice_response import Dial, VoiceResponse

from tests.support import (
    AUTH_TOKEN, CHECKOUT, CONFIG_TOML, NOT_SOURCE, call_params, free_port, same_twiml, sign, twiml_root,
)

START_SECONDS = 60


def _run(*command, cwd: Path, env: dict | None = None) -> str:
    finished = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, f"{' '.join(map(str, command))} failed:\n{finished.stdout}\n{finished.stderr}"
    return finished.stdout


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """A fresh venv, outside the checkout, holding the gateway only as the wheel installed it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(CHECKOUT, source, ignore=NOT_SOURCE, symlinks=True)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", root / "dist", source, cwd=root)
    [wheel] = (root / "dist").glob("handoff_gateway-*.whl")

    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    site_packages = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).strip())
    (site_packages / "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=root)
    return python


def test_the_wheel_carries_the_twiml_templates(installed_wheel, tmp_path):
    where = _run(installed_wheel, "-c", "import gateway.voice.twiml as t; print(t.__file__); print(*sorted(p.name for p in t.TEMPLATES_DIR.iterdir()))", cwd=tmp_path)
    module_file, templates = where.splitlines()
    assert Path(module_file).is_relative_to(installed_wheel.parent.parent), f"gateway imported from {module_file}"
    assert templates.split() == sorted(path.name for path in (CHECKOUT / "templates_twiml").glob("*.xml"))


def test_the_installed_wheel_answers_a_signed_call_under_gunicorn(installed_wheel, tmp_path):
    """`gunicorn "gateway:create_app()"` in a folder holding only gateway.toml (SPEC §3 defaults)."""
    (tmp_path / "gateway.toml").write_text(CONFIG_TOML)
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("GATEWAY_", "TWILIO_", "PYTHON"))}
    env["TWILIO_AUTH_TOKEN"] = AUTH_TOKEN
    server = subprocess.Popen(
        [installed_wheel, "-m", "gunicorn", "gateway:create_app()", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert server.poll() is None, f"gunicorn exited {server.returncode}:\n{server.stdout.read()}"
            try:
                if requests.get(f"{base_url}/readyz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still booting its worker
                pass
            assert time.monotonic() < deadline, "gunicorn did not become ready"
            time.sleep(0.2)

        params = call_params(to="+14155550199")
        url = f"{base_url}/voice/call"
        response = requests.post(url, data=params, headers={"X-Twilio-Signature": sign(url, params)}, timeout=10)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)

    assert response.status_code == 200, output
    assert response.headers["Content-Type"].startswith("text/xml")
    action = twiml_root(response.text).find("Dial").get("action")
    conversation_id = parse_qs(urlsplit(action).query)["conversation_id"][0]
    expected = VoiceResponse()
    expected.say("Let me transfer you to someone who can help.")
    dial = Dial(action=f"{base_url}/voice/dial-status?conversation_id={conversation_id}&attempt=1", timeout=20)
    dial.number("+14155550100", url=f"{base_url}/voice/whisper?conversation_id={conversation_id}")
    expected.append(dial)
    assert same_twiml(response.text, expected), response.text

    with sqlite3.connect(tmp_path / "gateway.db") as database:
        rows = database.execute("SELECT id, state, destination FROM conversations WHERE call_sid = ?", (params["CallSid"],)).fetchall()
    assert rows == [(conversation_id, "handoff_initiated", "Front desk")]
