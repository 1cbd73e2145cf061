"""Golden-set quality checks: load judged queries, score a retrieval run.

The controller promotes or blocks an index version on retrieval quality, so
the numbers must be the ones the IR community reports: every metric here is
trec_eval-exact (checked against pytrec_eval to 1e-9 in the tests), including
its tie-breaking and its handling of odd queries. Scoring is vectorised over
queries (no per-query Python loop): 10,000 queries x 100 results score in
~0.1 s, about 2x faster than pytrec_eval (bench/bench_metrics.py).

trec_eval conventions reproduced here (and why they matter):

* Ranking: the run is re-sorted by score descending, ties broken by document
  id descending (byte-wise string comparison), exactly as trec_eval sorts.
  trec_eval stores scores as C ``float`` (TEXT_RESULTS.sim), so scores are
  rounded to float32 before sorting: two scores equal in float32 tie even if
  they differ as float64 (verified with pytrec_eval). The order of the input
  columns therefore never matters.
* Relevance: a document is relevant when its grade is >= 1 (trec_eval's
  default ``relevance_level``). Grades <= 0 are judged non-relevant and give
  no gain. nDCG uses linear gain (the grade) and a log2(rank + 1) discount;
  the ideal ranking is built from every qrels entry with grade > 0, including
  documents that are absent from the run or even from the corpus.
* Queries: only golden queries (those with at least one qrels line) are
  evaluated; run queries without qrels are ignored. A golden query whose
  judgements are all <= 0 is still evaluated, and scores 0 on every metric
  (trec_eval does the same: ideal DCG and the recall denominator are 0).
  A golden query absent from the run scores 0 and still counts in the mean,
  as ``trec_eval -c`` does (plain trec_eval/pytrec_eval would silently drop
  it, inflating the mean of a run that lost queries).
* Runs: a document listed twice for one query, or a NaN score, is rejected
  (InvalidInput) rather than silently scored.

How it stays fast: run doc ids are never sorted as strings. They are hashed
in one integer matmul and joined to the qrels through a vectorised hash table
(every hit confirmed by string equality); only rows that contain tied scores
pay for the exact string tie-break, done on packed code-point integers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from controller.errors import InvalidInput
from controller.manifest.defaults import GOLDEN_METRIC_ALIASES, GOLDEN_METRICS

log = logging.getLogger(__name__)

METRICS = GOLDEN_METRICS
_ALIASES = GOLDEN_METRIC_ALIASES
_METRIC_RE = re.compile(r"^\s*([a-z_]+)\s*[@_.]\s*(\d+)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------
# Golden set
# --------------------------------------------------------------------------

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
    def _flat(self) -> _FlatQrels:
        """Qrels as parallel arrays, built once so evaluate() stays numpy-only."""
        return _FlatQrels.build(self.query_ids, self.qrels)


@dataclass(frozen=True)
class _FlatQrels:
    """Qrels flattened to (query index, doc id, grade) arrays plus a join table.

    The join table is an open-addressing hash table (linear probing, load
    factor <= 1/4) keyed on a 64-bit (query, doc) key. Looking up a million run
    cells in it is a few vectorised gathers, far cheaper than sorting the run's
    strings. ``ambiguous`` marks a 64-bit key collision inside the qrels, which
    sends evaluate() down an exact dict-based join instead.
    """

    qidx: np.ndarray      # int64, index into GoldenSet.query_ids
    docs: np.ndarray      # str
    rels: np.ndarray      # int64
    num_rel: np.ndarray   # int64 per query: grades >= 1 (recall denominator)
    table: _JoinTable

    @staticmethod
    def build(query_ids: list[str], qrels: dict[str, dict[str, int]]) -> _FlatQrels:
        counts = [len(qrels[q]) for q in query_ids]
        qidx = np.repeat(np.arange(len(query_ids), dtype=np.int64), counts)
        docs = np.array([d for q in query_ids for d in qrels[q]], dtype=str)
        rels = np.fromiter((r for q in query_ids for r in qrels[q].values()),
                           dtype=np.int64, count=len(qidx))
        num_rel = np.bincount(qidx[rels >= 1], minlength=len(query_ids))
        table = _JoinTable.build(_join_keys(qidx, _hash_strings(docs)))
        return _FlatQrels(qidx, docs, rels, num_rel.astype(np.int64), table)


@dataclass(frozen=True)
class _JoinTable:
    """Vectorised open-addressing hash table from uint64 key to entry index."""

    keys: np.ndarray      # uint64 per slot
    entry: np.ndarray     # int64 per slot, -1 = empty
    max_probe: int        # longest probe sequence used by any inserted key
    ambiguous: bool       # two entries share a key

    @staticmethod
    def build(keys: np.ndarray) -> _JoinTable:
        size = 8
        while size < 4 * keys.size:
            size *= 2
        table_keys = np.zeros(size, dtype=np.uint64)
        entry = np.full(size, -1, dtype=np.int64)
        pending = np.arange(keys.size)
        slots = _slots(keys, size)
        probe = 0
        while pending.size:
            free = entry[slots] == -1
            entry[slots[free]] = pending[free]        # one writer per slot wins
            won = np.zeros(pending.size, dtype=bool)
            won[free] = entry[slots[free]] == pending[free]
            table_keys[slots[won]] = keys[pending[won]]
            pending, slots = pending[~won], (slots[~won] + 1) & (size - 1)
            probe += 1
        ambiguous = np.unique(keys).size != keys.size
        return _JoinTable(table_keys, entry, max(probe - 1, 0), ambiguous)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Entry index for each key, -1 when absent.

        Each round touches only keys whose slot was occupied by another key;
        with load factor <= 1/4 most keys finish in the first round.
        """
        found = np.full(keys.size, -1, dtype=np.int64)
        where = np.arange(keys.size)
        slots = _slots(keys, self.keys.size)
        for _ in range(self.max_probe + 1):
            entry = self.entry[slots]
            busy = np.nonzero(entry >= 0)[0]
            match = self.keys[slots[busy]] == keys[busy]
            found[where[busy[match]]] = entry[busy[match]]
            rest = busy[~match]
            if not rest.size:
                break
            where, keys = where[rest], keys[rest]
            slots = (slots[rest] + 1) & (self.keys.size - 1)
        return found


