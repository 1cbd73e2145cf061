"""The reconcile loop: observe -> plan -> execute -> persist, shared by every shell.

The CLI, the watch loop, Git sync and the Kubernetes operator all call
`reconcile_index`. Decisions come from core.plan; this module only carries
them out. A dry run stops after the first plan and writes nothing (and takes no
lock). A real run plans once before the lock (so bad input is refused before
waiting or writing), then observes and plans again under the lock and executes
only that plan: another writer may have changed the store while this one waited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from controller.core import reasons as R
from controller.core.gates import summarize_failures
from controller.core.plan import plan as make_plan, previous_stable_newest_first, rollout_digest
from controller.core.types import Action, CheckReport, Desired, Observed, Plan, Routing, comparable
from controller.embed import make_embedder
from controller.embed.base import check_finite
from controller.errors import CheckError, ControllerError, EmbedError, InvalidInput, StalePlan
from controller.engine import backend as B
from controller.engine.checks import run_checks
from controller.engine.drift import corpus_drift_for_build, measure_corpus_drift, version_writer
from controller.engine import ahead
from controller.engine import refresh as F
from controller.engine import rollout
from controller.engine.journal import journal_record
from controller.engine.embedding import CacheStats, embed_documents, gc_embedding_cache
from controller.engine.status import persist_status, utc_now
from controller.engine.validate import validate_inputs, validated_corpus
from controller.progress import Progress, silent
from controller.manifest.load import LoadedManifest
from controller.manifest.providers import capabilities
from controller.store.corpus import Corpus, read_corpus
from controller.store import signature
from controller.store.fs import Store, print_lock_wait
from controller.stamps import utc_stamp

MAX_PASSES = 6  # build -> check -> weight -> gc needs at most four; more means a bug


@dataclass
class Observation:
    desired: Desired
    observed: Observed
    # None when the inputs are unchanged since the store's record (store/signature.py): a no-op
    # plan needs only the digest and counts; a build reads the corpus through full_observation
    corpus: Corpus | None
    reuse_rows: np.ndarray | None = None  # row of each document in observed.reuse_from, -1 to embed
    inputs: dict[str, Any] | None = None  # stat signature the corpus facts were learned (or trusted) under


@dataclass
class IndexResult:
    name: str
    plan: Plan  # the first plan: what a dry run shows
    executed: list[Action] = field(default_factory=list)
    reports: list[CheckReport] = field(default_factory=list)
    status: dict[str, Any] | None = None
    built: int = 0
    embedded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "plan": self.plan.to_dict(),
            "executed": [a.to_dict() for a in self.executed],
            "checks": [r.to_dict() for r in self.reports],
            "built": self.built,
            "embedded": self.embedded,
            "status": self.status,
        }


@dataclass
class Hooks:
    """Callbacks for shells: progress bars, journal extras (e.g. a Git commit), notifications."""

    progress: Callable[[str], Progress] = lambda label: silent
    journal_extra: dict[str, Any] = field(default_factory=dict)
    on_transition: Callable[[str, dict[str, Any]], None] = lambda name, event: None
    # said once when another writer holds the store lock and this one starts waiting
    on_lock_wait: Callable[[str], None] = print_lock_wait
    # called with the index name once the lock is held, before the plan is made again
    on_locked: Callable[[str], None] = lambda name: None
    # seconds since the epoch: when rollout steps are due (tests and simulations pass their own)
    clock: Callable[[], float] = time.time


def desired_of(loaded: LoadedManifest) -> Desired:
    m = loaded.manifest
    s = m.spec
    if s.rollout.steps is not None:
        rollout.check_gate_metrics(loaded)
    return Desired(name=m.name, alias=m.alias, label=s.index.version, fingerprint=s.model.fingerprint(),
                   factory=s.index.structure(), metric=s.index.metric, percentage=s.rollout.percentage,
                   keep=s.history.keep, suspend=s.suspend, manifest_digest=loaded.digest,
                   retrain_stale=bool(s.checks.corpus_drift and s.checks.corpus_drift.retrain),
                   steps=(tuple(step.model_dump(mode="json", by_alias=True) for step in s.rollout.steps)
                          if s.rollout.steps is not None else None),
                   confirm=s.rollout.confirm.gate() if s.rollout.confirm is not None else None,
                   refresh=F.policy_of(s))


def observe(loaded: LoadedManifest, store: Store, previous: Observation | None = None) -> Observation:
    """Read-only snapshot: corpus facts, built versions, routing, and what could be reused.

    The corpus and the data files are parsed and validated only when their content changed since
    `previous` (same process) or since the store's record of the last reconcile. An unchanged stat
    signature opens nothing; a changed one re-hashes the bytes first (store/signature.py).
    """
    desired = desired_of(loaded)
    versions = tuple(store.versions(loaded.name))
    routing = effective_routing(store, loaded)
    inputs = signature.take(loaded.paths)
    known = _known_inputs(loaded, store, inputs, versions, previous)
    if known is not None and known[0] is None and F.wants_facts(desired, versions, routing, known[1]):
        known = None  # an in-place refresh is planned from the documents that changed: read the corpus
    if known is not None:
        corpus, digest, documents, reuse_from, to_embed, rows = known
    else:
        corpus = validated_corpus(loaded, inputs)  # read by the shell's validate-first pass
        if corpus is None:
            if inputs.get("content") is None:  # hashed before parsing: a later edit can only mismatch
                inputs["content"] = signature.content(loaded.paths)
            s = loaded.manifest.spec
            corpus = read_corpus(loaded.paths["corpus"], s.corpus.id_field, s.corpus.text_fields,
                                 manifest=loaded.source)
            validate_inputs(loaded, corpus)
        source, rows = _reuse_source(store, loaded, corpus, versions, desired)
        reusable = int((rows >= 0).sum()) if rows is not None else 0
        digest, documents, to_embed = corpus.digest, len(corpus), len(corpus) - reusable
        reuse_from, rows = (source, rows) if reusable else (None, None)
    observed = Observed(versions=versions, routing=routing, corpus_digest=digest,
                        documents=documents, to_embed=to_embed, reuse_from=reuse_from,
                        previous_stable=previous_stable_newest_first(store.journal_newest_first(loaded.name),
                                                                     routing.stable, {v.id: v.label for v in versions}),
                        refresh=F.observe_refresh(store, loaded.name, loaded.manifest.spec, desired, versions,
                                                  routing, corpus))
    return Observation(desired, observed, corpus, rows, inputs)


def _known_inputs(loaded: LoadedManifest, store: Store, inputs: dict[str, Any], versions: tuple,
                  previous: Observation | None) -> tuple | None:
    """(corpus or None, digest, documents, reuse_from, to_embed, rows) when the inputs are unchanged."""
    reusable = capabilities(loaded.manifest.spec.model.provider).reusable
    ids = [v.id for v in versions]
    if previous is not None and signature.vouches(previous.inputs, inputs, loaded.paths):
        o, corpus = previous.observed, previous.corpus
        if not reusable or [v.id for v in o.versions] == ids:
            return corpus, o.corpus_digest, o.documents, o.reuse_from, o.to_embed, previous.reuse_rows
        if corpus is not None:  # new versions may offer more to reuse: ids and hashes are in memory
            source, rows = _reuse_source(store, loaded, corpus, versions, desired_of(loaded))
            reused = int((rows >= 0).sum()) if rows is not None else 0
            return (corpus, corpus.digest, len(corpus), source if reused else None, len(corpus) - reused,
                    rows if reused else None)
    record = signature.read_record(store.index_dir(loaded.name))
    if (record is None or record.get("manifestDigest") != loaded.digest
            or (reusable and record.get("versions") != ids)
            or not signature.vouches(record.get("signature"), inputs, loaded.paths)):
        return None  # validated under this signature when recorded: nothing to check again
    return None, record["corpusDigest"], record["documents"], record["reuseFrom"], record["toEmbed"], None


def full_observation(obs: Observation, loaded: LoadedManifest, store: Store) -> Observation:
    """The observation with its corpus read (a build needs ids, texts and reuse rows)."""
    if obs.corpus is not None:
        return obs
    s = loaded.manifest.spec
    corpus = read_corpus(loaded.paths["corpus"], s.corpus.id_field, s.corpus.text_fields, manifest=loaded.source)
    if corpus.digest != obs.observed.corpus_digest:
        raise StalePlan(f"index {loaded.name!r}: the corpus {corpus.path} changed while the plan was made; "
                        "reconcile again")
    source, rows = _reuse_source(store, loaded, corpus, obs.observed.versions, obs.desired)
    reused = rows is not None and bool((rows >= 0).any())
    return replace(obs, corpus=corpus, reuse_rows=rows if reused else None)


def _record_inputs(store: Store, loaded: LoadedManifest, obs: Observation) -> None:
    """Remember what the inputs held under their stat signature, so the next no-op reads none of them."""
    o = obs.observed
    record = {"manifestDigest": loaded.digest, "signature": obs.inputs, "corpusDigest": o.corpus_digest,
              "documents": o.documents, "reuseFrom": o.reuse_from, "toEmbed": o.to_embed,
              "versions": [v.id for v in o.versions]}
    index_dir = store.index_dir(loaded.name)
    if index_dir.is_dir() and not signature.still_current(signature.read_record(index_dir), record):
        signature.write_record(index_dir, record)


def effective_routing(store: Store, loaded: LoadedManifest) -> Routing:
    """Holds from a manual rollback last only while the manifest stays as it was."""
    routing = store.routing(loaded.name)
    if routing.held and manifest_changed(store, loaded):
        return replace(routing, held=())
    return routing


def manifest_changed(store: Store, loaded: LoadedManifest) -> bool:
    status = store.status(loaded.name) or {}
    return status.get("observedManifestDigest") not in (None, loaded.digest)


def _release_holds(store: Store, loaded: LoadedManifest, hooks: Hooks) -> None:
    routing = store.routing(loaded.name)
    if not routing.held or not manifest_changed(store, loaded):
        return
    action = Action("abort", ",".join(routing.held), R.MANIFEST_CHANGED,
                    f"the manifest changed: versions held by a manual rollback ({', '.join(routing.held)}) "
                    "are released")
    _write_routing(store, loaded, routing, replace(routing, held=()), action, hooks, event="HoldReleased")


def _reuse_source(store: Store, loaded: LoadedManifest, corpus: Corpus, versions, desired: Desired
                  ) -> tuple[str | None, np.ndarray | None]:
    """The newest version of the same model, and the row of each unchanged document in it (-1: embed).

    Precomputed vectors are read, not computed, so they are never reused.
    """
    if not capabilities(loaded.manifest.spec.model.provider).reusable:
        return None, None
    same = [v for v in versions if v.fingerprint == desired.fingerprint]
    if not same:
        return None, None
    source = max(same, key=lambda v: v.created)
    if source.corpus_digest == corpus.digest and "refresh" not in store.meta(loaded.name, source.id):
        # the digest covers every (id, hash) in order: row i is document i, no need to read the files
        # (not so after an in-place refresh: its rows are the kept ones, then the new documents)
        # (the re-plan after every build lands here: the version just built is the source)
        return source.id, np.arange(len(corpus), dtype=np.int64)
    old_ids = store.ids(loaded.name, source.id)
    position = {key: row for row, key in enumerate(zip(old_ids, store.hashes(loaded.name, source.id)))}
    rows = np.fromiter((position.get(key, -1) for key in zip(corpus.ids, corpus.hashes)),
                       dtype=np.int64, count=len(corpus))
    return source.id, rows


def plan_index(loaded: LoadedManifest, store: Store, previous: Observation | None = None, *,
               now: float | None = None, ask_confirm: bool = False) -> tuple[Observation, Plan]:
    """Observe and plan at `now` (default: the clock); a stepped rollout's due look is measured first."""
    obs = observe(loaded, store, previous)
    now = time.time() if now is None else now
    if obs.desired.steps is not None:
        state = rollout.stored_state(store, loaded.name)
        # the plan's own rule for "the same rollout" (core.plan.rollout_digest): a restart gets no look
        verdict, confirmed = rollout.step_inputs(loaded, store, state, now, ask_confirm=ask_confirm,
                                                 rollout_digest=rollout_digest(obs.desired))
        obs = replace(obs, observed=replace(obs.observed, rollout=state, step_verdict=verdict, confirmed=confirmed))
    return obs, make_plan(obs.desired, obs.observed, now)


