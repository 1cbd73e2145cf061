"""Reviewed plans: save what a dry run would do, apply exactly that later or refuse.

`controller reconcile PATH --dry-run --out plan.json` writes, per index, the
plan, the manifest (its digest and full spec, plus digests of the files it
points to) and a summary of the observed state (routing, versions with their
verdicts, corpus digest). `controller apply plan.json` loads the same
manifest files and observes the store again; if any of that differs it
raises StalePlan naming what changed, and applies nothing (all indexes are
checked before the first is touched). Like Terraform, a plan is a promise
about inputs: the same inputs give the same plan because core.plan is pure.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from controller.core.types import comparable
from controller.engine.reconcile import Hooks, IndexResult, Observation, observe, plan_index, reconcile_index, utc_now
from controller.errors import InvalidInput, StalePlan
from controller.inputs import read_text
from controller.manifest.load import LoadedManifest, load_manifests
from controller.store import atomic
from controller.store.fs import Store

FORMAT = "indexops.dev/plan/v1"


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def manifest_summary(loaded: LoadedManifest) -> dict[str, Any]:
    """The manifest as the plan saw it: the spec and the content of every file it names.

    The corpus is left to the observed corpus digest; golden files and
    precomputed vectors are hashed here because the checks read them.
    """
    files = {key: _file_digest(p) for key, p in sorted(loaded.paths.items()) if key != "corpus"}
    return {"source": str(loaded.source), "digest": loaded.digest, "files": files,
            "spec": loaded.manifest.model_dump(mode="json", by_alias=True)}


def observed_summary(obs: Observation) -> dict[str, Any]:
    o = obs.observed
    r = o.routing
    return {"routing": {"stable": r.stable, "candidate": r.candidate, "weight": r.weight, "held": list(r.held)},
            "versions": [{"id": v.id, "verdict": v.verdict} for v in o.versions],
            "corpusDigest": o.corpus_digest}


def write_plan_file(results: Iterable[IndexResult], loaded_list: Iterable[LoadedManifest], store: Store,
                    path: str | Path, data_roots: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Save the dry-run plans of `results` with digests of their inputs; returns the document."""
    by_name = {m.name: m for m in loaded_list}
    entries = []
    for result in results:
        loaded = by_name[result.name]
        observed = observed_summary(observe(loaded, store))
        manifest = manifest_summary(loaded)
        entries.append({"name": result.name, "manifest": manifest, "observed": observed,
                        "digest": _sha([manifest, observed]), "plan": result.plan.to_dict()})
    doc = {"format": FORMAT, "createdAt": utc_now(), "store": str(store.root.resolve()),
           "dataRoots": [str(Path(r).resolve()) for r in data_roots], "indexes": entries,
           "changes": any(e["plan"]["changes"] for e in entries)}
    atomic.write_json(Path(path), doc)
    return doc


def read_plan_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        if not path.exists():
            raise FileNotFoundError(path)
        doc = json.loads(read_text(path, what="plan file"))  # no FIFO or device; UTF-8 errors located
    except FileNotFoundError as exc:
        raise InvalidInput("no such plan file; write one with `controller reconcile PATH --dry-run --out "
                           f"{path}`", file=path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"not a readable plan file: {exc}", file=path) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("indexes"), list):
        raise InvalidInput(f"not a plan file (expected format {FORMAT!r})", file=path, field="format",
                           value=doc.get("format") if isinstance(doc, dict) else None)
    check_structure(doc, path)
    return doc


# (field, type, what) checked in every index entry before anything reads it
_ENTRY_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("name", str, "a string"), ("manifest", dict, "an object"), ("manifest.source", str, "a string"),
    ("observed", dict, "an object"), ("plan", dict, "an object"), ("plan.changes", bool, "true or false"),
)


_MISSING = object()


def _bad(path: Path, field: str, what: str, value: Any) -> InvalidInput:
    got = "missing" if value is _MISSING else f"got {json.dumps(value, default=str)[:80]}"
    return InvalidInput(f"must be {what} ({got}); write a new plan with `controller reconcile PATH --dry-run "
                        "--out FILE`", file=path, field=field)


def _lookup(entry: dict[str, Any], dotted: str) -> Any:
    value: Any = entry
    for key in dotted.split("."):
        value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
    return value


