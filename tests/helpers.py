"""Building small workspaces (manifests + data) for engine and CLI tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart"

V1_OPTIONS = {"wordNgrams": 1, "seed": 1}
V2_OPTIONS = {"wordNgrams": 1, "charNgrams": [3, 4, 5], "seed": 2}
BAD_OPTIONS = {"wordNgrams": 1, "charNgrams": [3, 4, 5], "seed": 3, "buckets": 64}


def workspace(tmp_path: Path, n_docs: int | None = 300) -> Path:
    """A copy of the quickstart data (optionally the first n_docs documents plus every judged one)."""
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    for name in ("queries.jsonl", "qrels.tsv"):
        shutil.copy(QUICKSTART / "data" / name, ws / "data" / name)
    lines = (QUICKSTART / "data" / "corpus.jsonl").read_text().splitlines()
    if n_docs is not None:
        judged = {l.split("\t")[1] for l in (QUICKSTART / "data" / "qrels.tsv").read_text().splitlines()[1:]}
        lines = [l for i, l in enumerate(lines) if i < n_docs or json.loads(l)["id"] in judged]
    (ws / "data" / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return ws


def manifest(version: str = "v1", options: dict | None = None, *, pct: float = 100, name: str = "qs",
             keep: int = 3, gates: list | None = None, model_version: str | None = None,
             factory: str = "Flat", **spec_overrides: Any) -> dict:
    spec: dict[str, Any] = {
        "corpus": {"path": "data/corpus.jsonl", "idField": "id", "textFields": ["title", "text"]},
        "model": {"provider": "hashing", "name": "hashed-ngrams", "version": model_version or version,
                  "dim": 384, "options": options if options is not None else V1_OPTIONS},
        "index": {"version": version, "factory": factory, "metric": "cosine"},
        "rollout": {"percentage": pct},
        "checks": {
            "drift": [{"metric": "psi"}, {"metric": "cosineShift"}],
            "golden": {"queries": "data/queries.jsonl", "qrels": "data/qrels.tsv", "k": 10,
                       "gates": gates if gates is not None else [{"metric": "ndcg@10", "min": 0.45, "maxDrop": 0.05}]},
        },
        "history": {"keep": keep},
    }
    spec.update(spec_overrides)
    return {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": name},
            "spec": spec}


def write_manifest(ws: Path, doc: dict, filename: str = "index.yaml") -> Path:
    path = ws / filename
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its content (and the directory set)."""
    if not root.exists():
        return {}
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
