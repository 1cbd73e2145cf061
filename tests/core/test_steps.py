"""Table tests of the rollout step machine (core/steps.py): pure, no store, no clock."""

from __future__ import annotations

import pytest

from controller.core import steps as S
from controller.core.steps import RolloutState, Verdict, advance, begin, due_input

GATES = {"gates": [{"metric": "ctr@10", "maxDrop": 0.02}], "interval": "1m", "maxDuration": "10m"}
ALL = ({"setMirror": 100}, {"pause": {"duration": "5m"}}, {"setWeight": 10}, {"analysis": GATES},
       {"interleave": {"percentage": 50, "minQueries": 100, "interval": "1m", "maxDuration": "10m"}},
       {"setWeight": 50}, {"pause": {}})


def start(steps=ALL, now=0.0, **kw):
    return begin("v2", "v1", "digest", steps, now, **kw)


def at(index: int, steps=ALL, started=0.0, **fields) -> RolloutState:
    state = RolloutState("v2", "v1", "digest", steps, index=index, started_at=started, **fields)
    return state


@pytest.mark.parametrize("steps, index, weight, mirror, interleave, waiting, due", [
    # setWeight and setMirror complete at once; the first waiting step holds
    (({"setWeight": 10}, {"pause": {}}), 1, 10, 0, 0, "`controller promote`", None),
    (({"setMirror": 30}, {"pause": {"duration": "90s"}}), 1, 0, 30, 0, "pause of 90s", 90.0),
    (({"setWeight": 20}, {"analysis": GATES}), 1, 20, 0, 0, "online gates", 60.0),
    (({"interleave": {"percentage": 25}},), 0, 0, 0, 25, "interleaving", 60.0),
])
def test_entering_each_step_kind(steps, index, weight, mirror, interleave, waiting, due):
    d = start(steps)
    assert (d.state.index, d.state.weight, d.state.mirror, d.state.interleave) == (index, weight, mirror,
                                                                                    interleave)
    assert waiting in d.waiting_for
    assert d.next_due == due
    assert all(t.reason == S.STEP_STARTED for t in d.transitions) and len(d.transitions) == index + 1


@pytest.mark.parametrize("now, moved", [(299.0, False), (300.0, True)])
def test_pause_with_duration_ends_at_its_time(now, moved):
    d = advance(at(1, weight=0, mirror=100), now)
    assert (d.state.index >= 2) is moved
    if moved:  # the pause ends, setWeight 10 applies, the analysis step starts now
        assert (d.state.index, d.state.weight, d.state.started_at) == (3, 10, now)
        assert [t.state.index for t in d.transitions] == [2, 3]
    else:
        assert d.transitions == () and d.next_due == 300.0


def test_pause_without_duration_waits_for_promote_forever():
    d = advance(at(6, weight=50), 10**9)
    assert d.transitions == () and d.next_due is None and "promote" in d.waiting_for
    d = advance(d.state, 10**9, command="promote")
    assert d.state.promoted and d.state.weight == 100 and d.transitions[-1].promote


def test_promote_skips_only_the_current_step():
    d = advance(at(1, mirror=100), 10.0, command="promote")
    assert d.transitions[0].reason == S.STEP_SKIPPED
    assert (d.state.index, d.state.weight, d.state.promoted) == (3, 10, False)


def test_promote_full_jumps_to_100():
    d = advance(at(1, mirror=100), 10.0, command="promote-full")
    assert d.state.promoted and d.state.weight == 100 and d.state.mirror == 0
    assert [t.reason for t in d.transitions] == [S.PROMOTED_FULL, S.STEPS_COMPLETE]


def test_abort_then_stays_aborted_until_retry():
    d = advance(at(3, weight=10, mirror=100), 100.0, command="abort")
    assert d.state.aborted and (d.state.weight, d.state.mirror, d.state.interleave) == (0, 0, 0)
    assert S.routing_of(d.state) == (None, 0.0, 0.0, 0.0)
    later = advance(d.state, 10**6, verdict=Verdict("passed"))
    assert later.state.aborted and later.transitions == () and "retry" in later.waiting_for
    assert advance(d.state, 10**6, command="promote").state.aborted  # promote does not undo an abort
    retried = advance(d.state, 2000.0, command="retry")
    assert not retried.state.aborted and retried.transitions[0].reason == S.ROLLOUT_RETRIED
    assert (retried.state.index, retried.state.mirror, retried.state.started_at) == (1, 100, 2000.0)


def test_retry_of_a_running_rollout_changes_no_step():
    d = advance(at(3, weight=10, started=5.0), 6.0, command="retry")
    assert d.transitions == () and d.state.index == 3 and d.state.started_at == 5.0


