"""Fast tests of the operator's shell pieces: no kopf loop, no API server (except the Lease test)."""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

kopf = pytest.importorskip("kopf")

from controller.operator import operator_cmd  # noqa: E402
from controller.errors import InvalidInput  # noqa: E402
from controller.operator.body import (loaded_from_body, manifest_document, on_delete_policy,  # noqa: E402
                                      pseudo_manifest_path, resource_ref, store_for)
from controller.operator.faults import CycleStopped  # noqa: E402
from controller.operator.handlers import (OperatorConfig, Runtime, backoff, configure_settings,  # noqa: E402
                                          cr_status, error_status, event_message, make_hooks, run_cycle,
                                          timer_tick)
from controller.operator.leader import lease_decision  # noqa: E402
from controller.operator.main import JsonFormatter, health_routes, metrics_routes, serve_http  # noqa: E402
from controller.operator.routing import routing_record  # noqa: E402
from controller.operator.statuswriter import MemoryStatusWriter, status_changed  # noqa: E402
from tests.operator.conftest import DATA_DIR, example  # noqa: E402


def body(**spec_changes: Any) -> dict[str, Any]:
    b = example("quickstart-v1.yaml")
    b["metadata"].update(uid="u-1", generation=3, resourceVersion="7",
                         annotations={"kopf.zalando.org/last-handled-configuration": "{}"})
    b["spec"].update(spec_changes)
    return b


def test_paths_in_a_resource_resolve_against_the_data_dir() -> None:
    loaded = loaded_from_body(body(), DATA_DIR)
    assert loaded.paths["corpus"] == (DATA_DIR / "data" / "corpus.jsonl").resolve()
    assert loaded.source == pseudo_manifest_path(DATA_DIR, "search", "quickstart")
    assert loaded.name == "quickstart"


def test_bookkeeping_annotations_do_not_move_the_manifest_digest() -> None:
    a, b = body(), body()
    b["metadata"]["annotations"] = {"indexops.dev/last-handled-configuration": "changed"}
    b["metadata"]["resourceVersion"] = "99"
    assert loaded_from_body(a, DATA_DIR).digest == loaded_from_body(b, DATA_DIR).digest
    assert set(manifest_document(a)["metadata"]) == {"name", "namespace"}


def test_a_path_escaping_the_data_dir_is_invalid_and_names_the_resource() -> None:
    with pytest.raises(InvalidInput) as err:
        loaded_from_body(body(corpus={"path": "../../etc/passwd"}), DATA_DIR)
    message = str(err.value)
    assert message.startswith("EmbeddingIndex search/quickstart: field spec.corpus.path")
    assert "escapes" in message


def test_a_spec_error_names_the_field_and_value() -> None:
    b = body()
    b["spec"]["rollout"] = {"percentage": 150}
    with pytest.raises(InvalidInput, match=r"spec\.rollout\.percentage.*150"):
        loaded_from_body(b, DATA_DIR)


@pytest.mark.parametrize("annotation, expected", [(None, "retain"), ("delete", "delete"), ("retain", "retain")])
def test_on_delete_policy(annotation: str | None, expected: str) -> None:
    b = body()
    if annotation:
        b["metadata"]["annotations"]["indexops.dev/on-delete"] = annotation
    assert on_delete_policy(b, "retain") == expected


def test_spec_on_delete_wins_over_the_annotation() -> None:
    b = body()
    b["spec"]["onDelete"] = "delete"
    b["metadata"]["annotations"]["indexops.dev/on-delete"] = "retain"
    assert on_delete_policy(b, "retain") == "delete"
    loaded_from_body(b, DATA_DIR)  # the field is part of the manifest schema


def test_on_delete_policy_rejects_a_typo() -> None:
    b = body()
    b["metadata"]["annotations"]["indexops.dev/on-delete"] = "purge"
    with pytest.raises(InvalidInput, match="purge"):
        on_delete_policy(b, "retain")


def test_one_store_per_namespace(tmp_path: Path) -> None:
    assert store_for(tmp_path, "a").root != store_for(tmp_path, "b").root


def test_status_carries_observed_generation_everywhere() -> None:
    status = cr_status({"phase": "Healthy", "conditions": [{"type": "Ready", "status": "True"}]}, 4)
    assert status["observedGeneration"] == 4 and status["conditions"][0]["observedGeneration"] == 4


