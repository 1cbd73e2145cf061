"""Git sync against a real repository: every alias change links to the commit that caused it."""

from __future__ import annotations

from pathlib import Path

from controller.engine.suspend import resume, suspend
from controller.store.syncstate import sync_state
from controller.gitops.sync import SyncSource, parse_interval, sync_once
from controller.store.fs import Store

from .conftest import GitRepo, journal_links, manifest, run_cli

import pytest


def test_branch_history_drives_the_alias_and_the_journal_names_each_commit(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    source = SyncSource(str(git_repo.path), "main", "indexes")

    c1 = git_repo.commit(manifest("v1"), "v1 serves")
    assert sync_once(source, store).ok
    assert store.routing("quickstart").stable == "v1"
    state = sync_state(store, "quickstart")
    assert (state["commit"], state["inSync"], state["branch"]) == (c1, True, "main")

    c2 = git_repo.commit(manifest("v2", 25), "new model v2 as a 25% canary")
    assert sync_once(source, store).ok
    r = store.routing("quickstart")
    assert (r.stable, r.candidate, r.weight) == ("v1", "v2", 25.0)

    c3 = git_repo.commit(manifest("v2", 50), "raise the canary to 50%")
    assert sync_once(source, store).ok
    assert store.routing("quickstart").weight == 50.0

    # suspended: the branch moves, nothing is applied, status says out of sync
    suspend(store, "quickstart", "incident 42")
    c4 = git_repo.commit(manifest("v2", 100), "promote v2")
    report = sync_once(source, store)
    assert report.outcomes[0].skipped and "suspended" in report.outcomes[0].skipped
    state = sync_state(store, "quickstart")
    assert (state["commit"], state["head"], state["inSync"], state["suspended"]) == (c3, c4, False, True)
    assert "out of sync" in state["message"] and "resume" in state["message"]
    assert resume(store, "quickstart")
    assert sync_once(source, store).ok
    assert store.routing("quickstart").stable == "v2"

    # a broken manifest: a one-line error naming file and field, nothing changes, c4 stays applied
    c5 = git_repo.commit(manifest("v2", broken=True), "typo")
    report = sync_once(source, store)
    assert not report.ok and report.exit_code == 2
    assert "quickstart.yaml" in report.error and "spec.rollout.percentage" in report.error
    assert "'lots'" in report.error and "\n" not in report.error
    assert store.routing("quickstart").stable == "v2"
    state = sync_state(store, "quickstart")
    assert (state["commit"], state["head"], state["inSync"]) == (c4, c5, False)
    assert "spec.rollout.percentage" in state["message"]

    # fix the typo, then `git revert` the promotion and the model change: the alias goes back to v1
    git_repo.git("revert", "--no-edit", c5)
    assert sync_once(source, store).ok
    git_repo.git("revert", "--no-edit", c4, c3, c2)
    c_revert = git_repo.head()
    assert sync_once(source, store).ok
    r = store.routing("quickstart")
    assert (r.stable, r.candidate) == ("v1", None)
    assert sync_state(store, "quickstart")["inSync"] is True

    assert journal_links(store.journal("quickstart")) == [
        ("v1", None, 0.0, c1),
        ("v1", "v2", 25.0, c2),
        ("v1", "v2", 50.0, c3),
        ("v2", None, 0.0, c4),
        ("v1", None, 0.0, c_revert),
    ]
    assert all(rec["branch"] == "main" for rec in store.journal("quickstart"))


def test_a_deleted_manifest_keeps_serving_unless_prune(git_repo: GitRepo, tmp_path: Path):
    store = Store(tmp_path / "store")
    source = SyncSource(str(git_repo.path), "main", "indexes")
    git_repo.commit(manifest("v1"), "v1")
    assert sync_once(source, store).ok
    gone = git_repo.commit(None, "retire the index")
    report = sync_once(source, store)
    assert report.ok and report.orphaned == ["quickstart"]
    assert store.routing("quickstart").stable == "v1"
    assert "deleted" in sync_state(store, "quickstart")["message"] and gone[:12] in sync_state(store, "quickstart")["message"]
    store.index_dir("handmade").mkdir(parents=True)  # an index no sync applied: never pruned
    report = sync_once(source, store, prune=True)
    assert report.pruned == ["quickstart"] and store.indexes() == ["handmade"]


def test_sync_cli_once_reports_errors_in_one_line(git_repo: GitRepo, tmp_path: Path, capsys):
    git_repo.commit(manifest("v1", broken=True), "broken from the start")
    store = tmp_path / "store"
    code = run_cli(["sync", "--repo", str(git_repo.path), "--branch", "main", "--path", "indexes",
                    "--once", "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2
    assert "spec.rollout.percentage" in err and "Traceback" not in err
    code = run_cli(["sync", "--repo", str(git_repo.path), "--branch", "nope", "--once", "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and "'nope'" in err
    code = run_cli(["sync", "--repo", str(tmp_path / "missing"), "--branch", "main", "--once",
                    "--store", str(store)])
    assert code == 1 and "git fetch failed" in capsys.readouterr().err


@pytest.mark.parametrize("text,seconds", [("60s", 60), ("5m", 300), ("1h", 3600), ("500ms", 0.5), ("2", 2)])
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


def test_parse_interval_refuses_nonsense():
    from controller.errors import InvalidInput
    with pytest.raises(InvalidInput, match="'soon'"):
        parse_interval("soon")


def test_data_outside_the_repository_needs_a_data_root(git_repo: GitRepo, tmp_path: Path):
    import shutil
    import yaml
    big = tmp_path / "bulk"  # e.g. a mounted volume holding a corpus too large for Git
    shutil.copytree(git_repo.path / "indexes" / "data", big)
    doc = yaml.safe_load(manifest("v1"))
    doc["spec"]["corpus"]["path"] = str(big / "corpus.jsonl")
    git_repo.commit(yaml.safe_dump(doc, sort_keys=False), "corpus on the data volume")
    store = Store(tmp_path / "store")
    source = SyncSource(str(git_repo.path), "main", "indexes")
    report = sync_once(source, store)
    assert not report.ok and "--data-root" in report.error and "spec.corpus.path" in report.error
    report = sync_once(source, store, data_roots=[big])
    assert report.ok and store.routing("quickstart").stable == "v1"


def test_the_sync_loop_keeps_retrying_after_errors_and_stops_on_its_event(git_repo: GitRepo, tmp_path: Path):
    import threading
    from controller.gitops.sync import sync_loop
    git_repo.commit(manifest("v1", broken=True), "broken")
    reports = []
    stop = threading.Event()

    def on_report(report):
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    thread = threading.Thread(target=sync_loop, args=(SyncSource(str(git_repo.path), "main", "indexes"),
                                                      Store(tmp_path / "store"), 0.05, stop, on_report))
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive() and len(reports) == 2
    assert all("spec.rollout.percentage" in r.error for r in reports)


def test_status_notices_a_hand_reconcile_over_a_synced_index(git_repo: GitRepo, tmp_path: Path):
    from controller.engine.reconcile import reconcile_index
    from controller.manifest.load import load_manifests
    store = Store(tmp_path / "store")
    git_repo.commit(manifest("v1"), "v1")
    assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store).ok
    assert sync_state(store, "quickstart")["inSync"]
    local = git_repo.path / "indexes" / "quickstart.yaml"
    local.write_text(manifest("v1", 40))  # an uncommitted edit, reconciled by hand
    reconcile_index(load_manifests(local)[0], store)
    state = sync_state(store, "quickstart")
    assert not state["inSync"] and "another manifest" in state["message"]
