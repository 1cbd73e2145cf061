"""Symlinks in a synced repository: links that stay inside work, links that escape refuse the commit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from controller.gitops.git import Mirror, link_escapes
from controller.store.syncstate import sync_state
from controller.gitops.sync import SyncReport, SyncSource, sync_loop, sync_once
from controller.store.fs import Store

from .conftest import GitRepo, manifest


def _leftovers(store: Store) -> list[str]:
    exports = store.root / "gitops"
    return sorted(p.name for p in exports.rglob(".staging-*")) if exports.is_dir() else []


def _add_link(repo: GitRepo, where: str, target: str, message: str) -> str:
    link = repo.path / where
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", message)
    return repo.head()


@pytest.mark.parametrize("where,target", [
    ("indexes/passwd", "/etc/passwd"),                 # absolute
    ("indexes/up", "../../.."),                       # relative, leaves the tree
    ("docs/deep/secrets", "../../../outside/secret"),  # anywhere in the tree, not only under --path
    ("escape", ".."),
])
def test_a_commit_with_an_escaping_symlink_is_refused_in_one_line(git_repo: GitRepo, tmp_path: Path,
                                                                   where: str, target: str):
    store = Store(tmp_path / "store")
    source = SyncSource(str(git_repo.path), "main", "indexes")
    good = git_repo.commit(manifest("v1"), "v1")
    assert sync_once(source, store).ok
    bad = _add_link(git_repo, where, target, "a hostile link")

    report = sync_once(source, store)
    assert not report.ok and report.exit_code == 2
    assert "\n" not in report.error
    assert bad[:12] in report.error and where in report.error and repr(target) in report.error
    assert "outside the repository" in report.error
    assert _leftovers(store) == [], "no staging directory survives a refusal"
    assert not (Mirror.for_store(store.root, str(git_repo.path)).root / "exports" / bad).exists()
    state = sync_state(store, "quickstart")
    assert (state["commit"], state["head"], state["inSync"]) == (good, bad, False)
    assert store.routing("quickstart").stable == "v1", "the previous commit stays applied"


def test_symlinks_inside_the_repository_keep_working(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    # the manifest directory reached through a link that stays inside the repository
    _add_link(git_repo, "current", "indexes", "a link to the manifest directory")
    _add_link(git_repo, "indexes/data/alias.jsonl", "corpus.jsonl", "a sibling link")
    report = sync_once(SyncSource(str(git_repo.path), "main", "current"), store)
    assert report.ok, report.error
    assert store.routing("quickstart").stable == "v1"
    assert _leftovers(store) == []


def test_the_interval_loop_keeps_running_after_a_refused_commit_and_applies_the_fix(git_repo: GitRepo,
                                                                                   tmp_path: Path):
    store = Store(tmp_path / "store")
    source = SyncSource(str(git_repo.path), "main", "indexes")
    git_repo.commit(manifest("v1"), "v1")
    _add_link(git_repo, "indexes/evil", "/etc/shadow", "hostile")
    reports: list[SyncReport] = []
    stop = threading.Event()

    def on_report(report: SyncReport) -> None:
        reports.append(report)
        if len(reports) == 2:  # the repository gets fixed between passes
            git_repo.git("rm", "--quiet", "indexes/evil")
            git_repo.git("commit", "--quiet", "-m", "drop the link")
        if len(reports) == 3:
            stop.set()

    thread = threading.Thread(target=sync_loop, args=(source, store, 0.01, stop, on_report))
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    assert [r.ok for r in reports] == [False, False, True]
    assert all("indexes/evil" in r.error for r in reports[:2])
    assert store.routing("quickstart").stable == "v1"
    assert _leftovers(store) == []


def test_a_staging_directory_of_a_killed_export_is_swept(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    mirror = Mirror.for_store(store.root, str(git_repo.path))
    dead = mirror.root / "exports" / ".staging-abc-999999999"  # no such pid
    dead.mkdir(parents=True)
    (dead / "half-written").write_text("x")
    assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store).ok
    assert _leftovers(store) == []


@pytest.mark.parametrize("name,target,escapes", [
    ("a/b", "c", False), ("a/b", "../c", False), ("a/b", "../../c", True), ("a", "/x", True),
    ("a", "", True), ("a/b", "./../..", True), ("a/b/c", "../../x/../y", False),
])
def test_link_escapes(name: str, target: str, escapes: bool):
    assert link_escapes(name, target) is escapes
