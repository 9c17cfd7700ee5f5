"""The README is a front door: its commands work as written, its links stay in the repository,
the logs are JSON from the first line, and the CLI's help promises only what it does."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from gateway.cli import main
from tests.support import CHECKOUT, NOT_SOURCE, free_port, twiml_root

README = CHECKOUT / "README.md"
PAGES = [README, *sorted((CHECKOUT / "docs").glob("*.md"))]
#: What the first command does before serving; .ci/run already did it for the test venv.
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
START_SECONDS = 60


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_points_to_a_file_in_the_repository(page):
    for target in MARKDOWN_LINK.findall(page.read_text()):
        assert "://" not in target and not target.startswith(("//", "mailto:")), f"{page.name} links {target}"
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(CHECKOUT), f"{page.name} links {target}, outside the repository"
        assert path.exists(), f"{page.name} links {target}, which does not exist"


def test_the_readme_is_a_front_door_and_links_every_guide():
    readme = README.read_text()
    assert len(readme.splitlines()) < 120
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"


class Checkout:
    """A copy of the checkout where the README's commands run, with the test venv as its .venv."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_", "PYTHON"))}
        # simulate-call's default URL and the gateway's signature check follow it to the free port.
        self.env["GATEWAY_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        self.server: subprocess.Popen | None = None
        self.server_log = folder / "server.log"

    def as_written(self, command: str) -> str:
        """The command with the test's free port for the README's 8000 (other runs may hold 8000)."""
        return command.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.as_written(script)],
            cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=120,
        )

    def serve(self, command: str) -> None:
        self.stop()
        with self.server_log.open("a") as log:
            self.server = subprocess.Popen(
                ["bash", "-c", self.as_written(command)],
                cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert self.server.poll() is None, f"the gateway exited:\n{self.server_log.read_text()}"
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"the gateway did not start:\n{self.server_log.read_text()}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=30)


@pytest.fixture
def checkout(tmp_path):
    folder = tmp_path / "handoff-gateway"
    shutil.copytree(CHECKOUT, folder, ignore=NOT_SOURCE, symlinks=True)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    copy = Checkout(folder, free_port())
    yield copy
    copy.stop()


def test_the_quick_start_works_as_written_right_after_the_two_commands(checkout):
    [first_command] = _shell_blocks(_section("Two commands"))[:1]
    first_command = first_command.strip()
    assert first_command.startswith(INSTALL)
    serve = first_command.removeprefix(INSTALL)
    checkout.serve(serve)

    cli_block, token_block, call_block = _shell_blocks(_section("Quick start"))
    tried = checkout.run(cli_block)
    assert tried.returncode == 0, tried.stderr
    [destination] = [json.loads(line) for line in tried.stdout.splitlines() if line.startswith("{")]
    assert (destination["name"], destination["method"], destination["route"]) == ("Escalations", "invite", "+14155550123")
    assert "Escalations" not in checkout.run(".venv/bin/gateway destinations --account acme --project frontdesk").stdout

    assert checkout.run(token_block).returncode == 0
    checkout.serve(serve)  # "then restart the gateway"
    called = checkout.run(call_block)
    assert called.returncode == 0, called.stderr
    assert twiml_root(called.stdout).find("Dial/Sip").text.startswith("sip:billing@pbx.example.com")

    checkout.stop()
    lines = [line for line in checkout.server_log.read_text().splitlines() if line.strip()]
    assert lines, "the gateway logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), f"not a JSON log line: {line}"


def test_start_up_warnings_and_database_errors_are_json_from_the_first_line(tmp_path):
    """No TWILIO_AUTH_TOKEN and a database that refuses connections: both said in JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_"))}
    env.update(
        GATEWAY_CONFIG=str(CHECKOUT / "gateway.example.toml"),
        GATEWAY_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
    )
    started = subprocess.run(
        [sys.executable, "-c", "from gateway import create_app; create_app()"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )

    assert started.returncode == 0, started.stderr
    lines = [json.loads(line) for line in started.stderr.splitlines()]
    messages = " | ".join(line["message"] for line in lines)
    assert "database not ready at start-up" in messages
    assert "TWILIO_AUTH_TOKEN is not set" in messages
    assert all(line["level"] == "ERROR" for line in lines)


def test_destinations_update_help_shows_no_default_that_update_does_not_apply():
    update_help = CliRunner().invoke(main, ["destinations", "update", "--help"]).output
    add_help = CliRunner().invoke(main, ["destinations", "add", "--help"]).output

    assert "default:" not in update_help and "[default" not in update_help
    assert "left as it is when not given" in update_help
    assert "default: refer" in add_help