def _slots(keys: np.ndarray, size: int) -> np.ndarray:
    """Home slot of each key in a power-of-two table (low bits of the key)."""
    return (keys & np.uint64(size - 1)).astype(np.intp)


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
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("golden file does not exist; check the path",
                           file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read golden file as UTF-8 text ({exc})",
                           file=path) from exc
    lines = raw.splitlines()
    return [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]


def _detect_qrels_format(path: Path, first: str) -> str:
    """'beir' for 3 tab-separated columns, 'trec' for 4 whitespace ones."""
    if len(first.split("\t")) == 3:
        return "beir"
    if len(first.split()) == 4:
        return "trec"
    raise InvalidInput(
        f"line 1 {first!r} is neither BEIR qrels (query-id<TAB>corpus-id<TAB>score) "
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
                f"line {lineno}: query {qid!r} document {doc!r} is judged {grade} "
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
            f"{len(parts)} in {line!r}", file=path, value=line)
    qid, doc, grade = (parts[0], parts[1], parts[2]) if fmt == "beir" \
        else (parts[0], parts[2], parts[3])
    qid, doc = qid.strip(), doc.strip()
    if not qid or not doc:
        raise InvalidInput(f"line {lineno}: empty query or document id in {line!r}",
                           file=path, value=line)
    if not _is_grade(grade):
        raise InvalidInput(
            f"line {lineno}: relevance {grade.strip()!r} is not an integer grade "
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
            raise InvalidInput(f"line {lineno}: not valid JSON ({exc.msg})",
                               file=path, value=line[:80]) from exc
        if not isinstance(obj, dict):
            raise InvalidInput(f"line {lineno}: expected a JSON object with _id and text",
                               file=path, value=line[:80])
        qid, text = obj.get("_id"), obj.get("text")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise InvalidInput(f"line {lineno}: missing or non-string _id {qid!r}",
                               file=path, field="_id", value=qid)
        if not isinstance(text, str):
            raise InvalidInput(f"line {lineno}: query {qid!r} has no string text",
                               file=path, field="text", value=text)
        texts[str(qid)] = text
    return texts


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------

def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@10' / 'p@10' / 'success@5' -> (canonical metric, cutoff)."""
    match = _METRIC_RE.match(str(name))
    metric = _ALIASES.get(match.group(1).lower()) if match else None
    k = int(match.group(2)) if match else 0
    if metric is None or k < 1:
        valid = ", ".join(f"{m}@k" for m in METRICS)
        raise InvalidInput(
            f"unknown metric {name!r}; valid metrics are {valid} (k >= 1; "
            "aliases p@k, success@k, recip_rank@k)", field="metrics", value=name)
    return metric, k


def metric_name(metric: str, k: int) -> str:
    """Canonical key used in Evaluation.metrics, e.g. 'ndcg@10'."""
    return f"{metric}@{k}"


@dataclass(frozen=True)
class Evaluation:
    """Metric means and per-query values, tied to the golden digest.

    ``per_query`` arrays align with ``query_ids`` (the golden set's order) so
    two evaluations on the same golden set can be compared pairwise.
    """

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]
    query_ids: list[str]
    golden_digest: str
    missing_queries: int
    unjudged_qrels_docs: int
    warnings: list[str] = field(default_factory=list)


