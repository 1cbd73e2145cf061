"""Reading a JSON Lines corpus into ids, texts and per-document content hashes.

The per-document hashes let the reconciler re-embed only what changed, and
the corpus digest (over ids and hashes, in order) tells whether anything did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from controller.errors import InvalidInput


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    hashes: list[str]
    digest: str
    path: Path

    def __len__(self) -> int:
        return len(self.ids)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def corpus_digest(ids: list[str], hashes: list[str]) -> str:
    h = hashlib.sha256()
    for doc_id, doc_hash in zip(ids, hashes):
        h.update(doc_id.encode("utf-8"))
        h.update(b"\0")
        h.update(doc_hash.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def read_corpus(path: Path, id_field: str, text_fields: list[str], *, manifest: Path | None = None) -> Corpus:
    """Read every document; refuse duplicates, missing ids and an empty corpus."""
    where = manifest or path
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the corpus {path}: {exc.strerror}", file=where,
                           field="spec.corpus.path", value=str(path)) from exc
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            doc = _parse_line(line, path, lineno)
            doc_id = _document_id(doc, id_field, path, lineno)
            if doc_id in seen:
                raise InvalidInput(
                    f"duplicate document id {doc_id!r} at line {lineno} (first at line {seen[doc_id]})",
                    file=path, field=id_field, value=doc_id,
                )
            seen[doc_id] = lineno
            ids.append(doc_id)
            texts.append(_document_text(doc, text_fields))
    if not ids:
        raise InvalidInput("the corpus is empty: no documents to embed", file=where,
                           field="spec.corpus.path", value=str(path))
    hashes = [text_hash(t) for t in texts]
    return Corpus(ids=ids, texts=texts, hashes=hashes, digest=corpus_digest(ids, hashes), path=path)


def _parse_line(line: str, path: Path, lineno: int) -> dict:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"line {lineno} is not valid JSON: {exc.msg}", file=path,
                           value=line.strip()[:80]) from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"line {lineno} is not a JSON object", file=path, value=line.strip()[:80])
    return doc


def _document_id(doc: dict, id_field: str, path: Path, lineno: int) -> str:
    value = doc.get(id_field)
    if value is None or value == "":
        raise InvalidInput(
            f"line {lineno} has no id (set spec.corpus.idField to the field that holds it)",
            file=path, field=id_field, value=value,
        )
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidInput(f"line {lineno}: document id must be a string or integer",
                           file=path, field=id_field, value=value)
    return str(value)


def _document_text(doc: dict, text_fields: list[str]) -> str:
    parts = [doc.get(f) for f in text_fields]
    return " ".join(str(p) for p in parts if p not in (None, ""))