@pytest.mark.parametrize("status, now, reason, index, aborted", [
    ("passed", 60.0, S.STEP_STARTED, 4, False),
    ("failed", 60.0, S.ANALYSIS_FAILED, 3, True),
    ("inconclusive", 60.0, None, 3, False),
    ("inconclusive", 600.0, S.ANALYSIS_TIMED_OUT, 3, True),
])
def test_analysis_outcomes(status, now, reason, index, aborted):
    d = advance(at(3, weight=10), now, verdict=Verdict(status, "ctr@10 0.31 vs 0.33, drop 0.02 (n=400/410)",
                                                        {"gates": [{"metric": "ctr@10"}]}))
    assert d.state.index == index and d.state.aborted is aborted
    assert [t.reason for t in d.transitions][:1] == ([reason] if reason else [])
    if aborted:
        assert d.state.weight == 0 and "weight back to 0%" in d.state.message
        assert (reason != S.ANALYSIS_TIMED_OUT) or "inconclusive after maxDuration 10m" in d.state.message
    if status == "inconclusive" and not aborted:  # the numbers stay in the state for status
        assert d.state.analysis["gates"] == [{"metric": "ctr@10"}] and d.state.looked_at == now
        assert d.next_due == now + 60 and d.changed


def test_interleave_pass_clears_its_share_and_fail_aborts():
    state = at(4, weight=10, interleave=50)
    passed = advance(state, 60.0, verdict=Verdict("passed", "candidate wins 58% of 300 queries"))
    assert passed.state.interleave == 0 and passed.state.weight == 50 and passed.state.index == 6
    failed = advance(state, 60.0, verdict=Verdict("failed", "stable wins"))
    assert failed.state.aborted and failed.state.interleave == 0


@pytest.mark.parametrize("state, now, expect", [
    (at(3), 59.0, None), (at(3), 60.0, "analysis"), (at(3, looked_at=60.0), 100.0, None),
    (at(3, looked_at=60.0), 120.0, "analysis"), (at(4), 60.0, "interleave"), (at(1), 10**6, None),
    (at(3, aborted=True), 10**6, None), (at(3, started=0.0, looked_at=590.0), 600.0, "analysis"),  # maxDuration
])
def test_due_input(state, now, expect):
    assert due_input(state, now) == expect


URL = "http://deploy-bot/confirm"
YES, NO = S.Confirmation(True, "HTTP 200"), S.Confirmation(False, "HTTP 503")


def gated(*before: str, steps=ALL, now=0.0):
    return start(steps, now, confirm={"url": URL, "before": list(before)})


def test_confirm_webhook_holds_the_promotion():
    state = at(7, weight=50, confirm={"url": URL, "before": ["promotion"]})
    held = advance(state, 10.0)
    assert held.state.pending == "promotion" and not held.state.promoted
    assert [t.reason for t in held.transitions] == [S.AWAITING_CONFIRMATION]
    assert f"confirmation from {URL}" in held.waiting_for and "promote v2" in held.waiting_for
    assert held.next_due == 10.0 and due_input(held.state, 10.0) == "confirm"  # ask at once
    no = advance(held.state, 11.0, confirmed=NO)
    assert not no.state.promoted and no.next_due == 41.0 and "last answer: HTTP 503" in no.waiting_for
    assert [t.reason for t in no.transitions] == [S.CONFIRMATION_WITHHELD]  # journaled
    assert due_input(no.state, 20.0) is None and due_input(no.state, 41.0) == "confirm"
    again = advance(no.state, 41.0, confirmed=NO)
    assert again.transitions == () and again.changed  # the same no again: recorded, not journaled again
    go = advance(again.state, 71.0, confirmed=YES)
    assert go.state.promoted and go.transitions[-1].promote and "confirmed (HTTP 200)" in go.state.message


@pytest.mark.parametrize("before, steps, pending_at, weights", [
    # rollout: before the first step only; nothing of the candidate is served or mirrored meanwhile
    (("rollout",), ({"setWeight": 10}, {"setWeight": 20}, {"pause": {}}), 0, (0, 0, 0)),
    # step: before every step, the first included
    (("step",), ({"setMirror": 100}, {"setWeight": 10}, {"pause": {}}), 0, (0, 0, 0)),
    # trafficIncrease: a mirror shows nobody the candidate's results; a weight rise waits
    (("trafficIncrease",), ({"setMirror": 100}, {"setWeight": 10}, {"pause": {}}), 1, (0, 100, 0)),
    (("trafficIncrease",), ({"interleave": {"percentage": 20}},), 0, (0, 0, 0)),
    # promotion only: the steps run, the promotion waits
    (("promotion",), ({"setMirror": 100}, {"setWeight": 10}), 2, (10, 100, 0)),
])
def test_each_gate_holds_before_its_step_with_nothing_of_it_applied(before, steps, pending_at, weights):
    d = gated(*before, steps=steps)
    assert d.state.index == pending_at and d.state.pending is not None
    assert (d.state.weight, d.state.mirror, d.state.interleave) == weights
    assert d.transitions[-1].reason in (S.AWAITING_CONFIRMATION, S.STEP_STARTED)
    assert "waiting for confirmation from" in d.transitions[-1].message
    late = advance(d.state, 10**6, confirmed=S.Confirmation(False, "unreachable (ConnectionRefusedError)"))
    assert late.state.index == pending_at and late.state.pending  # no answer never passes, however late


