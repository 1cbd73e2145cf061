"""The click model: position bias, relevance, dwell, seeded; and its in-process rollouts."""

from __future__ import annotations

import random

import pytest

from controller.simulate.clicks import ClickModel, simulate

RANKING = [f"d{i}" for i in range(10)]


def _click_rates(relevant: set[str], model: ClickModel, n: int = 20000, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    counts = [0] * len(RANKING)
    for _ in range(n):
        for c in simulate(RANKING, relevant, rng, model).clicks:
            counts[c.position - 1] += 1
    return [c / n for c in counts]


def test_click_probability_is_p_times_examination_without_the_cascade():
    model = ClickModel(p_rel=0.8, p_nonrel=0.2, eta=1.0, p_stop=0.0)
    rates = _click_rates({"d0", "d3"}, model)
    for rank, rate in enumerate(rates, start=1):
        p = 0.8 if rank in (1, 4) else 0.2
        assert rate == pytest.approx(p / rank, abs=0.015), rank


def test_position_bias_and_relevance_and_cascade():
    rates = _click_rates({"d4"}, ClickModel())
    assert rates[0] > rates[1] > rates[2]  # non-relevant docs, falling with rank
    assert rates[4] > rates[3]  # the relevant doc beats the non-relevant one above it
    first_relevant = _click_rates({"d0", "d1"}, ClickModel(p_stop=1.0))
    assert first_relevant[1] < 0.9 / 2 * 0.2  # a satisfied user rarely goes on (only after not clicking d0)


def test_dwell_is_longer_on_relevant_docs_and_abandonment_is_a_skip():
    rng = random.Random(1)
    rel, non = [], []
    skips = 0
    for _ in range(3000):
        it = simulate(RANKING, {"d0"}, rng, ClickModel(p_stop=0.0))
        for c in it.clicks:
            (rel if c.doc_id == "d0" else non).append(c.dwell_ms)
        skips += it.skipped
        assert it.skipped == (not it.clicks)
    assert sum(rel) / len(rel) > 3 * sum(non) / len(non)
    assert skips > 0
    events = simulate(RANKING, {"d0"}, random.Random(3), ClickModel(p_stop=0.0)).feedback_events()
    assert {e["type"] for e in events} <= {"click", "dwell", "skip", "complaint"}


def test_complaints_only_without_relevant_results():
    rng = random.Random(2)
    with_rel = [simulate(RANKING, {"d0"}, rng, ClickModel(p_complaint=1.0)).complained for _ in range(100)]
    without = [simulate(RANKING, set(), rng, ClickModel(p_complaint=1.0)).complained for _ in range(100)]
    assert not any(with_rel) and all(without)


def test_seeded():
    a = [simulate(RANKING, {"d2"}, random.Random(9), ClickModel()) for _ in range(3)]
    assert a[0] == a[1] == a[2]


@pytest.mark.parametrize("bad", [{"p_rel": 1.5}, {"p_nonrel": -0.1}, {"eta": -1}, {"dwell_rel_ms": 0}])
def test_bad_model_parameters(bad):
    with pytest.raises(ValueError):
        ClickModel(**bad)
