"""Stepped rollouts through the real reconcile loop and store: steps, state, journal, status, verbs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controller.core.types import Routing
from controller.engine.reconcile import Hooks, reconcile_index
from controller.engine.rollout import apply_command
from controller.errors import InvalidInput
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import V2_OPTIONS, manifest, write_manifest

T0 = 1_800_000_000.0
STEPS = [{"setMirror": 50}, {"pause": {"duration": "10m"}}, {"setWeight": 20}, {"pause": {}}]


def apply(ws: Path, doc: dict, store: Store, at: float, events: list | None = None, **kw):
    [loaded] = load_manifests(write_manifest(ws, doc))
    sink = events if events is not None else []
    return reconcile_index(loaded, store, hooks=Hooks(clock=lambda: at, on_transition=lambda n, e: sink.append(e)),
                           **kw)


def stepped(steps=STEPS, **kw) -> dict:
    doc = manifest("v2", V2_OPTIONS, **kw)
    doc["spec"]["rollout"] = {"steps": steps}
    return doc


@pytest.fixture
def rolling(ws, store):
    apply(ws, manifest("v1"), store, T0 - 100)
    events: list = []
    result = apply(ws, stepped(), store, T0, events)
    return result, events


def test_steps_run_until_the_first_wait_and_journal_each_transition(rolling, store):
    result, events = rolling
    assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=0.0, mirror=50.0)
    record = json.loads((store.index_dir("qs") / "routing.json").read_text())
    assert record["mirror"] == 50.0 and "interleave" not in record  # serve reads the shares from here
    steps = [r["step"] for r in store.journal("qs") if "step" in r]
    assert [(s["index"], s["mirror"]) for s in steps] == [(0, 50.0), (1, 50.0)]
    rollout = result.status["rollout"]
    assert (rollout["currentStepIndex"], rollout["stepStartedAt"], rollout["nextDueAt"]) == (1, T0, T0 + 600)
    assert "pause of 10m" in rollout["waitingFor"] and result.status["phase"] == "Progressing"
    assert [e["event"] for e in events if e.get("step") is not None] == ["StepTransition", "StepTransition"]


def test_dry_run_shows_the_next_step_and_when(rolling, ws, store):
    before = (store.index_dir("qs") / "rollout.json").read_bytes()
    waiting = apply(ws, stepped(), store, T0 + 300, dry_run=True).plan
    assert not waiting.changes and waiting.rollout["nextDueAt"] == T0 + 600
    due = apply(ws, stepped(), store, T0 + 600, dry_run=True).plan
    assert [(a.kind, a.weight) for a in due.actions] == [("step", 20.0), ("step", 20.0)]
    assert (store.index_dir("qs") / "rollout.json").read_bytes() == before  # a dry run writes nothing


def test_a_restart_mid_pause_resumes_the_same_step(rolling, ws, store):
    again = apply(ws, stepped(), store, T0 + 300)  # a new process: only the store carries the state
    assert again.executed == [] and again.status["rollout"]["currentStepIndex"] == 1
    done = apply(ws, stepped(), store, T0 + 600)
    assert store.routing("qs").weight == 20.0 and done.status["rollout"]["currentStepIndex"] == 3
    assert "controller promote" in done.status["rollout"]["waitingFor"]


def test_promote_abort_retry_verbs(rolling, ws, store):
    status = apply_command(store, "qs", "promote", now=T0 + 5)  # skip the 10m pause
    assert store.routing("qs").weight == 20.0 and status["rollout"]["currentStepIndex"] == 3
    status = apply_command(store, "qs", "abort", now=T0 + 6)
    assert store.routing("qs") == Routing(stable="v1", candidate=None, weight=0.0)
    assert status["phase"] == "RolledBack" and status["rollout"]["aborted"]
    again = apply(ws, stepped(), store, T0 + 10**5)  # stays aborted on later reconciles
    assert again.executed == [] and store.routing("qs").candidate is None
    with pytest.raises(InvalidInput, match="is aborted"):
        apply_command(store, "qs", "promote", now=T0 + 7)
    apply_command(store, "qs", "retry", now=T0 + 8)
    assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=0.0, mirror=50.0)
    status = apply_command(store, "qs", "promote-full", now=T0 + 9)
    assert store.routing("qs") == Routing(stable="v2", candidate=None, weight=0.0)
    assert status["phase"] == "Healthy" and status["rollout"]["promoted"]
    reasons = [r["reason"] for r in store.journal("qs") if "step" in r]
    assert reasons[-5:] == ["RolloutAborted", "RolloutRetried", "StepStarted", "PromotedFull", "StepsComplete"]
    with pytest.raises(InvalidInput, match="already promoted"):
        apply_command(store, "qs", "abort")


def test_a_manifest_change_mid_rollout_restarts_the_steps(rolling, ws, store):
    apply(ws, stepped(), store, T0 + 600)
    assert store.routing("qs").weight == 20.0
    # a change of the rollout itself (history.keep alone no longer restarts: tests/engine/test_rollout_restart.py)
    changed = apply(ws, stepped([{"setMirror": 50}, {"pause": {"duration": "20m"}}, {"setWeight": 20}, {"pause": {}}]),
                    store, T0 + 700)
    assert changed.status["rollout"]["currentStepIndex"] == 1 and store.routing("qs").weight == 0.0
    assert any(r["reason"] == "StepsRestarted" for r in store.journal("qs"))


def test_verbs_refuse_an_index_without_steps(ws, store):
    apply(ws, manifest("v1"), store, T0)
    with pytest.raises(InvalidInput, match="no stepped rollout"):
        apply_command(store, "qs", "promote")


@pytest.mark.parametrize("steps, field, fragment", [
    ([{"setWeight": 10}, {"pause": {}}, {"pause": {"duration": "10x"}}], "spec.rollout.steps[2].pause.duration",
     "positive duration of at most a year"),
    ([{"setWeight": 10, "setMirror": 5}], "spec.rollout.steps[0]", "exactly one"),
    ([{"setWeight": 120}], "spec.rollout.steps[0].setWeight", "less than or equal to 100"),
    ([{"analysis": {"gates": [{"metric": "ctr@10"}]}}], "spec.rollout.steps[0].analysis.gates[0]",
     "maxDrop, maxIncrease, min or max"),
    ([{"analysis": {"gates": [{"metric": "ctr@10", "min": 0.1}], "interval": "soon"}}],
     "spec.rollout.steps[0].analysis.interval", "positive duration of at most a year"),
])
def test_bad_steps_name_their_field(ws, steps, field, fragment):
    with pytest.raises(InvalidInput) as info:
        load_manifests(write_manifest(ws, stepped(steps)))
    assert info.value.field == field and fragment in str(info.value)


# the event log reader skips segments last written before the window: analysis windows are in the real past
TA = float(int(time.time()) - 7200)
ANALYSIS = [{"setWeight": 20}, {"analysis": {"gates": [{"metric": "ctr", "maxDrop": 0.05}], "interval": "1m",
                                             "minSamples": 100, "maxDuration": "30m"}}, {"pause": {}}]


def served(store: Store, p_stable: float, p_candidate: float, start: float, n: int = 4000) -> None:
    """Impressions and clicks of both versions in the event log, as `controller serve` writes them."""
    import random

    from controller.store import events as E

    rng = random.Random(7)
    log = E.EventLog(E.events_root(store.root), window_s=3600)
    for i in range(n):
        version, p = ("v1", p_stable) if i % 2 else ("v2", p_candidate)
        rid = f"r{i}"
        log.append({"type": "impression", "index": "qs", "ts": start + i * 0.01, "requestId": rid,
                    "version": version, "role": "stable" if version == "v1" else "candidate", "k": 3,
                    "ids": ["a", "b", "c"], "tookMs": 5.0})
        if rng.random() < p:
            log.append({"type": "click", "index": "qs", "ts": start + i * 0.01 + 0.005, "requestId": rid,
                        "version": version, "docId": "a", "position": 1})
    log.close()


@pytest.mark.parametrize("p_candidate, at, reason, index, aborted", [
    (0.30, 120, "AnalysisFailed", 1, True),        # 30% vs 60% CTR: the online gate fails
    (0.60, 120, "StepStarted", 2, False),          # as good as stable: passed, on to the pause
    (None, 30 * 60, "AnalysisTimedOut", 1, True),  # no traffic at all: inconclusive until maxDuration
])
def test_analysis_step_on_the_event_log(ws, store, p_candidate, at, reason, index, aborted):
    apply(ws, manifest("v1"), store, TA - 100)
    apply(ws, stepped(ANALYSIS), store, TA)
    assert store.routing("qs").weight == 20.0
    if p_candidate is not None:
        served(store, 0.6, p_candidate, TA + 1)
    early = apply(ws, stepped(ANALYSIS), store, TA + 30)  # before the first interval: no look yet
    assert early.executed == []
    result = apply(ws, stepped(ANALYSIS), store, TA + at)
    rollout = result.status["rollout"]
    assert (rollout["currentStepIndex"], rollout["aborted"]) == (index, aborted)
    last = [r for r in store.journal("qs") if "step" in r][-1]
    assert last["reason"] == reason
    if aborted:
        assert store.routing("qs").weight == 0.0 and result.status["phase"] == "RolledBack"
    if p_candidate is not None:  # the numbers behind the decision, in the journal record of the transition
        gate = last["step"]["analysis"]["gates"][0]
        assert gate["metric"] == "ctr" and gate["samples"]["candidate"] == 2000
        assert gate["value"] == pytest.approx(p_candidate, abs=0.05)


def test_unknown_online_metric_is_refused_naming_its_field(ws, store):
    steps = [{"analysis": {"gates": [{"metric": "ctr", "maxDrop": 0.1}, {"metric": "clickz", "min": 0.1}]}}]
    apply(ws, manifest("v1"), store, T0)
    with pytest.raises(InvalidInput) as info:
        apply(ws, stepped(steps), store, T0)
    assert info.value.field == "spec.rollout.steps[0].analysis.gates[1].metric"


def test_command_annotation_is_applied_once_per_value(rolling, store):
    from controller.engine.rollout import apply_annotation

    assert "promote applied" in apply_annotation(store, "qs", "promote")
    assert store.routing("qs").weight == 20.0
    assert apply_annotation(store, "qs", "promote") is None  # the same value again: already consumed
    assert store.routing("qs").weight == 20.0
    refused = apply_annotation(store, "qs", "retry")  # not aborted: refused, consumed, said
    assert "refused" in refused and apply_annotation(store, "qs", "retry") is None
    assert "abort applied" in apply_annotation(store, "qs", "abort:1")
    assert store.routing("qs").candidate is None


def test_confirm_webhook_holds_the_promotion_until_it_answers_200(ws, store, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [503, 200]
    asked: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(answers.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("CONTROLLER_ALLOW_PRIVATE_WEBHOOKS", "1")
    try:
        doc = stepped([{"setWeight": 30}])
        doc["spec"]["rollout"]["confirm"] = {"url": f"http://127.0.0.1:{httpd.server_address[1]}/confirm",
                                             "timeout": 5}
        apply(ws, manifest("v1"), store, T0 - 100)
        dry = apply(ws, doc, store, T0, dry_run=True)  # a dry run never asks the receiver
        assert asked == [] and "promote" not in [a.kind for a in dry.plan.actions]
        held = apply(ws, doc, store, T0)
        assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=30.0)
        assert "confirm webhook" in held.status["rollout"]["waitingFor"] and len(asked) == 1
        apply(ws, doc, store, T0 + 10)  # asked again only after 30 s
        assert len(asked) == 1
        apply(ws, doc, store, T0 + 31)
        assert store.routing("qs").stable == "v2" and len(asked) == 2
        assert asked[-1]["event"] == "ConfirmPromotion" and asked[-1]["version"] == "v2"
    finally:
        httpd.shutdown()


class ConfirmReceiver:
    """A real HTTP receiver on loopback answering each confirm POST from a script: a status, or
    "sleep" (no answer within the manifest's timeout)."""

    def __init__(self, answers: list) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.answers, self.asked = list(answers), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.asked.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                answer = outer.answers.pop(0)
                if answer == "sleep":
                    time.sleep(2.5)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/confirm"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_confirm_gates_hold_each_traffic_increase_until_the_receiver_says_yes(ws, store, monkeypatch):
    monkeypatch.setenv("CONTROLLER_ALLOW_PRIVATE_WEBHOOKS", "1")
    receiver = ConfirmReceiver([503, "sleep", 200, 200, 200])
    try:
        doc = stepped([{"setMirror": 50}, {"setWeight": 20}, {"setWeight": 50}])
        doc["spec"]["rollout"]["confirm"] = {"url": receiver.url, "timeout": 1,
                                             "before": ["trafficIncrease", "promotion"]}
        apply(ws, manifest("v1"), store, T0 - 100)
        dry = apply(ws, doc, store, T0, dry_run=True)  # the plan says what it would wait for; nobody is asked
        assert receiver.asked == [] and dry.plan.rollout["step"] == "setWeight 20"
        events: list = []
        held = apply(ws, doc, store, T0, events)
        # the mirror (nobody sees its results) ran; the weight rise waits, asked once, the no journaled
        assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=0.0, mirror=50.0)
        assert [(a["event"], a["next"]) for a in receiver.asked] == [("ConfirmTrafficIncrease", "setWeight 20")]
        rollout = held.status["rollout"]
        assert rollout["awaitingConfirmation"] == "trafficIncrease"
        assert rollout["confirmation"]["answer"] == "HTTP 503"
        assert f"confirmation from {receiver.url}" in rollout["waitingFor"] and rollout["nextDueAt"] == T0 + 30
        apply(ws, doc, store, T0 + 10)  # asked again only after 30 s
        assert len(receiver.asked) == 1
        late = apply(ws, doc, store, T0 + 31)  # no answer within the timeout: still held, never passed
        assert store.routing("qs").weight == 0.0 and late.status["rollout"]["confirmation"]["answer"] == \
            "no answer within 1s"
        apply(ws, doc, store, T0 + 62, events)  # yes, yes, yes: one gate each, then the promotion
        assert store.routing("qs").stable == "v2"
        assert [a["event"] for a in receiver.asked] == ["ConfirmTrafficIncrease"] * 4 + ["ConfirmPromotion"]
        assert [a["next"] for a in receiver.asked[2:]] == ["setWeight 20", "setWeight 50", "promotion"]
        reasons = [r["reason"] for r in store.journal("qs") if "step" in r]
        assert reasons == ["StepStarted", "AwaitingConfirmation", "ConfirmationWithheld", "ConfirmationWithheld",
                           "StepConfirmed", "AwaitingConfirmation", "StepConfirmed", "StepStarted",
                           "AwaitingConfirmation", "StepsComplete"]
        withheld = [r for r in store.journal("qs") if r.get("reason") == "ConfirmationWithheld"]
        assert "answered HTTP 503" in withheld[0]["message"] and "no answer within 1s" in withheld[1]["message"]
        assert {"AwaitingConfirmation", "ConfirmationWithheld", "AliasSwitched"} <= {e["event"] for e in events}
    finally:
        receiver.close()


