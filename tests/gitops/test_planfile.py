"""Reviewed plans: applied exactly, or refused with StalePlan naming what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.engine.reconcile import reconcile_index
from controller.errors import InvalidInput, StalePlan
from controller.engine.planfile import apply_plan_file, write_plan_file
from controller.manifest.load import load_manifests
from controller.store.fs import Store

from .conftest import manifest, run_cli


def _plan(path: Path, store: Store, out: Path) -> dict:
    loaded = load_manifests(path)
    results = [reconcile_index(m, store, dry_run=True) for m in loaded]
    return write_plan_file(results, loaded, store, out)


def test_apply_refuses_a_stale_plan_and_applies_a_fresh_one_exactly(manifest_dir: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    reconcile_index(load_manifests(target)[0], store)

    target.write_text(manifest("v2", 25))
    plan_file = tmp_path / "plan.json"
    doc = _plan(target, store, plan_file)
    assert doc["changes"] and [a["kind"] for a in doc["indexes"][0]["plan"]["actions"]] == \
        ["build", "check", "setWeight"]
    assert doc["indexes"][0]["observed"]["routing"]["stable"] == "v1"

    target.write_text(manifest("v2", 50))  # edited after review
    with pytest.raises(StalePlan) as stale:
        apply_plan_file(plan_file, store)
    msg = str(stale.value)
    assert "manifest of index 'quickstart'" in msg and "spec.rollout.percentage 25" in msg and "-> 50" in msg
    assert store.versions("quickstart")[-1].id == "v1", "a refused plan builds nothing"

    target.write_text(manifest("v2", 25))  # back to the reviewed content
    results = apply_plan_file(plan_file, store)
    assert [a.kind for a in results[0].executed] == ["build", "check", "setWeight"]
    r = store.routing("quickstart")
    assert (r.stable, r.candidate, r.weight) == ("v1", "v2", 25.0)

    # the same plan again: the store moved on, so it is stale
    with pytest.raises(StalePlan, match=r"state of index 'quickstart'.*routing.candidate None -> 'v2'"):
        apply_plan_file(plan_file, store)


def test_changed_golden_file_makes_the_plan_stale(manifest_dir: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    plan_file = tmp_path / "plan.json"
    _plan(target, store, plan_file)
    qrels = manifest_dir / "data" / "qrels.tsv"
    qrels.write_text("\n".join(qrels.read_text().splitlines()[:-5]) + "\n")
    with pytest.raises(StalePlan, match=r"files.qrels"):
        apply_plan_file(plan_file, store)


def test_apply_cli_exit_codes(manifest_dir: Path, tmp_path: Path, capsys):
    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    plan_file = tmp_path / "plan.json"
    _plan(target, store, plan_file)
    target.write_text(manifest("v1", 50))
    assert run_cli(["apply", str(plan_file)]) == 1
    err = capsys.readouterr().err
    assert "changed since the plan" in err and "Traceback" not in err
    target.write_text(manifest("v1"))
    assert run_cli(["apply", str(plan_file)]) == 0
    assert store.routing("quickstart").stable == "v1"
    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    assert run_cli(["apply", str(tmp_path / "junk.json")]) == 2
    assert "not a plan file" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="no such plan file"):
        apply_plan_file(tmp_path / "nope.json", store)