def test_error_status_is_stalled_with_the_message(tmp_path: Path) -> None:
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR))
    status = error_status(rt, body(), "EmbeddingIndex search/quickstart: field spec.corpus.path: not found")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Stalled" and conditions["Stalled"]["status"] == "True"
    assert "spec.corpus.path" in conditions["Stalled"]["message"]
    assert status["observedGeneration"] == 3


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(r, 5) for r in range(4)] == [5, 10, 20, 40]
    assert backoff(30, 5) == 300


def test_transitions_become_events_and_metrics(tmp_path: Path) -> None:
    posted: list[dict[str, Any]] = []
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR),
                 post_event=lambda obj, **kw: posted.append(kw))
    hooks = make_hooks(rt, body())
    hooks.on_transition("quickstart", {"event": "GateFailed", "version": "v3",
                                       "message": "ndcg@10 0.31 < min 0.50"})
    hooks.on_transition("quickstart", {"event": "ShadowBuilt", "version": "v3", "documents": 600, "embedded": 600})
    assert posted[0] == {"type": "Warning", "reason": "GateFailed", "message": "ndcg@10 0.31 < min 0.50"}
    assert posted[1]["type"] == "Normal" and "600 documents" in posted[1]["message"]
    text = rt.metrics.exposition().decode()
    assert 'embeddingindex_transitions_total{event="GateFailed",name="quickstart",namespace="search"} 1.0' in text


def test_an_event_that_cannot_be_posted_does_not_fail_the_cycle(tmp_path: Path) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("API down")

    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR), post_event=broken)
    make_hooks(rt, body()).on_transition("quickstart", {"event": "WeightChanged", "message": "25%"})


def test_a_stopped_timer_cycle_takes_no_further_step_and_writes_nothing(tmp_path: Path) -> None:
    # kopf sets the timer's `stopped` flag when the resource is being deleted; the finalizer waits for it.
    posted: list[dict[str, Any]] = []
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR), post_event=lambda obj, **kw: posted.append(kw))
    with pytest.raises(CycleStopped):
        make_hooks(rt, body(), stopped=lambda: True).on_transition("quickstart", {"event": "ShadowBuilt"})
    assert posted == []
    run_cycle(rt, body(), 0, "timer", stopped=lambda: True)  # returns: nothing to retry after a stop
    assert rt.status_writer.writes == [] and not (tmp_path / "search").exists()
    assert 'embeddingindex_reconcile_total{name="quickstart",namespace="search",result="stopped"} 1.0' in \
        rt.metrics.exposition().decode()


class Stopped:
    """kopf's `stopped` kwarg as a timer sees it: is_set() and the reason."""

    def __init__(self, reason: Any = None) -> None:
        self.reason = reason

    def is_set(self) -> bool:
        return self.reason is not None


def test_a_deletion_does_not_stop_an_objects_first_cycle_when_the_timer_runs_it(tmp_path: Path) -> None:
    # Under load kopf's timer ran an object's first cycle before its create handler; a delete then stopped
    # it after the build, leaving a shadow never promoted for a recreated object of the same name to inherit.
    deleted = Stopped(kopf.DaemonStoppingReason.RESOURCE_DELETED)
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR, interval=3600.0))
    timer_tick(rt, body(), 0, deleted)  # first cycle: runs although no full interval passed, and finishes
    ((_, status),) = rt.status_writer.writes
    assert status["phase"] == "Healthy" and status["stable"]["version"] == "v1"
    # the second cycle is the level-based re-check: a deletion stops it before its first step
    rt.note_due(resource_ref("search", "quickstart"), 0.0)  # a rollout step due: not an hour away
    timer_tick(rt, body(), 0, deleted)
    assert len(rt.status_writer.writes) == 1
    assert 'reconcile_total{name="quickstart",namespace="search",result="stopped"} 1.0' in \
        rt.metrics.exposition().decode()
    # a recreated object (new uid, same name) is not due by the old one's interval: its first cycle runs now
    recreated = body()
    recreated["metadata"]["uid"] = "u-2"
    timer_tick(rt, recreated, 0, Stopped())
    assert len(rt.status_writer.writes) == 2


def test_the_operator_exiting_stops_even_a_first_timer_cycle(tmp_path: Path) -> None:
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR))
    timer_tick(rt, body(), 0, Stopped(kopf.DaemonStoppingReason.OPERATOR_EXITING))
    assert rt.status_writer.writes == [] and not (tmp_path / "search").exists()