def reconcile_index(loaded: LoadedManifest, store: Store, *, dry_run: bool = False,
                    hooks: Hooks | None = None, expect: dict[str, Any] | None = None,
                    lock_timeout: float | None = None) -> IndexResult:
    """Observe, plan and (unless a dry run) execute until nothing is left to do.

    The plan that is executed is made under the store lock, after recovery
    from any crashed writer. `expect` is a reviewed plan (Plan.to_dict()): it
    must equal that plan. `lock_timeout` (seconds; None: the store's default,
    0: fail at once) bounds the wait for another writer.
    """
    try:
        return _reconcile_index(loaded, store, dry_run=dry_run, hooks=hooks or Hooks(), expect=expect,
                                lock_timeout=lock_timeout)
    finally:
        ahead.drop(loaded.name)  # an index built ahead that no build took (another plan) is let go


def _reconcile_index(loaded: LoadedManifest, store: Store, *, dry_run: bool, hooks: Hooks,
                     expect: dict[str, Any] | None, lock_timeout: float | None) -> IndexResult:
    obs, first = plan_index(loaded, store, now=hooks.clock())  # validates the input before any wait or write
    result = IndexResult(loaded.name, first)
    if dry_run:
        return result
    with store.lock(timeout=lock_timeout, on_wait=hooks.on_lock_wait):
        hooks.on_locked(loaded.name)
        obs, first = plan_index(loaded, store, obs, now=hooks.clock(), ask_confirm=True)
        result.plan = first
        if expect is not None:
            if comparable(first.to_dict()) != comparable(expect):
                raise StalePlan(f"index {loaded.name!r}: the plan made under the store lock differs from the "
                                "reviewed plan; make a new plan (`controller reconcile --dry-run --out`)")
        try:
            _release_holds(store, loaded, hooks)
            current = first
            for _ in range(MAX_PASSES):
                if not current.changes:
                    break
                obs = _execute(current, obs, loaded, store, hooks, result)
                obs, current = plan_index(loaded, store, obs, now=hooks.clock(), ask_confirm=True)
        except InvalidInput:
            raise  # found before anything was written: the status stays as it was
        except Exception as exc:
            # A failed cycle says so in status (Stalled, with the error) before the caller reports it.
            # The manifest digest stays the last applied one: this manifest was not applied.
            error = str(exc) if isinstance(exc, ControllerError) else f"{type(exc).__name__}: {exc}"
            try:
                persist_status(store, loaded.name, alias=loaded.manifest.alias, error=error,
                               reports=result.reports)
            except (OSError, ControllerError):  # the store fails too: report the first error, not this one
                pass
            raise
        _record_inputs(store, loaded, obs)
        B.sync_alias(store, loaded.name, loaded.manifest.spec)
        result.status = persist_status(store, loaded.name, plan=current, alias=loaded.manifest.alias,
                                       manifest_digest=loaded.digest, reports=result.reports)
    return result


