"""A no-op reconcile opens no input file; an edit keeping size and mtime is still seen (racy rule)."""

from __future__ import annotations

import builtins
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from controller.engine.reconcile import reconcile_index
from controller.engine.validate import inputs_unchanged, validate_all
from controller.manifest.load import load_manifests
from controller.store import atomic, signature
from tests.helpers import manifest, write_manifest

DATA_FILES = ("corpus.jsonl", "vectors.npy", "queries.jsonl", "qrels.tsv")


def age_files(ws: Path, seconds: float = 30.0) -> None:
    """Data written long before the reconcile: out of the racy window."""
    then = time.time() - seconds
    for name in DATA_FILES:
        path = ws / "data" / name
        if path.exists():
            os.utime(path, (then, then))


def precomputed(ws: Path) -> dict:
    """The quickstart corpus with seeded unit vectors as provider precomputed (no golden: no query vectors)."""
    n = sum(1 for line in (ws / "data" / "corpus.jsonl").read_text().splitlines() if line.strip())
    x = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    np.save(ws / "data" / "vectors.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    doc = manifest("v1")
    doc["spec"]["model"] = {"provider": "precomputed", "name": "synthetic", "version": "1", "dim": 384,
                            "options": {"vectors": "data/vectors.npy"}}
    doc["spec"]["checks"] = {"drift": [{"metric": "psi"}]}
    return doc


class Opens:
    """Every path opened through open(), io.open or os.open (numpy's np.load included)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real_open, real_os_open = builtins.open, os.open

        def spy_open(file, *args, **kwargs):
            self.paths.append(str(file))
            return real_open(file, *args, **kwargs)

        def spy_os_open(path, *args, **kwargs):
            self.paths.append(str(path))
            return real_os_open(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(io, "open", spy_open)
        monkeypatch.setattr(os, "open", spy_os_open)

    def of(self, ws: Path) -> list[str]:
        return [p for p in self.paths if Path(p).name in DATA_FILES and str(ws) in p]


@pytest.mark.parametrize("kind", ["hashing", "precomputed"])
def test_noop_reconcile_opens_no_input_file(ws, store, monkeypatch, kind):
    doc = manifest("v1") if kind == "hashing" else precomputed(ws)
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, doc))
    first = reconcile_index(loaded, store)
    assert first.built == 1
    assert (store.index_dir("qs") / signature.RECORD).is_file()
    opens = Opens(monkeypatch)
    again = reconcile_index(loaded, store)
    dry = reconcile_index(loaded, store, dry_run=True)
    assert (again.built, again.executed, dry.plan.changes) == (0, [], False)
    assert opens.of(ws) == []
    assert any("status.json" in p or "routing.json" in p for p in opens.paths)  # the spy does see opens


def test_fresh_files_are_read_again_until_out_of_the_racy_window(ws, store, monkeypatch):
    # data just written is racy; stamped a minute ahead it stays racy however slowly a loaded machine
    # gets from writing it to taking the signature (which must happen within the one-second window)
    age_files(ws, seconds=-60)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    reconcile_index(loaded, store)
    opens = Opens(monkeypatch)
    reconcile_index(loaded, store, dry_run=True)
    assert str(ws / "data" / "corpus.jsonl") in opens.of(ws)


def test_edit_keeping_size_and_mtime_is_detected(ws, store):
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    reconcile_index(loaded, store)
    corpus = ws / "data" / "corpus.jsonl"
    before = corpus.stat()
    lines = corpus.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["text"] = doc["text"][::-1]  # same length, other content
    lines[0] = json.dumps(doc)
    with open(corpus, "r+", encoding="utf-8") as handle:  # in place: same inode
        handle.write("\n".join(lines) + "\n")
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = corpus.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    plan = reconcile_index(loaded, store, dry_run=True).plan
    assert plan.changes and plan.actions[0].kind == "build"


def test_racy_rule_distrusts_a_file_modified_within_the_window(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("{}\n")
    now = signature.take({"corpus": path})
    assert not signature.unchanged(now, signature.take({"corpus": path}))  # written just now: racy
    old = time.time_ns() - 10 * signature.RACY_WINDOW_NS
    os.utime(path, ns=(old, old))
    recorded = signature.take({"corpus": path})
    assert signature.unchanged(recorded, signature.take({"corpus": path}))
    # the same stat, but recorded when the file was only just modified: a same-tick edit may follow
    racy = {**recorded, "takenNs": old + signature.RACY_WINDOW_NS // 2}
    assert not signature.unchanged(racy, signature.take({"corpus": path}))
    (tmp_path / "new").write_text("{}\n")
    os.replace(tmp_path / "new", path)  # an editor's atomic save: same size, new inode
    os.utime(path, ns=(old, old))
    assert not signature.unchanged(recorded, signature.take({"corpus": path}))  # new inode
    assert not signature.unchanged(signature.take({"corpus": tmp_path}), signature.take({"corpus": tmp_path}))


def test_inputs_unchanged_tells_shells_they_may_skip_validation(ws, store):
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    assert not inputs_unchanged(loaded, store)  # nothing recorded yet
    reconcile_index(loaded, store)
    assert inputs_unchanged(loaded, store)
    (ws / "data" / "qrels.tsv").write_text((ws / "data" / "qrels.tsv").read_text() + "\n")
    assert not inputs_unchanged(loaded, store)


def test_touched_but_unchanged_files_are_hashed_not_parsed(ws, store, monkeypatch):
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    reconcile_index(loaded, store)
    age_files(ws, seconds=10)  # a touch: new mtime and ctime, same bytes
    parsed = []
    import controller.engine.reconcile as R
    monkeypatch.setattr(R, "read_corpus", lambda *a, **k: parsed.append(a) or pytest.fail("corpus parsed"))
    again = reconcile_index(loaded, store)
    assert (again.built, again.executed, parsed) == (0, [], [])
    record = json.loads((store.index_dir("qs") / signature.RECORD).read_text())
    assert record["signature"]["files"]["corpus"][2] == (ws / "data" / "corpus.jsonl").stat().st_mtime_ns


def test_validate_all_with_a_store_skips_vouched_inputs(ws, store, monkeypatch):
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    assert list(validate_all([loaded], store)) == ["qs"]  # nothing recorded: read and validated
    reconcile_index(loaded, store)
    opens = Opens(monkeypatch)
    assert validate_all([loaded], store) == {}
    assert opens.of(ws) == []


def test_a_first_build_through_the_api_parses_the_corpus_once(ws, tmp_path, monkeypatch):
    import controller.engine.reconcile as R
    import controller.engine.validate as V
    from controller import api

    calls = []
    real = V.read_corpus

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(V, "read_corpus", counting)
    monkeypatch.setattr(R, "read_corpus", counting)
    [result] = api.reconcile(write_manifest(ws, manifest("v1")), tmp_path / "api-store")
    assert result.built == 1 and len(calls) == 1  # validate-first pass, then reused by the reconcile


def test_content_hashing_never_blocks_on_a_fifo(tmp_path):
    fifo = tmp_path / "corpus.jsonl"
    os.mkfifo(fifo)
    assert signature.content({"corpus": fifo, "missing": tmp_path / "nope"}) == {"corpus": None, "missing": None}
    assert signature.content({"corpus": tmp_path}) == {"corpus": None}  # a directory is not hashed either


@pytest.mark.parametrize("block", [1, 7, 64, 65_536])
def test_journal_read_from_the_end_equals_the_journal_reversed(tmp_path, block):
    path = tmp_path / "history.jsonl"
    records = [{"reason": "r", "n": i, "text": "é\u2028" * (i % 5)} for i in range(40)]
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    lines[10] = b'{"reason": "Weig'  # a torn line between records
    lines[20] = b"[1, 2]"  # JSON, but not a record
    path.write_bytes(b"\n".join(lines[:30]) + b"\n\n" + b"\n".join(lines[30:]) + b'\n{"torn": ')
    newest_first = list(atomic.read_lines_newest_first(path, block=block))
    assert newest_first == list(reversed(atomic.read_lines(path)))
    assert [r["n"] for r in newest_first][:3] == [39, 38, 37] and len(newest_first) == 38
    assert list(atomic.read_lines_newest_first(tmp_path / "missing.jsonl", block=block)) == []


def test_a_noop_reads_the_journal_only_back_to_the_last_promotion(ws, store, monkeypatch):
    """A long history must not slow the no-op: previous_stable needs only the tail of the journal."""
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, manifest("v1")))
    reconcile_index(loaded, store)
    path = store.index_dir("qs") / "history.jsonl"
    old = {"reason": "WeightChanged", "from": {"stable": "v0"}, "to": {"stable": "v0"}, "pad": "x" * 500}
    history = path.read_bytes()
    path.write_bytes(b"".join(json.dumps(old).encode() + b"\n" for _ in range(5_000)) + history)
    read = []
    real = atomic._record_of
    monkeypatch.setattr(atomic, "_record_of", lambda line: read.append(line) or real(line))
    again = reconcile_index(loaded, store)
    assert (again.built, again.executed) == (0, [])
    assert 0 < len(read) < 100  # of 5,000+ lines: the promotion of v1 is the last record


def test_a_noop_writes_nothing_and_loads_no_backend(ws, store, monkeypatch):
    """The second no-op leaves inputs.json as it was (no write, no fsync) and never resolves the FAISS
    backend: its alias is the store's routing record (capabilities.native_alias is false)."""
    import controller.backends as backends

    doc = precomputed(ws)
    age_files(ws)
    [loaded] = load_manifests(write_manifest(ws, doc))
    reconcile_index(loaded, store)
    writes, resolved = [], []
    monkeypatch.setattr(atomic, "write_hook", lambda op, path: writes.append((op, path.name)))
    real = backends.get_backend
    monkeypatch.setattr(backends, "get_backend", lambda kind: resolved.append(kind) or real(kind))
    import controller.engine.backend as B
    monkeypatch.setattr(B, "get_backend", backends.get_backend)
    opens = Opens(monkeypatch)
    again = reconcile_index(loaded, store)
    assert (again.built, again.executed) == (0, [])
    assert (writes, resolved) == ([], [])
    vector_files = {"index.faiss", "norms.npy", "fixups.npz", "ids.json", "hashes.json"}
    assert [p for p in opens.paths if Path(p).name in vector_files] == []
    assert opens.of(ws) == []
