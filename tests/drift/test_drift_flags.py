"""`controller drift`: each error names the flag at fault with a consistent exit code, and a statistic that
is not finite is "not informative" (value null), never "ok" and never NaN in JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from controller.checks.drift import run_drift
from controller.cli.main import main
from tests.helpers import manifest, workspace, write_manifest

DIM = 384


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A store with index `qs` at v1 (stable) and no recorded queries."""
    ws = workspace(tmp_path_factory.mktemp("flags"), n_docs=60)
    store = ws / "store"
    assert main(["reconcile", str(write_manifest(ws, manifest("v1"))), "--store", str(store)]) == 0
    return store


def npy(path: Path, matrix: np.ndarray) -> str:
    np.save(path, matrix.astype(np.float32))
    return str(path)


def vectors(rows: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((rows, dim))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def drift(store: Path, capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["drift", "qs", *argv, "--store", str(store)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


# ---- 4. the flag named, and the exit code ---------------------------------------------------------
def test_a_one_row_reference_names_reference(stored, tmp_path, capsys):
    """Was `field --queries: reference queries have 1 rows`."""
    code, err = drift(stored, capsys, "--queries", npy(tmp_path / "q.npy", vectors(20)),
                      "--reference", npy(tmp_path / "r.npy", vectors(1)))
    assert code == 2 and "field --reference:" in err and "--queries" not in err, err


def test_a_reference_of_other_dimensions_names_reference(stored, tmp_path, capsys):
    code, err = drift(stored, capsys, "--queries", npy(tmp_path / "q.npy", vectors(20)),
                      "--reference", npy(tmp_path / "r.npy", vectors(20, dim=7)))
    assert code == 2 and "field --reference:" in err and "384 dimensions" in err, err


def test_one_row_of_queries_names_queries(stored, tmp_path, capsys):
    code, err = drift(stored, capsys, "--queries", npy(tmp_path / "q.npy", vectors(1)))
    assert code == 2 and "field --queries:" in err, err


def test_too_few_recorded_queries_name_recorded_and_exit_1_whether_none_or_one(stored, tmp_path, capsys):
    """Was exit 1 for none, but exit 2 naming --queries for one."""
    store = tmp_path / "store"
    shutil.copytree(stored, store)
    code, err = drift(store, capsys, "--recorded")
    assert code == 1 and "--recorded" in err and "0 queries were recorded" in err, err
    assert main(["query", "qs", "vitamin D deficiency", "--store", str(store)]) == 0
    code, err = drift(store, capsys, "--recorded")
    assert code == 1 and "--recorded" in err and "1 query was recorded" in err and "--queries:" not in err, err


@pytest.mark.parametrize("source", ["--queries", "--recorded"])
def test_an_unknown_version_is_not_found(stored, tmp_path, capsys, source):
    """Was `qs/v9 has no golden queries ... pass --reference FILE.npy`."""
    argv = ["--queries", npy(tmp_path / "q.npy", vectors(20))] if source == "--queries" else ["--recorded"]
    code, err = drift(stored, capsys, *argv, "--version", "v9")
    assert code == 1 and "no version 'v9'" in err and "kept: v1" in err, err
    assert "golden" not in err and "--reference" not in err, err


@pytest.mark.parametrize("value", ["nope", ",", "cosineShift,nope"])
def test_a_bad_metrics_value_names_metrics(stored, tmp_path, capsys, value):
    """Was `field metric` (and ',' silently meant the default set)."""
    code, err = drift(stored, capsys, "--queries", npy(tmp_path / "q.npy", vectors(20)), "--metrics", value)
    assert code == 2 and "field --metrics:" in err, err


# ---- 5. a statistic that is not finite ------------------------------------------------------------
def overflowing(rows: int = 20) -> np.ndarray:
    """Finite float32 values whose squared norms overflow float32."""
    signs = np.sign(np.random.default_rng(3).standard_normal((rows, DIM)))
    return (signs * 1e38).astype(np.float32)


def reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def test_overflowing_queries_give_strict_json_and_no_ok(stored, tmp_path, capsys):
    """Was `"value": NaN` in -o json and `ok cosineShift ... nan <= max 0.05` in text."""
    path = npy(tmp_path / "big.npy", overflowing())
    capsys.readouterr()
    main(["drift", "qs", "--queries", path, "--store", str(stored), "-o", "json"])
    report = json.loads(capsys.readouterr().out, parse_constant=reject_constant)
    results = {r["statistic"]: r for r in report["results"]}
    cosine = results["cosineShift"]
    assert cosine["value"] is None and not cosine["informative"] and not cosine["drifted"], cosine
    assert "not finite" in cosine["detail"] and "overflow float32" in cosine["detail"], cosine
    main(["drift", "qs", "--queries", path, "--store", str(stored)])
    out = capsys.readouterr().out
    assert "nan" not in out.lower().replace("not finite (nan)", ""), out
    line = next(l for l in out.splitlines() if "cosineShift" in l)
    assert line.split()[0] == "n/a", line


@pytest.mark.parametrize("statistic", ["cosineShift", "pairCosineShift", "mmd"])
def test_a_statistic_that_is_not_finite_is_not_informative(statistic):
    result = run_drift(statistic, vectors(50).astype(np.float32), overflowing())
    assert result.value is None and not result.informative and not result.drifted, result
    assert "not finite" in result.detail and "overflow float32" in result.detail, result.detail
    assert result.effect_size is None and result.p_value is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_finite_statistics_are_unchanged():
    result = run_drift("cosineShift", vectors(50).astype(np.float32), vectors(40, seed=1).astype(np.float32))
    assert result.informative and result.value is not None and np.isfinite(result.value)
