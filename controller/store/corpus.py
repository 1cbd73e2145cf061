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
from controller.inputs import iter_lines, snippet


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
    """Read every document; refuse duplicates, missing ids, missing or empty text and an empty corpus.

    A FIFO, device or directory in place of the corpus and invalid UTF-8 are refused by
    controller.inputs, naming the line and byte offset.
    """
    where = manifest or path
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in iter_lines(path, file=where if manifest else None, field="spec.corpus.path",
                                   what="corpus"):
        if not line.strip():
            continue
        doc = _parse_line(line, path, lineno)
        doc_id = _document_id(doc, id_field, path, lineno)
        if doc_id in seen:
            raise InvalidInput(
                f"duplicate document id {snippet(doc_id)!r} at line {lineno} (first at line {seen[doc_id]})",
                file=path, field=id_field,
            )
        seen[doc_id] = lineno
        ids.append(doc_id)
        texts.append(_document_text(doc, text_fields, path, lineno))
    if not ids:
        raise InvalidInput("the corpus is empty: no documents to embed", file=where,
                           field="spec.corpus.path", value=str(path))
    hashes = [text_hash(t) for t in texts]
    return Corpus(ids=ids, texts=texts, hashes=hashes, digest=corpus_digest(ids, hashes), path=path)


def _parse_line(line: str, path: Path, lineno: int) -> dict:
    # no echo of the line: the message names line and column, never the file's content
    try:
        doc = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise InvalidInput(f"line {lineno} is not valid JSON: {why}", file=path) from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"line {lineno} is not a JSON object (got a JSON {type(doc).__name__})", file=path)
    return doc


def _document_id(doc: dict, id_field: str, path: Path, lineno: int) -> str:
    value = doc.get(id_field)
    if value is None or value == "":
        raise InvalidInput(
            f"line {lineno} has no id (set spec.corpus.idField to the field that holds it)",
            file=path, field=id_field,
        )
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidInput(f"line {lineno}: document id must be a string or integer, got a JSON "
                           f"{type(value).__name__}", file=path, field=id_field)
    return str(value)


def _document_text(doc: dict, text_fields: list[str], path: Path, lineno: int) -> str:
    """The text to embed; a record with none of the text fields set would be embedded as ''."""
    parts = [doc.get(f) for f in text_fields]
    for fld, part in zip(text_fields, parts):
        if part is not None and not isinstance(part, (str, int, float)) or isinstance(part, bool):
            raise InvalidInput(f"line {lineno}: text field must be a string, got a JSON {type(part).__name__}",
                               file=path, field=fld)
    text = " ".join(str(p) for p in parts if p not in (None, ""))
    if not text.strip():
        raise InvalidInput(
            f"line {lineno} has no text: every record needs a non-empty "
            f"{' or '.join(text_fields)} (spec.corpus.textFields)", file=path, field=text_fields[0])
    return text
