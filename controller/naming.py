"""One key style for everything a user reads: camelCase, as in Kubernetes objects."""

from __future__ import annotations

from typing import Any


def camel(key: str) -> str:
    """snake_case -> camelCase (keys already in camelCase pass through)."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """A dataclass's asdict() with camelCase keys (one level: nested values keep their own to_dict)."""
    return {camel(k): v for k, v in mapping.items()}