def test_an_unreachable_confirm_receiver_holds_the_first_step(ws, store, monkeypatch):
    monkeypatch.setenv("CONTROLLER_ALLOW_PRIVATE_WEBHOOKS", "1")
    receiver = ConfirmReceiver([])
    url = receiver.url
    receiver.close()  # nothing listens there any more
    doc = stepped([{"setWeight": 20}, {"pause": {}}])
    doc["spec"]["rollout"]["confirm"] = {"url": url, "timeout": 1, "before": ["rollout"]}
    apply(ws, manifest("v1"), store, T0 - 100)
    held = apply(ws, doc, store, T0)
    assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=0.0)
    assert held.status["rollout"]["confirmation"]["answer"].startswith("unreachable (")
    assert held.status["phase"] == "Progressing"
    apply(ws, doc, store, T0 + 31)
    assert store.routing("qs").weight == 0.0
    result = apply_command(store, "qs", "promote", now=T0 + 40)  # confirmed by hand: step 1 starts
    assert store.routing("qs").weight == 20.0 and result["rollout"]["step"] == "pause (until promoted)"


def test_a_reviewed_plan_of_a_stepped_rollout_applies(ws, store, tmp_path):
    """`reconcile --dry-run --out` then `apply`: the plan made again at apply time is the reviewed one."""
    from controller.engine.planfile import apply_plan_file, write_plan_file
    from controller.engine.reconcile import IndexResult, plan_index

    past = time.time() - 3600  # the rollout began an hour ago: its 10m pause is over now
    apply(ws, manifest("v1"), store, past - 100)
    apply(ws, stepped(), store, past)
    [loaded] = load_manifests(write_manifest(ws, stepped()))
    _, planned = plan_index(loaded, store)
    assert [a.kind for a in planned.actions] == ["step", "step"]
    out = tmp_path / "plan.json"
    write_plan_file([IndexResult("qs", planned)], [loaded], store, out, [])
    [result] = apply_plan_file(out, store)
    assert [a.kind for a in result.executed] == ["step", "step"] and store.routing("qs").weight == 20.0
