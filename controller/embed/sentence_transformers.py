"""`provider: sentence-transformers`: a local model run in this process (extra `[sentence-transformers]`).

`options.model` is a model directory (absolute, `${VARS}` expanded, e.g. a
volume mounted in a pod) or a hub name already in the local Hugging Face
cache. Nothing is downloaded unless `allowDownload: true`: a controller that
fetches weights at reconcile time would build from whatever the hub serves
that day. The model is loaded on first use, so planning (`--dry-run`) never
pays for importing torch.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from controller.embed.base import l2_normalize
from controller.errors import EmbedError, InvalidInput
from controller.manifest.providers import capabilities
from controller.progress import Progress, silent

DEFAULTS: dict[str, Any] = {
    "model": None,          # directory or cached hub name; default: spec.model.name
    "device": "cpu",        # cpu, cuda, cuda:1, mps
    "batchSize": 32,
    "prompts": None,        # {query: "...", document: "..."} prepended by the model's encode()
    "maxSeqLength": None,   # override the model's max_seq_length (tokens kept; the rest is cut)
    "allowDownload": False,
}


class SentenceTransformerEmbedder:
    """Runs a sentence-transformers model on CPU or GPU."""

    capabilities = capabilities("sentence-transformers")

    def __init__(self, dim: int, normalize: bool, options: dict[str, Any], fingerprint: dict[str, Any],
                 model_name: str) -> None:
        self.dim = dim
        self.normalize = normalize
        self.fingerprint = fingerprint
        self.opts = validated_options(options, model_name)
        self._model = None
        self._load_lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"provider sentence-transformers (model {self.opts['model']!r})"

    @property
    def chunk_size(self) -> int:
        return self.opts["batchSize"] * 16

    def embed_documents(self, ids: Sequence[str], texts: Sequence[str],
                        progress: Progress = silent) -> np.ndarray:
        return self._encode(texts, "document", progress)

    def embed_queries(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "query", silent)

    def _encode(self, texts: Sequence[str], kind: str, progress: Progress) -> np.ndarray:
        model = self._loaded()
        prompt = (self.opts["prompts"] or {}).get(kind)
        step = self.opts["batchSize"] * 4
        parts = []
        progress(0, len(texts))
        for start in range(0, len(texts), step):
            chunk = list(texts[start:start + step])
            try:
                parts.append(model.encode(chunk, batch_size=self.opts["batchSize"], prompt=prompt,
                                          convert_to_numpy=True, show_progress_bar=False,
                                          normalize_embeddings=False))
            except (RuntimeError, ValueError) as exc:  # torch errors (out of memory, bad device) land here
                raise EmbedError(f"{self.label}: texts {start}-{start + len(chunk) - 1} failed: {exc}") from exc
            progress(min(start + step, len(texts)), len(texts))
        out = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.dim), np.float32)
        return l2_normalize(out) if self.normalize else out

    def _loaded(self):
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedError(f"{self.label}: {exc}; install the extra: "
                             "pip install 'embedding-index-controller[sentence-transformers]'") from exc
        try:
            model = SentenceTransformer(self.opts["model"], device=self.opts["device"],
                                        local_files_only=not self.opts["allowDownload"])
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedError(f"{self.label} could not be loaded on {self.opts['device']}: {exc}; give a model "
                             "directory or a name already in the local Hugging Face cache") from exc
        if self.opts["maxSeqLength"] is not None:
            model.max_seq_length = self.opts["maxSeqLength"]
        # renamed in sentence-transformers 6; the old name still works on older releases
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        produced = dimension()
        if produced is not None and produced != self.dim:
            raise EmbedError(f"{self.label} produces {produced}-dimensional vectors but spec.model.dim is "
                             f"{self.dim}; set spec.model.dim: {produced}")
        return model


def validated_options(options: dict[str, Any], model_name: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown sentence-transformers option {unknown[0]!r}; valid: {', '.join(DEFAULTS)}",
                           field=f"spec.model.options.{unknown[0]}", value=options[unknown[0]])
    opts = {**DEFAULTS, "model": model_name, **options}
    _require(isinstance(opts["model"], str) and bool(opts["model"]), "model", opts["model"],
             "a model directory or a cached model name")
    opts["model"] = _model_location(opts["model"])
    _require(isinstance(opts["device"], str) and bool(opts["device"]), "device", opts["device"],
             "a torch device such as cpu, cuda or cuda:1")
    _require(isinstance(opts["batchSize"], int) and not isinstance(opts["batchSize"], bool)
             and 1 <= opts["batchSize"] <= 65536, "batchSize", opts["batchSize"], "an integer from 1 to 65536")
    prompts = opts["prompts"]
    if prompts is not None:
        _require(isinstance(prompts, dict) and set(prompts) <= {"query", "document"}
                 and all(isinstance(v, str) for v in prompts.values()), "prompts", prompts,
                 "a mapping {query: 'query: ', document: 'passage: '} (either key may be left out)")
    if opts["maxSeqLength"] is not None:
        _require(isinstance(opts["maxSeqLength"], int) and not isinstance(opts["maxSeqLength"], bool)
                 and opts["maxSeqLength"] > 0, "maxSeqLength", opts["maxSeqLength"], "a positive integer")
    _require(isinstance(opts["allowDownload"], bool), "allowDownload", opts["allowDownload"], "true or false")
    return opts


def _model_location(value: str) -> str:
    """A path must be absolute after ${VAR} expansion: stored versions reload it from any directory."""
    expanded = os.path.expandvars(value)
    if expanded.startswith(("./", "../", "~")):
        raise InvalidInput("a model directory must be an absolute path (or ${VAR}/...): stored versions "
                           "reload the model from other working directories", field="spec.model.options.model",
                           value=value)
    if expanded.startswith("/") and not any((Path(expanded) / f).is_file() for f in ("modules.json", "config.json")):
        raise InvalidInput(f"no sentence-transformers model in {expanded} (no modules.json or config.json)",
                           field="spec.model.options.model", value=value)
    return expanded


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidInput(f"expected {expected}", field=f"spec.model.options.{key}", value=value)


def make(spec: Any, paths: dict[str, Path], manifest: Path | None) -> SentenceTransformerEmbedder:
    """Registry factory. The extra is checked here so a plan already says when it is missing."""
    # options first: a bad option is invalid input (exit 2) whether or not the extra is installed
    validated_options(spec.options, spec.name)
    if importlib.util.find_spec("sentence_transformers") is None:
        raise EmbedError("provider sentence-transformers needs the extra: "
                         "pip install 'embedding-index-controller[sentence-transformers]' "
                         "(install torch first to choose its CPU or CUDA build)")
    return SentenceTransformerEmbedder(spec.dim, spec.normalize, spec.options, spec.fingerprint(), spec.name)
