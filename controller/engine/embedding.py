"""Embedding through the store's content-addressed cache, and its garbage collection.

Reconcile, `controller embed` and the benchmarks all embed through here, so a
(model, text) pair embedded by any of them is never embedded again by another.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from controller.embed.cache import (DEFAULT_GRACE_SECONDS, CacheStats, EmbeddingCache, collect_garbage,
                                    embed_through_cache, query_hash, referenced_hashes)
from controller.embed import make_embedder
from controller.embed.http import SECRET_ENV  # noqa: F401  (the operator's Job pods set it)
from controller.errors import InvalidInput
from controller.manifest.load import LoadedManifest
from controller.progress import Progress, silent
from controller.store.corpus import read_corpus
from controller.store import atomic
from controller.store.events import events_root, read_events
from controller.store.fs import Store


@dataclass
class Embedded:
    vectors: np.ndarray
    stats: CacheStats


def cache_for(store: Store, embedder: Any) -> EmbeddingCache | None:
    """Only embedders whose vectors are a pure function of (model, text) are cached."""
    caps = getattr(embedder, "capabilities", None)
    if caps is None or not caps.reusable:
        return None
    return EmbeddingCache.for_store(store.root, embedder.fingerprint)


def embed_documents(store: Store, embedder: Any, ids: Sequence[str], texts: Sequence[str],
                    hashes: Sequence[str], progress: Callable[[str], Progress] = lambda label: silent
                    ) -> Embedded:
    cache = cache_for(store, embedder)
    if cache is None or cache.get(hashes)[0].all():
        vectors, stats = embed_through_cache(embedder, cache, ids, texts, hashes, progress)
    else:  # texts to embed: not while a `controller embed` job owns the same work
        with cache.owned(shared=False, who="reconcile"):
            vectors, stats = embed_through_cache(embedder, cache, ids, texts, hashes, progress)
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


# ---- `controller embed`: batch (re-)embedding into the cache ----------------------------------
@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def holds(self, text_hash: str) -> bool:
        # by content hash: stable under corpus edits and disjoint across shards
        return int(text_hash, 16) % self.count == self.index


def parse_shard(value: str) -> Shard:
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise InvalidInput("expected i/N with 0 <= i < N, e.g. 0/4 (Kubernetes: $JOB_COMPLETION_INDEX/4)",
                           field="--shard", value=value)
    return Shard(index, count)


def embed_job(loaded: LoadedManifest, store: Store, *, shard: Shard = Shard(0, 1), workers: int = 1,
              progress: Callable[[str], Progress] = lambda label: silent,
              stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Embed this shard of the manifest's corpus into the store's cache; resumable after any kill.

    The cache is the checkpoint: every batch is appended and fsynced as its
    answer arrives, and a rerun starts from what is there, so a SIGKILL loses
    at most the batches in flight. When `stop()` turns true (the CLI's SIGTERM),
    nothing new is sent, what is in flight is kept, and EmbedInterrupted is
    raised: a graceful stop loses nothing. `workers` processes split the shard
    further, each appending to its own cache files (no IPC of vectors).
    """
    spec = loaded.manifest.spec
    model = spec.model.model_dump(mode="json", by_alias=True)
    embedder = make_embedder(model, loaded.paths, loaded.source)
    if cache_for(store, embedder) is None:
        raise InvalidInput(f"provider {spec.model.provider} reads vectors instead of embedding text: "
                           "there is nothing to embed ahead of a build", file=loaded.source,
                           field="spec.model.provider", value=spec.model.provider)
    if not 1 <= workers <= 64:
        raise InvalidInput("expected 1 to 64 worker processes", field="--workers", value=workers)
    corpus = read_corpus(loaded.paths["corpus"], spec.corpus.id_field, spec.corpus.text_fields,
                         manifest=loaded.source)
    mine = [i for i, h in enumerate(corpus.hashes) if shard.holds(h)]
    mine = priority_order(loaded, store, corpus.ids, mine)
    started = time.monotonic()
    parts = [[i for i in mine if int(corpus.hashes[i], 16) // shard.count % workers == w] for w in range(workers)]
    # shared: shards and workers run side by side; a reconcile wanting to embed the same model waits
    with cache_for(store, embedder).owned(shared=True, who=f"controller embed {loaded.name}"):
        if workers == 1:
            stats = [_embed_part(model, loaded.paths, str(store.root), corpus.ids, corpus.texts, corpus.hashes,
                                 parts[0], progress, stop)]
        else:
            stats = _embed_in_processes(model, loaded.paths, store, corpus, parts, stop)
    seconds = time.monotonic() - started
    total = CacheStats(hits=sum(s.hits for s in stats), misses=sum(s.misses for s in stats),
                       embedded=sum(s.embedded for s in stats))
    return {"index": loaded.name, "fingerprint": embedder.fingerprint, "shard": f"{shard.index}/{shard.count}",
            "workers": workers, "documents": len(mine), **total.to_dict(),
            "hitRate": round(total.hits / len(mine), 4) if mine else 1.0,
            "seconds": round(seconds, 3),
            "docsPerSecond": round(total.embedded / seconds, 1) if seconds and total.embedded else None,
            "priority": spec.reembed.priority if spec.reembed else "none",
            "coverage": embedding_coverage(loaded, store).to_dict()}


def _embed_in_processes(model: dict[str, Any], paths: dict[str, Path], store: Store, corpus: Any,
                        parts: list[list[int]], stop: Callable[[], bool]) -> list[CacheStats]:
    """One process per part, each with only its own texts; the parent relays a stop request."""
    # spawn, not fork: the parent may hold threads (HTTP pools, BLAS) that fork would copy mid-state
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context, initializer=_worker_init,
                             initargs=(stopping, os.getpid())) as pool:
        futures = [pool.submit(_embed_part, model, paths, str(store.root),
                               [corpus.ids[i] for i in part], [corpus.texts[i] for i in part],
                               [corpus.hashes[i] for i in part], list(range(len(part))), None, None)
                   for part in parts]
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.2)
            if stop():
                stopping.set()
        return [f.result() for f in futures]


