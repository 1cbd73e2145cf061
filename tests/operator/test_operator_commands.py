"""The handlers' bookkeeping around the `indexops.dev/command` annotation and the timer's short tick,
in-process (real store and engine, no API): a command that does nothing says so (a Warning Event and
status.lastCommand), a command that lands while the resource is held is applied at the next tick,
and an invalid resource is not re-run on every tick.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

kopf = pytest.importorskip("kopf")

from controller.errors import InvalidInput  # noqa: E402
from controller.operator.body import resource_ref  # noqa: E402
from controller.operator.handlers import OperatorConfig, Runtime, run_cycle, timer_tick  # noqa: E402
from tests.operator.conftest import DATA_DIR, NAMESPACE, Api, eventually, example  # noqa: E402
from tests.operator.kmock_state import StatefulEmulator  # noqa: E402

REF = resource_ref(NAMESPACE, "quickstart")


class NotStopped:
    """kopf's `stopped` kwarg of a timer that keeps running."""

    reason = None

    def is_set(self) -> bool:
        return False


def body(name: str = "quickstart-v1.yaml", command: str | None = None, status: dict[str, Any] | None = None,
         generation: int = 1) -> dict[str, Any]:
    b = example(name)
    b["metadata"].update(uid="u-1", generation=generation, resourceVersion="1")
    if command is not None:
        b["metadata"]["annotations"]["indexops.dev/command"] = command
    if status is not None:
        b["status"] = status
    return b


def runtime(tmp_path: Path, posted: list[dict[str, Any]], interval: float = 3600.0) -> Runtime:
    return Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR, interval=interval),
                   post_event=lambda obj, **kw: posted.append(kw))


def last_status(rt: Runtime) -> dict[str, Any]:
    return rt.status_writer.writes[-1][1]


def cycles(rt: Runtime, result: str) -> float:
    return sum(s.value for m in rt.metrics.reconciles.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["result"] == result)


def refusals(posted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in posted if e.get("reason") == "CommandRefused"]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def test_abort_without_a_stepped_rollout_is_refused_with_a_warning_event_and_in_the_status(tmp_path: Path) -> None:
    posted: list[dict[str, Any]] = []
    rt = runtime(tmp_path, posted)
    run_cycle(rt, body(), 0, "create")
    run_cycle(rt, body("quickstart-v2-canary.yaml", generation=2), 0, "update")  # a percentage canary, no steps
    assert last_status(rt)["candidate"]["version"] == "v2"

    run_cycle(rt, body("quickstart-v2-canary.yaml", command="abort", generation=2, status=last_status(rt)), 0,
              "timer")
    (event,) = refusals(posted)
    assert event["type"] == "Warning"
    assert "indexops.dev/command=abort" in event["message"] and "stepped rollout" in event["message"]
    status = last_status(rt)
    assert status["lastCommand"]["value"] == "abort" and status["lastCommand"]["result"] == "Refused"
    assert "spec.rollout.steps" in status["lastCommand"]["message"]
    accepted = condition(status, "CommandAccepted")
    assert accepted is not None and (accepted["status"], accepted["reason"]) == ("False", "CommandRefused")
    assert status["candidate"]["version"] == "v2" and status["weight"] == 25.0  # nothing was aborted

    # the next cycles keep saying it in the status, without another Event for the same value
    run_cycle(rt, body("quickstart-v2-canary.yaml", command="abort", generation=2, status=status), 0, "timer")
    assert len(refusals(posted)) == 1
    assert last_status(rt)["lastCommand"]["result"] == "Refused"

    # the value stays on the object while the manifest moves to a stepped rollout: refused once, it is not
    # applied to the first stepped rollout that starts later (no step state remembered it before)
    stepped = body("quickstart-v2-canary.yaml", command="abort", generation=3, status=last_status(rt))
    stepped["spec"]["rollout"] = {"steps": [{"setWeight": 10}, {"pause": {}}]}
    for _ in range(2):
        run_cycle(rt, {**stepped, "status": last_status(rt)}, 0, "timer")
        status = last_status(rt)
        assert status["phase"] != "RolledBack" and status["weight"] == 10.0, status


def test_a_misspelt_command_is_refused_naming_the_value(tmp_path: Path) -> None:
    posted: list[dict[str, Any]] = []
    rt = runtime(tmp_path, posted)
    run_cycle(rt, body(), 0, "create")
    run_cycle(rt, body(command="promtoe", status=last_status(rt)), 0, "timer")
    (event,) = refusals(posted)
    assert "promtoe" in event["message"] and "unknown command" in event["message"]
    assert "promote" in event["message"]  # the values that would work
    assert last_status(rt)["lastCommand"] == {"value": "promtoe", "result": "Refused",
                                               "message": event["message"].split("not applied: ", 1)[1]}
    # removing the annotation removes the record from the status
    run_cycle(rt, body(status=last_status(rt)), 0, "timer")
    assert "lastCommand" not in last_status(rt) and condition(last_status(rt), "CommandAccepted") is None


