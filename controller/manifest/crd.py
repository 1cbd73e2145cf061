"""The EmbeddingIndex CustomResourceDefinition, generated from the pydantic models.

Pure: no Kubernetes client, no file system. The manifest models stay the single
source of truth; this module only translates their JSON Schema (draft 2020-12,
as pydantic emits it) into the OpenAPI v3 subset Kubernetes accepts as a
*structural* schema:

- every ``$ref`` is inlined (Kubernetes rejects ``$ref`` in a CRD);
- ``anyOf [X, null]`` (an optional field) becomes X: Kubernetes drops nulls of
  non-nullable fields before validation, which matches "field absent";
- ``additionalProperties: false`` is removed: it may not be combined with
  ``properties`` and the API server prunes unknown fields anyway (pydantic still
  refuses them in the CLI and in the operator);
- ``const`` becomes a one-value ``enum``; numeric ``exclusiveMinimum`` becomes
  ``minimum`` + ``exclusiveMinimum: true`` (OpenAPI v3.0 form);
- free-form maps of ``Any`` (``model.options``) keep unknown fields;
- a union of a number and a string (``drift[].max: 0.2 | "auto"``) has no
  structural type, so it keeps unknown fields and the controller validates it.

Rules that belong in the API are ``x-kubernetes-validations`` (CEL). The
immutability of a built ``index.version`` is NOT one of them: whether a label
was built with another model is known only to the store, and a CEL transition
rule on ``oldSelf`` would also forbid fixing a model that never built. The
controller enforces it (phase Stalled, reason IndexVersionImmutable).
"""

from __future__ import annotations

import copy
from typing import Any

from controller.manifest.models import API_VERSION, KIND, IndexSpecRoot

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "embeddingindexes"
SINGULAR = "embeddingindex"
SHORT_NAMES = ["eidx"]
CATEGORIES = ["indexops"]
CRD_NAME = f"{PLURAL}.{GROUP}"

# Keys of a draft 2020-12 schema that apiextensions.k8s.io/v1 JSONSchemaProps does not know.
_DROPPED = {"$defs", "additionalProperties", "title", "const", "discriminator"}

# CEL rules keyed by the JSON path (dotted, `[]` for list items) of the node they belong to.
# rollout.percentage 0..100 needs none: minimum/maximum from the model already say it.
_VALIDATIONS: dict[str, list[dict[str, str]]] = {
    "spec.checks.golden.gates[]": [{
        "rule": "has(self.min) || has(self.maxDrop)",
        "message": "a golden gate needs min, maxDrop or both",
        "reason": "FieldValueRequired",
    }],
}

_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Healthy, Progressing, RolledBack, Stalled, Suspended, Paused or Pending."},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.version",
     "description": "Version the alias serves."},
    {"name": "Candidate", "type": "string", "jsonPath": ".status.candidate.version",
     "description": "Version receiving a share of the queries."},
    {"name": "Weight", "type": "number", "jsonPath": ".status.weight",
     "description": "Percentage of queries the candidate serves."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `.spec`."""
    raw = IndexSpecRoot.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    return _structural(_inline(raw, defs), "spec")


def status_schema() -> dict[str, Any]:
    """Status is computed by the controller; the fields the columns and tools read are typed."""
    ref = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
           "properties": {"version": {"type": "string"}, "label": {"type": "string"}}}
    return {
        "type": "object",
        "description": "Observed state, written by the controller once per reconcile cycle.",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "phase": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "stable": ref,
            "candidate": ref,
            "weight": {"type": "number"},
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "observedGeneration": {"type": "integer", "format": "int64"},
                    },
                },
            },
        },
    }


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "embedding-index-controller"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": SHORT_NAMES, "categories": CATEGORIES},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": _PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "An EmbeddingIndex: desired embedding model, index version and rollout.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": status_schema(),
                    },
                }},
            }],
        },
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every {"$ref": "#/$defs/X"} by a copy of X (the models have no recursion)."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**copy.deepcopy(target), **extra}, defs)
    return {k: _inline(v, defs) for k, v in node.items()}


def _structural(node: dict[str, Any], path: str) -> dict[str, Any]:
    """Translate one inlined node (and its children) into a structural schema node."""
    node = dict(node)
    description = node.get("description")
    if "anyOf" in node:
        node = _collapse_any_of(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key == "anyOf":
            continue
        if key == "default" and value is None:
            continue  # a null default is "absent"; non-nullable fields may not default to null
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
            continue
        if key == "properties":
            out[key] = {name: _structural(child, f"{path}.{name}") for name, child in value.items()}
            continue
        if key == "items":
            out[key] = _structural(value, f"{path}[]")
            continue
        out[key] = value
    if "const" in node:
        out["enum"] = [node["const"]]
    if out.get("type") == "object" and "properties" not in out:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") in ("string", "number", "integer", "boolean"):
            out["additionalProperties"] = {"type": extra["type"]}
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True  # free-form, e.g. model.options
    elif out.get("type") == "object" and node.get("additionalProperties") is True:
        # declared fields plus free ones (index.backend: type + that backend's parameters)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if description and "description" not in out:
        out["description"] = description
    if path in _VALIDATIONS:
        out["x-kubernetes-validations"] = _VALIDATIONS[path]
    return out


def _collapse_any_of(node: dict[str, Any]) -> dict[str, Any]:
    """Optional X -> X; a union of different scalar types -> an untyped field that keeps its value."""
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(options) == 1:
        return {**options[0], **rest}
    if sorted(o.get("type", "") for o in options) == ["integer", "string"]:  # e.g. reembed.rebuildAfter
        return {**rest, "x-kubernetes-int-or-string": True}
    return {**rest, "x-kubernetes-preserve-unknown-fields": True}


#: First line of every generated CRD file, so nobody edits a copy by hand.
HEADER = "# Generated by `controller crd` from controller/manifest/models.py; do not edit by hand.\n"


def render_yaml() -> str:
    """The CRD as YAML text: byte-stable, so the committed copies (chart, manifests/) can be compared in tests."""
    import yaml

    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)
