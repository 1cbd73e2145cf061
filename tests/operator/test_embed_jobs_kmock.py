"""spec.reembed on the Kubernetes API emulator: the operator creates the Indexed Job (or the CronJob),
does not build while the Job owns the embedding, and builds once the Job's status says Complete.

The test plays kube-controller-manager: it runs each shard's pod command (the container args, with
$(JOB_COMPLETION_INDEX) substituted as Kubernetes does) against the same store, then writes the
Job's completion status. The build that follows embeds nothing: every vector came from the Job.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.operator.jobs import JobSettings, KubeJobApi
from controller.operator.main import OperatorOptions, start_in_thread
from tests.operator.conftest import DATA_DIR, NAMESPACE, Api, eventually, example, wire
from tests.operator.kmock_state import StatefulEmulator

pytestmark = [pytest.mark.operator]
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


def declare_batch(emulator: Any) -> None:
    import kmock

    info = kmock.ResourceInfo
    emulator.resources["batch/v1/jobs"] = info(kind="Job", singular="job", namespaced=True, subresources={"status"},
                                               verbs={"get", "list", "create", "patch", "delete"})
    emulator.resources["batch/v1/cronjobs"] = info(kind="CronJob", singular="cronjob", namespaced=True,
                                                   verbs={"get", "list", "create", "patch", "delete"})


def objects(api: Api, plural: str) -> list[dict[str, Any]]:
    return [o.raw for (res, ns, _), o in api.emulator.objects.items()
            if res.plural == plural and ns == NAMESPACE and not o.deleted]


async def start_operator(cluster: Api, config: Any) -> tuple[Any, Any]:
    rt, registry, client = wire(cluster, config)
    rt.jobs = (KubeJobApi(client), JobSettings(image="eic:test", store_claim="eic-store",
                                               store_mount=config.store_root, data_mount=DATA_DIR, poll=0.5))
    handle = start_in_thread(rt, OperatorOptions(namespaces=(NAMESPACE,)), registry=registry)
    await eventually(lambda: handle.ready_flag.is_set() or handle.errors, 20, "the operator to start")
    assert not handle.errors, handle.errors
    return rt, handle


def run_pod(args: list[str], index: int) -> dict[str, Any]:
    """What one pod of the Indexed Job does: its container args with the completion index substituted."""
    argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in args]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())["jobs"][0]


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_indexed_job_embeds_the_shards_then_the_operator_builds(cluster: Api, operator_config) -> None:
    declare_batch(cluster.emulator)
    body = example("quickstart-v1.yaml")
    body["spec"]["reembed"] = {"shards": 3, "parallelism": 2, "backoffLimit": 4, "window": "2h"}
    _, handle = await start_operator(cluster, operator_config)
    try:
        await cluster.create(body)
        [job] = await eventually(lambda: objects(cluster, "jobs"), 20, "the Indexed Job")
        spec = job["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 2)
        assert spec["backoffLimit"] == 4 and spec["activeDeadlineSeconds"] == 7200
        assert job["metadata"]["ownerReferences"][0]["kind"] == "EmbeddingIndex"
        [container] = spec["template"]["spec"]["containers"]
        args = container["args"]
        assert args[0] == "embed" and args[args.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/3"
        assert spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "eic-store"

        # While the Job runs nothing is built: the operator waits for it, and says so in status.reembed.
        waiting = await eventually(lambda: (cluster.get("quickstart").get("status") or {}).get("reembed"), 20,
                                   "status.reembed")
        assert waiting["state"] == "Running" and waiting["job"] == job["metadata"]["name"]
        assert waiting["coverage"]["embedded"] == 0 and waiting["coverage"]["documentShare"] == 0.0
        await asyncio.sleep(2.0)
        assert (cluster.get("quickstart").get("status") or {}).get("phase") != "Healthy"
        assert not (operator_config.store_root / NAMESPACE / "indexes" / "quickstart" / "versions").exists()
        assert len(objects(cluster, "jobs")) == 1  # not created twice

        loop = asyncio.get_running_loop()
        reports = [await loop.run_in_executor(None, run_pod, args, i) for i in range(3)]
        documents = sum(r["documents"] for r in reports)
        assert all(r["shard"] == f"{i}/3" for i, r in enumerate(reports))
        assert sum(r["embedded"] for r in reports) == documents > 0
        await cluster._call("PATCH", JOBS.format(ns=NAMESPACE) + f"/{job['metadata']['name']}/status",
                            {"status": {"succeeded": 3, "completedIndexes": "0-2", "conditions": [
                                {"type": "Complete", "status": "True"}]}}, "application/merge-patch+json")

        status = await eventually(lambda: (cluster.get("quickstart").get("status") or {}).get("phase") == "Healthy"
                                  and cluster.get("quickstart")["status"], 60, "v1 built after the Job")
        assert status["stable"]["version"] == "v1"
        assert status["reembed"]["state"] == "Complete" and status["reembed"]["coverage"]["documentShare"] == 1.0
        built = [e for e in cluster.events("quickstart") if e["reason"] == "ShadowBuilt"]
        assert built and f"from {documents} documents (0 embedded" in built[0]["message"]
        assert not objects(cluster, "cronjobs")
    finally:
        await asyncio.get_running_loop().run_in_executor(None, handle.stop)


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_a_schedule_makes_a_cronjob_and_the_build_waits_for_its_run(cluster: Api, operator_config) -> None:
    declare_batch(cluster.emulator)
    body = example("quickstart-v1.yaml")
    body["spec"]["reembed"] = {"schedule": "0 2 * * *", "shards": 2}
    _, handle = await start_operator(cluster, operator_config)
    try:
        await cluster.create(body)
        [cron] = await eventually(lambda: objects(cluster, "cronjobs"), 20, "the CronJob")
        assert cron["spec"]["schedule"] == "0 2 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
        template = cron["spec"]["jobTemplate"]["spec"]
        assert template["completionMode"] == "Indexed" and template["completions"] == 2
        await asyncio.sleep(2.0)
        assert not objects(cluster, "jobs")  # the schedule starts the work, not the operator
        assert (cluster.get("quickstart").get("status") or {}).get("phase") != "Healthy"

        # 02:00: the CronJob's Job runs its two shards
        args = template["template"]["spec"]["containers"][0]["args"]
        loop = asyncio.get_running_loop()
        for i in range(2):
            await loop.run_in_executor(None, run_pod, args, i)
        await eventually(lambda: (cluster.get("quickstart").get("status") or {}).get("phase") == "Healthy",
                         60, "v1 built after the scheduled run")
        built = [e for e in cluster.events("quickstart") if e["reason"] == "ShadowBuilt"]
        assert built and "(0 embedded" in built[0]["message"]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, handle.stop)


def test_a_failed_job_stops_the_build_with_a_message_naming_it(tmp_path: Path) -> None:
    from controller.manifest.load import load_manifests
    from controller.operator.jobs import JobFailed, JobPending, ensure_embedded
    from controller.store.fs import Store
    from tests.helpers import manifest, workspace, write_manifest

    class Jobs:  # what the API server holds: the Job kube-controller-manager marked Failed
        def __init__(self) -> None:
            self.jobs: dict[str, dict[str, Any]] = {}

        def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
            return self.jobs.get(name)

        def create_job(self, namespace: str, body: dict[str, Any]) -> None:
            self.jobs[body["metadata"]["name"]] = body

        def apply_cronjob(self, namespace: str, body: dict[str, Any]) -> None:
            raise AssertionError("no schedule, no CronJob")

    doc = manifest("v1")
    doc["spec"]["reembed"] = {"shards": 2, "backoffLimit": 1}
    [loaded] = load_manifests(write_manifest(workspace(tmp_path, n_docs=5), doc))
    api, store = Jobs(), Store(tmp_path / "store")
    settings = JobSettings(image="i", store_claim="c", store_mount=tmp_path / "store", data_mount=tmp_path)
    with pytest.raises(JobPending):
        ensure_embedded(api, settings, loaded, store, "search", {})
    [name] = api.jobs
    api.jobs[name]["status"] = {"failed": 2, "conditions": [{"type": "Failed", "status": "True",
                                                             "reason": "BackoffLimitExceeded"}]}
    with pytest.raises(JobFailed, match=f"Job search/{name} failed after its backoffLimit \\(1\\)"):
        ensure_embedded(api, settings, loaded, store, "search", {})
