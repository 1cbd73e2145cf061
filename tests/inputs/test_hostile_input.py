"""One test per class of hostile or broken input: exit 2, one line naming the file and field,
no traceback, nothing echoed from the file, and no store change, dry or real."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from controller.cli.main import main
from tests.helpers import manifest, tree_snapshot, workspace, write_manifest

SECRET = "TOP-SECRET-7f3a9c"


@pytest.fixture(autouse=True)
def _bounded_time():
    """A FIFO that is opened blocks forever: fail the test instead of hanging CI."""
    def boom(*_):
        raise TimeoutError("case took over 60 s (a blocking open?)")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _corpus(ws: Path) -> Path:
    return ws / "data" / "corpus.jsonl"


def _precomputed(ws: Path, **options) -> dict:
    doc = manifest("v1")
    doc["spec"]["model"] = {"provider": "precomputed", "name": "ext", "version": "1", "dim": 384,
                            "options": {"vectors": "data/vecs.npy", **options}}
    return doc


def _rows(ws: Path) -> int:
    return len(_corpus(ws).read_text().splitlines())


def fifo_corpus(ws):
    _corpus(ws).unlink()
    os.mkfifo(_corpus(ws))
    return write_manifest(ws, manifest()), ["FIFO", "spec.corpus.path"]


def directory_corpus(ws):
    _corpus(ws).unlink()
    _corpus(ws).mkdir()
    return write_manifest(ws, manifest()), ["directory", "spec.corpus.path"]


def invalid_utf8_corpus(ws):
    n = _rows(ws)
    with _corpus(ws).open("ab") as f:
        f.write(b'{"id": "bad", "text": "caf\xe9"}\n')
    return write_manifest(ws, manifest()), [f"invalid UTF-8 at line {n + 1}", "byte 27", "corpus.jsonl"]


def invalid_utf8_qrels(ws):
    with (ws / "data" / "qrels.tsv").open("ab") as f:
        f.write(b"q\xff\td\t1\n")
    return write_manifest(ws, manifest()), ["invalid UTF-8 at line", "qrels.tsv"]


def nul_in_path(ws):
    d = manifest(); d["spec"]["corpus"]["path"] = "data/corp\0us.jsonl"
    return write_manifest(ws, d), ["NUL byte", "spec.corpus.path"]


def npz_as_npy(ws):
    with open(ws / "data" / "vecs.npy", "wb") as f:
        np.savez(f, a=np.ones((_rows(ws), 384), dtype=np.float32))
    return write_manifest(ws, _precomputed(ws)), [".npz archive", "spec.model.options.vectors"]


def empty_npy(ws):
    (ws / "data" / "vecs.npy").write_bytes(b"")
    return write_manifest(ws, _precomputed(ws)), ["vecs.npy is empty", "spec.model.options.vectors"]


def object_npy(ws):
    np.save(ws / "data" / "vecs.npy", np.array([[object()] * 384] * 2, dtype=object), allow_pickle=True)
    return write_manifest(ws, _precomputed(ws)), ["Python objects", "spec.model.options.vectors"]


def int_npy(ws):
    np.save(ws / "data" / "vecs.npy", np.ones((_rows(ws), 384), dtype=np.int32))
    return write_manifest(ws, _precomputed(ws)), ["dtype int32", "spec.model.options.vectors"]


def one_d_npy(ws):
    np.save(ws / "data" / "vecs.npy", np.ones(384, dtype=np.float32))
    return write_manifest(ws, _precomputed(ws)), ["expected a 2-D matrix", "spec.model.options.vectors"]


def truncated_npy(ws):
    np.save(ws / "data" / "vecs.npy", np.ones((_rows(ws), 384), dtype=np.float32))
    data = (ws / "data" / "vecs.npy").read_bytes()
    (ws / "data" / "vecs.npy").write_bytes(data[: len(data) // 2])
    return write_manifest(ws, _precomputed(ws)), ["truncated", "spec.model.options.vectors"]


def garbage_npy(ws):
    (ws / "data" / "vecs.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"\xff" * 40)
    return write_manifest(ws, _precomputed(ws)), ["bad magic string or header", "spec.model.options.vectors"]


def yaml_depth(ws):
    path = ws / "index.yaml"
    path.write_text("apiVersion: indexops.dev/v1alpha1\nkind: EmbeddingIndex\nmetadata:\n  labels: "
                    + "[" * 5000 + "]" * 5000 + "\n")
    return path, ["nesting deeper than", "line 4"]


def yaml_alias_bomb(ws):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    doc = "\n".join(["apiVersion: indexops.dev/v1alpha1", "kind: EmbeddingIndex", "metadata:",
                     "  name: qs", "  labels:"] + ["    " + ln for ln in lines]) + "\n"
    path = ws / "index.yaml"
    path.write_text(doc)
    return path, ["alias bomb", "line"]


def yaml_cyclic_alias(ws):
    path = ws / "index.yaml"
    path.write_text("apiVersion: indexops.dev/v1alpha1\nkind: EmbeddingIndex\nmetadata: &m\n  name: qs\n"
                    "  labels: {self: *m}\n")
    return path, ["its own ancestor", "line"]


def yaml_duplicate_key(ws):
    path = write_manifest(ws, manifest())
    text = path.read_text().replace("spec:\n", "spec:\n  suspend: true\n", 1) + "  suspend: false\n"
    path.write_text(text)
    return path, ["duplicate key 'suspend'", "line"]


def yaml_too_big(ws):
    path = write_manifest(ws, manifest())
    path.write_text(path.read_text() + "# " + "x" * (1024 * 1024) + "\n")
    return path, ["the limit is 1048576 bytes"]


def unknown_kind(ws):
    good = manifest()
    other = manifest(name="qs2"); other["kind"] = "EmbeddingIndx"
    path = ws / "index.yaml"
    path.write_text(yaml.safe_dump_all([good, other], sort_keys=False))
    return path, ["unknown kind 'EmbeddingIndx'", "field kind"]


def missing_text(ws):
    n = _rows(ws)
    with _corpus(ws).open("a") as f:
        f.write(json.dumps({"id": "no-text", "title": ""}) + "\n")
    return write_manifest(ws, manifest()), [f"line {n + 1} has no text", "corpus.jsonl"]


def misspelled_drift_metric(ws):
    d = manifest(); d["spec"]["checks"]["drift"] = [{"metric": "psii"}]
    return write_manifest(ws, d), ["spec.checks.drift[0].metric", "psii"]


def golden_without_texts(ws):
    d = manifest(); del d["spec"]["checks"]["golden"]["queries"]
    return write_manifest(ws, d), ["spec.checks.golden.queries", "no text"]


def second_document_data_error(ws):
    """All or nothing: the valid first document must not be applied before the second's data error."""
    bad_corpus = ws / "data" / "corpus2.jsonl"
    bad_corpus.write_text(_corpus(ws).read_text() + '{"id": "x"}\n')
    second = manifest(name="qs2"); second["spec"]["corpus"]["path"] = "data/corpus2.jsonl"
    path = ws / "index.yaml"
    path.write_text(yaml.safe_dump_all([manifest(), second], sort_keys=False))
    return path, ["corpus2.jsonl", "has no text"]