def _execute(plan: Plan, obs: Observation, loaded: LoadedManifest, store: Store, hooks: Hooks,
             result: IndexResult) -> Observation:
    """Carry out one plan; returns the observation, with its corpus when a build had to read it."""
    failed: CheckReport | None = None
    for action in plan.actions:
        if action.if_gates_pass and failed is not None:
            continue
        if action.kind == "build":
            obs = full_observation(obs, loaded, store)
            _build(action, obs, loaded, store, hooks, result)
        elif action.kind == "refresh":
            obs = full_observation(obs, loaded, store)
            _refresh(action, obs, loaded, store, hooks, result)
        elif action.kind == "check":
            report = _run_checks(store, loaded, action)
            result.reports.append(report)
            if not report.passed:
                failed = report
                _rollback_after_failure(store, loaded, action.version, report, hooks, result)
                continue
            _record_verdict(store, loaded, report, hooks)
        else:
            _route(action, store, loaded, hooks)
        result.executed.append(action)
    return obs


def _build(action: Action, obs: Observation, loaded: LoadedManifest, store: Store, hooks: Hooks,
           result: IndexResult) -> None:
    spec = loaded.manifest.spec
    corpus = obs.corpus
    started = time.monotonic()
    embedder = make_embedder(spec.model.model_dump(mode="json", by_alias=True), loaded.paths, loaded.source)
    vectors, embedded, cache = _vectors_for(store, loaded, obs, embedder, hooks)
    if isinstance(vectors, np.ndarray):  # a row source that is not an array checks its rows as it reads them
        _finite(vectors, action.version, loaded)
    embed_s = time.monotonic() - started
    # corpus drift under the same model decides whether a trained index keeps its training
    corpus_drift = corpus_drift_for_build(store, loaded, corpus, vectors)
    B.delete_partial_versions(store, loaded.name, spec)  # what a crashed build left in the backend
    settings = B.settings_of(spec)

    def fill(location: Path) -> None:
        begun = time.monotonic()
        ref = B.new_version_ref(loaded.name, action.version, spec, location)
        # in-place refreshes start from a full index: no revision sharing rows under them
        shared = ((obs.observed.reuse_from, obs.reuse_rows)
                  if obs.reuse_rows is not None and obs.desired.refresh is None else None)
        # built in memory while the inputs were validated, from the same rows (engine/ahead.py)
        built = (ahead.take(loaded, obs.inputs, ref, len(corpus))
                 if obs.reuse_rows is None and corpus_drift is None else None)
        writer = built or version_writer(store, loaded, corpus_drift, ref, settings, shared)
        try:
            if built is None:
                ahead.add_rows(writer, vectors, corpus.ids, corpus.hashes, hooks.progress("building"))
            else:
                hooks.progress("building")(len(corpus), len(corpus))
            writer.finish()
        except EmbedError as exc:  # a streamed row source found NaN/inf: the staging directory goes
            writer.abort()
            raise _refused_vectors(exc, loaded) from exc
        except InvalidInput as exc:
            writer.abort()
            raise InvalidInput(exc.reason, file=loaded.source, field=exc.field, value=exc.value) from exc
        except BaseException:
            writer.abort()
            raise
        meta["build"]["buildSeconds"] = round(time.monotonic() - begun, 3)  # meta.json is written last

    reused = corpus_drift is not None and not corpus_drift.assessment.retrain and corpus_drift.assessment.trained
    meta = _version_meta(loaded, corpus, int(len(corpus)), int(vectors.shape[1]), {
        "embedded": embedded, "reused": len(corpus) - embedded,
        "reusedFrom": obs.observed.reuse_from if embedded < len(corpus) else None,
        "cache": cache, "embedSeconds": round(embed_s, 3), "buildSeconds": 0.0})
    if corpus_drift is not None:
        meta["corpusDrift"] = {**corpus_drift.to_dict(),
                               "trainedOn": corpus_drift.reference if reused else action.version}
    store.write_version(loaded.name, action.version, fill=fill, ids=corpus.ids,
                        hashes=corpus.hashes, meta=meta, extra_files=_query_files(loaded))
    result.built += 1
    result.embedded += embedded
    hooks.on_transition(loaded.name, {"event": "ShadowBuilt", "version": action.version,
                                      "documents": len(corpus), "embedded": embedded, "cache": cache})


