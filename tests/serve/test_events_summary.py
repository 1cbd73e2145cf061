"""`controller events` counts what the online gates count: interleaved impressions apart, the latest role."""

from __future__ import annotations

from controller.engine import events as EV


def test_interleaved_impressions_are_counted_apart_and_the_latest_role_is_shown():
    """Before, an interleaved impression (half of its list is the stable's) counted as one of the
    candidate's queries and its clicks as the candidate's CTR, where the gates leave it out; and a
    promoted version showed as candidate for as long as its first impression was in the log."""
    imp = lambda rid, role, **extra: {"type": "impression", "requestId": rid, "version": "v2",  # noqa: E731
                                      "role": role, "ids": ["x", "y"], "tookMs": 1.0, **extra}
    records = [imp("a", "candidate"), imp("b", "candidate", mode="interleave", teams=["stable", "candidate"]),
               imp("c", "candidate", mode="interleave", teams=["candidate", "stable"]),
               {"type": "click", "requestId": "b", "docId": "x", "position": 1},
               {"type": "click", "requestId": "c", "docId": "x", "position": 1}, imp("d", "stable")]
    v2 = EV.summarize(records)["v2"]
    assert (v2["queries"], v2["clicks"], v2["ctr"], v2["interleaved"]) == (2, 0, 0.0, 2)
    assert v2["role"] == "stable"
