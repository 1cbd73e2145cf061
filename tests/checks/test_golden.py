"""Golden-set loading and trec_eval-exact metrics, with pytrec_eval as oracle."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from controller.checks.golden import (
    METRICS, Evaluation, GoldenSet, evaluate, load_golden, parse_metric,
)
from controller.errors import InvalidInput

pytrec_eval = pytest.importorskip("pytrec_eval")

ALL = ["ndcg@1", "ndcg@3", "ndcg@10", "recall@1", "recall@5", "recall@100",
       "precision@1", "precision@10", "mrr@1", "mrr@10", "hitrate@1", "hitrate@10"]
ORACLE = {"ndcg": "ndcg_cut", "recall": "recall", "precision": "P", "hitrate": "success"}


# --------------------------------------------------------------------------
# Oracle helpers
# --------------------------------------------------------------------------

def _run_dict(qids, docs, scores) -> dict[str, dict[str, float]]:
    """Array run -> pytrec_eval run, dropping '' / None padding."""
    run = {}
    for q, drow, srow in zip(qids, docs, scores):
        entries = {str(d): float(s) for d, s in zip(drow, srow) if d not in ("", None)}
        if entries:
            run[q] = entries
    return run


def _truncate(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """Top k in trec_eval order (float32 score desc, doc id desc), for recip_rank@k."""
    out = {}
    for q, entries in run.items():
        ranked = sorted(entries.items(), key=lambda e: (np.float32(e[1]), e[0]), reverse=True)
        out[q] = dict(ranked[:k])
    return out


def _oracle(qrels, run, metric: str, k: int, query_ids: list[str]) -> np.ndarray:
    """pytrec_eval per-query values aligned with query_ids; 0 if not in run."""
    if metric == "mrr":
        run, measure, key = _truncate(run, k), "recip_rank", "recip_rank"
    else:
        measure, key = f"{ORACLE[metric]}.{k}", f"{ORACLE[metric]}_{k}"
    res = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(run)
    return np.array([res.get(q, {}).get(key, 0.0) for q in query_ids])


def _assert_matches_oracle(golden: GoldenSet, qids, docs, scores, metrics) -> Evaluation:
    ev = evaluate(golden, qids, docs, scores, metrics)
    run = _run_dict(qids, docs, scores)
    for name in metrics:
        metric, k = parse_metric(name)
        key = f"{metric}@{k}"
        want = _oracle(golden.qrels, run, metric, k, golden.query_ids)
        np.testing.assert_allclose(ev.per_query[key], want, rtol=0, atol=1e-9, err_msg=key)
        assert ev.metrics[key] == pytest.approx(want.mean(), abs=1e-9)
    return ev


def _golden(qrels: dict[str, dict[str, int]]) -> GoldenSet:
    from controller.checks.golden import golden_digest
    ids = sorted(qrels)
    return GoldenSet(ids, {}, {q: qrels[q] for q in ids}, golden_digest(qrels, {}))


def _write(tmp_path: Path, name: str, text: str, newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def test_beir_qrels_with_header_and_crlf(tmp_path):
    qrels = _write(tmp_path, "q.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t0\n"
                   "3\td9\t2\n", newline="\r\n")
    queries = _write(tmp_path, "queries.jsonl",
                     '{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n'
                     '{"_id": "3", "text": "three", "metadata": {}}\n')
    g = load_golden(qrels, queries)
    assert g.query_ids == ["1", "3"]
    assert g.qrels == {"1": {"d1": 1, "d2": 0}, "3": {"d9": 2}}
    assert g.query_texts == {"1": "one", "3": "three"}
    assert len(g.digest) == 64 and g.short_digest == g.digest[:6]


def test_trec_qrels_and_headerless_beir_agree(tmp_path):
    trec = _write(tmp_path, "q.trec", "1 0 d1 1\n1 0 d2 0\n3  0\td9 2\n")
    beir = _write(tmp_path, "q.tsv", "1\td1\t1\n1\td2\t0\n3\td9\t2\n")
    assert load_golden(trec).qrels == load_golden(beir).qrels
    assert load_golden(trec).digest == load_golden(beir).digest
    assert load_golden(trec).query_texts == {}


def test_digest_ignores_line_order_but_not_content(tmp_path):
    a = load_golden(_write(tmp_path, "a.tsv", "1\td1\t1\n2\td2\t1\n1\td3\t2\n"))
    b = load_golden(_write(tmp_path, "b.tsv", "2\td2\t1\n1\td3\t2\n1\td1\t1\n"))
    c = load_golden(_write(tmp_path, "c.tsv", "2\td2\t1\n1\td3\t1\n1\td1\t1\n"))
    assert a.digest == b.digest != c.digest
    assert a.query_ids == b.query_ids
    qa = _write(tmp_path, "qa.jsonl", '{"_id": "1", "text": "x"}\n')
    assert load_golden(tmp_path / "a.tsv", qa).digest != a.digest


def test_query_with_only_zero_grades_is_kept(tmp_path):
    g = load_golden(_write(tmp_path, "q.tsv", "1\td1\t1\n2\td2\t0\n"))
    assert g.query_ids == ["1", "2"]
    ev = evaluate(g, ["1", "2"], np.array([["d1"], ["d2"]]), np.ones((2, 1)),
                  ["ndcg@10", "recall@10"])
    assert ev.per_query["ndcg@10"].tolist() == [1.0, 0.0]
    assert ev.metrics["ndcg@10"] == 0.5   # trec_eval averages it in as 0


@pytest.mark.parametrize("text,line,value", [
    ("1\td1\t1\n1\td2\n", 2, "1\td2"),
    ("1\td1\t1\n1\td2\tx\n", 2, "x"),
    ("1\td1\t1\n2\td2\t1.5\n", 2, "1.5"),
    ("q\td\tscore\n1\td1\t1\n1\td1\t2\n", 3, 2),
    ("1 0 d1 1\n1 0 d2\n", 2, "1 0 d2"),
    ("1 0 d1 1\n1 0 d2 high\n", 2, "high"),
    ("\n1\t\t1\n", 2, "1\t\t1"),
])
def test_bad_qrels_lines_name_file_line_and_value(tmp_path, text, line, value):
    path = _write(tmp_path, "bad.tsv", text)
    with pytest.raises(InvalidInput) as info:
        load_golden(path)
    assert info.value.file == str(path)
    assert f"line {line}:" in str(info.value)
    assert info.value.value == value
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["", "query-id\tcorpus-id\tscore\r\n", "just one field\n"])
def test_empty_or_unrecognised_qrels(tmp_path, text):
    path = _write(tmp_path, "bad.tsv", text)
    with pytest.raises(InvalidInput) as info:
        load_golden(path)
    assert info.value.file == str(path)


def test_missing_qrels_file(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_golden(tmp_path / "nope.tsv")


@pytest.mark.parametrize("text,line,field", [
    ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n', 2, None),
    ('{"_id": "1", "text": "a"}\n{"text": "b"}\n', 2, "_id"),
    ('{"_id": "1", "text": 5}\n', 1, "text"),
    ('[1, 2]\n', 1, None),
])
def test_bad_queries_lines(tmp_path, text, line, field):
    qrels = _write(tmp_path, "q.tsv", "1\td1\t1\n")
    path = _write(tmp_path, "queries.jsonl", text)
    with pytest.raises(InvalidInput) as info:
        load_golden(qrels, path)
    assert info.value.file == str(path)
    assert info.value.field == field
    assert f"line {line}:" in str(info.value)


# --------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name,want", [
    ("ndcg@10", ("ndcg", 10)), ("NDCG@5", ("ndcg", 5)), ("recall@100", ("recall", 100)),
    ("mrr@10", ("mrr", 10)), ("p@10", ("precision", 10)),
    ("precision@3", ("precision", 3)), ("hitrate@10", ("hitrate", 10)),
    ("success@1", ("hitrate", 1)), ("ndcg_cut_10", ("ndcg", 10)), ("P_5", ("precision", 5)),
])
def test_parse_metric(name, want):
    assert parse_metric(name) == want
    assert want[0] in METRICS


@pytest.mark.parametrize("name", ["map@10", "ndcg", "ndcg@0", "ndcg@x", "", "recall@-1"])
def test_parse_metric_rejects_and_lists_valid(name):
    with pytest.raises(InvalidInput) as info:
        parse_metric(name)
    assert "ndcg@k" in str(info.value) and "hitrate@k" in str(info.value)


# --------------------------------------------------------------------------
# Metrics vs pytrec_eval on generated runs
# --------------------------------------------------------------------------

def test_ties_break_by_doc_id_descending():
    """Scores tie: trec_eval ranks 'd9' > 'd3' > 'd10' > 'd1' (string order, desc)."""
    g = _golden({"q": {"d1": 1, "d10": 2, "d3": 0}})
    docs = np.array([["d1", "d10", "d3", "d9"]])
    scores = np.ones((1, 4))
    ev = _assert_matches_oracle(g, ["q"], docs, scores, ALL)
    assert ev.per_query["mrr@10"][0] == pytest.approx(1 / 3)
    assert ev.per_query["precision@1"][0] == 0.0


def test_scores_tie_at_float32_precision_like_trec_eval():
    """trec_eval keeps scores as C float: 1 + 4e-8 ties with 1.0, 1 + 1e-7 does not."""
    g = _golden({"q": {"b": 1}})
    for eps, want in [(4e-8, 1.0), (1e-7, 0.5)]:
        docs, scores = np.array([["b", "a"]]), np.array([[1.0, 1.0 + eps]])
        ev = _assert_matches_oracle(g, ["q"], docs, scores, ["mrr@10"])
        assert ev.per_query["mrr@10"][0] == want


def test_hand_computed_graded_ndcg():
    g = _golden({"q": {"a": 3, "b": 0, "c": 2, "z": 1, "n": -1}})
    ev = evaluate(g, ["q"], np.array([["n", "b", "c", "a"]]), np.array([[4.0, 3, 2, 1]]),
                  ["ndcg@3", "recall@4", "precision@4", "mrr@4"])
    ideal = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert ev.per_query["ndcg@3"][0] == pytest.approx((2 / np.log2(4)) / ideal)
    assert ev.per_query["recall@4"][0] == pytest.approx(2 / 3)
    assert ev.per_query["precision@4"][0] == 0.5
    assert ev.per_query["mrr@4"][0] == pytest.approx(1 / 3)


def _random_case(seed: int, n_golden=60, n_docs=40, depth=25):
    """Graded qrels with awkward cases: ties, padding, missing/extra queries."""
    rng = np.random.default_rng(seed)
    doc_pool = np.array([f"d{i}" for i in range(n_docs)] + ["D", "d", "é", "d01"])
    qrels: dict[str, dict[str, int]] = {}
    for i in range(n_golden):
        picked = rng.choice(doc_pool, size=rng.integers(1, 10), replace=False)
        grades = rng.integers(0, 4, size=picked.size)
        if i % 7 == 0:
            grades[:] = 0                       # no relevant docs at all
        qrels[f"q{i}"] = {str(d): int(r) for d, r in zip(picked, grades)}
        if i % 5 == 0:
            qrels[f"q{i}"]["not-in-run"] = 2    # relevant doc never retrieved
    run_q = [f"q{i}" for i in range(n_golden) if i % 11 != 3]   # some missing
    run_q += ["extra1", "extra2"]                                 # not in golden
    rng.shuffle(run_q)
    docs = np.empty((len(run_q), depth), dtype=object)
    for r in range(len(run_q)):
        docs[r] = rng.choice(doc_pool, size=depth, replace=False)
    scores = rng.integers(0, 6, size=docs.shape).astype(np.float64)   # many ties
    if seed % 2:
        scores += rng.integers(0, 3, size=docs.shape) * 3e-8   # ties only in float32
    short = rng.random(len(run_q)) < 0.3
    for r in np.nonzero(short)[0]:
        cut = int(rng.integers(0, depth))
        docs[r, cut:] = None if r % 2 else ""
        scores[r, cut:] = 0.0
    return _golden(qrels), run_q, docs, scores


@pytest.mark.parametrize("seed", range(8))
def test_random_runs_match_pytrec_eval(seed):
    g, qids, docs, scores = _random_case(seed)
    ev = _assert_matches_oracle(g, qids, docs, scores, ALL + ["ndcg@25", "ndcg@40"])
    assert ev.missing_queries == sum(1 for i in range(60) if i % 11 == 3)
    assert ev.query_ids == g.query_ids
    assert ev.golden_digest == g.digest


def test_row_order_and_column_order_do_not_matter():
    g, qids, docs, scores = _random_case(3)
    base = evaluate(g, qids, docs, scores, ALL)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(qids))
    cols = rng.permutation(docs.shape[1])
    moved = evaluate(g, [qids[i] for i in rows], docs[rows][:, cols], scores[rows][:, cols], ALL)
    for key in base.per_query:
        np.testing.assert_array_equal(base.per_query[key], moved.per_query[key])


def test_missing_queries_and_unjudged_docs_are_counted_and_warned(caplog):
    g = _golden({"a": {"x": 1, "gone": 1}, "b": {"y": 1}})
    with caplog.at_level(logging.WARNING, logger="controller.checks.golden"):
        ev = evaluate(g, ["a"], np.array([["x"]]), np.array([[1.0]]), ["recall@10"],
                      corpus_ids={"x", "y"})
    assert ev.missing_queries == 1 and ev.unjudged_qrels_docs == 1
    assert ev.per_query["recall@10"].tolist() == [0.5, 0.0]   # 'gone' still counts
    assert ev.metrics["recall@10"] == 0.25                    # trec_eval -c mean
    assert len(ev.warnings) == 2 and "missing" in caplog.text and "corpus" in caplog.text


@pytest.mark.parametrize("qids,docs", [
    ([], np.empty((0, 0), dtype=str)),
    (["a", "b"], np.empty((2, 0), dtype=str)),
    (["a", "b"], np.array([["", ""], ["", ""]])),
    (["a", "b"], np.array([[None, None], [None, None]], dtype=object)),
])
def test_empty_runs_score_zero(qids, docs):
    g = _golden({"a": {"x": 1}, "b": {"y": 2, "z": 0}})
    ev = evaluate(g, qids, docs, np.zeros(docs.shape), ALL)
    assert all(v == 0.0 for v in ev.metrics.values())
    assert all(v.shape == (2,) for v in ev.per_query.values())
    assert ev.missing_queries == (2 if not qids else 0)


def test_shallow_run_and_deep_cutoffs():
    """Cutoffs deeper than the run: precision divides by k, ndcg's ideal is full."""
    g, qids, docs, scores = _random_case(11, depth=5)
    _assert_matches_oracle(g, qids, docs, scores, ["ndcg@1000", "precision@1000",
                                                   "recall@1000", "mrr@1000", "hitrate@1000"])