_worker_stop: Callable[[], bool] = lambda: False


def _worker_init(stopping: Any, parent: int) -> None:
    """Workers leave signals to the parent (it relays them) and stop if the parent dies."""
    global _worker_stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _worker_stop = lambda: stopping.is_set() or os.getppid() != parent  # noqa: E731


def _embed_part(model: dict[str, Any], paths: dict[str, Path], store_root: str, ids: Sequence[str],
                texts: Sequence[str], hashes: Sequence[str], rows: Sequence[int],
                progress: Callable[[str], Progress] | None, stop: Callable[[], bool] | None) -> CacheStats:
    embedder = make_embedder(model, paths)
    _, stats = embed_through_cache(embedder, cache_for(Store(Path(store_root)), embedder),
                                   [ids[i] for i in rows], [texts[i] for i in rows], [hashes[i] for i in rows],
                                   progress or (lambda label: silent), stop=stop or _worker_stop)
    return stats


# ---- what the operator's Jobs need: coverage, and a manifest a pod can read ------------------
@dataclass(frozen=True)
class Coverage:
    documents: int   # documents in the corpus
    embedded: int    # of them, with a vector of this model in the cache
    key: str         # model fingerprint + corpus content: names the work (a Job per key)
    impressions: int = 0           # last week's impressions of corpus documents (the service's event log)
    impressions_embedded: int = 0  # of them, of documents already embedded

    @property
    def complete(self) -> bool:
        return self.embedded >= self.documents

    def to_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "embedded": self.embedded,
                "documentShare": round(self.embedded / self.documents, 4) if self.documents else 1.0,
                "impressions": self.impressions,
                "impressionShare": (round(self.impressions_embedded / self.impressions, 4)
                                    if self.impressions else None)}


HOT_WINDOW_S = 7 * 86400.0  # "recent" for priority: hot and for the impression share