def test_a_refusal_of_the_stepped_rollout_is_a_warning_too(tmp_path: Path) -> None:
    posted: list[dict[str, Any]] = []
    rt = runtime(tmp_path, posted)
    run_cycle(rt, body(), 0, "create")
    stepped = body("quickstart-v2-canary.yaml", generation=2)
    stepped["spec"]["rollout"] = {"steps": [{"setWeight": 10}, {"pause": {}}]}
    run_cycle(rt, stepped, 0, "update")
    assert last_status(rt)["rollout"]["currentStepIndex"] == 1  # paused at step 2
    stepped["metadata"]["annotations"]["indexops.dev/command"] = "retry"  # nothing was aborted
    stepped["status"] = last_status(rt)
    run_cycle(rt, stepped, 0, "timer")
    (event,) = refusals(posted)
    assert "indexops.dev/command=retry" in event["message"] and "not aborted" in event["message"]
    assert last_status(rt)["lastCommand"]["result"] == "Refused"

    stepped["metadata"]["annotations"]["indexops.dev/command"] = "promote"
    stepped["status"] = last_status(rt)
    run_cycle(rt, stepped, 0, "timer")
    status = last_status(rt)
    assert status["lastCommand"]["result"] == "Applied" and len(refusals(posted)) == 1
    assert condition(status, "CommandAccepted")["status"] == "True"


def test_a_command_landing_while_the_resource_is_held_runs_at_the_next_tick(tmp_path: Path) -> None:
    rt = runtime(tmp_path, [])
    timer_tick(rt, body(), 0, NotStopped())  # the first cycle; the next full one is an hour away
    assert cycles(rt, "ok") == 1
    rt.hold(REF, 0.3)  # a fault (401/403, full store, Retry-After) holds every trigger of the resource
    with pytest.raises(kopf.TemporaryError):
        timer_tick(rt, body(command="abort", status=last_status(rt)), 0, NotStopped())
    time.sleep(0.35)
    # kopf retries the tick after the hold: the command was not handled, so the cycle runs now
    timer_tick(rt, body(command="abort", status=last_status(rt)), 1, NotStopped())
    assert cycles(rt, "ok") == 2
    assert last_status(rt)["lastCommand"]["value"] == "abort"
    timer_tick(rt, body(command="abort", status=last_status(rt)), 0, NotStopped())
    assert cycles(rt, "ok") == 2  # handled once: the ticks after it do not run it again


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_the_python_api_refuses_an_interval_that_would_hot_loop(interval: float) -> None:
    with pytest.raises(InvalidInput, match="interval"):
        OperatorConfig(store_root=Path("/s"), data_dir=DATA_DIR, interval=interval)


def test_an_invalid_resource_waits_for_the_interval_not_every_tick(tmp_path: Path) -> None:
    rt = runtime(tmp_path, [])
    invalid = body()
    invalid["spec"]["corpus"]["path"] = "../../etc/passwd"  # leaves the data directory
    with pytest.raises(kopf.PermanentError):
        timer_tick(rt, invalid, 0, NotStopped())
    assert cycles(rt, "invalid") == 1
    timer_tick(rt, invalid, 0, NotStopped())  # the next 10 s tick: not due until the interval passed
    assert cycles(rt, "invalid") == 1
    assert rt.status_writer.writes and last_status(rt)["phase"] == "Stalled"
    # a new command value gets one cycle (it cannot apply to an invalid spec), not one per tick
    invalid["metadata"]["annotations"]["indexops.dev/command"] = "promote"
    with pytest.raises(kopf.PermanentError):
        timer_tick(rt, invalid, 0, NotStopped())
    timer_tick(rt, invalid, 0, NotStopped())
    assert cycles(rt, "invalid") == 2


@pytest.mark.operator
@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_the_refusal_reaches_kubectl_describe(cluster: Api, operator) -> None:
    await cluster.create(example("quickstart-v1.yaml"))
    await eventually(lambda: ((cluster.get("quickstart") or {}).get("status") or {}).get("phase") == "Healthy",
                     60, "v1 Healthy")
    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "abort"}}})
    event = await eventually(lambda: next((e for e in cluster.events("quickstart")
                                           if e.get("reason") == "CommandRefused"), None), 30, "the Warning")
    assert event["type"] == "Warning" and "indexops.dev/command=abort" in event["message"]
    status = await eventually(lambda: (cluster.get("quickstart") or {}).get("status", {}).get("lastCommand"),
                              30, "status.lastCommand")
    assert status["result"] == "Refused"