def check_structure(doc: dict[str, Any], path: Path) -> None:
    """Every field apply reads, with its type, so a hand-edited or truncated plan is one line, not a traceback."""
    if not isinstance(doc.get("store", _MISSING), str) or not doc["store"]:
        raise _bad(path, "store", "a non-empty string", doc.get("store", _MISSING))
    roots = doc.get("dataRoots") or []
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise _bad(path, "dataRoots", "a list of strings", roots)
    for i, entry in enumerate(doc["indexes"]):
        if not isinstance(entry, dict):
            raise _bad(path, f"indexes[{i}]", "an object", entry)
        for field, kind, what in _ENTRY_FIELDS:
            value = _lookup(entry, field)
            if not isinstance(value, kind):
                raise _bad(path, f"indexes[{i}].{field}", what, value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _differences(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    a, b = _flatten(old), _flatten(new)
    changed = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(changed[:limit]) + more


def _readable(summary: dict[str, Any]) -> dict[str, Any]:
    """Manifest fields at their YAML paths (spec.rollout.percentage), files as files.<key>;
    the digest is left out because it only restates the spec."""
    return {"source": summary.get("source"), "files": summary.get("files"), **(summary.get("spec") or {})}


def _load_current(entry: dict[str, Any], roots: list[str], plan_path: Path) -> LoadedManifest:
    source = Path(entry["manifest"]["source"])
    if not source.is_file():
        raise StalePlan(f"{plan_path}: the manifest {source} of index {entry['name']!r} no longer exists; "
                        "make a new plan")
    try:
        found = [m for m in load_manifests(source, roots) if m.name == entry["name"]]
    except InvalidInput as exc:
        # not "the manifest changed": a moved data file or a data root missing here fail the same way
        raise StalePlan(f"{plan_path}: the manifest of index {entry['name']!r} no longer loads as it did "
                        f"when the plan was made: {exc}") from exc
    if not found:
        raise StalePlan(f"{plan_path}: {source} no longer defines index {entry['name']!r}; make a new plan")
    return found[0]


def check_entry(entry: dict[str, Any], store: Store, roots: list[str], plan_path: Path
                ) -> tuple[LoadedManifest, Observation]:
    """Raise StalePlan naming what changed, or return the inputs the plan was made from."""
    name = entry["name"]
    loaded = _load_current(entry, roots, plan_path)
    manifest = manifest_summary(loaded)
    if manifest != entry["manifest"]:
        what = _differences(_readable(entry["manifest"]), _readable(manifest))
        raise StalePlan(f"{plan_path}: the manifest of index {name!r} ({loaded.source}) changed since the plan "
                        f"was made: {what}. Review a new plan (`controller reconcile --dry-run --out`)")
    obs = observe(loaded, store)
    observed = observed_summary(obs)
    if observed != entry["observed"]:
        what = _differences(entry["observed"], observed)
        raise StalePlan(f"{plan_path}: the state of index {name!r} in {store.root} changed since the plan was "
                        f"made: {what}. Review a new plan (`controller reconcile --dry-run --out`)")
    now = plan_index(loaded, store, obs)[1].to_dict()  # with the step inputs and the clock, as reconcile plans
    if comparable(now) != comparable(entry["plan"]):  # same inputs, pure planner: only a controller upgrade gets here
        raise StalePlan(f"{plan_path}: planning index {name!r} again gives a different plan "
                        f"({_differences(entry['plan'], now)}); make a new plan")
    return loaded, obs


def apply_plan_file(path: str | Path, store: Store | None = None, hooks: Hooks | None = None,
                    data_roots: Iterable[str | Path] | None = None) -> list[IndexResult]:
    """Apply a saved plan exactly, or raise StalePlan before touching anything.

    ``data_roots`` replaces the data roots recorded in the plan (the data may live elsewhere here)."""
    path = Path(path)
    doc = read_plan_file(path)
    store = store or Store(Path(doc["store"]))
    roots = [str(r) for r in data_roots] if data_roots else list(doc.get("dataRoots") or [])
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        where = "passed with --data-root" if data_roots else f"recorded in {path}"
        raise InvalidInput(f"data root {missing[0]} ({where}) does not exist here; pass --data-root DIR "
                           "naming where the data lives", field="--data-root", value=missing[0])
    checked = [check_entry(entry, store, roots, path) for entry in doc["indexes"]]
    # reconcile_index re-plans under the store lock and refuses if that differs from the reviewed plan.
    # A plan without actions goes through it too: it writes the status reconcile would (Stalled when blocked).
    results = []
    for (loaded, _obs), entry in zip(checked, doc["indexes"]):
        try:
            result = reconcile_index(loaded, store, hooks=hooks, expect=entry["plan"])
        except StalePlan as exc:
            raise StalePlan(f"{path}: {exc}") from exc
        results.append(result)
    return results

