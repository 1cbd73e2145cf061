"""A Markdown table of every manifest field, generated from the pydantic models.

The README embeds it between markers and a test keeps the two identical, so
the manifest reference cannot drift from the code.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from controller.manifest.models import EmbeddingIndex

BEGIN = "<!-- manifest-reference:begin -->"
END = "<!-- manifest-reference:end -->"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
        for inner in get_args(c):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{json.dumps(value)}`"
    if info.default is PydanticUndefined or info.default is None:
        return "-"
    return f"`{json.dumps(info.default)}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}{key}"
        nested = _model_of(info.annotation)
        desc = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{path}` | {_default(info)} | {desc} |")
        if nested is not None:
            suffix = "[]." if "list" in str(info.annotation) else "."
            rows.extend(_rows(nested, path + suffix))
    return rows


def markdown_reference() -> str:
    header = ["| field | default | meaning |", "|---|---|---|"]
    return "\n".join(header + _rows(EmbeddingIndex, ""))
