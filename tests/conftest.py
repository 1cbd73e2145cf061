"""Shared fixtures. Real data comes from ../shared/data/scifact, or from the
directory named by $SCIFACT_DIR; tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def scifact_dir() -> Path:
    return Path(os.environ.get("SCIFACT_DIR", REPO.parent / "shared" / "data" / "scifact"))


@pytest.fixture(scope="session")
def scifact() -> Path:
    path = scifact_dir()
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact data not found at {path} (set SCIFACT_DIR)")
    return path
