"""`git revert` goes back: the serving state is a function of the manifest and the kept versions.

Real repositories in tmp, the real `controller sync --once`, `diff` and `reconcile --dry-run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from controller.store.fs import Store

from .conftest import GitRepo, journal_links, manifest, run_cli

NAME = "quickstart"


def sync(repo: GitRepo, store: Path, expect: int = 0) -> None:
    code = run_cli(["sync", "--repo", str(repo.path), "--branch", "main", "--path", "indexes", "--once",
                    "--store", str(store)])
    assert code == expect


def cli_json(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    run_cli(argv + ["-o", "json"])
    return json.loads(capsys.readouterr().out)


def with_keep(text: str, keep: int) -> str:
    doc = yaml.safe_load(text)
    doc["spec"]["history"]["keep"] = keep
    return yaml.safe_dump(doc, sort_keys=False)


def test_reverting_a_promotion_returns_to_the_canary_and_reverting_again_promotes(git_repo: GitRepo,
                                                                                   tmp_path: Path, capsys):
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    c1 = git_repo.commit(manifest("v1"), "v1 serves")
    sync(git_repo, store_dir)
    c2 = git_repo.commit(manifest("v2", 25), "v2 as a 25% canary")
    sync(git_repo, store_dir)
    c3 = git_repo.commit(manifest("v2", 100), "promote v2")
    sync(git_repo, store_dir)
    r = store.routing(NAME)
    assert (r.stable, r.candidate) == ("v2", None)

    git_repo.git("revert", "--no-edit", "HEAD")
    revert = git_repo.head()
    # the plan shows it before anything moves: `diff` of the branch and `reconcile --dry-run`
    diff = cli_json(["diff", "--repo", str(git_repo.path), "--ref", "main", "--path", "indexes",
                     "--store", str(store_dir)], capsys)
    [planned] = diff["indexes"][0]["plan"]["actions"]
    assert (planned["kind"], planned["reason"], planned["version"], planned["baseline"], planned["weight"]) == (
        "rollback", "RevertedToCanary", "v2", "v1", 25)
    dry = cli_json(["reconcile", str(git_repo.path / "indexes"), "--dry-run", "--store", str(store_dir)], capsys)
    assert [a["reason"] for a in dry["indexes"][0]["plan"]["actions"]] == ["RevertedToCanary"]
    assert store.routing(NAME).stable == "v2"  # a plan moves nothing

    sync(git_repo, store_dir)
    r = store.routing(NAME)
    assert (r.stable, r.candidate, r.weight) == ("v1", "v2", 25.0)
    record = store.journal(NAME)[-1]
    assert record["reason"] == "RevertedToCanary" and record["commit"] == revert
    assert record["from"]["stable"] == "v2" and "back to v1" in record["message"]
    status = cli_json(["status", NAME, "--store", str(store_dir)], capsys)
    assert status["phase"] == "Progressing" and status["sync"]["inSync"] is True

    git_repo.git("revert", "--no-edit", "HEAD")
    again = git_repo.head()
    sync(git_repo, store_dir)
    r = store.routing(NAME)
    assert (r.stable, r.candidate) == ("v2", None)
    assert store.journal(NAME)[-1]["reason"] == "RolloutComplete"
    assert journal_links(store.journal(NAME)) == [
        ("v1", None, 0.0, c1), ("v1", "v2", 25.0, c2), ("v2", None, 0.0, c3),
        ("v1", "v2", 25.0, revert), ("v2", None, 0.0, again)]


def test_naming_the_older_version_again_is_a_rollback(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1 serves")
    sync(git_repo, store.root)
    git_repo.commit(manifest("v2", 100), "v2 straight to 100%")
    sync(git_repo, store.root)
    git_repo.git("revert", "--no-edit", "HEAD")
    sync(git_repo, store.root)
    assert store.routing(NAME).stable == "v1"
    record = store.journal(NAME)[-1]
    assert (record["reason"], record["commit"]) == ("Rollback", git_repo.head())
    assert "back from v2 to the older kept version v1" in record["message"]


def test_a_revert_whose_previous_stable_is_gone_says_so_and_stays(git_repo: GitRepo, tmp_path: Path, capsys):
    store = Store(tmp_path / "store")
    git_repo.commit(with_keep(manifest("v1"), 1), "v1 serves, one version kept")
    sync(git_repo, store.root)
    git_repo.commit(with_keep(manifest("v2", 100), 1), "v2 straight to 100%: v1 is collected")
    sync(git_repo, store.root)
    assert [v.id for v in store.versions(NAME)] == ["v2"]
    git_repo.commit(with_keep(manifest("v2", 25), 1), "back to a 25% canary")
    sync(git_repo, store.root, expect=3)  # applied, but Stalled: exit 3, as reconcile
    assert store.routing(NAME).stable == "v2" and store.routing(NAME).candidate is None
    status = cli_json(["status", NAME, "--store", str(store.root)], capsys)
    assert status["phase"] == "Stalled"
    stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == "PreviousStableUnavailable"
    assert "v1 was garbage-collected (history.keep is 1)" in stalled["message"]
    assert "v2 stays stable at 100%" in stalled["message"]