@pytest.mark.parametrize("fake_hash", [
    lambda d: np.zeros(d.shape, dtype=np.uint64),                              # all collide
    lambda d: np.char.str_len(np.asarray(d, dtype=str)).astype(np.uint64),     # run vs qrels
])
def test_hash_collisions_never_change_scores(monkeypatch, fake_hash):
    """The hash join confirms every match by string equality, and falls back to
    an exact dict join when qrels keys collide."""
    import controller.checks.golden.join as golden_mod
    monkeypatch.setattr(golden_mod, "hash_strings", fake_hash)
    g, qids, docs, scores = _random_case(5)
    _assert_matches_oracle(g, qids, docs, scores, ALL)


def test_run_doc_hash_colliding_with_qrels_doc_is_not_a_match(monkeypatch):
    import controller.checks.golden.join as golden_mod
    monkeypatch.setattr(golden_mod, "hash_strings",
                        lambda d: np.char.str_len(np.asarray(d, dtype=str)).astype(np.uint64))
    g = _golden({"q": {"ab": 1, "abc": 2}, "r": {"xy": 1}})
    assert not g._flat.table.ambiguous
    docs = np.array([["xy", "zzz", "abc", "ab"], ["ab", "xy", "", ""]])
    scores = np.array([[4.0, 3, 2, 1], [2.0, 1, 0, 0]])
    ev = _assert_matches_oracle(g, ["q", "r"], docs, scores, ALL)
    assert ev.per_query["mrr@10"].tolist() == [1 / 3, 0.5]