def evaluate(golden: GoldenSet, run_query_ids: list[str], run_doc_ids: np.ndarray,
             run_scores: np.ndarray, metrics: list[str],
             corpus_ids: set[str] | None = None) -> Evaluation:
    """Score a run (one row of ranked doc ids + scores per query) trec_eval-exactly.

    Rows may be padded with '' or None. Golden queries absent from the run
    score 0 (trec_eval -c). Run queries absent from the golden set are ignored.
    """
    wanted = _parse_metrics(metrics)
    docs, scores = _check_run(run_query_ids, run_doc_ids, run_scores)
    flat = golden._flat
    grow = _golden_index(golden.query_ids, run_query_ids)
    ranked_rel = _ranked_relevance(flat, grow, docs, scores)
    ndcg_k = max((k for m, k in wanted if m == "ndcg"), default=0)
    ideal = _ideal_gains(flat, len(golden.query_ids), ndcg_k)
    per_query = {metric_name(m, k): _metric(m, k, ranked_rel, ideal, flat.num_rel)
                 for m, k in wanted}
    missing = len(golden.query_ids) - int((grow >= 0).sum())
    unjudged = _count_unjudged(flat, corpus_ids)
    notes = _warnings(golden, missing, unjudged)
    return Evaluation(
        metrics={name: float(v.mean()) if v.size else 0.0 for name, v in per_query.items()},
        per_query=per_query, query_ids=list(golden.query_ids),
        golden_digest=golden.digest, missing_queries=missing,
        unjudged_qrels_docs=unjudged, warnings=notes)


def _parse_metrics(metrics: list[str]) -> list[tuple[str, int]]:
    """Canonicalise and de-duplicate, keeping the caller's order."""
    if isinstance(metrics, str) or not metrics:
        raise InvalidInput("metrics must be a non-empty list such as ['ndcg@10']",
                           field="metrics", value=metrics)
    return list(dict.fromkeys(parse_metric(m) for m in metrics))


