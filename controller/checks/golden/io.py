"""Reading golden sets: qrels (BEIR TSV or TREC) and BEIR queries.jsonl.

Every bad line fails with InvalidInput naming the file and line, so a broken
golden file can never silently shrink the evaluation. Files are opened through
controller.inputs (no FIFOs or devices, UTF-8 errors with line and byte
offset) and their content is shown only escaped and truncated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from controller.errors import InvalidInput
from controller.inputs import read_text, snippet

from .join import FlatQrels


@dataclass(frozen=True)
class GoldenSet:
    """Judged queries plus a digest that pins the exact judgements.

    ``query_ids`` is sorted (plain string order) so that it, like the digest,
    does not depend on the line order of the qrels file. ``query_texts`` only
    holds texts of golden queries, and may be empty for TREC-only sets.
    """

    query_ids: list[str]
    query_texts: dict[str, str]
    qrels: dict[str, dict[str, int]]
    digest: str

    @property
    def short_digest(self) -> str:
        """First 6 hex chars: enough to tell golden sets apart in messages."""
        return self.digest[:6]

    @cached_property
    def _flat(self) -> FlatQrels:
        """Qrels as parallel arrays, built once so evaluate() stays numpy-only."""
        return FlatQrels.build(self.query_ids, self.qrels)



def load_golden(qrels_path: Path, queries_path: Path | None = None) -> GoldenSet:
    """Load qrels (BEIR TSV or TREC, auto-detected) and optional query texts.

    Fails with InvalidInput naming the file, line and value on any bad line,
    so a broken golden file can never silently shrink the evaluation.
    """
    qrels_path = Path(qrels_path)
    qrels = _read_qrels(qrels_path)
    texts: dict[str, str] = {}
    if queries_path is not None:
        all_texts = _read_queries(Path(queries_path))
        texts = {q: all_texts[q] for q in sorted(qrels) if q in all_texts}
    query_ids = sorted(qrels)
    return GoldenSet(query_ids=query_ids, query_texts=texts,
                     qrels={q: qrels[q] for q in query_ids},
                     digest=golden_digest(qrels, texts))


def golden_digest(qrels: dict[str, dict[str, int]], texts: dict[str, str]) -> str:
    """sha256 of a canonical JSON form: independent of file line order."""
    canon = json.dumps({"qrels": qrels, "queries": texts}, sort_keys=True,
                       separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of non-blank lines, CR/LF stripped."""
    raw = read_text(path, what="golden file")
    lines = raw.splitlines()
    return [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]


def _detect_qrels_format(path: Path, first: str) -> str:
    """'beir' for 3 tab-separated columns, 'trec' for 4 whitespace ones."""
    if len(first.split("\t")) == 3:
        return "beir"
    if len(first.split()) == 4:
        return "trec"
    raise InvalidInput(
        "line 1 is neither BEIR qrels (query-id<TAB>corpus-id<TAB>score) "
        "nor TREC qrels (qid 0 docid rel)", file=path, value=first)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Parse qrels into qid -> {docid: grade}, rejecting bad/conflicting lines."""
    lines = _data_lines(path)
    if not lines:
        raise InvalidInput("qrels file is empty; a golden set needs judgements",
                           file=path)
    fmt = _detect_qrels_format(path, lines[0][1])
    if fmt == "beir" and not _is_grade(lines[0][1].split("\t")[2]):
        lines = lines[1:]   # header line such as "query-id  corpus-id  score"
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in lines:
        qid, doc, grade = _split_qrels_line(path, lineno, line, fmt)
        seen = qrels.setdefault(qid, {})
        if seen.get(doc, grade) != grade:
            raise InvalidInput(
                f"line {lineno}: query '{snippet(qid)}' document '{snippet(doc)}' is judged {grade} "
                f"but was judged {seen[doc]} earlier; keep one judgement",
                file=path, field="score", value=grade)
        seen[doc] = grade
    if not qrels:
        raise InvalidInput("qrels file has a header but no judgements", file=path)
    return qrels


def _split_qrels_line(path: Path, lineno: int, line: str, fmt: str) -> tuple[str, str, int]:
    """One qrels line -> (qid, docid, grade), or InvalidInput with the line."""
    parts = line.split("\t") if fmt == "beir" else line.split()
    want = 3 if fmt == "beir" else 4
    if len(parts) != want:
        layout = ("query-id<TAB>corpus-id<TAB>score" if fmt == "beir"
                  else "qid iteration docid rel")
        raise InvalidInput(
            f"line {lineno}: expected {want} columns ({layout}) but got "
            f"{len(parts)}", file=path, value=line)
    qid, doc, grade = (parts[0], parts[1], parts[2]) if fmt == "beir" \
        else (parts[0], parts[2], parts[3])
    qid, doc = qid.strip(), doc.strip()
    if not qid or not doc:
        raise InvalidInput(f"line {lineno}: empty query or document id", file=path, value=line)
    if not _is_grade(grade):
        raise InvalidInput(
            f"line {lineno}: relevance is not an integer grade "
            "(use 0 for non-relevant, 1.. for relevant)",
            file=path, field="score", value=grade.strip())
    return qid, doc, int(float(grade))


def _is_grade(text: str) -> bool:
    """Integer grades; '1.0' is accepted because some exports write floats."""
    try:
        return float(text).is_integer()
    except ValueError:
        return False


def _read_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl -> {_id: text}; bad lines fail with their number."""
    texts: dict[str, str] = {}
    for lineno, line in _data_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                               file=path) from None
        except RecursionError:
            raise InvalidInput(f"line {lineno}: not valid JSON (nested too deeply)", file=path) from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"line {lineno}: expected a JSON object with _id and text", file=path)
        qid, text = obj.get("_id"), obj.get("text")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise InvalidInput(f"line {lineno}: missing or non-string _id", file=path, field="_id")
        if not isinstance(text, str):
            raise InvalidInput(f"line {lineno}: query '{snippet(str(qid))}' has no string text",
                               file=path, field="text")
        texts[str(qid)] = text
    return texts