def test_long_and_unicode_doc_ids_tie_break_by_code_point():
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    g = _golden({"q": {long_a: 1, "é": 1, "e": 2, "ée": 3}})
    docs = np.array([[long_a, long_b, "é", "e", "ée", "z"]])
    _assert_matches_oracle(g, ["q"], docs, np.ones(docs.shape), ALL)


def test_metric_keys_are_canonical_and_deduplicated():
    g = _golden({"a": {"x": 1}})
    ev = evaluate(g, ["a"], np.array([["x"]]), np.array([[1.0]]),
                  ["p@10", "precision@10", "success@3"])
    assert list(ev.metrics) == ["precision@10", "hitrate@3"]
    assert ev.metrics["precision@10"] == pytest.approx(0.1)


@pytest.mark.parametrize("qids,docs,scores,match", [
    (["a"], np.array([["x", "x"]]), np.ones((1, 2)), "twice"),
    (["a"], np.array([["x"]]), np.ones((1, 2)), "n_queries"),
    (["a", "b"], np.array([["x"]]), np.ones((1, 1)), "n_queries"),
    (["a", "a"], np.array([["x"], ["y"]]), np.ones((2, 1)), "duplicates"),
    (["a"], np.array([["x"]]), np.array([[np.nan]]), "NaN"),
])
def test_bad_runs_are_invalid_input(qids, docs, scores, match):
    g = _golden({"a": {"x": 1}})
    with pytest.raises(InvalidInput, match=match):
        evaluate(g, qids, docs, scores, ["ndcg@10"])


