"""Embedders behind one Protocol, made from a manifest's model section.

Dispatch is a registry (provider -> factory), never an if-chain on provider
names; what a provider can do is in controller.manifest.providers.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from controller.embed.base import Embedder, fingerprint_key
from controller.embed.hashing import HashingEmbedder
from controller.embed.precomputed import KNOWN_OPTIONS, PrecomputedEmbedder
from controller.errors import InvalidInput
from controller.manifest.providers import Capabilities, capabilities

__all__ = ["Embedder", "Capabilities", "REGISTRY", "capabilities", "make_embedder", "fingerprint_key"]

Factory = Callable[[Any, dict[str, Path], "Path | None"], Embedder]


def _hashing(spec: Any, paths: dict[str, Path], manifest: Path | None) -> Embedder:
    try:
        return HashingEmbedder(spec.dim, spec.normalize, spec.options, spec.fingerprint())
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, file=manifest, field=exc.field, value=exc.value) from exc


def _precomputed(spec: Any, paths: dict[str, Path], manifest: Path | None) -> Embedder:
    unknown = sorted(set(spec.options) - KNOWN_OPTIONS)
    if unknown:
        raise InvalidInput(f"unknown precomputed option {unknown[0]!r}; valid: {', '.join(sorted(KNOWN_OPTIONS))}",
                           file=manifest, field=f"spec.model.options.{unknown[0]}", value=spec.options[unknown[0]])
    return PrecomputedEmbedder(spec.dim, spec.normalize, paths, spec.fingerprint(), manifest)


def _lazy(module: str) -> Factory:
    """A factory in a module imported on first use: its dependencies may be an extra (torch)."""
    def factory(spec: Any, paths: dict[str, Path], manifest: Path | None) -> Embedder:
        try:
            return importlib.import_module(module).make(spec, paths, manifest)
        except InvalidInput as exc:
            if exc.file is not None:
                raise
            raise InvalidInput(exc.reason, file=manifest, field=exc.field, value=exc.value) from exc
    return factory


#: provider -> factory; a provider with capabilities but no factory is reserved, not implemented
REGISTRY: dict[str, Factory] = {
    "hashing": _hashing,
    "precomputed": _precomputed,
    "http": _lazy("controller.embed.http"),
    "sentence-transformers": _lazy("controller.embed.sentence_transformers"),
}


def make_embedder(model: dict[str, Any], paths: dict[str, Path], manifest: Path | None = None) -> Embedder:
    """Build the embedder a model section (as dumped JSON, camelCase) asks for.

    `paths` holds resolved file options (precomputed vectors); a stored version
    passes the copies kept in its own directory.
    """
    from controller.manifest.models import ModelSpec

    spec = ModelSpec.model_validate(model)
    factory = REGISTRY.get(spec.provider)
    if factory is None:
        raise InvalidInput(
            f"provider {spec.provider!r} is reserved but not implemented in this release; "
            f"use {' or '.join(sorted(REGISTRY))}",
            file=manifest, field="spec.model.provider", value=spec.provider)
    return factory(spec, paths, manifest)
