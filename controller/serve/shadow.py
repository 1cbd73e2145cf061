"""Mirroring and interleaving for stepped rollouts (setMirror, interleave), beside the normal search.

Mirroring never changes what a user gets: the response is computed and sent exactly as without it;
a mirrored query is only *offered* to a bounded queue (put_nowait, dropped when full) that worker
threads drain after the fact. A slow or failing candidate therefore costs the request path one
queue put; its latency, its results and its error land in a `mirror` record of the event log:
{"type": "mirror", "ts", "requestId", "index", "version" (candidate), "stableVersion", "ids"
(candidate's), "stableIds", "tookMs", "error"}.

Interleaving (Radlinski et al.'s team draft, core/interleave.py) is on the request path by nature:
both versions are searched and one merged list is returned; the impression records the team of
each position so clicks can be credited (engine/online.interleave_verdict).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from controller.core.interleave import team_draft
from controller.engine.serving import RoutedIndex, SearchOutcome, search_version
from controller.errors import ControllerError

log = logging.getLogger("controller.serve")

MIRROR_QUEUE = 256  # pending mirrored queries; more are dropped (counted), never waited for
MIRROR_WORKERS = 2
# share of wall time a worker may spend on mirrored queries: after a job of d seconds it rests
# d * (1 - duty) / duty, so a candidate that fails fast cannot keep the process's GIL busy; the
# queries it cannot take meanwhile are dropped and counted
MIRROR_DUTY = 0.5
# after a failed mirrored query the worker rests this long, doubling per consecutive failure up to
# the max: a failing candidate is judged on a sample of its errors, not by hammering it (and the
# process) with every query
ERROR_REST_S, MAX_ERROR_REST_S = 0.1, 2.0


@dataclass
class _Job:
    routed: RoutedIndex
    request_id: str
    text: str | None
    vector: Any
    model: str | None
    k: int
    stable: str
    stable_ids: list[str]


class Mirror:
    """A bounded queue of mirrored queries and the daemon threads that run them on the candidate."""

    def __init__(self, events: Any, *, size: int = MIRROR_QUEUE, workers: int = MIRROR_WORKERS) -> None:
        self.events = events
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=size)
        self.workers = workers
        self.threads: list[threading.Thread] = []
        self.offered = self.dropped = self.done = self.failed = 0

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"mirror-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        for _ in self.threads:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                pass  # daemon threads end with the process

    def offer(self, routed: RoutedIndex, out: SearchOutcome, *, text: str | None, vector: Any,
              model: str | None) -> bool:
        """Queue the query for the candidate; False (dropped) when the queue is full. Never blocks."""
        candidate = routed.routing.candidate
        loaded = routed.versions.get(candidate or "")
        if loaded is None or (vector is not None and model != loaded.model_key):
            return False  # a vector of the stable's space cannot be asked of another model
        self.offered += 1
        job = _Job(routed, out.request_id, text, vector, model if vector is not None else None, out.k, out.version,
                   out.ids)
        try:
            self.queue.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        failures = 0
        while True:
            job = self.queue.get()
            if job is None:
                return
            started = time.perf_counter()
            ok = self._mirror(job)
            failures = 0 if ok else failures + 1
            rest = (time.perf_counter() - started) * (1 - MIRROR_DUTY) / MIRROR_DUTY
            if failures:
                rest = max(rest, min(ERROR_REST_S * 2 ** (failures - 1), MAX_ERROR_REST_S))
            time.sleep(rest)

    def _mirror(self, job: _Job) -> bool:
        candidate = job.routed.routing.candidate or ""
        started = time.perf_counter()
        ids: list[str] = []
        error = None
        try:
            out = search_version(job.routed, candidate, text=job.text, vector=job.vector, model=job.model, k=job.k)
            ids = out.ids
            self.done += 1
        except Exception as exc:  # noqa: BLE001 - a failing candidate is what mirroring is there to find
            error = str(exc) if isinstance(exc, ControllerError) else f"{type(exc).__name__}: {exc}"
            self.failed += 1
        took = (time.perf_counter() - started) * 1000
        try:
            self.events.append({"type": "mirror", "ts": time.time(), "requestId": job.request_id,
                                "index": job.routed.name, "version": candidate, "stableVersion": job.stable,
                                "ids": ids, "stableIds": job.stable_ids, "tookMs": round(took, 3),
                                "error": error})
        except Exception as exc:  # noqa: BLE001 - the worker outlives any one record
            log.warning("mirror record of %s dropped: %s", job.request_id, exc)
        return error is None


def interleave(routed: RoutedIndex, *, text: str | None, vector: Any, model: str | None, k: int,
               seed: str) -> tuple[SearchOutcome, dict[str, Any]] | None:
    """The team-draft merge of stable's and candidate's results, and the impression's interleave fields.

    The fields are the team of each position and both source lists: with the lists, the preference
    test can average over every draft that yields the same merged list (core.interleave.win_probabilities).

    None when either version cannot answer this query (e.g. a vector of one model's space): the
    caller then serves the normal routed result.
    """
    r = routed.routing
    if (text is None) == (vector is None) or (text is not None and not text.strip()):
        return None  # the normal search refuses it with the usual error
    try:
        a = search_version(routed, r.stable or "", text=text, vector=vector, model=model, k=k)
        b = search_version(routed, r.candidate or "", text=text, vector=vector, model=model, k=k)
    except ControllerError:
        return None
    lists = {"stable": a.ids, "candidate": b.ids}
    ids, teams = team_draft(lists["stable"], lists["candidate"], k, random.Random(seed))
    # each position keeps the score of the list that contributed it (scores of two models do not compare)
    from_team = {"stable": dict(zip(a.ids, a.scores)), "candidate": dict(zip(b.ids, b.scores))}
    merged = replace(b, ids=ids, scores=[from_team[t][i] for i, t in zip(ids, teams)], ranks=None,
                     took_ms=a.took_ms + b.took_ms)
    return merged, {"mode": "interleave", "teams": teams, "lists": lists}