def test_bad_metric_list():
    g = _golden({"a": {"x": 1}})
    with pytest.raises(InvalidInput):
        evaluate(g, ["a"], np.array([["x"]]), np.ones((1, 1)), [])
    with pytest.raises(InvalidInput, match="map@10"):
        evaluate(g, ["a"], np.array([["x"]]), np.ones((1, 1)), ["map@10"])


# --------------------------------------------------------------------------
# SciFact: real embeddings, published numbers
# --------------------------------------------------------------------------

def _exact_run(scifact: Path, model: str, depth: int = 100):
    """Exact cosine top-`depth` for the 300 test queries."""
    docs = np.load(scifact / "vectors" / model / "docs.npy")
    queries = np.load(scifact / "vectors" / model / "queries.npy")
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = queries @ docs.T
    top = np.argpartition(-sims, depth, axis=1)[:, :depth]
    doc_ids = np.array((scifact / "doc_ids.txt").read_text().split())
    query_ids = (scifact / "query_ids.txt").read_text().split()
    return query_ids, doc_ids[top], np.take_along_axis(sims, top, axis=1), doc_ids


@pytest.fixture(scope="module")
def scifact_golden(scifact) -> GoldenSet:
    return load_golden(scifact / "qrels" / "test.tsv", scifact / "queries.jsonl")


