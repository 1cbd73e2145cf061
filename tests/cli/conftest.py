"""A reconciled store shared by the CLI contract tests (built once per module: building costs seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from tests.helpers import manifest, workspace, write_manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, store) with index `qs` at v1, stable and Healthy."""
    tmp = tmp_path_factory.mktemp("built")
    ws = workspace(tmp, n_docs=60)
    store = tmp / "store"
    assert main(["reconcile", str(write_manifest(ws, manifest("v1"), "v1.yaml")), "--store", str(store)]) == 0
    return ws, store


def npy(path: Path, matrix: np.ndarray) -> Path:
    np.save(path, matrix.astype(np.float32))
    return path
