"""Shared fixtures. Real data comes from ../shared/data/scifact, or from the
directory named by $SCIFACT_DIR; tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def scifact_dir() -> Path:
    return Path(os.environ.get("SCIFACT_DIR", REPO.parent / "shared" / "data" / "scifact"))


@pytest.fixture(autouse=True)
def _no_store_in_home(tmp_path_factory, monkeypatch):
    """No test may write to the per-user default store: a test that forgets --store writes to a temporary
    state directory (and $CONTROLLER_STORE is cleared so the caller's shell cannot leak in)."""
    monkeypatch.delenv("CONTROLLER_STORE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


@pytest.fixture(scope="session")
def scifact() -> Path:
    path = scifact_dir()
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact data not found at {path} (set SCIFACT_DIR)")
    return path