def content_not_echoed(ws):
    _corpus(ws).write_text(f"{SECRET} password=hunter2 " + "x" * 200 + "\n")
    return write_manifest(ws, manifest()), ["line 1 is not valid JSON", "corpus.jsonl"]


CASES: list[Callable] = [fifo_corpus, directory_corpus, invalid_utf8_corpus, invalid_utf8_qrels, nul_in_path,
                         npz_as_npy, empty_npy, object_npy, int_npy, one_d_npy, truncated_npy, garbage_npy,
                         yaml_depth, yaml_alias_bomb, yaml_cyclic_alias, yaml_duplicate_key, yaml_too_big,
                         unknown_kind, missing_text, misspelled_drift_metric, golden_without_texts,
                         second_document_data_error, content_not_echoed]


@pytest.mark.parametrize("make", CASES, ids=[c.__name__ for c in CASES])
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_hostile_input_exits_2_naming_file_and_field(make, dry_run, tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=30)
    path, expected = make(ws)
    store = tmp_path / "store"
    before = tree_snapshot(store)
    code = main(["reconcile", str(path), "--store", str(store)] + (["--dry-run"] if dry_run else []))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for part in expected:
        assert part in err, (part, err)
    assert SECRET not in err and "hunter2" not in err
    assert tree_snapshot(store) == before