def _version_meta(loaded: LoadedManifest, corpus: Any, ntotal: int, dim: int, build: dict[str, Any],
                  **extra: Any) -> dict[str, Any]:
    """meta.json of a new version: what it was made from and how (``extra`` goes before the digest)."""
    spec = loaded.manifest.spec
    backend_type, backend_params = spec.index.backend_settings()
    return {
        "name": loaded.name,
        "label": spec.index.version,
        "created": _created_stamp(),
        "fingerprint": spec.model.fingerprint(),
        "model": spec.model.model_dump(mode="json", by_alias=True),
        "index": {"factory": spec.index.structure(), "metric": spec.index.metric, "ntotal": ntotal, "dim": dim,
                  # parameters only: connection settings and credentials come from the environment
                  "backend": {"type": backend_type, **backend_params}},
        "corpus": {"digest": corpus.digest, "documents": len(corpus), "path": str(corpus.path)},
        "build": build,
        **extra,
        "manifestDigest": loaded.digest,
    }


def _refresh(action: Action, obs: Observation, loaded: LoadedManifest, store: Store, hooks: Hooks,
             result: IndexResult) -> None:
    """A revision of the stable version made by removing and adding rows (core/refresh.py decided).

    Only the new and changed documents are embedded (through the cache); nothing is trained and the
    kept rows are not added again. Corpus drift of those documents on a trained index turns it into
    a full build, which trains as spec.checks.corpusDrift.retrain says: a refresh never extends
    training the corpus has drifted away from.
    """
    spec, corpus, base = loaded.manifest.spec, obs.corpus, str(action.baseline)
    started = time.monotonic()
    changes = F.changes_of(store, loaded.name, base, corpus)
    embedder = make_embedder(spec.model.model_dump(mode="json", by_alias=True), loaded.paths, loaded.source)
    done = embed_documents(store, embedder, [corpus.ids[i] for i in changes.new],
                           [corpus.texts[i] for i in changes.new], [corpus.hashes[i] for i in changes.new],
                           hooks.progress)
    fresh = np.ascontiguousarray(done.vectors, dtype=np.float32).reshape(len(changes.new), int(spec.model.dim))
    _finite(fresh, action.version, loaded)
    embed_s = time.monotonic() - started
    base_ids, base_hashes = store.ids(loaded.name, base), store.hashes(loaded.name, base)
    ids = [base_ids[r] for r in changes.keep] + [corpus.ids[i] for i in changes.new]
    hashes = [base_hashes[r] for r in changes.keep] + [corpus.hashes[i] for i in changes.new]
    corpus_drift = _refresh_corpus_drift(store, loaded, base, changes, fresh, ids, hashes)
    if corpus_drift is not None and corpus_drift.assessment.drifted and corpus_drift.assessment.trained:
        rebuild = replace(action, kind="build", reason=R.CORPUS_DRIFT, message=(
            f"full build of {action.version} instead of an in-place refresh of {base}: "
            f"{corpus_drift.assessment.message}"))
        _build(rebuild, obs, loaded, store, hooks, result)
        return
    base_meta = store.meta(loaded.name, base)
    chain = F.chain_of(base, base_meta)
    meta = _version_meta(loaded, corpus, len(ids), int(spec.model.dim), {
        "embedded": done.stats.embedded, "reused": len(changes.keep), "reusedFrom": base,
        "cache": done.stats.to_dict(), "embedSeconds": round(embed_s, 3), "buildSeconds": 0.0, "inPlace": True},
        # the chain since the last full build: spec.reembed.rebuildAfter counts and times it
        refresh={"from": base, "added": changes.added, "changed": changes.changed, "removed": changes.removed,
                 "refreshes": chain.refreshes + 1, "fullBuild": chain.full_build,
                 "fullBuildAt": chain.full_build_at})
    if corpus_drift is not None:
        trained_on = (base_meta.get("corpusDrift") or {}).get("trainedOn") or base
        meta["corpusDrift"] = {**corpus_drift.to_dict(), "trainedOn": trained_on}
    B.delete_partial_versions(store, loaded.name, spec)  # what a crashed build or refresh left in the backend
    F.write_refreshed(store, loaded.name, action.version, spec, base, changes, fresh, ids, hashes, meta,
                      _query_files(loaded))
    result.built += 1
    result.embedded += done.stats.embedded
    hooks.on_transition(loaded.name, {"event": "RefreshedInPlace", "version": action.version, "from": base,
                                      "added": changes.added, "changed": changes.changed,
                                      "removed": changes.removed, "embedded": done.stats.embedded,
                                      "seconds": meta["build"]["buildSeconds"]})


