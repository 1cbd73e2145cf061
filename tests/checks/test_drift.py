"""Drift statistics: scipy equality, the shared-bins PSI contract, degenerate
norms, cross-model refusal, and false-alarm / detection rates on SciFact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, false_discovery_control, ks_2samp, wasserstein_distance

from controller.checks.drift import REGISTRY, NormCache, calibrate, neighbour_overlap, run_drift
from controller.checks.drift.base import (N_BINS, bin_proportions, row_norms, shared_bin_edges, shared_binned,
                                         wasserstein_1d)
from controller.checks.drift.cosine_shift import cosine_to_centroid
from controller.checks.drift.ks_dims import ks_pvalues, ks_statistics
from controller.checks.drift.neighbours import rbo
from controller.checks.drift.psi import psi
from controller.errors import InvalidInput

NORM_STATS = ("psi", "kl", "js", "wasserstein", "normShift")


def with_norms(norms: np.ndarray, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Random directions scaled to the given row norms (float32)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((norms.size, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (v * norms[:, None]).astype(np.float32)


def unit(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return with_norms(np.ones(n), dim, seed)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ref = with_norms(rng.normal(10.0, 1.0, 3000), seed=2)
    cur = with_norms(rng.normal(10.4, 1.3, 2000), seed=3)
    return ref, cur


# --- contract ---------------------------------------------------------------

def test_registry_contract() -> None:
    assert set(REGISTRY) == {"psi", "kl", "normShift", "cosineShift", "js", "wasserstein",
                             "pairCosineShift", "ksDims", "mmd"}
    for name, stat in REGISTRY.items():
        assert stat.name == name
        assert isinstance(stat.default_threshold, float)
        assert stat.space_free == (name not in ("ksDims", "mmd"))


def test_unknown_name_lists_valid_names(pair) -> None:
    with pytest.raises(InvalidInput, match="valid names: .*cosineShift.*psi"):
        run_drift("nope", *pair)


def test_result_fields_and_threshold_override(pair) -> None:
    r = run_drift("psi", *pair)
    assert r.threshold == REGISTRY["psi"].default_threshold
    assert r.informative and r.value is not None
    assert r.drifted == (r.value > r.threshold)
    assert "psi of norms" in r.detail and "bins on reference quantiles" in r.detail
    low = run_drift("psi", *pair, threshold=r.value / 2)
    assert low.drifted and low.threshold == r.value / 2
    d = r.to_dict()
    assert set(d) == {"statistic", "value", "threshold", "drifted", "informative", "detail",
                      "effectSize", "pValue"}


def test_coordinate_statistics_refused_across_spaces(pair) -> None:
    ref, cur = pair
    for name in ("ksDims", "mmd"):
        r = run_drift(name, ref, cur[:, :16], same_space=False)
        assert not r.informative and r.value is None and not r.drifted
        assert "refused across fingerprints" in r.detail
    assert "per-dimension KS compares coordinates" in run_drift("ksDims", ref, cur, same_space=False).detail
    # space-free ones still run with different dimensions
    assert run_drift("cosineShift", ref, cur[:, :16], same_space=False).informative


# --- scipy equality ---------------------------------------------------------

def test_kl_js_equal_scipy(pair) -> None:
    ref, cur = pair
    rn, cn = row_norms(ref), row_norms(cur)
    rp, cp, _ = shared_binned(rn, cn)
    assert run_drift("kl", ref, cur).value == pytest.approx(entropy(cp, rp), rel=1e-12)
    assert run_drift("psi", ref, cur).value == pytest.approx(entropy(cp, rp) + entropy(rp, cp), rel=1e-12)
    rp0, cp0, _ = shared_binned(rn, cn, epsilon=0.0)
    assert run_drift("js", ref, cur).value == pytest.approx(jensenshannon(cp0, rp0, base=2), rel=1e-12)


def test_wasserstein_equals_scipy(pair) -> None:
    ref, cur = pair
    rn, cn = np.linalg.norm(ref.astype(np.float64), axis=1), np.linalg.norm(cur.astype(np.float64), axis=1)
    r = run_drift("wasserstein", ref, cur)
    assert r.value * rn.mean() == pytest.approx(wasserstein_distance(rn, cn), rel=1e-5)


def test_wasserstein_1d_and_cosine_shift_equal_scipy(pair) -> None:
    rng = np.random.default_rng(11)
    u, v = np.round(rng.normal(0, 1, 700), 1), rng.normal(0.3, 2, 500)  # with ties
    assert wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    ref, cur = pair
    cr = cosine_to_centroid(ref, row_norms(ref))
    cc = cosine_to_centroid(cur, row_norms(cur))
    assert run_drift("cosineShift", ref, cur).value == pytest.approx(wasserstein_distance(cr, cc), rel=1e-12)
    x = ref.astype(np.float64)
    direct = (x @ x.mean(axis=0)) / (np.linalg.norm(x, axis=1) * np.linalg.norm(x.mean(axis=0)))
    np.testing.assert_allclose(cr, direct, rtol=0, atol=1e-6)


def test_ks_equals_scipy() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 20)).astype(np.float32)
    y = (rng.standard_normal((250, 20)) + np.linspace(0, 0.5, 20)).astype(np.float32)
    y[:50, 0] = np.round(y[:50, 0])  # ties
    x[:50, 0] = np.round(x[:50, 0])
    ref = ks_2samp(x, y, axis=0, method="asymp")
    d = ks_statistics(x, y)
    np.testing.assert_allclose(d, ref.statistic, rtol=0, atol=1e-12)
    p = ks_pvalues(d, 300, 250)
    small = ref.pvalue < 0.2
    assert small.sum() >= 5
    np.testing.assert_allclose(p[small], ref.pvalue[small], rtol=1e-10)
    # the BH decision is scipy's
    ours = false_discovery_control(p, method="bh") < 0.05
    theirs = false_discovery_control(ref.pvalue, method="bh") < 0.05
    np.testing.assert_array_equal(ours, theirs)
    r = run_drift("ksDims", x, y)
    assert r.value == pytest.approx(theirs.mean())
    assert r.effect_size == pytest.approx(ref.statistic.max()) and r.p_value is not None


# --- PSI on shared bins -----------------------------------------------------

def test_psi_uses_shared_reference_edges() -> None:
    rng = np.random.default_rng(5)
    rn, cn = rng.uniform(9.0, 11.0, 5000), rng.uniform(10.5, 12.5, 5000)
    # the classic bug: each sample binned on its own range -> near-identical shapes
    hr, _ = np.histogram(rn, bins=N_BINS)
    hc, _ = np.histogram(cn, bins=N_BINS)
    buggy = psi(np.maximum(hr / hr.sum(), 1e-4), np.maximum(hc / hc.sum(), 1e-4))
    assert buggy < 0.05
    r = run_drift("psi", with_norms(rn, seed=6), with_norms(cn, seed=7))
    assert r.value > 1.0 and r.drifted


def test_shared_bins_open_ended_and_epsilon() -> None:
    edges = shared_bin_edges(np.arange(1000.0))
    assert edges.size == N_BINS - 1
    p = bin_proportions(np.array([-1e9, 1e9]), edges)  # outside the reference range still binned
    assert p[0] == pytest.approx(p[-1]) and p.sum() == pytest.approx(1.0) and p.min() > 0


# --- degenerate norms -------------------------------------------------------

@pytest.mark.parametrize("name", NORM_STATS)
def test_unit_norm_is_not_informative(name: str) -> None:
    r = run_drift(name, unit(500, seed=1), unit(400, seed=2))
    assert not r.informative and r.value is None and not r.drifted
    assert "not informative" in r.detail and "unit-norm" in r.detail


def test_normalisation_switched_off_is_informative() -> None:
    rng = np.random.default_rng(8)
    r = run_drift("normShift", unit(500), with_norms(rng.normal(2.0, 0.2, 500)))
    assert r.informative and r.drifted


# --- space-free cosine statistics and MMD ----------------------------------

def test_cosine_shift_detects_concentration() -> None:
    rng = np.random.default_rng(9)
    ref = rng.standard_normal((2000, 32)).astype(np.float32)
    cur = (rng.standard_normal((2000, 48)) + 2.0).astype(np.float32)  # other space, anisotropic
    for name in ("cosineShift", "pairCosineShift"):
        same = run_drift(name, ref[:1000], ref[1000:])
        assert same.informative and not same.drifted
        moved = run_drift(name, ref, cur, same_space=False)
        assert moved.drifted and moved.effect_size > 0


def test_mmd_permutation_p_value() -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    y = rng.standard_normal((400, 8)).astype(np.float32)
    same = run_drift("mmd", x, y)
    moved = run_drift("mmd", x, y + 0.5)
    assert same.p_value > 0.01 and not same.drifted
    assert moved.p_value < 0.01 and moved.drifted and moved.effect_size > 0


def test_norm_cache_shared() -> None:
    x = unit(10)
    cache = NormCache()
    assert cache.norms(x) is cache.norms(x)


def test_seeded_sampled_statistics_are_reproducible(pair) -> None:
    a = run_drift("pairCosineShift", *pair, seed=3)
    b = run_drift("pairCosineShift", *pair, seed=3)
    assert a == b


# --- neighbour overlap ------------------------------------------------------

def test_neighbour_overlap() -> None:
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    same = neighbour_overlap(a, a, 4)
    assert same["jaccard"] == 1.0 and same["rbo"] == pytest.approx(1.0)
    disjoint = neighbour_overlap(a, a + 100, 4)
    assert disjoint["jaccard"] == 0.0 and disjoint["rbo"] == 0.0
    # swapped top-2 of 2: X1 = 0, X2 = 2 -> 1*0.81 + (0.1/0.9)*(0 + 1*0.81) = 0.9
    assert rbo([1, 2], [2, 1]) == pytest.approx(0.9)
    # reordering at the bottom costs less than at the top; Jaccard does not see order
    top = neighbour_overlap(np.array([[2, 1, 3, 4]]), np.array([[1, 2, 3, 4]]), 4)
    bottom = neighbour_overlap(np.array([[1, 2, 4, 3]]), np.array([[1, 2, 3, 4]]), 4)
    assert top["jaccard"] == bottom["jaccard"] == 1.0
    assert top["rbo"] < bottom["rbo"] < 1.0
    padded = neighbour_overlap(np.array([[1, 2, -1]]), np.array([[1, 2, -1]]), 3)
    assert padded["jaccard"] == 1.0
    with pytest.raises(InvalidInput):
        neighbour_overlap(a, a[:1], 4)


def test_calibrate_returns_null_quantile(pair) -> None:
    ref, _ = pair
    thr = calibrate("psi", ref, splits=20)
    assert 0.0 < thr < REGISTRY["psi"].default_threshold
    with pytest.raises(InvalidInput):
        calibrate("psi", ref, false_alarm=1.5)


# --- SciFact ----------------------------------------------------------------

def docs(scifact, model: str) -> np.ndarray:
    return np.load(scifact / "vectors" / model / "docs.npy")


@pytest.mark.scifact
@pytest.mark.slow
def test_scifact_reference_false_alarm_rates(scifact) -> None:
    x = docs(scifact, "all-minilm-l6-v2-raw")
    rng = np.random.default_rng(0)
    splits = 100
    alarms = {name: 0 for name in REGISTRY}
    for s in range(splits):
        perm = rng.permutation(x.shape[0])
        a, b = x[perm[: x.shape[0] // 2]], x[perm[x.shape[0] // 2:]]
        cache = NormCache()
        for name in REGISTRY:
            r = run_drift(name, a, b, seed=s, cache=cache)
            assert r.informative, r.detail
            alarms[name] += r.drifted
    rates = {name: n / splits for name, n in alarms.items()}
    print("false-alarm rates over", splits, "random halves:", rates)
    assert all(rate <= 0.05 for rate in rates.values()), rates


@pytest.mark.scifact
def test_scifact_minilm_vs_e5_across_fingerprints(scifact) -> None:
    minilm, e5 = docs(scifact, "all-minilm-l6-v2"), docs(scifact, "multilingual-e5-small-q4")
    for name in ("cosineShift", "pairCosineShift"):
        r = run_drift(name, minilm, e5, same_space=False)
        print(r.detail)
        assert r.informative and r.drifted
    for name in ("ksDims", "mmd"):
        r = run_drift(name, minilm, e5, same_space=False)
        print(r.detail)
        assert not r.informative and r.value is None and "refused across fingerprints" in r.detail
    for name in ("psi", "kl", "normShift"):
        r = run_drift(name, minilm, e5, same_space=False)
        assert not r.informative and "not informative" in r.detail


@pytest.mark.scifact
def test_scifact_unit_norm_model_not_informative(scifact) -> None:
    x = docs(scifact, "all-minilm-l6-v2")
    for name in ("psi", "kl", "normShift"):
        r = run_drift(name, x[::2], x[1::2])
        assert not r.informative and r.value is None


@pytest.mark.scifact
def test_scifact_norm_scaling_flagged(scifact) -> None:
    x = docs(scifact, "all-minilm-l6-v2-raw")
    for name in ("psi", "kl", "normShift", "js", "wasserstein"):
        r = run_drift(name, x, x * np.float32(1.2))
        print(r.detail)
        assert r.informative and r.drifted


def test_tolerance_rank_is_the_wilks_bound():
    from controller.checks.drift.calibrate import tolerance_rank

    assert tolerance_rank(100, 0.05, 0.95) == (99, True)  # beta.sf(0.95, 99, 2) = 0.963 >= 0.95 > 0.882
    assert tolerance_rank(200, 0.05, 0.99) == (197, True)  # the default: 200 splits, 99% confidence
    assert tolerance_rank(59, 0.05, 0.95) == (59, True)  # the classic n = 59 for a 95/95 bound
    assert tolerance_rank(20, 0.05, 0.95) == (20, False)  # too few splits: the maximum, flagged
