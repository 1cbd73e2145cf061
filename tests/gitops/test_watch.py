"""watch with real file events: in-place writes, atomic renames, invalid saves, deletes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from controller.gitops.watch import WatchPass, _DirtyFlag, watch_directory
from controller.store.fs import Store

from .conftest import manifest

DEBOUNCE = 0.8  # wide enough that a loaded CI machine keeps a burst of saves inside one window


class Watcher:
    """Runs watch_directory in a thread and lets the test wait for each pass."""

    def __init__(self, directory: Path, store: Store) -> None:
        self.passes: list[WatchPass] = []
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=watch_directory, args=(directory, store, self.stop),
                                       kwargs={"debounce": DEBOUNCE, "on_pass": self._record}, daemon=True)

    def _record(self, result: WatchPass) -> None:
        with self.changed:
            self.passes.append(result)
            self.changed.notify_all()

    def wait_pass(self, count: int, timeout: float = 20.0) -> WatchPass:
        """Block until the `count`-th pass (1-based) happened; return it."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.passes) >= count, timeout), \
                f"no pass #{count} within {timeout}s (passes: {[p.lines() for p in self.passes]})"
            return self.passes[count - 1]

    def __enter__(self) -> "Watcher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the watch loop did not stop"


def atomic_save(path: Path, text: str) -> None:
    """What vim (backupcopy=no), VS Code and most tools do: temp file + fsync + rename."""
    tmp = path.with_name(f".{path.name}.swp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def test_watch_follows_saves_survives_invalid_ones_and_deletes(manifest_dir: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    with Watcher(manifest_dir, store) as w:
        first = w.wait_pass(1)
        assert first.error is None and store.routing("quickstart").stable == "v1"

        atomic_save(target, manifest("v2", 25))  # rename over the manifest: a moved event
        second = w.wait_pass(2)
        assert second.error is None
        r = store.routing("quickstart")
        assert (r.stable, r.candidate, r.weight) == ("v1", "v2", 25.0)

        target.write_text("apiVersion: indexops.dev/v1alpha1\nkind: EmbeddingIndex\nspec: {alias: [\n")
        bad = w.wait_pass(3)
        assert bad.error and "quickstart.yaml" in bad.error and "unreadable YAML" in bad.error
        assert len(bad.lines()) == 1 and "last good state is kept" in bad.lines()[0]
        assert store.routing("quickstart").weight == 25.0

        target.write_text(manifest("v2", 50))  # in-place write: modified + closed events
        assert w.wait_pass(4).error is None
        assert store.routing("quickstart").weight == 50.0

        target.unlink()
        gone = w.wait_pass(5)
        assert gone.error and "no *.yaml" in gone.error
        assert store.routing("quickstart").weight == 50.0  # deleting a file never deletes an index

        atomic_save(target, manifest("v2", 100))
        assert w.wait_pass(6).error is None
        assert store.routing("quickstart").stable == "v2"
        time.sleep(DEBOUNCE * 3)
        assert len(w.passes) == 6, "reading manifests and writing the store must not trigger passes"


def test_a_burst_of_saves_is_one_pass(manifest_dir: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    with Watcher(manifest_dir, store) as w:
        w.wait_pass(1)
        target.write_text("half a fi")  # an editor's intermediate states within the debounce window
        atomic_save(target, manifest("v1", broken=True))
        atomic_save(target, manifest("v1"))
        only = w.wait_pass(2)
        assert only.error is None and only.outcomes[0].result.executed == []
        time.sleep(DEBOUNCE * 3)
        assert len(w.passes) == 2


@pytest.mark.parametrize("rel,relevant", [
    ("quickstart.yaml", True), ("data/corpus.jsonl", True), (".quickstart.yaml.swp", False),
    (".git/index", False), ("quickstart.yaml~", False), ("store/indexes/x/status.json", False),
])
def test_which_paths_count_as_changes(tmp_path: Path, rel: str, relevant: bool):
    flag = _DirtyFlag(tmp_path, [tmp_path / "store"], threading.Event())
    assert flag.relevant(tmp_path / rel) is relevant


def test_watch_applies_a_due_rollout_step_without_any_file_change(manifest_dir: Path, tmp_path: Path):
    import yaml

    store = Store(tmp_path / "store")
    target = manifest_dir / "quickstart.yaml"
    target.write_text(manifest("v1"))
    with Watcher(manifest_dir, store) as w:
        w.wait_pass(1)
        doc = yaml.safe_load(manifest("v2"))
        doc["spec"]["rollout"] = {"steps": [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 30},
                                            {"pause": {}}]}
        atomic_save(target, yaml.safe_dump(doc, sort_keys=False))
        w.wait_pass(2)
        assert store.routing("quickstart").weight == 10.0
        third = w.wait_pass(3, timeout=30)  # the pause ends: a pass with no file event
        assert third.error is None and store.routing("quickstart").weight == 30.0