def test_kopf_rechecks_a_stopping_timer_within_stop_poll() -> None:
    # kopf's default (60 s) held the finalizer for a minute after a timer cycle that overlapped a delete.
    settings = kopf.OperatorSettings()
    configure_settings(settings, OperatorConfig(store_root=Path("/s"), data_dir=Path("/d")))
    assert settings.background.cancellation_polling == OperatorConfig.stop_poll <= 2.0


def test_event_message_falls_back_to_the_event_name() -> None:
    assert event_message({"event": "AliasSwitched", "version": "v2"}) == "AliasSwitched v2"


def test_routing_record_for_the_configmap() -> None:
    data = routing_record({"alias": "qs", "stable": {"version": "v1"}, "candidate": {"version": "v2"},
                           "weight": 25.0})
    assert data["stable"] == "v1" and data["candidate"] == "v2" and data["weight"] == "25"
    assert json.loads(data["routing.json"]) == {"alias": "qs", "stable": "v1", "candidate": "v2", "weight": 25.0,
                                                "mirror": 0.0, "interleave": 0.0, "held": []}
    assert routing_record({"alias": "qs", "stable": None, "candidate": None, "weight": 0})["candidate"] == ""


def test_routing_record_takes_the_shares_from_the_stores_routing() -> None:
    from controller.core.types import Routing

    routing = Routing(stable="v1", candidate="v2", weight=10.0, held=("v0",), mirror=30.0, interleave=20.0)
    data = routing_record({"alias": "qs", "weight": 10.0}, routing)
    assert (data["weight"], data["mirror"], data["interleave"]) == ("10", "30", "20")
    assert json.loads(data["routing.json"]) == {"alias": "qs", "stable": "v1", "candidate": "v2", "weight": 10.0,
                                                "mirror": 30.0, "interleave": 20.0, "held": ["v0"]}


def test_status_writes_are_skipped_when_nothing_changed() -> None:
    writer = MemoryStatusWriter()
    current = {"phase": "Healthy", "weight": 0.0}
    assert not status_changed(current, {"phase": "Healthy", "weight": 0.0, "candidate": None})
    assert not writer.write({"metadata": {"name": "x"}, "status": current}, {**current, "candidate": None})
    assert writer.write({"metadata": {"name": "x"}, "status": current}, {**current, "weight": 25.0})
    assert len(writer.writes) == 1


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("holder, renewed, now, expected", [
    ("me", T0, T0, "renew"),
    (None, None, T0, "acquire"),
    ("other", T0, T0 + timedelta(seconds=5), "wait"),
    ("other", T0, T0 + timedelta(seconds=15), "acquire"),  # expired exactly at the duration
])
def test_lease_decision(holder: str | None, renewed: datetime | None, now: datetime, expected: str) -> None:
    assert lease_decision(holder, renewed, 15, "me", now) == expected


def test_health_and_metrics_endpoints(tmp_path: Path) -> None:
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR))
    server = serve_http(0, {**health_routes(rt, lambda: True), **metrics_routes(rt)}, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert urllib.request.urlopen(base + "/healthz").status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz")
        assert err.value.code == 503
        rt.ready.set()
        assert urllib.request.urlopen(base + "/readyz").status == 200
        assert b"embeddingindex_reconcile_total" in urllib.request.urlopen(base + "/metrics").read()
    finally:
        server.shutdown()


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("controller.operator", logging.INFO, __file__, 1, "reconciled %s", ("qs",), None)
    line = JsonFormatter().format(record)
    assert json.loads(line)["message"] == "reconciled qs" and "\n" not in line


def test_operator_command_refuses_a_missing_store_and_a_bad_lease(tmp_path: Path, monkeypatch) -> None:
    import argparse

    monkeypatch.delenv("CONTROLLER_STORE", raising=False)
    parser = argparse.ArgumentParser()
    operator_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["operator", "--data-dir", str(tmp_path)])
    with pytest.raises(InvalidInput, match="--store"):
        operator_cmd.run(args)
    args = parser.parse_args(["operator", "--store", str(tmp_path), "--data-dir", str(tmp_path),
                              "--lease-duration", "5", "--renew-deadline", "10"])
    with pytest.raises(InvalidInput, match="lease-duration"):
        operator_cmd.run(args)
    assert operator_cmd.namespaces_of(["a,b", "b", " c "]) == ("a", "b", "c")
