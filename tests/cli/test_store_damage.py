"""A damaged or half-made store: one line naming the file, exit 1, never a traceback; a listing still shows
every healthy index (the broken one as phase Unknown); a full volume names the file the system refused."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.cli.main import main
from controller.embed import cache as cache_module
from controller.errors import NotFound, StoreError
from controller.store.fs import Store
from controller.store.corpus import text_hash
from tests.helpers import V2_OPTIONS, manifest, workspace, write_manifest


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, store) with index `qs`: v1, then v2 stable and Healthy (a report compares two versions)."""
    tmp = tmp_path_factory.mktemp("two")
    ws = workspace(tmp, n_docs=60)
    store = tmp / "store"
    for doc, filename in ((manifest("v1"), "v1.yaml"), (manifest("v2", V2_OPTIONS), "v2.yaml")):
        assert main(["reconcile", str(write_manifest(ws, doc, filename)), "--store", str(store)]) == 0
    return ws, store


@pytest.fixture
def copied(two_versions, tmp_path) -> tuple[Path, Path]:
    """A private copy of the shared workspace and store: tests damage it."""
    ws, store = two_versions
    shutil.copytree(ws, tmp_path / "ws")
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "ws", tmp_path / "store"


def edit_first_document(ws: Path) -> None:
    """Change one document's text: the next plan compares content hashes with the stable version's."""
    corpus = ws / "data" / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["text"] = doc["text"] + " (edited)"
    lines[0] = json.dumps(doc)
    corpus.write_text("\n".join(lines) + "\n")