def _refresh_corpus_drift(store: Store, loaded: LoadedManifest, base: str, changes: Any, fresh: np.ndarray,
                          ids: list[str], hashes: list[str]) -> Any:
    """Corpus drift of the new and changed documents vs the stable version (when the manifest asks)."""
    spec = loaded.manifest.spec
    if spec.checks.corpus_drift is None:
        return None
    kept = len(changes.keep)
    if spec.checks.corpus_drift.compare == "all":  # asked to compare every document: load the kept rows
        vectors: Any = np.concatenate([B.stored_vectors(store, loaded.name, base)[changes.keep], fresh])
    else:
        vectors = F.TailRows(kept, fresh)
    return measure_corpus_drift(store, loaded.name, base, ids, hashes, vectors,
                                spec=spec.checks.corpus_drift, index_spec=spec.index)


def _finite(vectors: np.ndarray, version: str, loaded: LoadedManifest) -> None:
    try:
        check_finite(vectors, f"vectors of {version}")
    except EmbedError as exc:
        raise _refused_vectors(exc, loaded) from exc


def _refused_vectors(exc: EmbedError, loaded: LoadedManifest) -> InvalidInput:
    """NaN/inf in a version's vectors, blamed on the manifest's model (its file, field and name)."""
    return InvalidInput(str(exc), file=loaded.source, field="spec.model", value=loaded.manifest.spec.model.name)


