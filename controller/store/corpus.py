"""Reading a JSON Lines corpus into ids, texts and per-document content hashes.

The per-document hashes let the reconciler re-embed only what changed, and
the corpus digest (over ids and hashes, in order) tells whether anything did.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from controller.errors import InvalidInput
from controller.hashing import small_sha256
from controller.inputs import iter_lines, open_regular, snippet

try:  # a C JSON parser that takes the line's bytes as they are (UTF-8 checked); ~4x json.loads
    from orjson import loads as _loads_bytes
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a broken install working
    def _loads_bytes(raw: bytes) -> Any:
        return json.loads(raw.decode("utf-8"))


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    hashes: list[str]
    digest: str
    path: Path
    # sha256 of the file's bytes (as store/signature.py's content), taken from the very bytes that were
    # parsed, or before parsing began; None unless asked for
    content: str | None = None
    # each document's spec.reembed.priorityField (missing: 0), read with the rest; None unless asked for
    priorities: list[float] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def text_hash(text: str) -> str:
    return small_sha256(text.encode("utf-8")).hexdigest()[:16]


def corpus_digest(ids: list[str], hashes: list[str]) -> str:
    """sha256 over "id\\0hash\\n" per document, in order (one update of the joined bytes: the same digest)."""
    if not ids:
        return hashlib.sha256(b"").hexdigest()[:16]
    joined = "\n".join(map("\0".join, zip(ids, hashes))) + "\n"
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def read_corpus(path: Path, id_field: str, text_fields: list[str], *, manifest: Path | None = None,
                content: bool = False, priority_field: str | None = None) -> Corpus:
    """Read every document; refuse duplicates, missing ids, missing or empty text and an empty corpus.

    A FIFO, device or directory in place of the corpus and invalid UTF-8 are refused by
    controller.inputs, naming the line and byte offset. With ``content``, the Corpus carries the
    sha256 of the bytes it was read from (a later edit of the file can only mismatch it). With
    ``priority_field``, it carries each document's value of that field (missing: 0), and a value
    that is not a finite number is refused, naming its line.
    """
    where = manifest or path
    digest = hashlib.sha256() if content else None
    fields = _Fields(id_field, text_fields, priority_field)
    try:
        ids, texts, priorities = _read_blocks(path, fields, manifest, digest)
    except _Irregular:
        if content:  # the careful reader reads the file again: hash it first, as it is now
            digest = hashlib.sha256()
            with open_regular(path, file=manifest, field="spec.corpus.path", what="corpus") as handle:
                hashlib.file_digest(handle, lambda: digest)
        ids, texts, priorities = _read_checked(path, fields, manifest)
    if not ids:
        raise InvalidInput("the corpus is empty: no documents to embed", file=where,
                           field="spec.corpus.path", value=str(path))
    sha256 = small_sha256
    hashes = [sha256(t.encode("utf-8")).hexdigest()[:16] for t in texts]  # text_hash, inlined (1M calls)
    return Corpus(ids=ids, texts=texts, hashes=hashes, digest=corpus_digest(ids, hashes), path=path,
                  content=digest.hexdigest() if digest is not None else None,
                  priorities=priorities if priority_field else None)


@dataclass(frozen=True)
class _Fields:
    """The fields read from each document."""
    id: str
    texts: list[str]
    priority: str | None = None


class _Irregular(Exception):
    """A line the fast reader does not judge itself (not JSON, not UTF-8, odd whitespace, a wrong type)."""


# lines parsed per step: bounded temporaries whatever the corpus size; and one step's parse is a single
# C call that holds the GIL (about 3 ms for 256 KB), which a build ahead on another thread waits out
BLOCK_BYTES = 1 << 18


def _read_blocks(path: Path, fields: _Fields, manifest: Path | None, digest: Any = None
                 ) -> tuple[list[str], list[str], list[float]]:
    """ids, texts and priorities, a block of lines per step, each line's bytes parsed directly by orjson.

    A block of plain lines (every id a non-empty string, every text a non-blank string, every
    priority a number or missing) takes no per-line Python code; a block with anything else is
    read line by line (_block_lines: blank lines skipped, integer ids taken as strings). Anything
    unusual even there (not JSON, not UTF-8, odd whitespace, a number or another type where an id
    or a text is expected, no id or no text, a priority that is not a number) raises _Irregular and
    read_corpus reads the whole file again with _read_checked, which decodes line by line and names
    the line, column or byte of the problem. A duplicate id is the one error this reader names
    itself, as _read_checked would.
    """
    ids: list[str] = []
    texts: list[str] = []
    priorities: list[float] = []
    skipped: list[int] = []  # line numbers of the blank lines, so that a duplicate's lines are named right
    lineno = 0  # lines before the block
    with open_regular(path, file=manifest, field="spec.corpus.path", what="corpus") as handle:
        while lines := handle.readlines(BLOCK_BYTES):
            if digest is not None:
                digest.update(b"".join(lines))
            if not lineno and lines[0].startswith(codecs.BOM_UTF8):
                lines[0] = lines[0][len(codecs.BOM_UTF8):]
            block = _plain_block(lines, fields)
            if block is None:
                block = _block_lines(lines, fields, lineno, skipped)
            ids += block[0]
            texts += block[1]
            priorities += block[2]
            lineno += len(lines)
    if len(set(ids)) != len(ids):
        _name_duplicate(ids, skipped, path, fields.id)
    return ids, texts, priorities


def _plain_block(lines: list[bytes], fields: _Fields) -> tuple[list[str], list[str], list[float]] | None:
    """(ids, texts, priorities) of a block whose every line is an object with a string id and a non-blank
    text (and a numeric or missing priority), else None."""
    try:
        docs = list(map(_loads_bytes, lines))
        block_ids = [doc.get(fields.id) for doc in docs]
        block_texts = _texts(docs, fields.texts)
        # str methods refuse anything but a string (TypeError); "" has no length, a blank text strips to ""
        if all(map(str.__len__, block_ids)) and all(map(str.strip, block_texts)):
            priorities = _priorities(docs, fields.priority)
            if priorities is not None:
                return block_ids, block_texts, priorities
    except (ValueError, AttributeError, TypeError):
        pass
    return None


def _priorities(docs: list[dict], field: str | None) -> list[float] | None:
    """Each document's priority as a float (missing or null: 0; no field: none read), or None if one is not
    a number (orjson reads no NaN or infinity; a bool is not a number here)."""
    if field is None:
        return []
    values = [doc.get(field) for doc in docs]
    if all(v is None or type(v) is int or type(v) is float for v in values):  # type(True) is bool, not int
        return [0.0 if v is None else float(v) for v in values]
    return None


def _texts(docs: list[dict], text_fields: list[str]) -> list[Any]:
    """Each document's text: the field, or the set string fields joined by spaces."""
    if len(text_fields) == 1:
        single = text_fields[0]
        return [doc.get(single) for doc in docs]
    return [_joined_text(doc, text_fields) for doc in docs]


