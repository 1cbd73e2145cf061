"""Seeded generators of bad input: each mutates a copy of a small valid workspace so it is invalid.

Every generator returns the basename of the file it broke (the error must name it, or the
manifest with a field). They only produce input that a real run must refuse: a mutation
that might stay valid (say, cutting a YAML file at a line end) is not used.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

MANIFEST = "index.yaml"
DIM = 8

Case = Callable[[Path, random.Random], str]


# ---- the valid base workspaces -------------------------------------------------------------
def build_base(root: Path, provider: str) -> Path:
    """A valid workspace: 20 documents, 4 golden queries; hashing or precomputed vectors."""
    ws = root / f"base-{provider}"
    (ws / "data").mkdir(parents=True)
    rng = np.random.default_rng(7)
    words = ["alpha", "beta", "gamma", "delta", "vector", "index", "drift", "model", "query", "store"]
    docs = [{"id": f"d{i}", "title": f"doc {i}", "text": " ".join(rng.choice(words, 8))} for i in range(20)]
    (ws / "data" / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choice(words, 3))} for i in range(4)]
    (ws / "data" / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (ws / "data" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                           + "".join(f"q{i}\td{i * 3}\t1\n" for i in range(4)))
    if provider == "hashing":
        model = {"provider": "hashing", "name": "h", "version": "1", "dim": 64, "options": {"seed": 1}}
    else:
        np.save(ws / "data" / "vecs.npy", rng.normal(size=(20, DIM)).astype(np.float32))
        (ws / "data" / "ids.txt").write_text("".join(f"d{i}\n" for i in range(20)))
        np.save(ws / "data" / "qvecs.npy", rng.normal(size=(4, DIM)).astype(np.float32))
        (ws / "data" / "qids.txt").write_text("".join(f"q{i}\n" for i in range(4)))
        model = {"provider": "precomputed", "name": "ext", "version": "1", "dim": DIM,
                 "options": {"vectors": "data/vecs.npy", "ids": "data/ids.txt",
                             "queryVectors": "data/qvecs.npy", "queryIds": "data/qids.txt"}}
    doc = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "fz"},
           "spec": {"corpus": {"path": "data/corpus.jsonl", "idField": "id", "textFields": ["title", "text"]},
                    "model": model, "index": {"version": "v1", "factory": "Flat", "metric": "cosine"},
                    "checks": {"drift": [{"metric": "psi"}],
                               "golden": {"queries": "data/queries.jsonl", "qrels": "data/qrels.tsv", "k": 5,
                                          "gates": [{"metric": "ndcg@5", "maxDrop": 1.0}]}},
                    "history": {"keep": 3}}}
    (ws / MANIFEST).write_text(yaml.safe_dump(doc, sort_keys=False))
    return ws


def copy_base(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    return dest


# ---- helpers --------------------------------------------------------------------------------
def _doc(ws: Path) -> dict:
    return yaml.safe_load((ws / MANIFEST).read_text())


def _write(ws: Path, doc: Any) -> str:
    (ws / MANIFEST).write_text(yaml.safe_dump(doc, sort_keys=False))
    return MANIFEST


def _text(rng: random.Random, n: int = 12) -> str:
    alphabet = "abcXYZ019 _-./\\\t\"'{}[]:,#&*!|>%@`é漢\u202e"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, n)))


def _bad_bytes(rng: random.Random) -> bytes:
    return rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])


def _set(doc: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        doc = doc.setdefault(k, {})
    doc[keys[-1]] = value


def _delete(doc: dict, path: str) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        doc = doc[k]
    del doc[keys[-1]]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _replace_line(path: Path, rng: random.Random, new: bytes, *, skip_header: bool = False) -> None:
    lines = _lines(path)
    i = rng.randrange(1 if skip_header else 0, len(lines))
    lines[i] = new if new.endswith(b"\n") else new + b"\n"
    path.write_bytes(b"".join(lines))


# ---- manifests ------------------------------------------------------------------------------
WRONG_TYPES = [
    ("spec.history.keep", ["three", -1, 0, 1000, [1], {"a": 1}, 2.5]),
    ("spec.rollout", [{"percentage": 150}, {"percentage": -1}, {"percentage": "all"}, "x", [1]]),
    ("spec.model.dim", [0, -5, "big", 10**9, [8], None]),
    ("spec.index.metric", ["dot", 1, "", None]),
    ("spec.index.version", ["", "../v1", "v1/x", ".hidden", "a" * 100, None, [1]]),
    ("spec.corpus.idField", [None, [1], {"a": 1}]),
    ("spec.corpus.textFields", [[], "text", None, [1, 2]]),
    ("spec.corpus.maxRemoved", [-0.1, 1.5, "lots"]),
    ("spec.checks.golden.k", [0, -1, 100001, "ten"]),
    ("spec.checks.golden.confidence", [0, 1, 1.5, "high"]),
    ("spec.checks.golden.gates", [[{"metric": "ndcg@5"}], [{"min": 0.1}], "none", [{"metric": "ndcg@0", "min": 1}]]),
    ("spec.suspend", ["maybe", [1]]),
    ("spec.onDelete", ["keep", 1]),
    ("metadata", ["fz", [1], None]),
    ("spec", ["x", None, [1]]),
    ("apiVersion", ["v1", "indexops.dev/v1", 1, None]),
]
REQUIRED = ["apiVersion", "kind", "metadata", "metadata.name", "spec", "spec.corpus", "spec.corpus.path",
            "spec.model", "spec.model.provider", "spec.model.dim", "spec.model.name", "spec.index",
            "spec.index.version", "spec.checks.golden.qrels"]


def manifest_wrong_type(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    path, values = rng.choice(WRONG_TYPES)
    _set(doc, path, rng.choice(values))
    return _write(ws, doc)


def manifest_unknown_field(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    where = rng.choice(["", "spec", "spec.corpus", "spec.index", "spec.checks", "metadata", "spec.history"])
    target = doc
    for k in filter(None, where.split(".")):
        target = target[k]
    target["zz" + "".join(rng.choice("abcdefgh") for _ in range(5))] = rng.choice([1, "x", [1], {"a": 1}])
    return _write(ws, doc)


def manifest_missing_required(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    _delete(doc, rng.choice(REQUIRED))
    return _write(ws, doc)


def manifest_bad_name(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    doc["metadata"]["name"] = rng.choice(["../../victim", "/etc", "Upper", "a_b", "a.b", "-a", "a-", "", "x" * 64,
                                          "a\0b", "é", _text(rng).upper() + "_"])
    return _write(ws, doc)


def manifest_bad_drift_metric(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    name = rng.choice(["psii", "PSI", "kl2", "cosine", "", "mmd "]) + ("#" + _text(rng, 3)) * rng.randint(0, 1)
    where = rng.choice(["drift", "corpusDrift"])
    if where == "drift":
        doc["spec"]["checks"]["drift"] = [{"metric": "psi"}, {"metric": name}]
    else:
        doc["spec"]["checks"]["corpusDrift"] = {"metrics": [{"metric": name}]}
    return _write(ws, doc)


def manifest_bad_gate_metric(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    metric = rng.choice(["ndcg@ten", "ndcg", "ndcgg@10", "recall@0", "map@10", "@10", "ndcg@-1"]) \
        + ("#" + _text(rng, 2)) * rng.randint(0, 1)
    doc["spec"]["checks"]["golden"]["gates"] = [{"metric": metric, "min": 0.1}]
    return _write(ws, doc)


def manifest_bad_factory(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    doc["spec"]["index"]["factory"] = rng.choice(["Zz", "HNSWx", "PQ7", "Flat,,", "NotAnIndex", "IVF,Flat"]) \
        + ("#" + _text(rng, 3)) * rng.randint(0, 1)
    return _write(ws, doc)


def manifest_bad_path(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    fld = rng.choice(["spec.corpus.path", "spec.checks.golden.qrels", "spec.checks.golden.queries"])
    value = rng.choice(["../" * rng.randint(1, 6) + "etc/passwd", "/etc/passwd", "data/corp\0us.jsonl",
                        "data/nope-" + str(rng.randint(0, 999)), "", "data/\0", 5, ["a"]])
    _set(doc, fld, value)
    return _write(ws, doc)


def manifest_kind_typo(ws: Path, rng: random.Random) -> str:
    doc = _doc(ws)
    other = json.loads(json.dumps(doc))
    other["kind"] = rng.choice(["EmbeddingIndx", "embeddingindex", "Embedding Index", "ConfigMap", 5])
    other["metadata"]["name"] = "fz2"
    docs = [doc, other] if rng.random() < 0.5 else [other, doc]
    (ws / MANIFEST).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return MANIFEST


def manifest_not_a_mapping(ws: Path, rng: random.Random) -> str:
    (ws / MANIFEST).write_text(rng.choice(["- a\n- b\n", "just text\n", "42\n", "[1, 2]\n", "'x'\n"]))
    return MANIFEST


def manifest_yaml_syntax(ws: Path, rng: random.Random) -> str:
    text = (ws / MANIFEST).read_text()
    breaker = rng.choice(["x: [\n", "x: {a: 1\n", "\tbad: tab\n", "x: 'open\n", "- 1\nkey: 1\n", "x: *nope\n",
                          "? [\n", "x: !!python/object:os.system 1\n", "x: !!binary 1\n"])
    (ws / MANIFEST).write_text(text + breaker)
    return MANIFEST


def manifest_duplicate_key(ws: Path, rng: random.Random) -> str:
    text = (ws / MANIFEST).read_text()
    key = rng.choice(["apiVersion: indexops.dev/v1alpha1\n", "kind: EmbeddingIndex\n"])
    (ws / MANIFEST).write_text(text + key)
    return MANIFEST


def manifest_deep(ws: Path, rng: random.Random) -> str:
    depth = rng.randint(70, 1000)
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
    text = (ws / MANIFEST).read_text().replace("metadata:\n", f"metadata:\n  labels: {opener * depth}1{closer * depth}\n", 1)
    (ws / MANIFEST).write_text(text)
    return MANIFEST


def manifest_alias_bomb(ws: Path, rng: random.Random) -> str:
    fan, levels = rng.randint(6, 12), rng.randint(7, 10)
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    text = (ws / MANIFEST).read_text().replace(
        "metadata:\n", "metadata:\n  labels:\n" + "".join(f"    {ln}\n" for ln in lines), 1)
    (ws / MANIFEST).write_text(text)
    return MANIFEST


def manifest_invalid_utf8(ws: Path, rng: random.Random) -> str:
    data = (ws / MANIFEST).read_bytes()
    at = rng.randrange(len(data))
    (ws / MANIFEST).write_bytes(data[:at] + _bad_bytes(rng) + data[at:])
    return MANIFEST


def manifest_oversized(ws: Path, rng: random.Random) -> str:
    with (ws / MANIFEST).open("a") as f:
        f.write("# " + "x" * (1024 * 1024 + rng.randint(0, 1000)) + "\n")
    return MANIFEST


def manifest_not_a_file(ws: Path, rng: random.Random) -> str:
    target = ws / "data" / "corpus.jsonl"
    target.unlink()
    if rng.random() < 0.5:
        os.mkfifo(target)
    else:
        target.mkdir()
    return "corpus.jsonl"


# ---- corpora --------------------------------------------------------------------------------
def _corpus(ws: Path) -> Path:
    return ws / "data" / "corpus.jsonl"


def corpus_invalid_utf8(ws: Path, rng: random.Random) -> str:
    _replace_line(_corpus(ws), rng, b'{"id": "u", "text": "x' + _bad_bytes(rng) + b'"}')
    return "corpus.jsonl"


def corpus_not_json(ws: Path, rng: random.Random) -> str:
    _replace_line(_corpus(ws), rng, rng.choice([b"{", b"{\"id\": ", b"not json", b"{'id': 1}", b"{\"id\": 1,}",
                                                b"\x00\x01", b"[" * 100000]) + _text(rng).encode())
    return "corpus.jsonl"


def corpus_not_object(ws: Path, rng: random.Random) -> str:
    _replace_line(_corpus(ws), rng, rng.choice([b"1", b"[1, 2]", b'"text"', b"null", b"true"]))
    return "corpus.jsonl"


def corpus_bad_id(ws: Path, rng: random.Random) -> str:
    value = rng.choice([None, "", True, [1], {"a": 1}, 1.5, "MISSING"])
    doc: dict[str, Any] = {"text": "some text"}
    if value != "MISSING":
        doc["id"] = value
    _replace_line(_corpus(ws), rng, json.dumps(doc).encode())
    return "corpus.jsonl"


def corpus_duplicate_id(ws: Path, rng: random.Random) -> str:
    lines = _lines(_corpus(ws))
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
    _corpus(ws).write_bytes(b"".join(lines))
    return "corpus.jsonl"


def corpus_no_text(ws: Path, rng: random.Random) -> str:
    doc = rng.choice([{"id": "nt"}, {"id": "nt", "text": ""}, {"id": "nt", "title": "", "text": None},
                      {"id": "nt", "text": "   "}, {"id": "nt", "text": {"a": 1}}, {"id": "nt", "text": [1]},
                      {"id": "nt", "text": True}])
    _replace_line(_corpus(ws), rng, json.dumps(doc).encode())
    return "corpus.jsonl"


def corpus_empty(ws: Path, rng: random.Random) -> str:
    _corpus(ws).write_text(rng.choice(["", "\n", "\n\n  \n"]))
    return "corpus.jsonl"


# ---- golden files ---------------------------------------------------------------------------
def qrels_bad_line(ws: Path, rng: random.Random) -> str:
    path = ws / "data" / "qrels.tsv"
    bad = rng.choice([b"q1\td1", b"q1\td1\thigh", b"q1\td1\t1.5", b"\td1\t1", b"q1\t\t1", b"q1\td1\t1\textra",
                      b"q0\td0\t2"])  # the last one conflicts with the existing judgement q0 d0 1
    lines = _lines(path)
    lines.append(bad + b"\n")
    path.write_bytes(b"".join(lines))
    return "qrels.tsv"


def qrels_invalid(ws: Path, rng: random.Random) -> str:
    path = ws / "data" / "qrels.tsv"
    choice = rng.randrange(4)
    if choice == 0:
        _replace_line(path, rng, b"q1\td" + _bad_bytes(rng) + b"\t1", skip_header=True)
    elif choice == 1:
        path.write_text(rng.choice(["", "\n"]))
    elif choice == 2:
        path.write_text("query-id\tcorpus-id\tscore\n")
    else:
        path.write_text(rng.choice(["a b\n", "one\n", "a b c d e\n"]) + "q0\td0\t1\n")
    return "qrels.tsv"


def queries_bad(ws: Path, rng: random.Random) -> str:
    path = ws / "data" / "queries.jsonl"
    bad = rng.choice([b"{", b"[1]", b'{"_id": null, "text": "x"}', b'{"_id": "q1", "text": 5}',
                      b'{"_id": "q1"}', b'{"_id": true, "text": "x"}', b'{"text": "x"}',
                      b'{"_id": "q1", "text": "' + _bad_bytes(rng) + b'"}'])
    _replace_line(path, rng, bad)
    return "queries.jsonl"


def queries_missing_texts(ws: Path, rng: random.Random) -> str:
    path = ws / "data" / "queries.jsonl"
    lines = _lines(path)
    path.write_bytes(b"".join(lines[: rng.randrange(len(lines))]))
    return "queries.jsonl"


HASHING_CASES: list[Case] = [
    manifest_wrong_type, manifest_unknown_field, manifest_missing_required, manifest_bad_name,
    manifest_bad_drift_metric, manifest_bad_gate_metric, manifest_bad_factory, manifest_bad_path,
    manifest_kind_typo, manifest_not_a_mapping, manifest_yaml_syntax, manifest_duplicate_key, manifest_deep,
    manifest_alias_bomb, manifest_invalid_utf8, manifest_oversized, manifest_not_a_file,
    corpus_invalid_utf8, corpus_not_json, corpus_not_object, corpus_bad_id, corpus_duplicate_id, corpus_no_text,
    corpus_empty, qrels_bad_line, qrels_invalid, queries_bad, queries_missing_texts,
]


# ---- .npy files (precomputed provider) ------------------------------------------------------
def _npy(ws: Path, rng: random.Random) -> tuple[Path, str]:
    name = rng.choice(["vecs.npy", "qvecs.npy"])
    return ws / "data" / name, name


def npy_bad_container(ws: Path, rng: random.Random) -> str:
    path, name = _npy(ws, rng)
    good = path.read_bytes()
    choice = rng.randrange(6)
    if choice == 0:
        path.write_bytes(b"")
    elif choice == 1:
        with path.open("wb") as f:
            np.savez(f, a=np.ones((20, DIM), dtype=np.float32))
    elif choice == 2:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
    elif choice == 3:
        path.write_bytes(good[: rng.randrange(1, len(good) - 1)])
    elif choice == 4:  # a header that is not a Python literal dict
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (20, 8), " + _text(rng).encode("utf-8") + b"}"
        header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + good[128:])
    else:  # a header announcing a huge matrix over a tiny file
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 8), }"
        header = header + b" " * (127 - 10 - len(header)) + b"\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)
    return name


def npy_bad_array(ws: Path, rng: random.Random) -> str:
    path, name = _npy(ws, rng)
    rows = 20 if name == "vecs.npy" else 4
    choice = rng.randrange(7)
    if choice == 0:
        np.save(path, np.array([[None] * DIM] * rows, dtype=object), allow_pickle=True)
    elif choice == 1:
        np.save(path, np.ones((rows, DIM), dtype=rng.choice([np.int32, np.int64, np.bool_, np.uint8])))
    elif choice == 2:
        np.save(path, np.ones(rng.choice([(rows,), (rows, DIM, 2), ()]), dtype=np.float32))
    elif choice == 3:
        np.save(path, np.ones((rows, DIM + rng.randint(1, 5)), dtype=np.float32))
    elif choice == 4:
        np.save(path, np.ones((rows + rng.randint(1, 5), DIM), dtype=np.float32))
    elif choice == 5:
        m = np.ones((rows, DIM), dtype=np.float32)
        m[rng.randrange(rows), rng.randrange(DIM)] = rng.choice([np.nan, np.inf, -np.inf])
        np.save(path, m)
    else:
        np.save(path, np.ones((rows, DIM), dtype=np.complex64))
    return name


def npy_ids_bad(ws: Path, rng: random.Random) -> str:
    name = rng.choice(["ids.txt", "qids.txt"])
    path = ws / "data" / name
    lines = _lines(path)
    choice = rng.randrange(3)
    if choice == 0:
        path.write_bytes(b"".join(lines[:-1]))
    elif choice == 1:
        lines[rng.randrange(len(lines))] = b"x" + _bad_bytes(rng) + b"\n"
        path.write_bytes(b"".join(lines))
    else:
        path.write_bytes(b"".join(lines) + b"extra\n")
    return name


def npy_ids_not_covering(ws: Path, rng: random.Random) -> str:
    path = ws / "data" / "ids.txt"
    lines = _lines(path)
    lines[rng.randrange(len(lines))] = b"unknown-" + str(rng.randrange(1000)).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    return "vecs.npy"


def npy_not_a_file(ws: Path, rng: random.Random) -> str:
    path, name = _npy(ws, rng)
    path.unlink()
    if rng.random() < 0.5:
        os.mkfifo(path)
    else:
        path.mkdir()
    return name


PRECOMPUTED_CASES: list[Case] = [npy_bad_container, npy_bad_array, npy_ids_bad, npy_ids_not_covering,
                                 npy_not_a_file]