def document_uses(store: Store, name: str, now: float | None = None) -> tuple[Counter, Counter]:
    """(impressions, clicks) per document id over the last week of the service's event log."""
    since = (time.time() if now is None else now) - HOT_WINDOW_S
    impressions: Counter = Counter()
    clicks: Counter = Counter()
    for record in read_events(events_root(store.root), name, since=since):
        if record.get("type") == "impression":
            impressions.update(str(i) for i in record.get("ids") or [])
        elif record.get("type") == "click" and record.get("docId") is not None:
            clicks[str(record["docId"])] += 1
    return impressions, clicks


def priority_order(loaded: LoadedManifest, store: Store, ids: Sequence[str], rows: list[int]) -> list[int]:
    """`rows` in the order spec.reembed.priority asks: hot documents first, else as in the corpus.

    hot: most impressions + clicks in the last week first; without any events, the
    numeric `priorityField` of each document (higher first); ties keep corpus order.
    """
    reembed = loaded.manifest.spec.reembed
    if reembed is None or reembed.priority != "hot":
        return rows
    impressions, clicks = document_uses(store, loaded.name)
    if impressions or clicks:
        score = {i: impressions[ids[i]] + clicks[ids[i]] for i in rows}
    elif reembed.priority_field:
        values = field_values(loaded, reembed.priority_field)
        score = {i: values.get(ids[i], 0.0) for i in rows}
    else:
        return rows
    return sorted(rows, key=lambda i: -score[i])


def field_values(loaded: LoadedManifest, field: str) -> dict[str, float]:
    """doc id -> a numeric corpus field (missing or not a number: 0); names the bad value otherwise."""
    spec = loaded.manifest.spec
    out: dict[str, float] = {}
    path = loaded.paths["corpus"]
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            doc = json.loads(line)  # read_corpus has validated every line already
            value = doc.get(field, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"line {number}: priorityField {field!r} must be a number",
                                   file=path, field="spec.reembed.priorityField", value=value)
            out[str(doc.get(spec.corpus.id_field))] = float(value)
    return out


def embedding_coverage(loaded: LoadedManifest, store: Store) -> Coverage | None:
    """How much of the corpus, and of last week's impressions, the cache holds for the manifest's model.

    None for providers whose vectors are not cached (precomputed).
    """
    spec = loaded.manifest.spec
    model = spec.model.model_dump(mode="json", by_alias=True)
    embedder = make_embedder(model, loaded.paths, loaded.source)
    cache = cache_for(store, embedder)
    if cache is None:
        return None
    corpus = read_corpus(loaded.paths["corpus"], spec.corpus.id_field, spec.corpus.text_fields,
                         manifest=loaded.source)
    found, _ = cache.get(corpus.hashes)
    content = hashlib.sha256("".join(sorted(set(corpus.hashes))).encode()).hexdigest()
    key = hashlib.sha256(f"{cache.dir.name}:{content}".encode()).hexdigest()[:10]
    impressions, _ = document_uses(store, loaded.name)
    seen = [impressions.get(i, 0) for i in corpus.ids]
    return Coverage(documents=len(corpus.hashes), embedded=int(found.sum()), key=key, impressions=sum(seen),
                    impressions_embedded=sum(n for n, ok in zip(seen, found) if ok))


def write_job_manifest(loaded: LoadedManifest, store: Store) -> Path:
    """An embed-only manifest for `controller embed` in a Job pod, on the shared store volume.

    Only what embedding needs (corpus with its resolved absolute path, model); the
    checks' files are not read by `embed`. Written atomically; the same content
    gives the same file.
    """
    spec = loaded.manifest.spec
    corpus = spec.corpus.model_dump(mode="json", by_alias=True, exclude_none=True)
    corpus["path"] = str(loaded.paths["corpus"])
    doc = {"apiVersion": loaded.manifest.api_version, "kind": loaded.manifest.kind,
           "metadata": {"name": loaded.name},
           "spec": {"corpus": corpus, "model": spec.model.model_dump(mode="json", by_alias=True),
                    "index": spec.index.model_dump(mode="json", by_alias=True, exclude_none=True)}}
    path = store.root / "jobs" / f"{loaded.name}.yaml"  # JSON is YAML: the manifest loader reads it
    atomic.make_dirs(path.parent)
    atomic.write_json(path, doc)
    return path