@pytest.mark.parametrize("verb", [["suspend"], ["resume"], ["status"], ["history"], ["rollback", "--to", "v1"]])
@pytest.mark.parametrize("name", ["../../victim", "/tmp/victim", "Victim", "a/b", "-x" * 40])
def test_index_names_are_dns_labels_before_any_path_is_built(verb, name, tmp_path, capsys):
    store = tmp_path / "deep" / "store"
    victim = tmp_path / "victim"
    argv = [*verb, "--store", str(store), "--", name]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "DNS-1123" in err and "NAME" in err
    assert not victim.exists() and not store.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_store_refuses_bad_names_and_versions_itself(tmp_path):
    from controller.errors import InvalidInput
    from controller.store.fs import Store
    store = Store(tmp_path)
    for bad in ("..", "../x", "a/b", "", "A", "x" * 64):
        with pytest.raises(InvalidInput):
            store.index_dir(bad)
    for bad in ("..", ".hidden", "v1/../../x", ""):
        with pytest.raises(InvalidInput):
            store.version_dir("ok", bad)
    assert store.version_dir("ok", "v1.r2") == tmp_path / "indexes" / "ok" / "versions" / "v1.r2"


def test_kustomization_files_are_skipped_by_name(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=30)
    write_manifest(ws, manifest())
    (ws / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                                          "resources: [index.yaml]\n")
    assert main(["reconcile", str(ws), "--store", str(tmp_path / "s"), "--dry-run"]) == 0, capsys.readouterr().err


def _set(doc: dict, dotted: str, value) -> dict:
    node = doc
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return doc


# YAML hands pydantic true, .nan and .inf as Python values: in lax mode `dim: true` was a 1-dimensional
# model, and a gate `min: .nan` compared false with every value
NUMBER_CASES = [
    ("spec.model.dim", True, "valid integer (got True)"),
    ("spec.model.dim", 384.5, "valid integer (got 384.5)"),
    ("spec.rollout.percentage", True, "valid number (got True)"),
    ("spec.rollout.percentage", float("nan"), "finite number (got nan)"),
    ("spec.checks.golden.gates.0.min", float("nan"), "finite number (got nan)"),
    ("spec.checks.golden.gates.0.maxDrop", float("inf"), "finite number (got inf)"),
    ("spec.checks.golden.k", 0, "greater than 0 (got 0)"),
    ("spec.history.keep", False, "valid integer (got False)"),
    ("spec.corpus.maxRemoved", float("-inf"), "finite number (got -inf)"),
    ("spec.corpus.idField", "", "at least 1 character"),
    ("spec.corpus.textFields", ["title", ""], "at least 1 character"),
]


@pytest.mark.parametrize("dotted,value,said", NUMBER_CASES, ids=[f"{c[0]}={c[1]!r}" for c in NUMBER_CASES])
def test_manifest_numbers_are_finite_numbers_not_booleans(dotted, value, said, tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=30)
    doc = manifest("v1", gates=[{"metric": "ndcg@10", "min": 0.1, "maxDrop": 0.05}])
    path = write_manifest(ws, _set(doc, dotted, value))
    store = tmp_path / "store"
    assert main(["reconcile", str(path), "--store", str(store), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    field = dotted.replace(".0.", "[0].") + ("[1]" if isinstance(value, list) else "")
    assert len(err.splitlines()) == 1 and f"field {field}:" in err and said in err, err
    assert not store.exists()


@pytest.mark.parametrize("options,said", [
    ({"wordNgrams": 1, "seed": float("nan")}, "option seed must be a finite number (got nan)"),
    ({"wordNgrams": 1, "charNgrams": [3, float("inf")]}, "option charNgrams[1] must be a finite number (got inf)"),
])
def test_model_options_refuse_nan_and_inf(options, said, tmp_path, capsys):
    """Providers validate the options' JSON dump, where .nan and .inf become null: `dimensions: .nan`
    read as "not set" and the run went on with the default."""
    ws = workspace(tmp_path, n_docs=30)
    path = write_manifest(ws, manifest("v1", options))
    assert main(["reconcile", str(path), "--store", str(tmp_path / "store"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "field spec.model.options:" in err and said in err, err
