"""Everything a real run would reject, checked before the first write (dry runs too).

`validate_all` runs over every loaded manifest before any of them is applied,
so a multi-document file or a directory is applied whole or not at all: a data
error in the second manifest can no longer leave the first one applied.
Shells call it right after loading (reconcile, sync, watch); `observe` calls
`validate_inputs` again so a plan is never made from unchecked input.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from controller.checks.drift import REGISTRY as DRIFT_REGISTRY
from controller.checks.golden import GoldenSet, load_golden
from controller.embed import make_embedder
from controller.engine import ahead
from controller.engine.backend import validate_backend
from controller.errors import ControllerError, InvalidInput
from controller.manifest.load import LoadedManifest
from controller.manifest.providers import capabilities
from controller.store import signature
from controller.store.corpus import Corpus, read_corpus
from controller.store.fs import Store


def validate_all(loaded: list[LoadedManifest], store: Store | None = None, *,
                 build_ahead: bool = False) -> dict[str, Corpus]:
    """Validate every manifest with its data; raise on the first problem, before anything is written.

    With a store, a manifest whose inputs the store's record vouches for (validated when recorded,
    unchanged since: store/signature.py) is skipped, so a no-op reconcile reads no input.
    ``build_ahead`` (a real run of one manifest): a first version's index is built in memory while
    its inputs are validated (engine/ahead.py); one manifest only, so one index is held at a time.
    """
    ahead_store = store if build_ahead and len(loaded) == 1 else None
    return {item.name: validate_manifest(item, ahead_store) for item in loaded
            if store is None or not inputs_unchanged(item, store)}


def inputs_unchanged(loaded: LoadedManifest, store: Store) -> bool:
    """Whether the store's record still vouches for this manifest's inputs (same manifest, same bytes)."""
    record = signature.read_record(store.index_dir(loaded.name))
    return (record is not None and record.get("manifestDigest") == loaded.digest
            and signature.vouches(record.get("signature"), signature.take(loaded.paths), loaded.paths))


# What the validate-first pass read in this process, per index: (manifest digest, signature with
# content hashes, corpus). The reconcile that follows takes it once instead of parsing again.
_VALIDATED: dict[str, tuple[str, dict[str, Any], Corpus]] = {}


def validate_manifest(loaded: LoadedManifest, ahead_store: Store | None = None) -> Corpus:
    """Read the corpus (ids, text, UTF-8) and validate everything the manifest points at.

    With ``ahead_store``, the store's first version of the index may be built in memory meanwhile
    (engine/ahead.py); a validation error drops it, and nothing was written.
    """
    inputs = signature.take(loaded.paths)
    embedder = _embedder_or_none(loaded)
    if ahead_store is not None:
        ahead.start(loaded, ahead_store, inputs, embedder)
    try:
        with ahead.validating(loaded.name):
            return _validate_manifest(loaded, inputs, embedder)
    except BaseException:
        ahead.drop(loaded.name)
        raise


def _validate_manifest(loaded: LoadedManifest, inputs: dict[str, Any], embedder: Any) -> Corpus:
    s = loaded.manifest.spec
    others = {key: path for key, path in loaded.paths.items() if key != "corpus"}
    scan = getattr(embedder, "scan", None)
    # The other inputs (the vectors: gigabytes at 1M rows) are hashed on a second thread (hashlib
    # lets go of the GIL), then scanned there by the embedder for what needs no corpus (NaN/inf),
    # while this one parses the corpus; the corpus is hashed from the very bytes it is parsed from.
    # Each hash is taken before its file is validated, as before: a later edit can only mismatch.
    # A build ahead reads every row of the vectors anyway (engine/ahead.py): it hashes them as it
    # reads and refuses NaN/inf, so that this thread only waits for it instead of reading 1.5 GB twice.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash-inputs") as pool:
        hashed = pool.submit(_hash_and_scan, others, scan, ahead.rows_read(loaded.name))
        corpus = read_corpus(loaded.paths["corpus"], s.corpus.id_field, s.corpus.text_fields,
                             manifest=loaded.source, content=True, priority_field=s.priority_field)
        # the scan keeps what it found: validate() reports it, in its turn
        inputs["content"] = {**hashed.result(), "corpus": corpus.content}
    validate_inputs(loaded, corpus, embedder)
    _VALIDATED[loaded.name] = (loaded.digest, inputs, corpus)
    return corpus


def _hash_and_scan(others: dict[str, Path], scan: Any, read: Future | None) -> dict[str, str | None]:
    """sha256 of every input but the corpus, then the embedder's scan (NaN/inf); the vectors' hash and
    finiteness taken from a build ahead (``read``) when it read them all."""
    digest = None if read is None else read.result()  # None too when the build ahead stopped before the end
    if digest is None:
        hashed = signature.content(others)
    else:
        hashed = {**signature.content({k: p for k, p in others.items() if k != "vectors"}), "vectors": digest}
    if scan is not None:
        scan(rows_checked=digest is not None)
    return hashed


def validated_corpus(loaded: LoadedManifest, inputs: dict[str, Any]) -> Corpus | None:
    """The corpus validate_manifest read, when the same files still hold the same bytes (taken once)."""
    entry = _VALIDATED.pop(loaded.name, None)
    if entry is None or entry[0] != loaded.digest or not signature.vouches(entry[1], inputs, loaded.paths):
        return None
    return entry[2]


def _embedder_or_none(loaded: LoadedManifest) -> Any:
    """The manifest's embedder, or None when it cannot be made (validate_inputs says why, after the corpus)."""
    try:
        return make_embedder(loaded.manifest.spec.model.model_dump(mode="json", by_alias=True), loaded.paths,
                             loaded.source)
    except ControllerError:
        return None


