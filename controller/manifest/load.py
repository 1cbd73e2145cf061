"""Loading manifests from a file, a multi-document file or a directory.

Parsing and validation errors become one-line InvalidInput errors that name the
file, the field and the bad value. Paths inside a manifest resolve relative to
the manifest file and may not escape its directory, unless they fall under a
data root the operator allowed explicitly (--data-root or CONTROLLER_DATA_ROOTS).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from controller.errors import InvalidInput, already_said, shown_value
from controller.inputs import check_path_text, field_path, read_text, snippet
from controller.manifest.models import API_VERSION, KIND, EmbeddingIndex
from controller.manifest.providers import capabilities
from controller.manifest.yamlsafe import MAX_MANIFEST_BYTES, load_all

DATA_ROOTS_ENV = "CONTROLLER_DATA_ROOTS"
MANIFEST_SUFFIXES = (".yaml", ".yml")
#: kustomize's own file sits next to manifests in GitOps repos; it is skipped by name, never by kind.
SKIPPED_FILES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})


@dataclass(frozen=True)
class LoadedManifest:
    """A validated manifest with its origin and every path resolved."""

    manifest: EmbeddingIndex
    source: Path
    digest: str
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    def path(self, key: str) -> Path | None:
        return self.paths.get(key)


def data_roots_from_env(extra: Iterable[str | Path] = ()) -> list[Path]:
    roots = [Path(p) for p in extra]
    env = os.environ.get(DATA_ROOTS_ENV, "")
    roots += [Path(p) for p in env.split(os.pathsep) if p]
    return [r.resolve() for r in roots]


def manifest_files(path: Path) -> list[Path]:
    """The manifest files at `path`: the file itself, or *.yaml/*.yml in a directory (sorted).

    In a directory every *.yaml/*.yml file except kustomization.yaml is read, and must hold
    only EmbeddingIndex documents (anything that is not a regular file is refused when read).
    Files and directories starting with '.' below `path` (.github/, .git/, editor drafts) are not
    manifests and are skipped.
    """
    path = check_path_text(path)
    if path.is_dir():
        files = files_in(path)
        if not files:
            raise InvalidInput("no *.yaml or *.yml manifest in this directory", file=path)
        return files
    if not path.exists():
        raise InvalidInput("no such file or directory", file=path)
    return [path]


def files_in(directory: Path) -> list[Path]:
    """The manifest files in a directory, sorted; none is not an error here (a GitOps source emptied by
    a commit is an empty set)."""
    return sorted(p for p in directory.rglob("*")
                  if p.suffix in MANIFEST_SUFFIXES and p.name not in SKIPPED_FILES and not p.is_dir()
                  and not is_hidden(p, directory))


def is_hidden(file: Path, directory: Path) -> bool:
    """Whether a part of `file` below `directory` starts with '.' (the directory itself may be hidden)."""
    return any(part.startswith(".") for part in file.relative_to(directory).parts)


def load_manifests(path: str | Path, data_roots: Iterable[str | Path] = ()) -> list[LoadedManifest]:
    """Load and validate every EmbeddingIndex at `path`; names must be unique."""
    roots = data_roots_from_env(data_roots)
    loaded: list[LoadedManifest] = []
    seen: dict[str, Path] = {}
    for file in manifest_files(Path(path)):
        for doc in _yaml_documents(file):
            _require_kind(doc, file)
            item = validate_document(doc, file, roots)
            if item.name in seen:
                raise InvalidInput(
                    f"duplicate index name {item.name!r}, already defined in {seen[item.name]}",
                    file=file, field="metadata.name", value=item.name,
                )
            seen[item.name] = file
            loaded.append(item)
    if not loaded:
        raise InvalidInput(f"no {KIND} ({API_VERSION}) manifest found", file=path)
    return loaded


def _yaml_documents(file: Path) -> list[Any]:
    text = read_text(file, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    try:
        return load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"unreadable YAML{where}: {problem}", file=file) from exc


def _require_kind(doc: Any, file: Path) -> None:
    """Another kind is an error, not a skip: a typo in `kind` must not silently drop an index."""
    if not isinstance(doc, dict) or "kind" not in doc:
        return  # validation reports the shape or the missing kind
    kind = doc["kind"]
    if kind != KIND:
        shown = snippet(kind) if isinstance(kind, str) else type(kind).__name__
        raise InvalidInput(
            f"unknown kind {shown!r}: only {KIND} ({API_VERSION}) documents belong in manifest files "
            "(kustomization.yaml is skipped by name)", file=file, field="kind")


def validate_document(doc: Any, file: Path, roots: list[Path]) -> LoadedManifest:
    """Validate one parsed document as if it were read from `file` (the operator passes a pseudo path)."""
    if not isinstance(doc, dict):
        raise InvalidInput(
            f"expected a mapping (an {KIND} manifest), got {type(doc).__name__}", file=file, value=doc
        )
    try:
        manifest = EmbeddingIndex.model_validate(doc)
    except ValidationError as exc:
        raise _one_line(exc, file, doc) from exc
    paths = _resolve_paths(manifest, file, roots)
    digest = hashlib.sha256(
        manifest.model_dump_json(by_alias=True).encode()
    ).hexdigest()[:12]
    return LoadedManifest(manifest=manifest, source=file.resolve(), digest=digest, paths=paths)


def _one_line(exc: ValidationError, file: Path, doc: dict) -> InvalidInput:
    """The first validation error, as file + dotted field + bad value."""
    err = exc.errors()[0]
    loc = field_path(err["loc"])
    value = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")  # pydantic's wording for our own validators' ValueError
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check its spelling; `controller schema` lists valid fields)"
    elif err["type"] == "missing":
        msg = "required field is missing"
        value = None
    said = value is None or isinstance(value, dict) or already_said(msg, value)
    shown = "" if said else f" (got {shown_value(value)})"
    more = f"; {exc.error_count() - 1} more error(s)" if exc.error_count() > 1 else ""
    return InvalidInput(f"{msg}{shown}{more}", file=file, field=loc, value=value)


def _resolve_paths(manifest: EmbeddingIndex, file: Path, roots: list[Path]) -> dict[str, Path]:
    spec = manifest.spec
    wanted: dict[str, tuple[str, Any]] = {"corpus": ("spec.corpus.path", spec.corpus.path)}
    for key in capabilities(spec.model.provider).file_options:
        if key in spec.model.options:
            wanted[key] = (f"spec.model.options.{key}", spec.model.options[key])
    if spec.checks.golden is not None:
        wanted["qrels"] = ("spec.checks.golden.qrels", spec.checks.golden.qrels)
        if spec.checks.golden.queries:
            wanted["queries"] = ("spec.checks.golden.queries", spec.checks.golden.queries)
    return {key: resolve_path(value, file, fld, roots) for key, (fld, value) in wanted.items()}


def resolve_path(value: Any, file: Path, field_name: str, roots: list[Path]) -> Path:
    """Resolve `value` relative to the manifest; refuse escapes outside allowed roots."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("expected a non-empty path string", file=file, field=field_name, value=value)
    check_path_text(value, file=file, field=field_name)
    base = file.resolve().parent
    resolved = (base / value).resolve()
    allowed = [base, *roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise InvalidInput(
            f"path {value!r} escapes the manifest directory {base}; allow its location with "
            f"--data-root or {DATA_ROOTS_ENV}",
            file=file, field=field_name, value=value,
        )
    if not resolved.exists():
        raise InvalidInput(f"file {value!r} not found (looked at {resolved})",
                           file=file, field=field_name, value=value)
    return resolved
