"""The hash join of a retrieval run to the qrels, and trec_eval's ranking order.

How it stays fast: run doc ids are never sorted as strings. They are hashed
in one integer matmul and joined to the qrels through a vectorised hash table
(every hit confirmed by string equality); only rows that contain tied scores
pay for the exact string tie-break, done on packed code-point integers.

Ranking follows trec_eval: score descending (compared as float32, as trec_eval
stores C floats), ties broken by document id descending (byte-wise strcmp).
A document listed twice for one query, or a NaN score, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.errors import InvalidInput

@dataclass(frozen=True)
class FlatQrels:
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
    table: JoinTable

    @staticmethod
    def build(query_ids: list[str], qrels: dict[str, dict[str, int]]) -> FlatQrels:
        counts = [len(qrels[q]) for q in query_ids]
        qidx = np.repeat(np.arange(len(query_ids), dtype=np.int64), counts)
        docs = np.array([d for q in query_ids for d in qrels[q]], dtype=str)
        rels = np.fromiter((r for q in query_ids for r in qrels[q].values()),
                           dtype=np.int64, count=len(qidx))
        num_rel = np.bincount(qidx[rels >= 1], minlength=len(query_ids))
        table = JoinTable.build(join_keys(qidx, hash_strings(docs)))
        return FlatQrels(qidx, docs, rels, num_rel.astype(np.int64), table)


@dataclass(frozen=True)
class JoinTable:
    """Vectorised open-addressing hash table from uint64 key to entry index."""

    keys: np.ndarray      # uint64 per slot
    entry: np.ndarray     # int64 per slot, -1 = empty
    max_probe: int        # longest probe sequence used by any inserted key
    ambiguous: bool       # two entries share a key

    @staticmethod
    def build(keys: np.ndarray) -> JoinTable:
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
        return JoinTable(table_keys, entry, max(probe - 1, 0), ambiguous)

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


def check_run(qids: list[str], doc_ids: np.ndarray,
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


def golden_index(golden_ids: list[str], run_ids: list[str]) -> np.ndarray:
    """Golden query index for each run row, -1 for run queries without qrels."""
    where = {q: i for i, q in enumerate(golden_ids)}
    return np.fromiter((where.get(str(q), -1) for q in run_ids), dtype=np.int64,
                       count=len(run_ids))


def ranked_relevance(flat: FlatQrels, grow: np.ndarray, docs: np.ndarray,
                      scores: np.ndarray) -> np.ndarray:
    """(n_golden, depth) grades in trec_eval rank order; 0 for padding/missing.

    Works on run rows in place (no string copies) and scatters the ranked
    grades into golden order at the end.
    """
    valid = docs != ""
    hashes = hash_strings(docs)
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


def hash_strings(docs: np.ndarray) -> np.ndarray:
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


def join_keys(qidx: np.ndarray, hashes: np.ndarray) -> np.ndarray:
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


def _lookup_grades(flat: FlatQrels, grow: np.ndarray, docs: np.ndarray,
                   hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Grade of each run cell (input order) by a hash join on (query, doc)."""
    grades = np.zeros(docs.shape, dtype=np.int64)
    cell = valid & (grow >= 0)[:, None]
    if flat.qidx.size == 0 or not cell.any():
        return grades
    if flat.table.ambiguous:
        return _lookup_grades_exact(flat, grow, docs, cell)
    rows = np.broadcast_to(grow[:, None], docs.shape)
    entry = flat.table.find(join_keys(rows, hashes).ravel()).reshape(docs.shape)
    r, c = np.nonzero(cell & (entry >= 0))
    e = entry[r, c]
    same = (flat.qidx[e] == grow[r]) & (flat.docs[e] == docs[r, c])
    grades[r[same], c[same]] = flat.rels[e[same]]
    return grades


def _lookup_grades_exact(flat: FlatQrels, grow: np.ndarray, docs: np.ndarray,
                         cell: np.ndarray) -> np.ndarray:
    """Dict join, used only after a 64-bit hash collision inside the qrels."""
    table = {(int(q), d): int(g) for q, d, g in zip(flat.qidx, flat.docs.tolist(), flat.rels)}
    grades = np.zeros(docs.shape, dtype=np.int64)
    r, c = np.nonzero(cell)
    grades[r, c] = [table.get((int(grow[i]), d), 0)
                    for i, d in zip(r, docs[r, c].tolist())]
    return grades


