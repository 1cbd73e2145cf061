"""Plan files and --out: bad structure or a bad path is one line naming the file, field and value
(exit 2, nothing written); a blocked plan applied writes the status reconcile would write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controller.api import status
from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store

from .conftest import manifest, run_cli

FMT = "indexops.dev/plan/v1"
GOOD_ENTRY = {"name": "qs", "manifest": {"source": "/nowhere/qs.yaml"}, "observed": {}, "plan": {"changes": False}}


def _with(entry_changes: dict) -> dict:
    entry = json.loads(json.dumps(GOOD_ENTRY))
    for dotted, value in entry_changes.items():
        *parents, last = dotted.split(".")
        node = entry
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return entry


@pytest.mark.parametrize("doc, field, shown", [
    ({"format": FMT, "indexes": []}, "field store", "missing"),
    ({"format": FMT, "store": 7, "indexes": []}, "field store", "got 7"),
    ({"format": FMT, "store": "/tmp", "dataRoots": "abc", "indexes": []}, "field dataRoots", 'got "abc"'),
    ({"format": FMT, "store": "/tmp", "indexes": [{}]}, "field indexes[0].name", "missing"),
    ({"format": FMT, "store": "/tmp", "indexes": ["qs"]}, "field indexes[0]", 'got "qs"'),
    ({"format": FMT, "store": "/tmp", "indexes": [_with({"manifest": None})]}, "field indexes[0].manifest",
     "missing"),
    ({"format": FMT, "store": "/tmp", "indexes": [_with({"manifest.source": 5})]},
     "field indexes[0].manifest.source", "got 5"),
    ({"format": FMT, "store": "/tmp", "indexes": [GOOD_ENTRY, _with({"plan": None})]}, "field indexes[1].plan",
     "missing"),
    ({"format": FMT, "store": "/tmp", "indexes": [_with({"observed": None})]}, "field indexes[0].observed",
     "missing"),
    ({"format": FMT, "store": "/tmp", "indexes": [_with({"plan.changes": "yes"})]},
     "field indexes[0].plan.changes", 'got "yes"'),
])
def test_a_structurally_bad_plan_file_is_one_line_exit_2(doc: dict, field: str, shown: str, tmp_path: Path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    assert run_cli(["apply", str(plan), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: {plan}: {field}: ") and shown in err
    assert not (tmp_path / "store").exists()


def _reconcile_then_plan_out(manifest_dir: Path, tmp_path: Path, out: str, capsys) -> int:
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    capsys.readouterr()
    return run_cli(["reconcile", str(target), "--dry-run", "--out", out, "--store", str(tmp_path / "store")])


@pytest.mark.parametrize("out, says", [("", "needs a file name"), ("{dir}", "is a directory"),
                                       ("{dir}/missing/x.json", "does not exist")])
def test_reconcile_out_is_checked_before_anything(out: str, says: str, manifest_dir: Path, tmp_path: Path, capsys):
    out = out.format(dir=tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _reconcile_then_plan_out(manifest_dir, tmp_path, out, capsys) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field --out" in err and says in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no temp file, no directory, no store"


def test_a_failed_rename_leaves_no_temp_file(tmp_path: Path):
    from controller.store import atomic

    target = tmp_path / "plan.json"
    target.mkdir()  # os.replace of a file onto a directory fails
    with pytest.raises(OSError):
        atomic.write_bytes(target, b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_applying_a_blocked_plan_writes_the_stalled_status(manifest_dir: Path, tmp_path: Path, capsys):
    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    reconcile_index(load_manifests(target)[0], store)
    doc = yaml.safe_load(manifest("v1"))
    doc["spec"]["model"]["options"]["seed"] = 2  # same index version, another model: blocked
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = tmp_path / "plan.json"
    assert run_cli(["reconcile", str(target), "--dry-run", "--out", str(plan), "--store", str(store.root)]) == 3
    assert status("quickstart", store.root)["phase"] == "Healthy"
    assert run_cli(["apply", str(plan)]) == 3
    assert "blocked (IndexVersionImmutable)" in capsys.readouterr().err
    stalled = status("quickstart", store.root)
    assert stalled["phase"] == "Stalled" and "IndexVersionImmutable" in json.dumps(stalled["conditions"])
