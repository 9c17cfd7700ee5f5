"""The package's layers (docs/architecture.md), checked by import-linter from pyproject.toml.

A module may import only from the layers below its own, siblings on one layer never import
each other, and nothing outside gateway.web and the app factory imports Flask.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=repo, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )


def test_every_import_points_inward():
    finished = _lint(REPO)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "0 broken" in finished.stdout


def test_an_import_from_a_higher_layer_is_refused(tmp_path):
    """The check itself: storage reaching up to the web edge breaks the build."""
    shutil.copytree(REPO / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    search = tmp_path / "gateway" / "storage" / "search.py"
    search.write_text(search.read_text() + "\nfrom gateway.web import current_gateway  # noqa\n")
    finished = _lint(tmp_path)
    assert finished.returncode != 0
    assert "gateway.storage.search -> gateway.web" in finished.stdout
