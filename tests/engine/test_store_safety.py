"""Store safety: plan under the lock, bounded lock waits, only checked versions serve, torn journals, modes."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from controller.checks.drift import REGISTRY
from controller.cli.main import main
from controller.core.types import Routing
from controller.engine.manual import rollback
from controller.engine.reconcile import Hooks, reconcile_index
from controller.errors import CheckError, ControllerError, StoreError
from controller.manifest.load import load_manifests
from controller.store import atomic
from controller.store.fs import Store
from tests.helpers import manifest, workspace, write_manifest

SEED = {i: {"wordNgrams": 1, "seed": i} for i in range(1, 6)}  # fast hashing models; seed 4 beats seed 1
TIGHT = [{"metric": "ndcg@10", "maxDrop": 0.005}]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return workspace(tmp_path, n_docs=10)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def load(ws: Path, doc: dict, filename: str = "index.yaml"):
    [loaded] = load_manifests(write_manifest(ws, doc, filename))
    return loaded


def apply(ws: Path, doc: dict, store: Store, **kw):
    return reconcile_index(load(ws, doc), store, **kw)


# ---- 1. the plan that runs is made under the lock ---------------------------------------

def test_second_writer_gates_against_the_stable_of_the_first_writer(ws, store):
    """Writer B plans while A holds the lock (stable v1), then waits; A promotes v2.

    v3 is the v1 model again: against v1 it drops 0.000 and would pass
    maxDrop 0.005, against v2 it drops 0.04. B must gate it against v2.
    """
    apply(ws, manifest("v1", SEED[1]), store)
    apply(ws, manifest("v2", SEED[4], pct=25), store)
    a_locked, b_waiting = threading.Event(), threading.Event()
    waits: list[str] = []
    results: dict[str, object] = {}

    def writer(key: str, doc: dict, hooks: Hooks) -> None:
        try:
            results[key] = reconcile_index(load(ws, doc, f"{key}.yaml"), store, hooks=hooks)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            results[key] = exc

    def a_holds(name: str) -> None:
        a_locked.set()
        assert b_waiting.wait(60), "B never waited for the lock"

    def b_waits(message: str) -> None:
        waits.append(message)
        b_waiting.set()

    a = threading.Thread(target=writer, args=("a", manifest("v2", SEED[4], pct=100), Hooks(on_locked=a_holds)))
    b = threading.Thread(target=writer, args=(
        "b", manifest("v3", SEED[1], model_version="v1", gates=TIGHT), Hooks(on_lock_wait=b_waits)))
    a.start()
    assert a_locked.wait(60)
    b.start()  # B observes now: A holds the lock and has not promoted yet, so B sees stable v1
    a.join(120)
    b.join(120)
    ra, rb = results["a"], results["b"]
    assert not isinstance(ra, BaseException) and not isinstance(rb, BaseException), results
    assert [x.kind for x in ra.executed] == ["promote"]
    assert len(waits) == 1 and "held by pid" in waits[0]
    [report] = rb.reports
    assert report.version == "v3" and report.baseline == "v2" and not report.passed
    drop = [g for g in report.gates if g.kind == "maxDrop"][0]
    assert drop.baseline == pytest.approx(store.verdict("qs", "v2")["report"]["metrics"]["ndcg@10"])
    assert drop.value < drop.baseline - 0.005  # against v1 it would have dropped 0.000 and passed
    assert store.routing("qs") == Routing(stable="v2")
    assert store.verdict("qs", "v3")["verdict"] == "failed"


def test_in_sequence_the_same_candidate_is_refused_too(ws, store):
    apply(ws, manifest("v1", SEED[1]), store)
    apply(ws, manifest("v2", SEED[4]), store)
    result = apply(ws, manifest("v3", SEED[1], model_version="v1", gates=TIGHT), store)
    assert result.reports[0].baseline == "v2" and not result.reports[0].passed
    assert store.routing("qs").stable == "v2"


def test_a_waiting_writer_says_so_once_and_gives_up_after_its_timeout(store):
    store.root.mkdir(parents=True)
    said: list[str] = []
    other = Store(store.root)  # a second writer (its own open file: flock conflicts)
    with store.lock():
        with pytest.raises(StoreError, match=r"still locked by pid \d+ on .* after waiting 0.3s"):
            with other.lock(timeout=0.3, on_wait=said.append):
                pass
        with pytest.raises(StoreError, match="not waiting"):
            with other.lock(timeout=0, on_wait=said.append):
                pass
    assert len(said) == 1 and said[0].startswith("waiting up to 0.3s for the store lock")
    with store.lock(timeout=0):  # released: free again
        pass


def test_cli_lock_timeout_zero_fails_fast_naming_the_holder(ws, store, capsys):
    apply(ws, manifest("v1", SEED[1]), store)
    with store.lock():
        code = main(["reconcile", str(ws / "index.yaml"), "--store", str(store.root), "--lock-timeout", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "locked by pid" in err and "Traceback" not in err
    with store.lock():
        code = main(["rollback", "qs", "--store", str(store.root), "--lock-timeout", "300ms"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("waiting up to 0.3s for the store lock") == 1 and "after waiting 0.3s" in err
    assert main(["rollback", "qs", "--store", str(store.root), "--lock-timeout", "nonsense"]) == 2
    assert "--lock-timeout: expected a duration" in capsys.readouterr().err


# ---- 2. only checked versions are routable ----------------------------------------------

def test_a_check_that_raises_leaves_the_version_unroutable(ws, store, monkeypatch, capsys):
    apply(ws, manifest("v1", SEED[1]), store)

    def broken(*args, **kwargs):
        raise FloatingPointError("overflow in the histogram")
    monkeypatch.setattr(REGISTRY["psi"], "compute", broken)
    with pytest.raises(CheckError, match="checks of v2 could not be computed .*FloatingPointError.*not routed"):
        apply(ws, manifest("v2", SEED[4], pct=50), store)
    assert [v.id for v in store.versions("qs")] == ["v1", "v2"]
    assert store.verdict("qs", "v2") is None and store.routing("qs") == Routing(stable="v1")
    assert "could not be computed" in store.status("qs")["message"] or store.status("qs").get("error")
    with pytest.raises(StoreError, match="no recorded verdict"):
        store.write_routing("qs", "qs", Routing(stable="v1", candidate="v2", weight=50))
    with pytest.raises(ControllerError, match="refusing to route qs to v2: it has no recorded verdict"):
        rollback(store, "qs", to="v2")
    # the CLI: exit 1, one line, no traceback
    code = main(["reconcile", str(ws / "index.yaml"), "--store", str(store.root)])
    assert code == 1 and "not routed" in capsys.readouterr().err
    # once the statistic works again the next reconcile checks v2 and routes it
    monkeypatch.undo()
    again = apply(ws, manifest("v2", SEED[4], pct=50), store)
    assert again.built == 0 and again.reports[0].passed
    assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=50.0)


def test_forced_rollback_is_journaled_and_shown_in_status(ws, store, monkeypatch):
    apply(ws, manifest("v1", SEED[1]), store)
    monkeypatch.setattr(REGISTRY["psi"], "compute", lambda *a, **k: 1 / 0)
    with pytest.raises(CheckError):
        apply(ws, manifest("v2", SEED[4]), store)
    monkeypatch.undo()
    record = rollback(store, "qs", to="v2", force=True)
    assert record["forced"] is True and "FORCED" in record["message"]
    assert store.journal("qs")[-1]["forced"] is True
    assert store.routing("qs").stable == "v2"
    assert "v2" in store.status("qs")["forced"]
    assert "v2" in store.routing_record("qs")["forced"]
    # moving away from the forced version drops the mark
    rollback(store, "qs", to="v1")
    assert "forced" not in store.routing_record("qs") and "forced" not in store.status("qs")
    with pytest.raises(ControllerError, match="needs --to"):
        rollback(store, "qs", force=True)


def test_a_version_with_no_verdict_from_a_crash_is_not_a_rollback_target(ws, store):
    apply(ws, manifest("v1", SEED[1]), store)
    apply(ws, manifest("v2", SEED[4]), store)
    (store.version_dir("qs", "v1") / "verdict.json").unlink()  # as if the check never finished
    with pytest.raises(ControllerError, match="nothing to roll back to"):
        rollback(store, "qs")


# ---- 3. the journal survives a torn line -------------------------------------------------

def test_a_torn_journal_line_is_reported_and_hides_no_later_record(ws, store, capsys):
    apply(ws, manifest("v1", SEED[1]), store)
    path = store.index_dir("qs") / "history.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"reason": "WeightCha')  # a crash mid-append: no newline
    apply(ws, manifest("v2", SEED[4], pct=20), store)
    assert [r["reason"] for r in store.journal("qs")] == ["FirstVersion", "WeightChanged"]
    assert store.torn_journal_lines("qs") == [2]
    assert main(["history", "qs", "--store", str(store.root)]) == 0
    out = capsys.readouterr()
    assert "line 2 is torn" in out.err and "WeightChanged" in out.out


def test_recovery_removes_leftovers_of_a_crashed_writer(ws, store):
    apply(ws, manifest("v1", SEED[1]), store)
    versions = store.index_dir("qs") / "versions"
    junk = [versions / ".staging-v9-123", versions / ".deleting-v0-123",
            store.index_dir("qs") / ".routing.json.tmp-999999999", versions / "v1" / ".verdict.json.tmp-999999999"]
    junk[0].mkdir()
    junk[1].mkdir()
    junk[2].write_text("{")
    junk[3].write_text("{")
    live = store.index_dir("qs") / f".sync.json.tmp-{os.getppid()}"  # a live lock-free writer's file stays
    live.write_text("{")
    apply(ws, manifest("v1", SEED[1]), store)
    assert not any(p.exists() for p in junk) and live.exists()
    assert len(store.recovered) == 4


# ---- 4. file modes ------------------------------------------------------------------------

def world_or_group_writable(root: Path) -> list[str]:
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ["."]:
            path = Path(dirpath) / name
            if path.stat().st_mode & (stat.S_IWOTH | stat.S_IWGRP | stat.S_IROTH):
                bad.append(str(path.relative_to(root)))
    return bad


def test_store_files_are_private_even_under_umask_000(ws, store):
    old = os.umask(0)
    try:
        apply(ws, manifest("v1", SEED[1]), store)
        apply(ws, manifest("v2", SEED[4], pct=10, keep=1), store)
        rollback(store, "qs")
    finally:
        os.umask(old)
    assert world_or_group_writable(store.root) == []
    assert stat.S_IMODE((store.index_dir("qs") / "routing.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.version_dir("qs", "v1").stat().st_mode) == 0o700
    assert stat.S_IMODE((store.version_dir("qs", "v1") / "index.faiss").stat().st_mode) == 0o600


def test_controller_umask_widens_modes_for_a_group(ws, store, monkeypatch):
    monkeypatch.setenv(atomic.UMASK_ENV, "027")
    old = os.umask(0)
    try:
        apply(ws, manifest("v1", SEED[1]), store)
    finally:
        os.umask(old)
    assert stat.S_IMODE((store.index_dir("qs") / "history.jsonl").stat().st_mode) == 0o640
    assert stat.S_IMODE(store.index_dir("qs").stat().st_mode) == 0o750
    monkeypatch.setenv(atomic.UMASK_ENV, "770")
    with pytest.raises(ControllerError, match="CONTROLLER_UMASK"):
        atomic.file_mode()


def test_the_lock_is_reentrant_for_its_holder_only(store):
    store.root.mkdir(parents=True)
    with store.lock():
        with store.lock(timeout=0):  # the same thread through the same Store: no self-deadlock
            pass
        other = Store(store.root)
        with pytest.raises(StoreError, match="not waiting"):
            with other.lock(timeout=0):
                pass
        failed: list[BaseException] = []

        def second_thread() -> None:
            try:
                with store.lock(timeout=0):
                    pass
            except StoreError as exc:
                failed.append(exc)
        t = threading.Thread(target=second_thread)
        t.start()
        t.join(30)
        assert len(failed) == 1  # another thread waits like any other writer
        with store.lock(timeout=0):  # and its failure did not release this thread's hold
            pass