def _created_stamp() -> str:
    # microseconds: versions built in one run must still sort by creation
    return utc_stamp(micro=True)


def _query_files(loaded: LoadedManifest) -> dict[str, Path]:
    """Precomputed query vectors travel with the version so later checks need no old manifest."""
    # golden query texts too: query drift embeds them later with the version's own model
    files = {"queries/golden.jsonl": loaded.paths["queries"]} if "queries" in loaded.paths else {}
    if "queryVectors" not in loaded.paths:
        return files
    files["queries/vectors.npy"] = loaded.paths["queryVectors"]
    if "queryIds" in loaded.paths:
        files["queries/ids.txt"] = loaded.paths["queryIds"]
    return files


def _vectors_for(store: Store, loaded: LoadedManifest, obs: Observation, embedder, hooks: Hooks
                 ) -> tuple[np.ndarray, int, dict[str, int]]:
    """Embed only documents with no vector of the same model and content; reuse the rest.

    Returns the vectors, how many texts the model embedded, and the embedding cache's hits/misses.
    """
    corpus, rows = obs.corpus, obs.reuse_rows
    out: np.ndarray | None = None
    if rows is not None:
        old_vecs = B.stored_vectors(store, loaded.name, obs.observed.reuse_from)
        have = rows >= 0
        # one gather (rows to embed take row 0 as a placeholder, overwritten below) instead of a
        # zeroed array, a gathered temporary and a masked copy of it
        out = np.ascontiguousarray(old_vecs[np.where(have, rows, 0)], dtype=np.float32)
        todo = np.flatnonzero(~have).tolist()
        if not todo:
            return out, 0, CacheStats().to_dict()
    if out is None:  # every document: the corpus's own lists, not copies of them (1M documents: 0.3 s)
        done = embed_documents(store, embedder, corpus.ids, corpus.texts, corpus.hashes, hooks.progress)
    else:
        done = embed_documents(store, embedder, [corpus.ids[i] for i in todo], [corpus.texts[i] for i in todo],
                               [corpus.hashes[i] for i in todo], hooks.progress)
    fresh, embedded = done.vectors, done.stats.embedded
    if out is None:  # a row source that is not an array (precomputed: read as the build takes it) stays one
        return (np.ascontiguousarray(fresh, dtype=np.float32) if isinstance(fresh, np.ndarray) else fresh,
                embedded, done.stats.to_dict())
    out[todo] = fresh
    return out, embedded, done.stats.to_dict()


