"""Embedding through the store's content-addressed cache, and its garbage collection.

Reconcile, `controller embed` and the benchmarks all embed through here, so a
(model, text) pair embedded by any of them is never embedded again by another.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import time
import threading
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from controller.embed.cache import (CHUNK, DEFAULT_GRACE_SECONDS, CacheStats, EmbeddingCache, collect_garbage,
                                    embed_into_cache, embed_through_cache, plan_misses, query_hash,
                                    referenced_hashes)
from controller.embed import make_embedder
from controller.embed.http import SECRET_ENV  # noqa: F401  (the operator's Job pods set it)
from controller.errors import EmbedError, EmbedInterrupted, InvalidInput
from controller.manifest.load import LoadedManifest
from controller.progress import Progress, silent
from controller.store.corpus import Corpus, read_corpus
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
    if cache is None or cache.has(hashes).all():
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
    raised: a graceful stop loses nothing. With `workers` > 1 this process and
    `workers - 1` helper processes take chunks of the work from one queue, each
    appending to its own cache files (no vectors cross process boundaries).
    """
    spec = loaded.manifest.spec
    model = spec.model.model_dump(mode="json", by_alias=True)
    embedder = make_embedder(model, loaded.paths, loaded.source)
    cache = cache_for(store, embedder)
    if cache is None:
        raise InvalidInput(f"provider {spec.model.provider} reads vectors instead of embedding text: "
                           "there is nothing to embed ahead of a build", file=loaded.source,
                           field="spec.model.provider", value=spec.model.provider)
    if not 1 <= workers <= 64:
        raise InvalidInput("expected 1 to 64 worker processes", field="--workers", value=workers)
    corpus = read_corpus(loaded.paths["corpus"], spec.corpus.id_field, spec.corpus.text_fields,
                         manifest=loaded.source, priority_field=loaded.manifest.spec.priority_field)
    mine = [i for i, h in enumerate(corpus.hashes) if shard.holds(h)]
    mine = priority_order(loaded, store, corpus, mine)
    started = time.monotonic()
    # shared: shards and workers run side by side; a reconcile wanting to embed the same model waits
    with cache.owned(shared=True, who=f"controller embed {loaded.name}"):
        total = _embed_rows(Work(embedder, model, loaded.paths, cache), workers, [corpus.ids[i] for i in mine],
                            [corpus.texts[i] for i in mine], [corpus.hashes[i] for i in mine], progress, stop)
    seconds = time.monotonic() - started
    return {"index": loaded.name, "fingerprint": embedder.fingerprint, "shard": f"{shard.index}/{shard.count}",
            "workers": workers, "documents": len(mine), **total.to_dict(),
            "hitRate": round(total.hits / len(mine), 4) if mine else 1.0,
            "seconds": round(seconds, 3),
            "docsPerSecond": round(total.embedded / seconds, 1) if seconds and total.embedded else None,
            "priority": spec.reembed.priority if spec.reembed else "none",
            "coverage": embedding_coverage(loaded, store, corpus).to_dict()}


@dataclass(frozen=True)
class Work:
    """What a job embeds with: the parent's embedder and cache, and what a helper needs to make its own."""
    embedder: Any
    model: dict[str, Any]
    paths: dict[str, Path]
    cache: EmbeddingCache


def _embed_rows(work: Work, workers: int, ids: list[str], texts: list[str], hashes: list[str],
                progress: Callable[[str], Progress], stop: Callable[[], bool]) -> CacheStats:
    """Embed what the cache lacks: alone, or in chunks shared with `workers - 1` helper processes.

    Shared chunks come from one queue in order (hot-first stays first): whoever is
    free takes the next, so a helper that started late or a core busy with other
    work costs no idle time at the end. The chunks shrink towards the end
    (guided scheduling) so that all processes finish together.
    """
    embedder, cache = work.embedder, work.cache
    todo, stats = plan_misses(cache.has(hashes), hashes)
    chunks = deque(guided_chunks(len(todo), workers, *chunk_bounds(embedder)))
    if workers == 1 or len(chunks) < 2:  # too little work to share: no helper to start
        return embed_through_cache(embedder, cache, ids, texts, hashes, progress, stop=stop)[1]
    with Helpers(work, min(workers - 1, len(chunks) - 1)) as helpers:
        _share(work, helpers, chunks, todo, ids, texts, hashes,
               progress(f"embedding ({stats.hits} cached, {stats.misses} to embed)"), stop)
    return stats