def _joined_text(doc: dict, text_fields: list[str]) -> str | None:
    """The set text fields joined by spaces, missing ones skipped; None when one is set to anything but a
    string (the careful reader decides)."""
    parts = [doc.get(f) for f in text_fields]
    return " ".join([p for p in parts if p]) if all(type(p) is str or p is None for p in parts) else None


def _block_lines(lines: list[bytes], fields: _Fields, before: int, skipped: list[int]
                 ) -> tuple[list[str], list[str], list[float]]:
    """ids, texts and priorities of a block line by line: blank (ASCII whitespace) lines skipped and their
    numbers added to ``skipped``, integer ids taken as strings; anything else unusual raises _Irregular."""
    ids: list[str] = []
    texts: list[str] = []
    docs: list[dict] = []
    text_fields = fields.texts
    single = text_fields[0] if len(text_fields) == 1 else None
    for lineno, raw in enumerate(lines, start=before + 1):
        try:
            doc = _loads_bytes(raw)
        except ValueError:
            if raw.isspace() or not raw:
                skipped.append(lineno)
                continue
            raise _Irregular() from None
        if type(doc) is not dict:
            raise _Irregular()
        doc_id = doc.get(fields.id)
        if type(doc_id) is not str or not doc_id:
            # orjson reads an integer beyond 64 bits as a float: numbers go the careful way
            if type(doc_id) is not int:
                raise _Irregular()
            doc_id = str(doc_id)
        text = doc.get(single) if single is not None else _joined_text(doc, text_fields)
        if type(text) is not str or not text.strip():
            raise _Irregular()  # numbers, other types, no text: the careful reader decides
        ids.append(doc_id)
        texts.append(text)
        docs.append(doc)
    priorities = _priorities(docs, fields.priority)
    if priorities is None:
        raise _Irregular()  # the careful reader names the line
    return ids, texts, priorities


def _name_duplicate(ids: list[str], skipped: list[int], path: Path, id_field: str) -> None:
    """Refuse the first repeated id as _read_checked would, naming both lines (blank lines counted)."""
    seen: dict[str, int] = {}
    for row, doc_id in enumerate(ids):
        _remember(seen, doc_id, _line_of(row, skipped), path, id_field)


def _line_of(row: int, skipped: list[int]) -> int:
    """The file line of document ``row``, given the (ascending) numbers of the blank lines before it."""
    line = row + 1
    for blank in skipped:
        if blank > line:
            break
        line += 1
    return line


def _read_checked(path: Path, fields: _Fields, manifest: Path | None
                  ) -> tuple[list[str], list[str], list[float]]:
    """Line by line, each line decoded on its own: the reader that names what is wrong and where."""
    where = manifest or path
    ids: list[str] = []
    texts: list[str] = []
    priorities: list[float] = []
    seen: dict[str, int] = {}
    for lineno, line in iter_lines(path, file=where if manifest else None, field="spec.corpus.path",
                                   what="corpus"):
        if not line.strip():
            continue
        doc = _parse_line(line, path, lineno)
        doc_id = _document_id(doc, fields.id, path, lineno)
        _remember(seen, doc_id, lineno, path, fields.id)
        ids.append(doc_id)
        texts.append(_document_text(doc, fields.texts, path, lineno))
        if fields.priority is not None:
            priorities.append(_document_priority(doc, fields.priority, path, lineno))
    return ids, texts, priorities


def _document_priority(doc: dict, field: str, path: Path, lineno: int) -> float:
    value = doc.get(field)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        kind = f", got a JSON {type(value).__name__}" if isinstance(value, (dict, list)) else ""  # not quoted
        raise InvalidInput(f"line {lineno}: priorityField {field!r} must be a number{kind}", file=path,
                           field="spec.reembed.priorityField", value=value)
    return float(value)


def _remember(seen: dict[str, int], doc_id: str, lineno: int, path: Path, id_field: str) -> None:
    """Record the line of an id; a second line with the same id is refused, naming both lines."""
    if doc_id in seen:
        raise InvalidInput(
            f"duplicate document id {snippet(doc_id)!r} at line {lineno} (first at line {seen[doc_id]})",
            file=path, field=id_field,
        )
    seen[doc_id] = lineno


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
