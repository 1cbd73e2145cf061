"""The VectorBackend protocol: where a version's vectors live and how they are searched.

The controller's store (store/fs.py) stays the record of truth for everything a
reconcile decides on: version metadata (meta.json), document ids and content
hashes, verdicts, routing, the journal. A backend holds only the searchable
vectors of each version: index files inside the store's version directory (the
embedded default), a table per version in PostgreSQL/pgvector, a collection per
version in Qdrant.

Contract shared by every backend (tests in tests/backends run each backend
through the same cases):

* Rows. A version's documents are rows 0..n-1 in the order of the store's
  ids.json. ``search`` returns row numbers, never document ids, so the engine,
  checks, serving and reports map rows to ids one way for every backend.
* Scores. Higher is better for every metric: cosine = inner product of
  L2-normalised vectors, ip = raw inner product, l2 = negated squared distance.
  Padding where fewer than k results exist: row -1, score -inf.
* Raw vectors. ``OpenVersion.vectors`` gives back the vectors as they were
  added, with their raw norms (drift statistics need the norms).
* Building. ``create_version`` returns a writer; the version is not visible to
  ``open_version`` or to the alias until ``finish`` returns. A writer that dies
  (crash, SIGKILL) leaves at most a partial object that ``list_versions``
  reports and ``delete_version`` removes; the engine deletes every listed
  version the store does not know, before it builds.
* Alias. ``set_alias`` repoints the backend's native alias (a view, a Qdrant
  alias; for the embedded files the store's routing record is the alias, ``capabilities.native_alias``
  is false and this is a no-op)
  in one atomic step, so that a query never sees a half state.
* Errors. Unreachable servers, bad credentials, a missing extension and the
  like raise ``BackendError`` naming the backend and the setting; bad
  parameters raise ``InvalidInput`` naming the field (``spec.index.backend.*``).
  Credentials come from the environment (or a Kubernetes Secret mounted as
  environment) and never appear in a message, the store, status or plan files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from controller.errors import BackendError

if TYPE_CHECKING:  # numpy loads with the backend, not with `controller status`
    import numpy as np

Metric = str  # "cosine" | "ip" | "l2"


@dataclass(frozen=True)
class VersionRef:
    """Which version a backend call is about, and the facts every backend needs to lay it out.

    ``location`` is the store's directory for this version (the staging directory while it is
    being built): the embedded backend keeps its files there; database backends keep nothing there.
    """

    index: str
    version: str
    dim: int
    metric: Metric
    fingerprint: str
    location: Path | None = None


@dataclass(frozen=True)
class BackendSettings:
    """``spec.index.backend`` after validation: the type plus its own, type-specific parameters."""

    type: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What the engine may ask for beyond the protocol's minimum."""

    #: a refreshed version made from a finished one by removing and adding rows (InPlaceUpdate):
    #: an in-place refresh under the same model (spec.reembed.refresh: inPlace)
    in_place_update: bool = False
    #: the built structure can be refilled without training again (IVF/PQ reuse on corpus drift).
    reusable_training: bool = False
    #: exact search is the index itself (Flat), so annRecall is 1 by construction.
    exact: bool = False
    #: a new version can keep the unchanged rows of an earlier one instead of a second copy (RowSharing).
    shares_rows: bool = False
    #: ``set_alias`` moves an alias of the backend's own (a view, a Qdrant alias). False: the store's
    #: routing record is the alias, ``set_alias``/``get_alias`` do nothing and the engine never calls
    #: them (the registry says so too, without importing the backend: backends/__init__.py).
    native_alias: bool = True
    #: the writer builds the whole structure in memory (``complete``) and writes nothing of the store
    #: before ``finish`` (a file it streams as the rows come has no name until then, once told
    #: ``write_ahead``): a first build may start while its inputs are still being validated (engine/ahead.py)
    builds_in_memory: bool = False


@runtime_checkable
class VersionWriter(Protocol):
    """Fills one version; nothing is visible until ``finish``."""

    def add(self, vectors: np.ndarray, *, ids: Sequence[str] | None = None,
            content_hashes: Sequence[str] | None = None) -> None:
        """Append rows in order (the next rows after those already added). Called in chunks.

        ``ids`` and ``content_hashes`` are the rows' document ids and content hashes, for backends
        whose tables are read by other tools too; a backend may ignore them (the store keeps both).
        """
        ...

    def finish(self) -> None:
        """Train/build the index with the version's parameters and make it durable."""
        ...

    def abort(self) -> None:
        """Drop what was written. Safe to call after a partial ``add``."""
        ...


@runtime_checkable
class OpenVersion(Protocol):
    """A finished version, loaded once and searched many times (the serving pool keeps these)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32 [nq, k], rows int64 [nq, k]) with the index's own parameters."""
        ...

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k on the same vectors: the reference for annRecall."""
        ...

    def count(self) -> int:
        ...

    def vectors(self) -> np.ndarray:
        """Every row's vector as added (raw norms), shape [count, dim], float32; may be a memory map."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class RowSearch(Protocol):
    """One more method of an OpenVersion that answers a single query faster than ``search``.

    The serving path asks one query at a time and wants plain lists; on a small index the
    arrays, padding and checks of ``search`` cost a fair share of the search itself.
    """

    def search_row(self, query: np.ndarray, k: int) -> tuple[list[float], list[int]]:
        """Top-k of one finite C-contiguous float32 query of shape [1, dim], already in the form ``search`` would
        give the index (for the cosine metric: L2-normalised exactly as ``embed.base.l2_normalize``
        does, so the caller's finiteness test and the normalisation share one pass): the scores and
        rows of ``search``, best first, as lists. Fewer than k when the version holds fewer rows; a
        row < 0 marks a result the index could not fill (its score is meaningless: drop it)."""
        ...