def _run_checks(store: Store, loaded: LoadedManifest, action: Action) -> CheckReport:
    """The checks of one version; one that cannot be computed leaves it with no verdict, so unroutable."""
    version = action.version
    unrouted = f"{version} has no verdict and is not routed"
    try:
        return run_checks(store, loaded, version, action.baseline)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.reason}; {unrouted}", file=exc.file, field=exc.field, value=exc.value) from exc
    except Exception as exc:  # a drift statistic or metric that errors must not leave a routable version
        detail = str(exc) if isinstance(exc, ControllerError) else f"{type(exc).__name__}: {exc}"
        # reconcile_index records the error in the status (Stalled) before it reaches the caller
        raise CheckError(f"index {loaded.name!r}: the checks of {version} could not be computed ({detail}); "
                         f"{unrouted}") from exc


def _verdict_record(report: CheckReport) -> dict[str, Any]:
    message = summarize_failures(report.gates) if not report.passed else "all gates passed"
    return {"verdict": "passed" if report.passed else "failed", "message": message, "checkedAt": utc_now(),
            "report": report.to_dict()}


def _verdict_event(report: CheckReport, verdict: dict[str, Any]) -> dict[str, Any]:
    return {"event": "GatesPassed" if report.passed else "GateFailed", "version": report.version,
            "message": verdict["message"], "gates": [g.to_dict() for g in report.gates]}