def _share(work: Work, helpers: Helpers, chunks: deque[range], todo: list[int], ids: list[str],
           texts: list[str], hashes: list[str], bar: Progress, stop: Callable[[], bool]) -> None:
    """The parent's loop: take the next chunk, keep each helper one chunk ahead, collect what they did."""
    embedder, cache = work.embedder, work.cache
    pending: set[Future] = set()
    failures: list[BaseException] = []
    landed = 0

    def texts_of(span: range) -> tuple[list[str], list[str], list[str]]:
        rows = todo[span.start:span.stop]
        return [ids[i] for i in rows], [texts[i] for i in rows], [hashes[i] for i in rows]

    def reap(block: bool) -> None:
        nonlocal landed
        if block:
            wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in [f for f in pending if f.done()]:
            pending.discard(future)
            if future.cancelled():
                continue
            try:
                landed += future.result()
            except BrokenProcessPool:
                failures.append(EmbedError("a worker process of this job ended unexpectedly (killed, or out "
                                           "of memory)"))
            except Exception as exc:  # raised in a helper: stop the others, then report it
                failures.append(exc)

    while not failures and not stop():
        span = chunks.popleft() if chunks else None  # ours first: the hottest chunk waits for no start-up
        while chunks and len(pending) < 2 * helpers.count:  # one running and one queued per helper
            pending.add(helpers.submit(*texts_of(chunks.popleft())))
        if span is not None:
            base = landed
            try:
                landed += embed_into_cache(embedder, cache, *texts_of(span), chunk=piece_size(embedder),
                                           stop=stop, bar=lambda done, _: bar(base + done, len(todo)))
            except EmbedError as exc:
                failures.append(exc)
            reap(block=False)
        elif pending:
            reap(block=True)
        else:
            break
        bar(landed, len(todo))
    # finished, stopped or failed: nothing new is sent, and what is in flight lands before we return
    helpers.stop()
    wait(pending)
    reap(block=False)
    if failures and not isinstance(failures[0], EmbedError):
        raise failures[0]
    if failures or landed < len(todo):
        done = int(EmbeddingCache(cache.dir.parent, cache.fingerprint).has([hashes[i] for i in todo]).sum())
        if failures:
            raise EmbedError(f"{failures[0]} [{done} of the {len(todo)} texts to embed are cached; "
                             f"a retry resumes there]") from failures[0]
        raise EmbedInterrupted(f"stopped on request with {done} of the {len(todo)} texts to embed cached "
                               f"(nothing in flight was lost); rerun to resume")


def piece_size(embedder: Any) -> int:
    """Texts per embedder call (non-streaming): what a kill can lose, at most."""
    return int(getattr(embedder, "chunk_size", CHUNK))