def _check_run(qids: list[str], doc_ids: np.ndarray,
               scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes; return (str doc matrix with '' padding, float64 scores)."""
    docs = np.asarray(doc_ids)
    sc = np.asarray(scores, dtype=np.float64)
    if docs.ndim != 2 or docs.shape[0] != len(qids) or sc.shape != docs.shape:
        raise InvalidInput(
            f"run must be (n_queries, depth) doc ids and scores for {len(qids)} "
            f"query ids; got doc ids {docs.shape} and scores {sc.shape}",
            field="run", value=(docs.shape, sc.shape))
    if len(set(qids)) != len(qids):
        raise InvalidInput("run query ids contain duplicates; give one row per query",
                           field="run_query_ids")
    if docs.dtype == object:
        docs = np.where(np.equal(docs, None), "", docs)
    docs = np.asarray(docs, dtype=str)
    if np.isnan(sc[docs != ""]).any():
        raise InvalidInput("run scores contain NaN for real documents; "
                           "a ranking needs comparable scores", field="run_scores")
    return docs, sc


def _golden_index(golden_ids: list[str], run_ids: list[str]) -> np.ndarray:
    """Golden query index for each run row, -1 for run queries without qrels."""
    where = {q: i for i, q in enumerate(golden_ids)}
    return np.fromiter((where.get(str(q), -1) for q in run_ids), dtype=np.int64,
                       count=len(run_ids))


def _ranked_relevance(flat: _FlatQrels, grow: np.ndarray, docs: np.ndarray,
                      scores: np.ndarray) -> np.ndarray:
    """(n_golden, depth) grades in trec_eval rank order; 0 for padding/missing.

    Works on run rows in place (no string copies) and scatters the ranked
    grades into golden order at the end.
    """
    valid = docs != ""
    hashes = _hash_strings(docs)
    _reject_duplicates(docs, hashes, valid)
    order = _trec_order(docs, scores.astype(np.float32), valid)
    grades = _lookup_grades(flat, grow, docs, hashes, valid)
    ranked = np.take_along_axis(grades, order, axis=1)
    out = np.zeros((flat.num_rel.size, docs.shape[1]), dtype=np.int64)
    keep = grow >= 0
    out[grow[keep]] = ranked[keep]
    return out


def _trec_order(docs: np.ndarray, s32: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Column order per row: real docs first, score desc, then doc id desc.

    Sorting by score alone is numeric and cheap; only rows that actually
    contain equal float32 scores pay for the string tie-break.
    """
    key = np.where(valid, -s32, np.float32(np.nan))   # argsort puts NaN (padding) last
    order = np.argsort(key, axis=1)
    srt = np.take_along_axis(key, order, axis=1)
    tied = (srt[:, 1:] == srt[:, :-1]).any(axis=1)    # NaN never equals NaN
    rows = np.nonzero(tied)[0]
    if rows.size:
        chunks = _string_sort_keys(docs[rows])
        keys = tuple(-c for c in reversed(chunks)) + (-s32[rows], ~valid[rows])
        order[rows] = np.lexsort(keys, axis=1)
    return order


def _codepoints(docs: np.ndarray, multiple: int) -> np.ndarray:
    """(..., width) uint32 code points of a '<U' array, width a multiple of `multiple`.

    numpy pads short strings with NUL, so shorter ids compare like C strcmp.
    """
    arr = np.ascontiguousarray(docs)
    width = arr.dtype.itemsize // 4
    if arr.size == 0 or width == 0:
        return np.zeros((*arr.shape, multiple), dtype=np.uint32)
    cps = arr.view(np.uint32).reshape(*arr.shape, width)
    pad = (-width) % multiple
    if pad:
        cps = np.concatenate([cps, np.zeros((*arr.shape, pad), np.uint32)], axis=-1)
    return cps


def _string_sort_keys(docs: np.ndarray) -> list[np.ndarray]:
    """int64 keys, most significant first, whose lexicographic order is the
    strings' order: 3 code points (21 bits each) packed per key, losslessly.
    Code-point order equals UTF-8 byte order, i.e. trec_eval's strcmp."""
    cps = _codepoints(docs, 3).astype(np.int64)
    packed = (cps[..., 0::3] << 42) | (cps[..., 1::3] << 21) | cps[..., 2::3]
    return [packed[..., j] for j in range(packed.shape[-1])]


_HASH_WEIGHTS = np.random.default_rng(20240607).integers(
    0, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_QUERY_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hash_strings(docs: np.ndarray) -> np.ndarray:
    """64-bit hash per string, independent of the array's '<U' width.

    A weighted sum of the 64-bit words (two code points each) with odd
    weights, as one integer matmul: a single pass over the strings. NUL
    padding words add 0, so the hash does not depend on the array width.
    Every hash match is later confirmed by string equality, so a collision can
    never change a score.
    """
    words = _codepoints(docs, 2).view(np.uint64)
    n_words = words.shape[-1]
    weights = _HASH_WEIGHTS
    while weights.size < n_words:             # ids longer than 128 code points
        weights = np.concatenate([weights, weights * np.uint64(3)])
    with np.errstate(over="ignore"):
        return words @ weights[:n_words]


def _join_keys(qidx: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Mix a query index and a doc hash into one well-spread uint64 key.

    splitmix64's finaliser is a bijection, so it adds no collisions, and it
    makes the low bits (the hash-table slot) depend on every input bit.
    """
    with np.errstate(over="ignore"):
        z = hashes ^ ((qidx.astype(np.uint64) + np.uint64(1)) * _QUERY_MIX)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _reject_duplicates(docs: np.ndarray, hashes: np.ndarray, valid: np.ndarray) -> None:
    """trec_eval refuses a run listing a document twice for one query."""
    if docs.shape[1] < 2:
        return
    marked = np.where(valid, hashes, np.arange(docs.shape[1], dtype=np.uint64))
    srt = np.sort(marked, axis=1)
    for row in np.nonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0]:
        real = docs[row][valid[row]].tolist()
        if len(set(real)) != len(real):
            raise InvalidInput(f"run row {int(row)} lists the same document twice; "
                               "each query must rank a document at most once",
                               field="run_doc_ids", value=int(row))


def _lookup_grades(flat: _FlatQrels, grow: np.ndarray, docs: np.ndarray,
                   hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Grade of each run cell (input order) by a hash join on (query, doc)."""
    grades = np.zeros(docs.shape, dtype=np.int64)
    cell = valid & (grow >= 0)[:, None]
    if flat.qidx.size == 0 or not cell.any():
        return grades
    if flat.table.ambiguous:
        return _lookup_grades_exact(flat, grow, docs, cell)
    rows = np.broadcast_to(grow[:, None], docs.shape)
    entry = flat.table.find(_join_keys(rows, hashes).ravel()).reshape(docs.shape)
    r, c = np.nonzero(cell & (entry >= 0))
    e = entry[r, c]
    same = (flat.qidx[e] == grow[r]) & (flat.docs[e] == docs[r, c])
    grades[r[same], c[same]] = flat.rels[e[same]]
    return grades


def _lookup_grades_exact(flat: _FlatQrels, grow: np.ndarray, docs: np.ndarray,
                         cell: np.ndarray) -> np.ndarray:
    """Dict join, used only after a 64-bit hash collision inside the qrels."""
    table = {(int(q), d): int(g) for q, d, g in zip(flat.qidx, flat.docs.tolist(), flat.rels)}
    grades = np.zeros(docs.shape, dtype=np.int64)
    r, c = np.nonzero(cell)
    grades[r, c] = [table.get((int(grow[i]), d), 0)
                    for i, d in zip(r, docs[r, c].tolist())]
    return grades


def _ideal_gains(flat: _FlatQrels, n_q: int, k: int) -> np.ndarray:
    """(n_q, <=k) positive grades of each query sorted descending, 0-padded.

    Only as wide as the longest list of positive grades, so ndcg@1000 does
    not allocate 1000 columns for queries with five relevant documents.
    """
    pos = flat.rels > 0
    qidx, rels = flat.qidx[pos], flat.rels[pos]
    order = np.lexsort((-rels, qidx))
    qidx, rels = qidx[order], rels[order]
    starts = np.searchsorted(qidx, np.arange(n_q))
    rank = np.arange(qidx.size) - starts[qidx]
    keep = rank < k
    width = min(k, int(rank.max()) + 1 if rank.size else 0)
    ideal = np.zeros((n_q, width), dtype=np.int64)
    ideal[qidx[keep], rank[keep]] = rels[keep]
    return ideal


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _metric(metric: str, k: int, rel: np.ndarray, ideal: np.ndarray,
            num_rel: np.ndarray) -> np.ndarray:
    """One per-query metric vector from the ranked grade matrix.

    ``rel`` may be narrower than k (a shallow run): missing ranks add nothing,
    and precision still divides by k, as trec_eval's P_k does.
    """
    top = rel[:, :k]
    hits = top >= 1
    if top.size == 0:                       # empty run: nothing retrieved
        return np.zeros(rel.shape[0])
    if metric == "ndcg":
        disc = _discounts(k)
        dcg = (np.maximum(top, 0) * disc[: top.shape[1]]).sum(axis=1)
        best = ideal[:, :k]
        idcg = (best * disc[: best.shape[1]]).sum(axis=1)
        return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    if metric == "recall":
        found = hits.sum(axis=1).astype(np.float64)
        return np.divide(found, num_rel, out=np.zeros_like(found), where=num_rel > 0)
    if metric == "precision":
        return hits.sum(axis=1) / float(k)
    if metric == "mrr":
        first = hits.argmax(axis=1)
        return np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return hits.any(axis=1).astype(np.float64)   # hitrate


def _count_unjudged(flat: _FlatQrels, corpus_ids: set[str] | None) -> int:
    """Relevant (grade > 0) qrels pairs whose doc is not in the corpus."""
    if corpus_ids is None:
        return 0
    rel_docs = flat.docs[flat.rels > 0]
    uniq, inv = np.unique(rel_docs, return_inverse=True)
    absent = np.fromiter((d not in corpus_ids for d in uniq.tolist()), dtype=bool,
                         count=uniq.size)
    return int(absent[inv].sum())


def _warnings(golden: GoldenSet, missing: int, unjudged: int) -> list[str]:
    """Log and return the caveats that cap or distort the scores."""
    notes = []
    if missing:
        notes.append(f"{missing} of {len(golden.query_ids)} golden queries "
                     f"(golden {golden.short_digest}) are missing from the run "
                     "and score 0")
    if unjudged:
        notes.append(f"{unjudged} relevant qrels documents (golden "
                     f"{golden.short_digest}) are not in the corpus; they still "
                     "count in ideal DCG and recall, capping the scores")
    for note in notes:
        log.warning(note)
    return notes