def _record_verdict(store: Store, loaded: LoadedManifest, report: CheckReport, hooks: Hooks) -> None:
    verdict = _verdict_record(report)
    store.commit_transition(loaded.name, verdicts={report.version: verdict})
    hooks.on_transition(loaded.name, _verdict_event(report, verdict))


def _rollback_after_failure(store: Store, loaded: LoadedManifest, version: str, report: CheckReport,
                            hooks: Hooks, result: IndexResult) -> None:
    """The failed verdict, the routing without the candidate and the journal record: one transition."""
    routing = store.routing(loaded.name)
    verdict = _verdict_record(report)
    new = replace(routing, candidate=None, weight=0.0) if routing.candidate else routing
    action = Action("abort", version, R.GATE_FAILED,
                    f"roll back {version}: {verdict['message']}; alias {loaded.manifest.alias} stays on "
                    f"{routing.stable}")
    _write_routing(store, loaded, routing, new, action, hooks, event="RolledBack",
                   verdicts={version: verdict}, before=(_verdict_event(report, verdict),))
    result.executed.append(action)


def _route(action: Action, store: Store, loaded: LoadedManifest, hooks: Hooks) -> None:
    name = loaded.name
    if action.kind == "delete":
        B.delete_stored_version(store, name, action.version)
        gc_embedding_cache(store)  # the store's GC is also the embedding cache's (docs/embedding.md)
        return
    if action.state is not None:  # a step transition: routing, step state and journal in one commit
        if action.kind == "stepState":
            store.commit_transition(name, rollout=action.state)
            return
        rollout.commit_step(store, name, loaded.manifest.alias, action.kind, action.version, action.reason,
                            action.message, action.state, notify=hooks.on_transition, manifest_digest=loaded.digest,
                            source=str(loaded.source), extra=hooks.journal_extra)
        return
    routing = store.routing(name)
    if action.kind == "promote":
        new = Routing(stable=action.version, candidate=None, weight=0.0,
                      held=tuple(h for h in routing.held if h != action.version))
        event = "AliasSwitched"
    elif action.kind == "setWeight":
        new = Routing(stable=routing.stable, candidate=action.version, weight=float(action.weight or 0),
                      held=routing.held)
        event = "WeightChanged"
    elif action.kind == "abort":
        new = replace(routing, candidate=None, weight=0.0)
        event = "RolledBack"
    elif action.kind == "rollback":  # the stable steps back to a candidate beside its previous stable
        new = Routing(stable=action.baseline, candidate=action.version, weight=float(action.weight or 0),
                      held=routing.held)
        event = "RevertedToCanary"
    else:
        raise AssertionError(f"unknown action {action.kind}")
    _write_routing(store, loaded, routing, new, action, hooks, event)
    if new.stable != routing.stable:  # the native alias follows at once: a later GC may delete the old stable
        B.sync_alias(store, name, loaded.manifest.spec, previous=routing.stable)


def _write_routing(store: Store, loaded: LoadedManifest, old: Routing, new: Routing, action: Action,
                   hooks: Hooks, event: str, verdicts: dict[str, dict[str, Any]] | None = None,
                   before: tuple[dict[str, Any], ...] = ()) -> None:
    """Routing, journal record (and verdicts) commit together; events go out after the commit."""
    record = journal_record(loaded.name, loaded.manifest.alias, old, new, action.reason, action.message,
                            manifest_digest=loaded.digest, source=str(loaded.source), extra=hooks.journal_extra)
    store.commit_transition(loaded.name, verdicts=verdicts, journal=record,
                            routing=(loaded.manifest.alias, new) if new != old else None)
    for earlier in before:
        hooks.on_transition(loaded.name, earlier)
    hooks.on_transition(loaded.name, {"event": event, "version": action.version, "message": action.message,
                                      "stable": new.stable, "candidate": new.candidate, "weight": new.weight,
                                      **hooks.journal_extra})


def remove_index(store: Store, name: str, lock_timeout: float | None = None) -> None:
    """Delete an index and every version (used by prune and the operator finalizer)."""
    with store.lock(timeout=lock_timeout):
        store.delete_index(name)
