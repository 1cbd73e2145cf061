"""What the build does beside its main work keeps the order and the durability it had done in turn:
the vectors scanned on the hashing thread report in validate's own order, and a large file written
by a library is made durable while it grows (the fsync before the rename still follows), and an
error seen on the way is raised."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from controller import api
from controller.errors import InvalidInput
from controller.store import atomic

N, DIM = 300, 16


def _workspace(tmp_path: Path, *, nan_row: int | None = None, corpus_line: str | None = None,
               drift_metric: str | None = None) -> Path:
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    if nan_row is not None:
        x[nan_row, 1] = np.nan
    np.save(tmp_path / "vectors.npy", x)
    lines = [json.dumps({"id": f"d{i}", "text": f"t {i}"}) for i in range(N)]
    if corpus_line is not None:
        lines[4] = corpus_line
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    spec = {"corpus": {"path": "corpus.jsonl", "idField": "id", "textFields": ["text"]},
            "model": {"provider": "precomputed", "name": "m", "version": "1", "dim": DIM,
                      "options": {"vectors": "vectors.npy"}},
            "index": {"version": "v1", "factory": "Flat", "metric": "cosine"},
            "rollout": {"percentage": 100}}
    if drift_metric is not None:
        spec["checks"] = {"drift": [{"metric": drift_metric}]}
    manifest = tmp_path / "index.yaml"
    manifest.write_text(json.dumps({"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex",
                                    "metadata": {"name": "ov"}, "spec": spec}))
    return manifest


def test_nan_found_on_the_hashing_thread_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    manifest = _workspace(tmp_path, nan_row=123)
    with pytest.raises(InvalidInput, match=r"NaN or inf \(first at row 123\)"):
        api.reconcile(manifest, tmp_path / "store")
    assert not (tmp_path / "store" / "indexes").exists()


def test_a_corpus_error_still_comes_before_a_vectors_error(tmp_path: Path) -> None:
    manifest = _workspace(tmp_path, nan_row=5, corpus_line='{"id": "d4", "text": ')
    with pytest.raises(InvalidInput, match="line 5 is not valid JSON"):
        api.reconcile(manifest, tmp_path / "store")


def test_a_misspelled_statistic_still_comes_before_a_vectors_error(tmp_path: Path) -> None:
    manifest = _workspace(tmp_path, nan_row=5, drift_metric="psy")
    with pytest.raises(InvalidInput, match="unknown drift statistic"):
        api.reconcile(manifest, tmp_path / "store")


def _library_writes(target: Path) -> None:
    with open(target, "wb") as handle:  # as FAISS does: its own open of the path
        for _ in range(5):
            handle.write(b"x" * 1000)
            handle.flush()
            time.sleep(0.02)


def test_a_file_written_by_a_library_is_made_durable_while_it_grows(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(atomic, "_sync_data", synced.append)
    monkeypatch.setattr(atomic, "WRITEBACK_EVERY_S", 0.01)
    monkeypatch.setattr(atomic, "store_umask", lambda: 0o077)
    path = tmp_path / "index.bin"
    atomic.write_with(path, _library_writes)
    assert path.read_bytes() == b"x" * 5000
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert synced, "nothing was synced while the file was written"
    assert all(fd >= 0 for fd in synced)


def test_a_write_back_error_seen_while_the_file_grows_is_raised_naming_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel reports it once per open file: the closing fsync would not see it again
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic, "_sync_data", failing)
    monkeypatch.setattr(atomic, "WRITEBACK_EVERY_S", 0.01)
    path = tmp_path / "index.bin"
    with pytest.raises(OSError) as raised:
        atomic.write_with(path, _library_writes)
    assert raised.value.errno == errno.EIO
    assert raised.value.filename == str(path)


def test_the_file_is_fsynced_after_the_body(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real = atomic.fsync_path
    monkeypatch.setattr(atomic, "fsync_path", lambda p: synced.append(Path(p)) or real(p))
    path = tmp_path / "index.bin"
    atomic.write_with(path, lambda target: Path(target).write_bytes(b"abc"))
    assert path.read_bytes() == b"abc"
    assert synced == [path]  # the fsync that durability needs before the staging rename
    assert os.stat(path).st_size == 3


# ---- a first version's index built in memory while the inputs are validated (engine/ahead.py) ----
from controller.engine import ahead  # noqa: E402


def _started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    real = ahead.start

    def start(loaded, *args, **kwargs):
        real(loaded, *args, **kwargs)
        if loaded.name in ahead._AHEAD:
            names.append(loaded.name)

    monkeypatch.setattr(ahead, "start", start)
    return names


@pytest.mark.parametrize("corpus_line, message", [
    ('{"id": "d4", "text": ', "line 5 is not valid JSON"),
    ('{"id": "d3", "text": "again"}', "duplicate"),
])
def test_a_validation_error_during_a_build_ahead_leaves_the_store_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus_line: str, message: str) -> None:
    started = _started(monkeypatch)
    manifest = _workspace(tmp_path, corpus_line=corpus_line)
    with pytest.raises(InvalidInput, match=message) as caught:
        api.reconcile(manifest, tmp_path / "store")
    assert started == ["ov"]  # the index was being built when validation failed
    assert not (tmp_path / "store" / "indexes").exists()  # no index, no staging directory, no version
    assert "ov" not in ahead._AHEAD  # dropped, not left for a later build to take
    # the same error as a run that builds nothing ahead
    monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    with pytest.raises(InvalidInput) as before:
        api.reconcile(manifest, tmp_path / "store2")
    assert str(caught.value) == str(before.value)
    assert not (tmp_path / "store2" / "indexes").exists()


def _version_files(store: Path) -> dict[str, bytes]:
    vdir = next((store / "indexes" / "ov" / "versions").iterdir())
    return {f.name: f.read_bytes() for f in sorted(vdir.iterdir()) if f.is_file() and f.name not in ("meta.json", "verdict.json")}


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW8"])
def test_an_index_built_ahead_is_the_one_written_and_equals_one_built_in_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str) -> None:
    manifest = _workspace(tmp_path)
    doc = json.loads(manifest.read_text())
    doc["spec"]["index"]["factory"] = factory
    manifest.write_text(json.dumps(doc))
    started = _started(monkeypatch)
    taken: list[object] = []
    real_take = ahead.take
    monkeypatch.setattr(ahead, "take", lambda *args: taken.append(real_take(*args)) or taken[-1])
    assert api.reconcile(manifest, tmp_path / "ahead")[0].built == 1
    assert started == ["ov"] and taken and taken[0] is not None  # built ahead, and that index was written
    monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    assert api.reconcile(manifest, tmp_path / "inturn")[0].built == 1
    assert _version_files(tmp_path / "ahead") == _version_files(tmp_path / "inturn")  # bit for bit


def test_no_build_ahead_when_the_index_has_a_version_already(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _workspace(tmp_path)
    api.reconcile(manifest, tmp_path / "store")
    started = _started(monkeypatch)
    doc = json.loads(manifest.read_text())
    doc["spec"]["index"]["version"] = "v2"
    manifest.write_text(json.dumps(doc))
    assert api.reconcile(manifest, tmp_path / "store")[0].built == 1
    assert started == [] and not ahead._AHEAD


def test_a_training_error_of_an_index_built_ahead_is_reported_as_a_build_in_turn_reports_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _workspace(tmp_path)
    doc = json.loads(manifest.read_text())
    doc["spec"]["index"]["factory"] = "IVF512,Flat"  # more lists than the 300 rows: FAISS refuses to train
    manifest.write_text(json.dumps(doc))
    started = _started(monkeypatch)
    with pytest.raises(InvalidInput) as ahead_error:
        api.reconcile(manifest, tmp_path / "ahead")
    assert started == ["ov"]
    monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    with pytest.raises(InvalidInput) as in_turn:
        api.reconcile(manifest, tmp_path / "inturn")
    assert "could not train" in str(in_turn.value)
    assert str(ahead_error.value) == str(in_turn.value)
    for store in ("ahead", "inturn"):  # no version, no staging directory left
        versions = tmp_path / store / "indexes" / "ov" / "versions"
        assert not versions.exists() or not list(versions.iterdir())


@pytest.mark.parametrize("corpus_line", [None, '{"id": "d4", "text": '])
def test_validation_beside_a_build_ahead_hands_the_gil_over_sooner_and_restores_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus_line: str | None) -> None:
    import sys

    from controller.engine import validate

    seen: list[float] = []
    real = validate._validate_manifest
    monkeypatch.setattr(validate, "_validate_manifest", lambda *args: seen.append(sys.getswitchinterval())
                        or real(*args))
    before = sys.getswitchinterval()
    manifest = _workspace(tmp_path, corpus_line=corpus_line)
    try:
        api.reconcile(manifest, tmp_path / "store")
    except InvalidInput:
        assert corpus_line is not None
    assert seen == [ahead.SWITCH_INTERVAL_S]  # while the rows were read beside the parse
    assert sys.getswitchinterval() == before  # and back after, error or not
    monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    seen.clear()
    try:
        api.reconcile(manifest, tmp_path / "store2")
    except InvalidInput:
        pass
    assert seen == [before]  # nothing built ahead: untouched


def test_the_vectors_are_read_once_their_hash_and_finiteness_taken_from_the_build_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from controller.embed.precomputed import PrecomputedEmbedder
    from controller.store import signature

    hashed: list[list[str]] = []
    real_content = signature.content
    monkeypatch.setattr(signature, "content", lambda paths: hashed.append(sorted(paths)) or real_content(paths))
    scans: list[bool] = []
    real_scan = PrecomputedEmbedder.scan
    monkeypatch.setattr(PrecomputedEmbedder, "scan",
                        lambda self, rows_checked=False: scans.append(rows_checked) or real_scan(self, rows_checked))
    started = _started(monkeypatch)
    manifest = _workspace(tmp_path)
    for name in ("vectors.npy", "corpus.jsonl", "index.yaml"):  # older than the racy window: no re-hash later
        os.utime(tmp_path / name, (time.time() - 60, time.time() - 60))
    api.reconcile(manifest, tmp_path / "store")
    assert started == ["ov"]
    assert hashed and all("vectors" not in keys for keys in hashed)  # the vectors were not read a second time
    assert scans == [True]  # every row was found finite as the build ahead read it
    record = json.loads((tmp_path / "store" / "indexes" / "ov" / "inputs.json").read_text())
    assert record["signature"]["content"]["vectors"] == hashlib.sha256((tmp_path / "vectors.npy").read_bytes()).hexdigest()
    # without a build ahead: hashed and scanned here, to the same record
    hashed.clear()
    scans.clear()
    monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    api.reconcile(manifest, tmp_path / "store2")
    assert any("vectors" in keys for keys in hashed) and scans == [False]
    again = json.loads((tmp_path / "store2" / "indexes" / "ov" / "inputs.json").read_text())
    assert again["signature"]["content"] == record["signature"]["content"]


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_an_index_built_ahead_trains_only_once_validation_has_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str) -> None:
    from controller.backends import faiss as faiss_backend
    from controller.engine import validate

    events: list[str] = []
    real_validate = validate._validate_manifest

    def slow_validate(*args):
        try:
            return real_validate(*args)
        finally:
            time.sleep(0.3)  # the rows are all read by now: a thread that did not wait would complete here
            events.append("validated")

    monkeypatch.setattr(validate, "_validate_manifest", slow_validate)
    real_complete = faiss_backend.FaissWriter.complete
    monkeypatch.setattr(faiss_backend.FaissWriter, "complete",
                        lambda self: events.append("complete") or real_complete(self))
    manifest = _workspace(tmp_path)
    doc = json.loads(manifest.read_text())
    doc["spec"]["index"]["factory"] = factory
    manifest.write_text(json.dumps(doc))
    assert api.reconcile(manifest, tmp_path / "store")[0].built == 1
    assert events[0] == "validated" and "complete" in events


def test_validation_does_not_wait_for_an_index_built_as_the_rows_come(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HNSW's rows are indexed as they are added: validation hashes and scans the vectors itself, so that
    an error in the inputs is reported without waiting for the whole index to be built."""
    from controller.backends import faiss as faiss_backend
    from controller.embed.precomputed import PrecomputedEmbedder

    scans: list[bool] = []
    real_scan = PrecomputedEmbedder.scan
    monkeypatch.setattr(PrecomputedEmbedder, "scan",
                        lambda self, rows_checked=False: scans.append(rows_checked) or real_scan(self, rows_checked))
    import threading

    from controller.engine import validate

    real_add = faiss_backend.FaissWriter.add
    released = threading.Event()  # the build ahead adds nothing until validation has reported
    added: list[int] = []

    def held_add(self, vectors, **kwargs):
        if not released.wait(timeout=5):  # a validation waiting for the whole build: let the build go on
            released.set()
        added.append(vectors.shape[0])
        return real_add(self, vectors, **kwargs)

    real_validate = validate._validate_manifest
    added_when_reported: list[int] = []

    def reporting(*args):
        try:
            return real_validate(*args)
        except InvalidInput:
            added_when_reported.append(sum(added))
            released.set()
            raise

    monkeypatch.setattr(faiss_backend.FaissWriter, "add", held_add)
    monkeypatch.setattr(validate, "_validate_manifest", reporting)
    monkeypatch.setattr(ahead, "ADD_CHUNK", 10)
    manifest = _workspace(tmp_path, corpus_line='{"id": "d3", "text": "again"}')  # a duplicate id
    doc = json.loads(manifest.read_text())
    doc["spec"]["index"]["factory"] = "HNSW8"
    manifest.write_text(json.dumps(doc))
    started = _started(monkeypatch)
    with pytest.raises(InvalidInput, match="duplicate"):
        api.reconcile(manifest, tmp_path / "store")
    assert started == ["ov"]
    assert added_when_reported == [0]  # reported before the build ahead added a row, not after all N
    assert scans == [False]
