"""Embedders behind one Protocol, made from a manifest's model section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.embed.base import Embedder, fingerprint_key
from controller.embed.hashing import HashingEmbedder
from controller.embed.precomputed import PrecomputedEmbedder
from controller.errors import InvalidInput

__all__ = ["Embedder", "make_embedder", "fingerprint_key"]


def make_embedder(model: dict[str, Any], paths: dict[str, Path], manifest: Path | None = None) -> Embedder:
    """Build the embedder a model section (as dumped JSON, camelCase) asks for.

    `paths` holds resolved file options (precomputed vectors); a stored version
    passes the copies kept in its own directory.
    """
    from controller.manifest.models import ModelSpec

    spec = ModelSpec.model_validate(model)
    fingerprint = spec.fingerprint()
    if spec.provider == "hashing":
        try:
            return HashingEmbedder(spec.dim, spec.normalize, spec.options, fingerprint)
        except InvalidInput as exc:
            raise InvalidInput(exc.reason, file=manifest, field=exc.field, value=exc.value) from exc
    if spec.provider == "precomputed":
        unknown = sorted(set(spec.options) - {"vectors", "ids", "queryVectors", "queryIds"})
        if unknown:
            raise InvalidInput(f"unknown precomputed option {unknown[0]!r}; valid: vectors, ids, "
                               "queryVectors, queryIds", file=manifest,
                               field=f"spec.model.options.{unknown[0]}", value=spec.options[unknown[0]])
        return PrecomputedEmbedder(spec.dim, spec.normalize, paths, fingerprint, manifest)
    raise InvalidInput(
        f"provider {spec.provider!r} is reserved but not implemented in this release; "
        "use hashing or precomputed (vectors made by your own pipeline)",
        file=manifest, field="spec.model.provider", value=spec.provider)