def validate_inputs(loaded: LoadedManifest, corpus: Corpus, embedder: Any = None) -> None:
    """Metric names, backend parameters, vectors and golden files of one manifest (``embedder``: the
    manifest's, when the caller has made it already)."""
    spec = loaded.manifest.spec
    _drift_names(loaded)
    if embedder is None:
        embedder = make_embedder(spec.model.model_dump(mode="json", by_alias=True), loaded.paths, loaded.source)
    validate_backend(spec, loaded.source)
    validate = getattr(embedder, "validate", None)
    if validate is not None:
        validate(corpus.ids)
    if spec.checks.golden is not None:
        try:
            golden = load_golden(loaded.paths["qrels"], loaded.paths.get("queries"))
        except InvalidInput as exc:
            raise InvalidInput(exc.reason, file=exc.file or loaded.source,
                               field=exc.field or "spec.checks.golden", value=exc.value) from exc
        _golden_queries_embeddable(loaded, golden, embedder)


def _drift_names(loaded: LoadedManifest) -> None:
    """A misspelled statistic must fail here, not after a version was built and stored."""
    checks = loaded.manifest.spec.checks
    named = [(f"spec.checks.drift[{i}].metric", c.metric) for i, c in enumerate(checks.drift)]
    if checks.corpus_drift is not None:
        named += [(f"spec.checks.corpusDrift.metrics[{i}].metric", m.metric)
                  for i, m in enumerate(checks.corpus_drift.metrics)]
    for fld, metric in named:
        if metric not in DRIFT_REGISTRY:
            raise InvalidInput(f"unknown drift statistic; valid names: {', '.join(sorted(DRIFT_REGISTRY))}",
                               file=loaded.source, field=fld, value=metric)


def _golden_queries_embeddable(loaded: LoadedManifest, golden: GoldenSet, embedder: object) -> None:
    """Golden queries need text (or precomputed query vectors), or the checks fail after the build."""
    available = getattr(embedder, "query_ids", lambda: None)()
    if available is not None:
        if not set(available) & set(golden.query_ids):
            raise InvalidInput(
                f"none of the {len(golden.query_ids)} golden queries has a vector in options.queryVectors",
                file=loaded.source, field="spec.model.options.queryIds")
        return
    if not capabilities(loaded.manifest.spec.model.provider).embeds_text:
        raise InvalidInput("precomputed vectors need options.queryVectors (and queryIds) to embed the golden "
                           "queries", file=loaded.source, field="spec.model.options.queryVectors")
    missing = [q for q in golden.query_ids if q not in golden.query_texts]
    if missing:
        raise InvalidInput(
            f"{len(missing)} of {len(golden.query_ids)} golden queries have no text (first: "
            f"{missing[0][:40]!r}); set spec.checks.golden.queries to a queries.jsonl with their texts",
            file=loaded.source, field="spec.checks.golden.queries")