# ---- 1. ids.json and hashes.json of a version ------------------------------------------------------
DAMAGE = {
    "truncated": lambda data: data[:10],
    "not a list": lambda data: b'{"ids": []}',
    "invalid UTF-8": lambda data: b'["\xff\xfe"]',
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("filename", ["ids.json", "hashes.json"])
def test_a_damaged_version_list_is_a_store_error_naming_it(copied, filename, damage):
    _, store = copied
    path = store / "indexes" / "qs" / "versions" / "v1" / filename
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    read = Store(store).ids if filename == "ids.json" else Store(store).hashes
    with pytest.raises(StoreError, match=re.escape(str(path))):
        read("qs", "v1")


def test_a_missing_version_list_is_named_and_an_unknown_version_is_not_found(copied):
    _, store = copied
    (store / "indexes" / "qs" / "versions" / "v1" / "hashes.json").unlink()
    with pytest.raises(StoreError, match=r"hashes\.json: missing"):
        Store(store).hashes("qs", "v1")
    with pytest.raises(NotFound, match="no version 'v9'"):
        Store(store).ids("qs", "v9")


VERBS = {
    "report": lambda ws, store, tmp: ["report", "qs", "--md", str(tmp / "r.md"), "--store", str(store)],
    "reconcile --dry-run": lambda ws, store, tmp: ["reconcile", str(ws / "v2.yaml"), "--dry-run",
                                                   "--store", str(store)],
}


@pytest.mark.parametrize("filename,verb", [("ids.json", "report"), ("ids.json", "reconcile --dry-run"),
                                           ("hashes.json", "reconcile --dry-run")])
def test_verbs_reading_a_truncated_version_list_exit_1_naming_it(copied, tmp_path, capsys, filename, verb):
    """Was a JSONDecodeError traceback (report; reconcile --dry-run after a corpus edit)."""
    ws, store = copied
    edit_first_document(ws)  # the dry run then reads the stable version's ids and hashes
    path = store / "indexes" / "qs" / "versions" / "v2" / filename  # the stable version
    path.write_bytes(path.read_bytes()[:10])
    capsys.readouterr()
    assert main(VERBS[verb](ws, store, tmp_path)) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


# ---- 2. one index without a readable status in a listing -----------------------------------------
def half_made_index(store: Path) -> str:
    """What a first reconcile interrupted by Ctrl-C leaves: the index directory, no status."""
    (store / "indexes" / "other" / "versions").mkdir(parents=True)
    return "other"


def corrupt_status(store: Path) -> str:
    shutil.copytree(store / "indexes" / "qs", store / "indexes" / "broken")
    (store / "indexes" / "broken" / "status.json").write_text('{"phase": "Hea')
    return "broken"


@pytest.mark.parametrize("breaking", [half_made_index, corrupt_status], ids=["no status", "corrupt status"])
@pytest.mark.parametrize("verb", ["get", "status"])
def test_a_listing_shows_every_index_and_the_broken_one_as_unknown(copied, capsys, verb, breaking):
    """Was `error: index 'other' has never been reconciled`, exit 1, and no healthy index shown."""
    _, store = copied
    broken = breaking(store)
    capsys.readouterr()
    assert main([verb, "--store", str(store)]) == 1
    out, err = capsys.readouterr()
    assert re.search(rf"^{broken}\s+(phase )?Unknown", out, re.M), out
    assert re.search(r"^qs\s+(phase )?Healthy", out, re.M), out
    assert "Traceback" not in err and broken in err and "Unknown" in err, err
    for fmt, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        assert main([verb, "--store", str(store), "-o", fmt]) == 1
        rows = {row["name"]: row for row in parse(capsys.readouterr().out)}
        assert set(rows) == {"qs", broken}
        assert rows[broken]["phase"] == "Unknown" and rows[broken]["error"]
        assert rows["qs"]["phase"] == "Healthy" and "error" not in rows["qs"]


def test_a_healthy_listing_still_exits_0_and_a_named_broken_index_still_fails(copied, capsys):
    _, store = copied
    assert main(["get", "--store", str(store)]) == 0
    assert main(["status", "--store", str(store), "-o", "json"]) == 0
    half_made_index(store)
    capsys.readouterr()
    assert main(["get", "other", "--store", str(store)]) == 1
    assert main(["status", "other", "--store", str(store)]) == 1
    assert "never been reconciled" in capsys.readouterr().err


def test_the_api_lists_the_broken_index_too(copied):
    import controller
    from controller.api import unreadable

    _, store = copied
    half_made_index(store)
    rows = controller.get(store=store)
    assert [r["name"] for r in rows] == ["other", "qs"] and rows[1]["stable"] == "v2"
    assert [r["name"] for r in unreadable(rows)] == ["other"]
    assert [s["phase"] for s in controller.status(store=store)] == ["Unknown", "Healthy"]


# ---- 3. a full volume while the embedding cache is written ----------------------------------------
class _FullDiskOs:
    """The cache module's `os`, with writes the volume refuses after ``room`` bytes (the rest is the real os)."""

    def __init__(self, room: int = 0) -> None:
        self.room = room

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as os.write raises it: no file name
        written = os.write(fd, bytes(data[:self.room]))
        self.room -= written
        return written


def test_a_full_volume_names_the_cache_file(tmp_path, capsys, monkeypatch):
    """Was `error: No space left on device` with no file named."""
    ws = workspace(tmp_path, n_docs=60)
    monkeypatch.setattr(cache_module, "os", _FullDiskOs())
    assert main(["reconcile", str(write_manifest(ws, manifest("v1"))), "--store", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: {re.escape(str(tmp_path / 's' / 'cache'))}/\S+: No space left on device\n", err), err


def test_a_partial_append_is_cut_back_and_names_the_file(tmp_path, monkeypatch):
    fp = {"provider": "hashing", "name": "m", "version": "1", "dim": 4, "normalize": True, "optionsHash": "abc"}
    cache = cache_module.EmbeddingCache(tmp_path, fp)
    kept = [text_hash("a"), text_hash("b")]
    cache.put(kept, np.ones((2, 4), dtype=np.float32))
    (rows_file,) = cache.dir.glob("*.f32")
    monkeypatch.setattr(cache_module, "os", _FullDiskOs(room=20))  # 1.25 rows fit, then the volume is full
    with pytest.raises(OSError) as caught:
        cache.put([text_hash("c"), text_hash("d")], np.zeros((2, 4), dtype=np.float32))
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(rows_file)
    assert rows_file.stat().st_size == 2 * 4 * 4  # the partial rows are given back
    found, vectors = cache_module.EmbeddingCache(tmp_path, fp).get(kept + [text_hash("c")])
    assert found.tolist() == [True, True, False] and np.all(vectors[:2] == 1)
