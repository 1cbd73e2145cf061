"""Fixtures of the engine tests: a small quickstart workspace and an empty store."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store.fs import Store
from tests.helpers import workspace


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return workspace(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")