def test_one_answer_opens_one_gate_and_the_step_clock_starts_then():
    d = gated("step", steps=({"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}))
    one = advance(d.state, 100.0, confirmed=YES)
    # setWeight 10 applied and done at once; the pause waits behind its own gate, not opened by that yes
    assert (one.state.index, one.state.pending, one.state.weight) == (1, "step", 10)
    assert [t.reason for t in one.transitions] == [S.STEP_CONFIRMED, S.AWAITING_CONFIRMATION]
    two = advance(one.state, 200.0, confirmed=YES)
    assert (two.state.index, two.state.pending, two.state.started_at, two.next_due) == (1, None, 200.0, 260.0)


def test_traffic_increase_only_before_a_rise():
    steps = ({"setWeight": 30}, {"setWeight": 10}, {"setWeight": 20}, {"pause": {}})
    d = gated("trafficIncrease", steps=steps)
    assert (d.state.index, d.state.pending) == (0, "trafficIncrease")
    d = advance(d.state, 5.0, confirmed=YES)  # 30 applies; 10 is a decrease: at once; 20 rises: waits
    assert (d.state.index, d.state.pending, d.state.weight) == (2, "trafficIncrease", 10)


def test_an_answer_for_no_pending_gate_is_ignored():
    d = advance(at(6, weight=50, confirm={"url": URL, "before": ["promotion"]}), 10.0, confirmed=YES)
    assert not d.state.promoted and d.state.index == 6  # the pause {} still waits for promote


def test_promote_at_a_gate_confirms_it_by_hand_and_promote_full_skips_every_gate():
    d = gated("step")
    by_hand = advance(d.state, 5.0, command="promote")
    assert by_hand.transitions[0].reason == S.STEP_CONFIRMED and "`controller promote`" in by_hand.transitions[0].message
    assert by_hand.state.mirror == 100 and by_hand.state.pending == "step" and by_hand.state.index == 1
    full = advance(by_hand.state, 6.0, command="promote-full")
    assert full.state.promoted and full.transitions[-1].promote


def test_a_restart_resumes_the_same_gate():
    d = advance(gated("trafficIncrease").state, 400.0)  # the 5m pause ended: setWeight 10 waits
    held = advance(d.state, 401.0, confirmed=NO)
    again = RolloutState.from_dict(held.state.to_dict())
    assert again == held.state and due_input(again, 420.0) is None and due_input(again, 431.0) == "confirm"
    assert advance(again, 431.0, confirmed=YES).state.weight == 10


def test_abort_while_waiting_and_retry_asks_again():
    d = gated("rollout")
    aborted = advance(d.state, 5.0, command="abort")
    assert aborted.state.aborted and due_input(aborted.state, 100.0) is None
    retried = advance(aborted.state, 10.0, command="retry")
    assert retried.state.pending == "rollout" and retried.state.confirmation is None


def test_restart_mid_step_resumes_the_same_step():
    """State round-trips through the store's JSON; time counts from stepStartedAt, not the restart."""
    d = start(now=1000.0)
    stored = RolloutState.from_dict(__import__("json").loads(__import__("json").dumps(d.state.to_dict())))
    assert stored == d.state and stored.index == 1
    resumed = advance(stored, 1000.0 + 120)  # the controller restarts 2 minutes into the 5 minute pause
    assert resumed.state.index == 1 and resumed.next_due == 1300.0 and resumed.transitions == ()
    assert advance(stored, 1300.0).state.index == 3


def test_manifest_change_restarts_from_the_first_step():
    # the engine calls begin() when the stored digest differs; the new rollout starts at step 0
    old = at(5, weight=50)
    d = begin(old.version, old.stable, "new-digest", old.steps, 50.0, reason=S.STEPS_RESTARTED,
              why="the manifest changed")
    assert d.transitions[0].reason == S.STEPS_RESTARTED and d.state.index == 1 and d.state.weight == 0
    assert d.state.manifest_digest == "new-digest"


def test_no_steps_promotes_at_once_and_unknown_command_is_refused():
    assert start(()).state.promoted
    with pytest.raises(ValueError, match="unknown command"):
        advance(at(1), 0.0, command="jump")
