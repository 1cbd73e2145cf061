"""Embedding through the store's content-addressed cache, and its garbage collection.

Reconcile, `controller embed` and the benchmarks all embed through here, so a
(model, text) pair embedded by any of them is never embedded again by another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from controller.embed.cache import (DEFAULT_GRACE_SECONDS, CacheStats, EmbeddingCache, collect_garbage,
                                    embed_through_cache, query_hash, referenced_hashes)
from controller.progress import Progress, silent
from controller.store.fs import Store


@dataclass
class Embedded:
    vectors: np.ndarray
    stats: CacheStats


def cache_for(store: Store, embedder: Any) -> EmbeddingCache | None:
    """Only embedders whose vectors are a pure function of (model, text) are cached."""
    if not getattr(embedder, "reusable", False):
        return None
    return EmbeddingCache.for_store(store.root, embedder.fingerprint)


def embed_documents(store: Store, embedder: Any, ids: Sequence[str], texts: Sequence[str],
                    hashes: Sequence[str], progress: Callable[[str], Progress] = lambda label: silent
                    ) -> Embedded:
    vectors, stats = embed_through_cache(embedder, cache_for(store, embedder), ids, texts, hashes, progress)
    return Embedded(vectors, stats)


def embed_queries(store: Store, embedder: Any, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Golden queries are embedded once per model too (checks run them against every version)."""
    vectors, _ = embed_through_cache(embedder, cache_for(store, embedder), ids, texts,
                                     [query_hash(t) for t in texts], queries=True)
    return vectors


def gc_embedding_cache(store: Store, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> dict[str, int]:
    """Keep what some kept version of some index uses (and anything recent); drop the rest."""
    kept = []
    for name in store.indexes():
        for version in store.versions(name):
            kept.append((version.fingerprint, store.hashes(name, version.id)))
    return collect_garbage(store.root, referenced_hashes(kept), grace_seconds=grace_seconds)