def chunk_bounds(embedder: Any) -> tuple[int, int]:
    """(smallest, largest) chunk of a shared job.

    A streaming embedder (http) drains its window of requests at the end of a
    chunk, so its chunks span many windows; for the others a chunk is at most one
    call, and small ones at the end keep the processes finishing together.
    """
    unit = piece_size(embedder)
    if getattr(embedder, "iter_documents", None) is not None:
        return 4 * unit, 32 * unit
    return max(1, unit // 16), unit


def guided_chunks(total: int, processes: int, smallest: int, largest: int) -> list[range]:
    """Consecutive spans of 0..total, each about a 1/(2 x processes) share of what is left, within bounds."""
    spans, start = [], 0
    while start < total:
        size = min(max(-(-(total - start) // (2 * processes)), smallest), largest)
        spans.append(range(start, min(start + size, total)))
        start += size
    return spans


class Helpers:
    """`count` spawned processes that embed chunks of a job into their own cache files.

    Spawn, not fork: the parent may hold threads (HTTP pools, BLAS) that fork
    would copy mid-state. Each helper builds its embedder once, ignores SIGINT
    and SIGTERM (the parent relays a stop) and dies with the parent.
    """

    def __init__(self, work: Work, count: int) -> None:
        self.count = count
        context = multiprocessing.get_context("spawn")
        self._stopping = context.Event()
        self._pool = ProcessPoolExecutor(count, mp_context=context, initializer=_helper_init,
                                         initargs=(self._stopping, os.getpid(), work.model, work.paths,
                                                   str(work.cache.dir.parent)))

    def submit(self, ids: list[str], texts: list[str], hashes: list[str]) -> Future:
        return self._pool.submit(_helper_embed, ids, texts, hashes)

    def stop(self) -> None:
        self._stopping.set()

    def __enter__(self) -> Helpers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        # and wait: a helper still starting needs the parent's semaphores (unlinked once they are collected)
        self._pool.shutdown(wait=True, cancel_futures=True)


_helper: dict[str, Any] = {}  # in a helper process: its embedder, cache and stop test
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _helper_init(stopping: Any, parent: int, model: dict[str, Any], paths: dict[str, Path],
                 cache_root: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(parent)
    # when the pool lets us go nothing is left to flush (cache rows are fsynced as they are written):
    # skip the interpreter's teardown, which the parent's join waits for (0.15 s idle, 1 s under load)
    atexit.register(os._exit, 0)
    embedder = make_embedder(model, paths)
    _helper.update(embedder=embedder, cache=EmbeddingCache(Path(cache_root), embedder.fingerprint),
                   stop=stopping.is_set)


def _die_with(parent: int) -> None:
    """A helper dies with its parent, as if the same SIGKILL had hit it: what it had in flight is lost.

    Finishing instead would race a resumed job for the same texts (stored twice),
    and a killed parent can no longer shut its pool down (helpers would linger).
    Linux: the kernel kills us with the parent (PR_SET_PDEATHSIG); elsewhere a
    thread polls for the parent within 0.1 s.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if not armed:
        threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before we were armed
        os._exit(1)


def _exit_without(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(1)


def _helper_embed(ids: list[str], texts: list[str], hashes: list[str]) -> int:
    return embed_into_cache(_helper["embedder"], _helper["cache"], ids, texts, hashes,
                            chunk=piece_size(_helper["embedder"]), stop=_helper["stop"])


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


def priority_order(loaded: LoadedManifest, store: Store, corpus: Corpus, rows: list[int]) -> list[int]:
    """`rows` in the order spec.reembed.priority asks: hot documents first, else as in the corpus.

    hot: most impressions + clicks in the last week first; without any events, the
    numeric `priorityField` of each document (higher first, read with the corpus); ties keep corpus order.
    """
    reembed = loaded.manifest.spec.reembed
    if reembed is None or reembed.priority != "hot":
        return rows
    impressions, clicks = document_uses(store, loaded.name)
    ids = corpus.ids
    if impressions or clicks:
        score = {i: impressions[ids[i]] + clicks[ids[i]] for i in rows}
    elif corpus.priorities is not None:
        score = {i: corpus.priorities[i] for i in rows}
    else:
        return rows
    return sorted(rows, key=lambda i: -score[i])


def embedding_coverage(loaded: LoadedManifest, store: Store, corpus: Corpus | None = None) -> Coverage | None:
    """How much of the corpus, and of last week's impressions, the cache holds for the manifest's model.

    None for providers whose vectors are not cached (precomputed). `corpus`: the
    manifest's corpus when the caller has just read it.
    """
    spec = loaded.manifest.spec
    model = spec.model.model_dump(mode="json", by_alias=True)
    embedder = make_embedder(model, loaded.paths, loaded.source)
    cache = cache_for(store, embedder)
    if cache is None:
        return None
    if corpus is None:
        corpus = read_corpus(loaded.paths["corpus"], spec.corpus.id_field, spec.corpus.text_fields,
                             manifest=loaded.source)
    found = cache.has(corpus.hashes)
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
