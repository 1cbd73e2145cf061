"""diff: the plan a pull request would cause, computed without touching the store."""

from __future__ import annotations

import json
from pathlib import Path

from controller.gitops.diff import diff_ref
from controller.gitops.sync import SyncSource, sync_once
from controller.store.fs import Store

from .conftest import GitRepo, manifest, run_cli


def _tree(store: Store) -> dict[str, bytes]:
    base = store.index_dir("quickstart")
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_diff_plans_a_branch_against_the_live_store_and_writes_nothing(git_repo: GitRepo, tmp_path: Path,
                                                                        capsys):
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store).ok
    git_repo.git("checkout", "--quiet", "-b", "feature")
    pr = git_repo.commit(manifest("v2", 25), "try v2 at 25%")
    git_repo.git("checkout", "--quiet", "main")
    before = _tree(store)

    report = diff_ref(str(git_repo.path), "feature", store, path="indexes", base="main")
    assert report.commit == pr and report.changes
    (d,) = report.indexes
    assert d.manifest == "changed" and d.source == "indexes/quickstart.yaml"
    assert [a.kind for a in d.plan.actions] == ["build", "check", "setWeight"]
    assert _tree(store) == before, "diff must not build, switch or journal anything"

    argv = ["diff", "--repo", str(git_repo.path), "--ref", "feature", "--base", "main", "--path", "indexes",
            "--store", str(store.root), "--detailed-exitcode"]
    assert run_cli(argv) == 2
    out = capsys.readouterr().out
    assert f"plan for feature at {pr[:12]}" in out and "setWeight" in out and "25%" in out
    assert run_cli(argv[:-1] + ["-o", "json"]) == 0  # without --detailed-exitcode, success is 0
    assert json.loads(capsys.readouterr().out)["indexes"][0]["plan"]["changes"] is True

    main_argv = ["diff", "--repo", str(git_repo.path), "--ref", "main", "--path", "indexes",
                 "--store", str(store.root), "--detailed-exitcode"]
    assert run_cli(main_argv) == 0
    assert "No changes." in capsys.readouterr().out


def test_diff_of_a_broken_or_deleting_ref(git_repo: GitRepo, tmp_path: Path, capsys):
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    git_repo.commit(manifest("v1", broken=True), "typo")
    argv = ["diff", "--repo", str(git_repo.path), "--ref", "main", "--path", "indexes", "--store", str(store.root)]
    assert run_cli(argv + ["--detailed-exitcode"]) == 1, "an invalid manifest must not read as 'changes'"
    assert "spec.rollout.percentage" in capsys.readouterr().err
    assert run_cli(argv) == 2  # plain invalid input otherwise

    git_repo.git("revert", "--no-edit", "HEAD")
    git_repo.commit(manifest("v1"), "second index", file="indexes/other.yaml")
    (git_repo.path / "indexes" / "other.yaml").write_text(manifest("v1").replace("name: quickstart\n", "name: other\n", 1))
    git_repo.git("commit", "--quiet", "-am", "rename the second index")
    git_repo.git("checkout", "--quiet", "-b", "retire")
    git_repo.commit(None, "delete other", file="indexes/other.yaml")
    report = diff_ref(str(git_repo.path), "retire", store, path="indexes", base="main")
    assert report.removed == ["other"] and report.changes


def test_diff_against_a_missing_store_creates_nothing(git_repo: GitRepo, tmp_path: Path):
    git_repo.commit(manifest("v1"), "v1")
    store = Store(tmp_path / "not-yet")
    report = diff_ref(str(git_repo.path), "main", store, path="indexes")
    assert [a.kind for a in report.indexes[0].plan.actions] == ["build", "check", "promote"]
    assert not store.root.exists()