@runtime_checkable
class TrainingReuse(Protocol):
    """Two more methods of a backend whose ``capabilities.reusable_training`` is true.

    Under the same model, a corpus that did not drift may keep the reference version's trained
    structure (e.g. IVF centroids): the engine then builds through ``create_version_on_trained``.
    """

    def has_training(self, settings: BackendSettings) -> bool:
        """The structure these settings build learns from the vectors (so it can go stale)."""
        ...

    def create_version_on_trained(self, ref: VersionRef, settings: BackendSettings,
                                  reference: VersionRef) -> VersionWriter:
        """A writer that refills ``reference``'s trained structure instead of training again."""
        ...


@runtime_checkable
class RowSharing(Protocol):
    """One more method of a backend whose ``capabilities.shares_rows`` is true.

    A corpus revision under the same model reuses most vectors of the version it was built from;
    such a backend stores only what changed. The writer still gets every row through ``add`` (the
    contract stays the same); rows with ``base_rows[i] >= 0`` are row ``base_rows[i]`` of ``base``,
    bit for bit, and the backend may keep a reference instead of the vector. A backend that cannot
    share for these settings returns an ordinary writer.
    """

    def create_version_sharing(self, ref: VersionRef, settings: BackendSettings, base: VersionRef,
                               base_rows: np.ndarray) -> VersionWriter:
        ...


@runtime_checkable
class InPlaceUpdate(Protocol):
    """Two more methods of a backend whose ``capabilities.in_place_update`` is true.

    An in-place refresh under the same model: the refreshed version is ``base`` without the rows
    that were removed or changed, plus the vectors of the new and changed documents, made by
    removing and adding rows (no training, no re-adding of the rows kept). Its rows are
    ``keep_rows`` of ``base`` (ascending, renumbered 0..k-1 in that order) followed by the new
    vectors (rows k..). ``base`` is not changed: it stays servable until the alias moves.
    """

    def in_place_blocker(self, settings: BackendSettings, base: VersionRef) -> str | None:
        """Why ``base`` (built with ``settings``) cannot be refreshed in place, or None when it can."""
        ...

    def refresh_version(self, ref: VersionRef, settings: BackendSettings, base: VersionRef,
                        keep_rows: np.ndarray, vectors: np.ndarray, *, ids: Sequence[str],
                        content_hashes: Sequence[str]) -> None:
        """Write ``ref`` as ``base``'s ``keep_rows`` plus ``vectors``; durable when it returns.

        ``ids``/``content_hashes`` are those of every row of the refreshed version (kept then new).
        Like a writer's ``finish``: nothing is visible before the store (or the backend's state
        mark) publishes the version; a crash leaves a partial version ``list_versions`` reports.
        """
        ...


@runtime_checkable
class VectorBackend(Protocol):
    """One kind of vector store. Instances are cheap; connections are made lazily and reused."""

    type: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def validate(self, settings: BackendSettings, dim: int, metric: Metric) -> None:
        """Reject bad parameters before the first write (InvalidInput naming spec.index.backend.*)."""
        ...

    def health(self) -> None:
        """Raise BackendError when the backend cannot serve (unreachable, auth, missing extension)."""
        ...

    def create_version(self, ref: VersionRef, settings: BackendSettings) -> VersionWriter:
        ...

    def open_version(self, ref: VersionRef) -> OpenVersion:
        """NotFound when the version does not exist in the backend (e.g. deleted behind our back)."""
        ...

    def delete_version(self, ref: VersionRef) -> None:
        """Idempotent: deleting a missing version is not an error."""
        ...

    def list_versions(self, index: str) -> list[str]:
        """Versions the backend holds for ``index``, finished or partial."""
        ...

    def get_alias(self, index: str) -> str | None:
        ...

    def set_alias(self, index: str, version: str | None) -> None:
        """Atomically point the native alias at ``version`` (None removes it)."""
        ...


def check_chunk(backend: str, target: str, dim: int, vectors: np.ndarray, first_row: int,
                ids: Sequence[str] | None = None, content_hashes: Sequence[str] | None = None) -> np.ndarray:
    """A chunk for ``VersionWriter.add`` as float32 rows, or BackendError naming what does not fit.

    ``target`` names where the rows go (a table, a collection) and ``first_row`` is the row number of
    the chunk's first vector, so a message points at the bad row of the whole version.
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise BackendError(backend, f"vectors of shape {vectors.shape} do not fit {target} ({dim} dimensions)",
                           setting="spec.model.dim")
    for name, extra in (("ids", ids), ("content_hashes", content_hashes)):
        if extra is not None and len(extra) != len(vectors):
            raise BackendError(backend, f"{len(extra)} {name} for {len(vectors)} vectors", setting=name)
    if not np.isfinite(vectors).all():
        bad = int(np.argwhere(~np.isfinite(vectors))[0][0]) + first_row
        raise BackendError(backend, f"row {bad} holds NaN or infinity, which {target} refuses", setting="vectors")
    return vectors
