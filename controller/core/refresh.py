"""In-place refresh under the same model: update the serving index by rows, rebuild it, or nothing.

Pure: the engine observes the facts (what changed between the stable version and the corpus,
whether its backend can remove and add rows, how many refreshes were made since its last full
build) and passes ``now``; this module decides and names the reason.

The decision table (``decide``), for a corpus that no built version of the label matches:

  spec.reembed.refresh is not inPlace            -> None: a revision is built and rolled out as before
  no stable version of this label                -> rebuild (nothing serving to refresh)
  a candidate is being rolled out                -> rebuild (its rollout owns the routing)
  the stable version is IndexStale               -> rebuild (its trained structures must not grow staler)
  the backend cannot update it in place          -> rebuild, saying why (e.g. HNSW cannot remove)
  rebuildAfter: N refreshes since the full build -> rebuild (RebuildDue)
  rebuildAfter: a duration since the full build  -> rebuild (RebuildDue)
  otherwise                                      -> in place (RefreshedInPlace)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.core import reasons as R

IN_PLACE = "inPlace"
REBUILD = "rebuild"


@dataclass(frozen=True)
class RefreshPolicy:
    """``spec.reembed.refresh`` and ``rebuildAfter``: at most one of the two limits is set."""

    in_place: bool = False
    rebuild_after_refreshes: int | None = None
    rebuild_after_seconds: float | None = None
    rebuild_after: str = ""  # as written in the manifest, for messages


@dataclass(frozen=True)
class RefreshFacts:
    """The stable version (``base``) against the corpus, observed by the engine."""

    base: str
    added: int
    changed: int
    removed: int
    kept: int
    blocker: str | None  # why the backend cannot update ``base`` in place; None when it can
    refreshes: int = 0  # in-place refreshes since the last full build of the chain ``base`` ends
    full_build_at: float = 0.0  # when that full build was made (seconds since the epoch)
    full_build: str = ""  # its version id

    def counts(self) -> str:
        return f"+{self.added} added, {self.changed} changed, -{self.removed} removed"


@dataclass(frozen=True)
class RefreshDecision:
    kind: Literal["inPlace", "rebuild"]
    reason: str
    message: str

    @property
    def in_place(self) -> bool:
        return self.kind == IN_PLACE


def decide(policy: RefreshPolicy | None, *, label: str, stable: str | None, stable_label: str | None,
           stable_stale: bool, candidate: str | None, facts: RefreshFacts | None,
           now: float) -> RefreshDecision | None:
    """In place, rebuild (with why), or None when the manifest does not ask for in-place refreshes."""
    if policy is None or not policy.in_place:
        return None

    def rebuild(why: str, reason: str = R.CORPUS_CHANGED) -> RefreshDecision:
        return RefreshDecision(REBUILD, reason, f"full rebuild instead of an in-place refresh: {why}")

    if stable is None or stable_label != label:
        return rebuild(f"no stable version of index version {label} serves yet to refresh")
    if candidate is not None:
        return rebuild(f"candidate {candidate} is being rolled out beside {stable}")
    if stable_stale:
        return rebuild(f"{stable} is IndexStale (its trained structures predate a corpus drift)")
    if facts is None or facts.base != stable:
        return rebuild(f"what changed since {stable} was not observed")
    if facts.blocker is not None:
        return rebuild(facts.blocker)
    since = f"since the full build {facts.full_build or stable}"
    limit = policy.rebuild_after_refreshes
    if limit is not None and facts.refreshes >= limit:
        return rebuild(f"{facts.refreshes} in-place refreshes {since} (spec.reembed.rebuildAfter is {limit})",
                       R.REBUILD_DUE)
    seconds = policy.rebuild_after_seconds
    if seconds is not None and now - facts.full_build_at >= seconds:
        age = (now - facts.full_build_at) / 3600.0
        return rebuild(f"{age:.1f}h {since} (spec.reembed.rebuildAfter is {policy.rebuild_after})",
                       R.REBUILD_DUE)
    return RefreshDecision(IN_PLACE, R.REFRESHED_IN_PLACE, (
        f"refresh {stable} in place: {facts.counts()} ({facts.kept} vectors kept; refresh "
        f"{facts.refreshes + 1} {since})"))


@dataclass(frozen=True)
class RowChanges:
    """How the rows of ``base`` become the refreshed version: kept rows first, then the new documents."""

    keep: list[int]  # rows of base whose (id, content hash) is still in the corpus, ascending
    new: list[int]  # positions in the corpus of documents base has no vector for (added or changed)
    added: int
    changed: int
    removed: int  # ids of base no longer in the corpus


def row_changes(base_ids: list[str], base_hashes: list[str], ids: list[str], hashes: list[str]) -> RowChanges:
    """Compare a version's (id, hash) rows with the corpus: a changed document is removed and added."""
    wanted = set(zip(ids, hashes))
    keep = [row for row, key in enumerate(zip(base_ids, base_hashes)) if key in wanted]
    have = set(zip(base_ids, base_hashes))
    new = [i for i, key in enumerate(zip(ids, hashes)) if key not in have]
    old_ids = set(base_ids)
    added = sum(1 for i in new if ids[i] not in old_ids)
    return RowChanges(keep=keep, new=new, added=added, changed=len(new) - added,
                      removed=len(old_ids - set(ids)))
