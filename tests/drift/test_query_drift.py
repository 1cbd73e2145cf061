"""Query drift: served queries recorded in a bounded reservoir, compared with the golden queries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from controller.engine.drift import reference_queries
from controller.store import queries as Q
from controller.store.fs import Store
from tests.helpers import manifest, workspace, write_manifest


def test_reservoir_is_bounded_uniform_and_per_fingerprint(tmp_path: Path) -> None:
    fp_a, fp_b = {"name": "a", "version": "1"}, {"name": "b", "version": "1"}
    rng = np.random.default_rng(0)
    for start in range(0, 1000, 100):
        rows = np.arange(start, start + 100, dtype=np.float32)[:, None].repeat(4, axis=1)
        res = Q.record_queries(tmp_path, fp_a, rows, capacity=50, rng=rng)
    assert res.seen == 1000 and res.vectors.shape == (50, 4)
    kept = res.vectors[:, 0]
    assert kept.max() > 500 and kept.min() < 500  # a sample of everything, not the last 50
    assert Q.read_reservoir(tmp_path, fp_b) is None
    Q.record_queries(tmp_path, fp_b, np.ones((3, 8), dtype=np.float32))
    assert Q.read_reservoir(tmp_path, fp_b).vectors.shape == (3, 8)
    assert Q.read_reservoir(tmp_path, fp_a).seen == 1000
    assert not list((tmp_path / "queries").glob(".*.tmp-*"))  # atomic writes leave no temp files


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, Path]:
    ws = workspace(tmp_path_factory.mktemp("q"))
    path = write_manifest(ws, manifest("v1"))
    store = ws / "store"
    assert main(["reconcile", str(path), "--store", str(store)]) == 0
    return ws, store


def test_recorded_queries_vs_golden(served, capsys) -> None:
    ws, store = served
    texts = [json.loads(l)["text"] for l in (ws / "data" / "queries.jsonl").read_text().splitlines()]
    for text in texts[:40]:
        assert main(["query", "qs", text, "--store", str(store), "-o", "json"]) == 0
    assert main(["query", "qs", "not recorded", "--store", str(store), "--no-record"]) == 0
    capsys.readouterr()
    assert main(["drift", "qs", "--recorded", "--store", str(store), "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    print(json.dumps({r["statistic"]: r["value"] for r in report["results"]}))
    assert report["currentRows"] == 40 and "40 recorded queries (of 40 served)" in report["current"]
    assert report["referenceRows"] == len(texts) and "golden query texts of v1" in report["reference"]
    assert {r["statistic"] for r in report["results"]} == {"cosineShift", "pairCosineShift", "mmd", "ksDims"}
    # the served queries are golden queries: same distribution, no alarm
    assert not report["drifted"], report["results"]
    assert main(["drift", "qs", "--recorded", "--store", str(store)]) == 0
    assert "query drift: no drift" in capsys.readouterr().out


def test_supplied_query_vectors_shifted_are_flagged(served, tmp_path: Path, capsys) -> None:
    ws, store = served
    golden, _ = reference_queries(Store(store), "qs", "v1")
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(golden.shape[1]).astype(np.float32)
    direction /= np.linalg.norm(direction)
    shifted = golden + 0.5 * direction
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    np.save(tmp_path / "recent.npy", shifted.astype(np.float32))
    capsys.readouterr()
    assert main(["drift", "qs", "--queries", str(tmp_path / "recent.npy"), "--store", str(store), "-o", "json"]) == 3
    report = json.loads(capsys.readouterr().out)
    print({r["statistic"]: (r["value"], r["drifted"]) for r in report["results"]})
    assert report["drifted"] and {"mmd", "ksDims"} <= set(report["driftedStatistics"])


def test_query_drift_bad_input(served, tmp_path: Path, capsys) -> None:
    _, store = served
    np.save(tmp_path / "wrong.npy", np.zeros((5, 7), dtype=np.float32))
    assert main(["drift", "qs", "--queries", str(tmp_path / "wrong.npy"), "--store", str(store)]) == 2
    assert "has 384 dimensions" in capsys.readouterr().err
    (tmp_path / "junk.npy").write_text("nope")
    assert main(["drift", "qs", "--queries", str(tmp_path / "junk.npy"), "--store", str(store)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_query_vector_files_are_one_query_or_refused(served, tmp_path: Path, capsys) -> None:
    """A (2, 192) matrix was read as one 384-dimensional query and answered; strings gave a traceback."""
    from controller.store.queries import fingerprint_key as short_key

    _, store = served
    golden, _ = reference_queries(Store(store), "qs", "v1")
    np.save(tmp_path / "one.npy", golden[:1])
    np.save(tmp_path / "flat.npy", golden[0])
    np.save(tmp_path / "two.npy", golden[0].reshape(2, -1))  # the 384 values of one query, as (2, 192)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    np.savez(tmp_path / "z.npz", golden[:1])
    os.mkfifo(tmp_path / "fifo.npy")  # np.load blocked on it until killed
    key = short_key(Store(store).meta("qs", "v1")["fingerprint"])
    for name, code in (("one", 0), ("flat", 0), ("two", 2), ("text", 2), ("z", 2), ("fifo", 2)):
        path = tmp_path / (f"{name}.npz" if name == "z" else f"{name}.npy")
        argv = ["query", "qs", "--vector", str(path), "--model", key, "--store", str(store), "--no-record"]
        assert main(argv) == code, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and (code == 0 or "--vector" in err), (name, err)
