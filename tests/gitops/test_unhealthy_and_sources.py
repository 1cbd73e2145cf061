"""sync and diff report what reconcile reports: blocked plans and rollbacks are not "ok";
one --path spelling is one source; hidden files are not manifests; a PR that adds or empties --path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from controller.gitops.diff import diff_ref
from controller.gitops.sync import SyncSource, sync_once
from controller.store.fs import Store
from controller.store.syncstate import index_sync

from .conftest import GitRepo, manifest, run_cli


def _reseeded_v1() -> str:
    """v1 with another model seed but the same index version: the plan is blocked (IndexVersionImmutable)."""
    doc = yaml.safe_load(manifest("v1"))
    doc["spec"]["model"]["options"]["seed"] = 2
    return yaml.safe_dump(doc, sort_keys=False)


def _synced_v1(git_repo: GitRepo, tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store).exit_code == 0
    return store


def test_diff_of_a_blocked_plan_is_not_no_changes(git_repo: GitRepo, tmp_path: Path, capsys):
    store = _synced_v1(git_repo, tmp_path)
    git_repo.git("checkout", "--quiet", "-b", "reseed")
    git_repo.commit(_reseeded_v1(), "reseed v1")
    argv = ["diff", "--repo", str(git_repo.path), "--ref", "reseed", "--path", "indexes", "--store", str(store.root)]
    assert run_cli(argv + ["--detailed-exitcode"]) == 1, "a blocked plan cannot be applied: an error"
    captured = capsys.readouterr()
    assert "! blocked (IndexVersionImmutable)" in captured.out and "No changes." not in captured.out
    assert "Blocked: 1 index(es) cannot be applied (quickstart)" in captured.out
    assert "IndexVersionImmutable" in captured.err
    assert run_cli(argv) == 3, "as reconcile --dry-run: merging would leave the index Stalled"
    capsys.readouterr()
    assert run_cli(argv + ["-o", "json"]) == 3
    assert json.loads(capsys.readouterr().out)["blocked"] == ["quickstart"]


def test_sync_once_exits_3_for_a_rollback_and_for_a_stalled_index(git_repo: GitRepo, tmp_path: Path, capsys):
    store = _synced_v1(git_repo, tmp_path)
    argv = ["sync", "--repo", str(git_repo.path), "--branch", "main", "--path", "indexes", "--once",
            "--store", str(store.root)]
    git_repo.commit(_reseeded_v1(), "reseed v1")
    assert run_cli(argv) == 3
    captured = capsys.readouterr()
    assert "phase Stalled" in captured.out and "blocked (IndexVersionImmutable)" in captured.out
    assert "not healthy: quickstart: blocked (IndexVersionImmutable)" in captured.err

    git_repo.commit(manifest("v3"), "v3 fails its gates")
    assert run_cli(argv) == 3
    captured = capsys.readouterr()
    assert "abort v3" in captured.out and "phase RolledBack" in captured.out
    assert "v3 failed its gates and was rolled back" in captured.err


def test_sync_once_log_format_json_prints_json(git_repo: GitRepo, tmp_path: Path, capsys):
    git_repo.commit(manifest("v1"), "v1")
    assert run_cli(["sync", "--repo", str(git_repo.path), "--branch", "main", "--path", "indexes", "--once",
                    "--store", str(tmp_path / "store"), "--log-format", "json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["verb"] == "sync" and record["indexes"][0]["name"] == "quickstart"


def test_path_spellings_are_one_source_so_prune_works(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    keys = {SyncSource(str(git_repo.path), "main", p).key for p in ("indexes", "./indexes", "indexes/", "./indexes/")}
    assert len(keys) == 1
    assert sync_once(SyncSource(str(git_repo.path), "main", "./indexes"), store).ok
    assert index_sync(store, "quickstart")["path"] == "indexes"
    git_repo.commit(None, "delete the manifest")
    report = sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store, prune=True)
    assert report.pruned == ["quickstart"] and "quickstart" not in store.indexes()


def test_a_kustomization_left_alone_is_an_empty_set(git_repo: GitRepo, tmp_path: Path):
    """A kustomize repository keeps kustomization.yaml after its last EmbeddingIndex goes: sync failed with
    'no *.yaml or *.yml manifest' instead of seeing the deletion, so --prune never pruned."""
    store = Store(tmp_path / "store")
    git_repo.commit("resources: [quickstart.yaml]\n", "kustomize", file="indexes/kustomization.yaml")
    git_repo.commit(manifest("v1"), "v1")
    assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store).ok
    git_repo.commit("resources: []\n", "empty", file="indexes/kustomization.yaml")
    git_repo.commit(None, "delete the last manifest")
    report = sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store, prune=True)
    assert report.error is None and report.pruned == ["quickstart"], report.lines()
    report = diff_ref(str(git_repo.path), "main", store, path="indexes", base="main~2")
    assert report.indexes == [] and report.removed == ["quickstart"]


def test_hidden_yaml_files_are_not_manifests(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    workflows = git_repo.path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text("on: push\njobs: {}\n")
    (git_repo.path / "indexes" / ".draft.yaml").write_text("not: a manifest\n")
    git_repo.commit(manifest("v1"), "v1 and a CI workflow")
    report = sync_once(SyncSource(str(git_repo.path), "main", "."), store)
    assert report.error is None and report.exit_code == 0, report.lines()
    assert store.routing("quickstart").stable == "v1"


def test_diff_with_a_base_lacking_path_or_a_ref_deleting_the_last_manifest(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    (git_repo.path / "README.md").write_text("config\n")
    git_repo.git("add", "README.md")
    git_repo.git("commit", "--quiet", "-m", "empty repository")
    git_repo.git("checkout", "--quiet", "-b", "add")
    git_repo.commit(manifest("v1"), "add indexes/")
    report = diff_ref(str(git_repo.path), "add", store, path="indexes", base="main")
    assert [(d.name, d.manifest) for d in report.indexes] == [("quickstart", "added")]

    git_repo.git("checkout", "--quiet", "-b", "delete")
    git_repo.commit(None, "delete the last manifest")  # indexes/data/ stays
    report = diff_ref(str(git_repo.path), "delete", store, path="indexes", base="add")
    assert report.indexes == [] and report.removed == ["quickstart"] and report.changes


def test_diff_resolves_what_the_repository_itself_resolves(git_repo: GitRepo, tmp_path: Path, capsys):
    """In a clone a pull request's branch is origin/<name>, and a commit may be on no branch at all: the
    mirror fetches heads and tags only, so these were 'no branch, tag or commit named ...' (exit 2)."""
    git_repo.commit(manifest("v1"), "v1")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(git_repo.path), str(clone)], check=True)
    git_repo.git("checkout", "--quiet", "-b", "feature")
    feature = git_repo.commit(manifest("v2"), "v2")
    subprocess.run(["git", "-C", str(clone), "fetch", "--quiet"], check=True)  # origin/feature, no local branch
    git_repo.git("checkout", "--quiet", "main")
    git_repo.git("branch", "--quiet", "-D", "feature")  # the commit is on no branch of the repository now
    store = tmp_path / "store"
    for repo, ref in ((clone, "origin/feature"), (clone, feature), (git_repo.path, feature), (clone, "HEAD")):
        argv = ["diff", "--repo", str(repo), "--ref", ref, "--path", "indexes", "--store", str(store), "-o", "json"]
        assert run_cli(argv) == 0, (ref, capsys.readouterr().err)
        assert json.loads(capsys.readouterr().out)["commit"] == (feature if ref != "HEAD" else git_repo.head())
    for bad in ("nope", "--upload-pack=touch x", "main:refs/heads/evil"):
        argv = ["diff", "--repo", str(clone), "--ref", bad, "--path", "indexes", "--store", str(store)]
        assert run_cli(argv) == 2 and "no branch, tag or commit named" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
