"""From an EmbeddingIndex custom resource to the LoadedManifest the engine reconciles.

A custom resource has no file, but the engine resolves corpus and golden paths
relative to a manifest file. The operator therefore pretends the resource lives
in a pseudo manifest file at the top of its data directory (--data-dir): paths
in the resource resolve against that directory with exactly the rules of
`manifest.load` (no escape outside it unless the location is an allowed data root).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

from controller.errors import InvalidInput
from controller.manifest import load
from controller.manifest.load import LoadedManifest, data_roots_from_env
from controller.store.fs import Store

ON_DELETE_ANNOTATION = "indexops.dev/on-delete"
ON_DELETE_CHOICES = ("retain", "delete")


def plain(value: Any) -> Any:
    """Deep copy of a kopf body view into plain dicts and lists (pydantic and JSON want those)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def resource_ref(namespace: str | None, name: str) -> str:
    return f"EmbeddingIndex {namespace}/{name}" if namespace else f"EmbeddingIndex {name}"


def pseudo_manifest_path(data_dir: Path, namespace: str | None, name: str) -> Path:
    """Where the resource 'lives' for path resolution: directly inside the data directory."""
    return Path(data_dir).resolve() / f".{namespace or 'cluster'}.{name}.embeddingindex.yaml"


def manifest_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as the CLI would read it from a file.

    Only name and namespace are kept from metadata: labels, annotations and the
    bookkeeping kopf writes there do not describe the desired state, and the
    manifest digest (recorded with every routing change) must not move with them.
    """
    meta = body.get("metadata", {})
    doc: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": meta.get("name")},
        "spec": plain(body.get("spec") or {}),
    }
    if meta.get("namespace"):
        doc["metadata"]["namespace"] = meta["namespace"]
    return doc


def loaded_from_body(body: Mapping[str, Any], data_dir: Path,
                     data_roots: Iterable[str | Path] = ()) -> LoadedManifest:
    """Validate the resource with the manifest models and resolve its paths against `data_dir`.

    Raises InvalidInput naming the resource (not the pseudo file), the field and the value.
    """
    meta = body.get("metadata", {})
    name, namespace = meta.get("name", ""), meta.get("namespace")
    pseudo = pseudo_manifest_path(data_dir, namespace, name)
    try:
        return load.validate_document(manifest_document(body), pseudo, data_roots_from_env(data_roots))
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, file=resource_ref(namespace, name), field=exc.field,
                           value=exc.value) from exc


def on_delete_policy(body: Mapping[str, Any], default: str) -> str:
    """retain (keep built versions in the store) or delete: spec.onDelete, else the annotation, else default."""
    meta = body.get("metadata", {})
    spec_value = (body.get("spec") or {}).get("onDelete")
    field = "spec.onDelete" if spec_value is not None else f"metadata.annotations[{ON_DELETE_ANNOTATION}]"
    value = spec_value if spec_value is not None else (meta.get("annotations") or {}).get(ON_DELETE_ANNOTATION, default)
    if value not in ON_DELETE_CHOICES:
        raise InvalidInput(f"expected one of {', '.join(ON_DELETE_CHOICES)}, got {value!r}",
                           file=resource_ref(meta.get("namespace"), meta.get("name", "")),
                           field=field, value=value)
    return value


def store_for(root: Path, namespace: str | None) -> Store:
    """One store per namespace: index names are unique only within a namespace."""
    return Store(Path(root) / (namespace or "_cluster"))
