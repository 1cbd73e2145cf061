"""Loop output (timestamps, JSON lines, heartbeat), apply --data-root, and the Python API."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Any

import pytest

import controller
from controller.gitops.loopout import LoopPrinter
from controller.cli.main import main
from tests.helpers import V2_OPTIONS, manifest, workspace, write_manifest


@dataclass
class FakeResult:
    executed: list = field(default_factory=list)
    reports: list = field(default_factory=list)

    class plan:  # noqa: N801  (the attribute the printer reads)
        blocked = None


@dataclass
class FakeOutcome:
    result: Any
    error: str | None = None
    skipped: str | None = None


@dataclass
class FakeReport:
    commit: str
    outcomes: list
    error: str | None = None
    pruned: list = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"commit {self.commit}:"] + [f"  index qs: {'done' if o.result.executed else 'no changes'}"
                                             for o in self.outcomes]

    def to_dict(self) -> dict:
        return {"commit": self.commit, "error": self.error}


def idle(commit: str = "abc") -> FakeReport:
    return FakeReport(commit, [FakeOutcome(FakeResult())])


def test_no_changes_is_printed_once_then_only_at_the_heartbeat(capsys):
    now = [0.0]
    printer = LoopPrinter("sync", "text", heartbeat=600, clock=lambda: now[0], stamp=lambda: "2026-01-01T00:00:00Z")
    assert printer(idle()) is True  # the first pass always prints
    now[0] = 60
    assert printer(idle()) is False
    now[0] = 120
    assert printer(FakeReport("abc", [FakeOutcome(FakeResult(executed=["x"]))])) is True  # a change
    now[0] = 180
    assert printer(idle()) is True  # back to idle: a different state prints once
    now[0] = 240
    assert printer(idle()) is False
    now[0] = 780
    assert printer(idle()) is True  # heartbeat
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2026-01-01T00:00:00Z commit abc:" and all(l.startswith("2026-") for l in out)


def test_json_log_format_is_one_object_per_line(capsys):
    LoopPrinter("sync", "json", stamp=lambda: "T")(idle("def"))
    record = json.loads(capsys.readouterr().out)
    assert record == {"time": "T", "level": "info", "verb": "sync", "changed": False, "commit": "def",
                      "error": None}


def test_apply_with_a_missing_data_root_says_so_not_manifest_changed(tmp_path, capsys):
    data = tmp_path / "data-root"
    ws = workspace(tmp_path, n_docs=40)
    shutil.move(str(ws / "data"), str(data))
    doc = manifest("v1")
    for key, sub in (("corpus", "path"),):
        doc["spec"][key][sub] = str(data / "corpus.jsonl")
    doc["spec"]["checks"]["golden"].update(queries=str(data / "queries.jsonl"), qrels=str(data / "qrels.tsv"))
    path = write_manifest(ws, doc)
    plan = tmp_path / "plan.json"
    store = str(tmp_path / "s")
    assert main(["reconcile", str(path), "--store", store, "--data-root", str(data), "--dry-run",
                 "--out", str(plan)]) == 0
    moved = tmp_path / "elsewhere"
    shutil.move(str(data), str(moved))
    capsys.readouterr()
    assert main(["apply", str(plan), "--store", store]) == 2
    err = capsys.readouterr().err
    assert "data root" in err and "does not exist here" in err and "changed" not in err
    assert main(["apply", str(plan), "--store", store, "--data-root", str(moved)]) == 1  # paths moved: stale
    err = capsys.readouterr().err
    assert "no longer loads" in err and "changed since" not in err


def test_python_api_round_trip(tmp_path):
    ws = workspace(tmp_path, n_docs=40)
    store = controller.open_store(tmp_path / "store")
    v1 = write_manifest(ws, manifest("v1"), "v1.yaml")
    planned = controller.plan(v1, store)
    assert [a.kind for a in planned[0].plan.actions][:2] == ["build", "check"] and not store.indexes()
    results = controller.reconcile(controller.load_manifests(v1), store)
    assert controller.unhealthy(results) == []
    assert controller.status("qs", store)["phase"] == "Healthy"
    assert [r["name"] for r in controller.get(store=store)] == ["qs"]
    assert controller.wait("qs", "condition=Ready", timeout=1, store=store).met
    v2 = write_manifest(ws, manifest("v2", V2_OPTIONS, pct=25), "v2.yaml")
    controller.reconcile(v2, store)
    record = controller.rollback("qs", store=store)
    assert "v2" in record["message"]
    timed_out = controller.wait("qs", "phase=Healthy", timeout=0.2, store=store, interval=0.05)
    assert not timed_out.met and "timed out after 0.2s" in timed_out.message


@pytest.mark.parametrize("bad", ["Ready", "condition=", "condition=Ready=maybe", "phase="])
def test_wait_rejects_a_malformed_for(bad):
    from controller.api import parse_wait_for

    with pytest.raises(controller.InvalidInput, match="--for"):
        parse_wait_for(bad)
