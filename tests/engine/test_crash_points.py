"""A crash before every file-system write of four reconciles loses no state and no history.

Every write of the store goes through controller.store.atomic, whose
`write_hook` runs before each one. The hook here "crashes" at the N-th write:
it raises, and keeps raising on every later write, so cleanup handlers
(`except: rmtree(staging)`) cannot write either, as with a SIGKILL. Then the
same reconcile runs again uninterrupted, and its end state must equal the one
of a run that was never interrupted. test_crash_at_env_kills_the_cli checks the
real thing once: CONTROLLER_CRASH_AT=N makes the CLI process _exit at write N.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store import atomic
from controller.store.fs import Store
from tests.helpers import REPO, manifest, workspace, write_manifest

pytestmark = pytest.mark.slow

# word n-grams only: fast to embed; a 64-bucket model fails the min gate
FAST = {f"v{i}": {"wordNgrams": 1, "seed": i} for i in range(1, 6)}
BAD = {"wordNgrams": 1, "seed": 3, "buckets": 64}


class Crash(BaseException):
    """Not an Exception: nothing in the controller may catch it, like a kill."""


def crashing_hook(at: int) -> Callable[[str, Path], None]:
    state = {"count": 0, "dead": False}

    def hook(op: str, path: Path) -> None:
        state["count"] += 1
        if state["dead"] or state["count"] == at:
            state["dead"] = True  # a dead process writes nothing more
            raise Crash(f"write {at}: {op} {path}")
    return hook


def counting_hook(ops: list[str]) -> Callable[[str, Path], None]:
    return lambda op, path: ops.append(f"{op} {path.name}")


@dataclass
class Scenario:
    name: str
    setup: list[dict]
    final: dict
    before_final: Callable[[Path], None] = lambda ws: None


def change_corpus(ws: Path) -> None:
    corpus = ws / "data" / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["text"] += " An added sentence."
    lines[0] = json.dumps(doc)
    corpus.write_text("\n".join(lines) + "\n")


SCENARIOS = [
    # v3 fails its gates while v2 is the 25% candidate: verdict, rollback and journal at once
    Scenario("failing-v3", [manifest("v1", FAST["v1"]), manifest("v2", FAST["v2"], pct=25)],
             manifest("v3", BAD, pct=50)),
    Scenario("promote", [manifest("v1", FAST["v1"]), manifest("v2", FAST["v2"], pct=25)],
             manifest("v2", FAST["v2"], pct=100)),
    Scenario("gc", [manifest(f"v{i}", FAST[f"v{i}"], keep=2) for i in (1, 2, 3)],
             manifest("v4", FAST["v4"], keep=2)),
    Scenario("revision", [manifest("v1", FAST["v1"])], manifest("v1", FAST["v1"]), change_corpus),
]


def run(ws: Path, doc: dict, store: Store) -> None:
    [loaded] = load_manifests(write_manifest(ws, doc))
    reconcile_index(loaded, store)


def end_state(store: Store) -> dict[str, Any]:
    status = store.status("qs") or {}
    return {
        "routing": store.routing("qs"),
        "verdicts": {v.id: v.verdict for v in store.versions("qs")},
        "phase": status.get("phase"),
        "journal": [(r["reason"], r["to"]) for r in store.journal("qs")],
    }


def leftovers(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith((".staging-", ".deleting-")) or ".tmp-" in name or name == "transition.json":
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_crash_before_any_write_changes_nothing_the_next_run_cannot_finish(scenario, tmp_path, monkeypatch):
    ws = workspace(tmp_path, n_docs=10)
    base = Store(tmp_path / "base")
    for doc in scenario.setup:
        run(ws, doc, base)
    scenario.before_final(ws)

    reference = Store(tmp_path / "reference")
    shutil.copytree(base.root, reference.root)
    ops: list[str] = []
    monkeypatch.setattr(atomic, "write_hook", counting_hook(ops))
    run(ws, scenario.final, reference)
    monkeypatch.setattr(atomic, "write_hook", None)
    expected = end_state(reference)
    assert len(expected["journal"]) > len(base.journal("qs")) and len(ops) >= 8, ops

    for at in range(1, len(ops) + 1):
        store = Store(tmp_path / f"crash-{at}")
        shutil.copytree(base.root, store.root)
        monkeypatch.setattr(atomic, "write_hook", crashing_hook(at))
        with pytest.raises(Crash):
            run(ws, scenario.final, store)
        monkeypatch.setattr(atomic, "write_hook", None)
        run(ws, scenario.final, store)
        where = f"{scenario.name}: crash before write {at} ({ops[at - 1]})"
        got = end_state(store)
        assert got == expected, where
        ids = [r["id"] for r in store.journal("qs") if "id" in r]
        assert len(ids) == len(set(ids)), f"{where}: a journal record was appended twice"
        assert leftovers(store.root) == [], where
        shutil.rmtree(store.root)


def test_crash_at_env_kills_the_cli_and_the_next_writer_recovers(tmp_path, monkeypatch):
    """A real process exit (no cleanup at all) mid-build: staging is left, then removed by the next run."""
    ws = workspace(tmp_path, n_docs=10)
    path = write_manifest(ws, manifest("v1", FAST["v1"]))
    ops: list[str] = []
    monkeypatch.setattr(atomic, "write_hook", counting_hook(ops))
    run(ws, manifest("v1", FAST["v1"]), Store(tmp_path / "counted"))
    at = ops.index("write index.faiss") + 1  # the same run in a subprocess makes the same writes
    cmd = [sys.executable, "-m", "controller.cli.main", "reconcile", str(path), "--store", str(tmp_path / "s")]
    env = {**os.environ, "PYTHONPATH": str(REPO), atomic.CRASH_ENV: str(at)}
    crashed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == atomic.CRASH_EXIT, crashed.stderr
    assert [p for p in leftovers(tmp_path / "s") if ".staging-" in p], "the crash left no staging directory"
    env.pop(atomic.CRASH_ENV)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    store = Store(tmp_path / "s")
    assert store.routing("qs").stable == "v1" and leftovers(store.root) == []