@pytest.mark.scifact
def test_scifact_golden_loads(scifact_golden, scifact):
    assert len(scifact_golden.query_ids) == 300
    assert set(scifact_golden.query_ids) == set((scifact / "query_ids.txt").read_text().split())
    assert len(scifact_golden.query_texts) == 300


@pytest.mark.scifact
def test_scifact_minilm_matches_pytrec_eval(scifact, scifact_golden):
    qids, docs, scores, _ = _exact_run(scifact, "all-minilm-l6-v2")
    _assert_matches_oracle(scifact_golden, qids, docs, scores,
                           ["ndcg@10", "ndcg@100", "recall@10", "recall@100",
                            "precision@10", "mrr@10", "hitrate@10"])


@pytest.mark.scifact
@pytest.mark.parametrize("model,ndcg,recall,mrr", [
    ("all-minilm-l6-v2", 0.6451, 0.7833, 0.6047),
    ("multilingual-e5-small-q4", 0.6549, 0.7849, 0.6219),
])
def test_scifact_published_numbers(scifact, scifact_golden, model, ndcg, recall, mrr):
    qids, docs, scores, doc_ids = _exact_run(scifact, model)
    ev = evaluate(scifact_golden, qids, docs, scores, ["ndcg@10", "recall@10", "mrr@10"],
                  corpus_ids=set(doc_ids.tolist()))
    print(f"{model}: " + ", ".join(f"{k}={v:.4f}" for k, v in ev.metrics.items()))
    assert ev.metrics["ndcg@10"] == pytest.approx(ndcg, abs=0.002)
    assert ev.metrics["recall@10"] == pytest.approx(recall, abs=0.002)
    assert ev.metrics["mrr@10"] == pytest.approx(mrr, abs=0.002)
    assert ev.missing_queries == 0 and ev.unjudged_qrels_docs == 0
