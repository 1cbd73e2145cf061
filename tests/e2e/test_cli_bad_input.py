"""Bad input: exit code 2, one line naming file, field and value, no traceback, store untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from controller.cli.main import main
from tests.helpers import manifest, tree_snapshot, workspace, write_manifest


def _precomputed(ws: Path, vectors: np.ndarray, **options) -> dict:
    np.save(ws / "data" / "vecs.npy", vectors)
    doc = manifest("v1")
    doc["spec"]["model"] = {"provider": "precomputed", "name": "ext", "version": "1", "dim": 384,
                            "options": {"vectors": "data/vecs.npy", **options}}
    return doc


def _n_docs(ws: Path) -> int:
    return len((ws / "data" / "corpus.jsonl").read_text().splitlines())


def unknown_field(ws):
    d = manifest(); d["spec"]["rollout"]["percentag"] = 10
    return write_manifest(ws, d), "spec.rollout.percentag", "10"


def wrong_type(ws):
    d = manifest(); d["spec"]["history"]["keep"] = "three"
    return write_manifest(ws, d), "spec.history.keep", "'three'"


def percentage_150(ws):
    return write_manifest(ws, manifest(pct=150)), "spec.rollout.percentage", "150"


def missing_corpus(ws):
    d = manifest(); d["spec"]["corpus"]["path"] = "data/nope.jsonl"
    return write_manifest(ws, d), "spec.corpus.path", "data/nope.jsonl"


def escaping_path(ws):
    d = manifest(); d["spec"]["corpus"]["path"] = "../../../etc/passwd"
    return write_manifest(ws, d), "spec.corpus.path", "../../../etc/passwd"


def dim_mismatch(ws):
    d = _precomputed(ws, np.ones((_n_docs(ws), 100), dtype=np.float32))
    return write_manifest(ws, d), "spec.model.options.vectors", "100 columns"


def row_mismatch(ws):
    d = _precomputed(ws, np.ones((_n_docs(ws) - 5, 384), dtype=np.float32))
    return write_manifest(ws, d), "spec.model.options.vectors", f"{_n_docs(ws) - 5} rows"


def nan_vectors(ws):
    v = np.ones((_n_docs(ws), 384), dtype=np.float32); v[7, 3] = np.nan
    return write_manifest(ws, _precomputed(ws, v)), "spec.model.options.vectors", "NaN or inf"


def inf_vectors(ws):
    v = np.ones((_n_docs(ws), 384), dtype=np.float32); v[2, 0] = np.inf
    return write_manifest(ws, _precomputed(ws, v)), "spec.model.options.vectors", "row 2"


def duplicate_ids(ws):
    corpus = ws / "data" / "corpus.jsonl"
    first = corpus.read_text().splitlines()[0]
    corpus.write_text(corpus.read_text() + first + "\n")
    return write_manifest(ws, manifest()), "id", repr(json.loads(first)["id"])


def empty_corpus(ws):
    (ws / "data" / "corpus.jsonl").write_text("\n")
    return write_manifest(ws, manifest()), "spec.corpus.path", "empty"


def unreadable_yaml(ws):
    path = ws / "index.yaml"
    path.write_text("apiVersion: indexops.dev/v1alpha1\nkind: EmbeddingIndex\nmetadata: {name: qs\nspec: [\n")
    return path, "YAML", "line"


def bad_hashing_option(ws):
    return write_manifest(ws, manifest(options={"wordNgrams": 9})), "spec.model.options.wordNgrams", "9"


def bad_golden_gate(ws):
    return (write_manifest(ws, manifest(gates=[{"metric": "ndcg@ten", "min": 0.5}])),
            "spec.checks.golden.gates[0].metric", "ndcg@ten")


def bad_factory(ws):
    return write_manifest(ws, manifest(factory="NotAnIndex")), "spec.index.factory", "NotAnIndex"


def unknown_backend(ws):
    d = manifest(); d["spec"]["index"]["backend"] = {"type": "nosuchdb"}
    return write_manifest(ws, d), "spec.index.backend.type", "nosuchdb"


def bad_backend_parameter(ws):
    d = manifest(); d["spec"]["index"]["backend"] = {"type": "faiss", "lists": 64}
    return write_manifest(ws, d), "spec.index.backend.lists", "64"


def bad_backend_factory(ws):
    d = manifest(); d["spec"]["index"]["backend"] = {"factory": "IVF-what"}
    return write_manifest(ws, d), "spec.index.factory", "IVF-what"


CASES: list[Callable] = [unknown_field, wrong_type, percentage_150, missing_corpus, escaping_path, dim_mismatch,
                         row_mismatch, nan_vectors, inf_vectors, duplicate_ids, empty_corpus, unreadable_yaml,
                         bad_hashing_option, bad_golden_gate, bad_factory, unknown_backend, bad_backend_parameter,
                         bad_backend_factory]


@pytest.mark.parametrize("make", CASES, ids=[c.__name__ for c in CASES])
@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
def test_bad_input_exits_2_with_one_line(make, dry_run, tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=40)
    path, field, value = make(ws)
    store = tmp_path / "store"
    before = tree_snapshot(store)
    argv = ["reconcile", str(path), "--store", str(store)] + (["--dry-run"] if dry_run else [])
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert str(path.name) in err or "corpus.jsonl" in err, err
    assert field in err and value in err, err
    assert tree_snapshot(store) == before


def test_bad_input_after_a_good_state_changes_nothing(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=40)
    store = tmp_path / "store"
    assert main(["reconcile", str(write_manifest(ws, manifest())), "--store", str(store)]) == 0
    before = tree_snapshot(store)
    path, _, _ = dim_mismatch(ws)
    assert main(["reconcile", str(path), "--store", str(store)]) == 2
    assert tree_snapshot(store) == before


def test_no_traceback_from_the_installed_command(tmp_path):
    ws = workspace(tmp_path, n_docs=40)
    path, _, _ = percentage_150(ws)
    proc = subprocess.run([sys.executable, "-m", "controller.cli.main", "reconcile", str(path), "--store",
                           str(tmp_path / "s")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "spec.rollout.percentage" in proc.stderr and "150" in proc.stderr


def test_unknown_index_exits_1(tmp_path, capsys):
    assert main(["status", "nope", "--store", str(tmp_path)]) == 1
    assert "no index named 'nope'" in capsys.readouterr().err
