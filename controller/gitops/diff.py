"""What merging a ref would do: observe the store now, plan with the manifests at REF.

Read-only towards the store's indexes: only the Git mirror cache under
<store>/gitops/ is updated. With a base ref, the manifests are also compared
(added, changed, removed) so a reviewer sees which files the plan comes from.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from controller.core.types import Plan
from controller.engine.reconcile import plan_index
from controller.errors import InvalidInput
from controller.gitops.git import Mirror, strip_export, subdir
from controller.gitops.sync import no_manifests
from controller.manifest.load import LoadedManifest, load_manifests
from controller.store.fs import Store


@dataclass
class IndexDiff:
    name: str
    manifest: str  # added | changed | unchanged (versus base) | "" without a base
    plan: Plan
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "manifest": self.manifest or None, "source": self.source,
                "plan": self.plan.to_dict()}


@dataclass
class DiffReport:
    repo: str
    ref: str
    commit: str
    base: str | None = None
    base_commit: str | None = None
    indexes: list[IndexDiff] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # manifests present at base, deleted at ref

    @property
    def changes(self) -> bool:
        return bool(self.removed) or any(d.plan.changes for d in self.indexes)

    @property
    def blocked(self) -> list[IndexDiff]:
        """Plans that cannot be applied: merging would leave these indexes Stalled, which is no "no changes"."""
        return [d for d in self.indexes if d.plan.blocked]

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "ref": self.ref, "commit": self.commit, "base": self.base,
                "baseCommit": self.base_commit, "changes": self.changes,
                "blocked": [d.name for d in self.blocked],
                "indexes": [d.to_dict() for d in self.indexes], "removed": self.removed}


def manifests_at(mirror: Mirror, sha: str, path: str, data_roots: Iterable[str | Path], *,
                 missing_ok: bool = False) -> list[LoadedManifest]:
    """The manifests under `path` at `sha`. As sync: a directory without manifests is an empty set (a PR that
    deletes the last one); `missing_ok`: so is a `path` that does not exist there (a base before a PR adds it)."""
    export = mirror.root / "exports" / sha
    try:
        root = mirror.export(sha)
        if missing_ok and not (root / (path or ".")).exists():
            return []
        directory = subdir(root, path, sha)
        return [] if no_manifests(directory) else load_manifests(directory, data_roots)
    except InvalidInput as exc:
        raise InvalidInput(f"at commit {sha[:12]}: {strip_export(str(exc), export)}") from exc


def diff_ref(repo: str, ref: str, store: Store, *, path: str = ".", base: str | None = None,
             data_roots: Iterable[str | Path] = ()) -> DiffReport:
    if not store.root.is_dir():
        # no store yet (a first deployment, or a mistyped --store): cache the mirror in a
        # temporary directory so a diff never creates a store as a side effect
        with tempfile.TemporaryDirectory(prefix="controller-diff-") as cache:
            return _diff(Mirror.for_store(Path(cache), repo), ref, store, path, base, list(data_roots))
    return _diff(Mirror.for_store(store.root, repo), ref, store, path, base, list(data_roots))


def _diff(mirror: Mirror, ref: str, store: Store, path: str, base: str | None, roots: list) -> DiffReport:
    mirror.fetch()
    sha = mirror.resolve(ref)
    loaded = manifests_at(mirror, sha, path, roots)
    report = DiffReport(mirror.repo, ref, sha)
    before: dict[str, str] = {}
    if base is not None:
        report.base = base
        report.base_commit = mirror.resolve(base)
        before = {m.name: m.digest for m in manifests_at(mirror, report.base_commit, path, roots, missing_ok=True)}
        report.removed = sorted(set(before) - {m.name for m in loaded})
    for item in loaded:
        _, plan = plan_index(item, store)
        state = "" if base is None else ("added" if item.name not in before else
                                         "changed" if before[item.name] != item.digest else "unchanged")
        rel = str(item.source.relative_to(mirror.export(sha).resolve()))
        report.indexes.append(IndexDiff(item.name, state, plan, rel))
    return report
