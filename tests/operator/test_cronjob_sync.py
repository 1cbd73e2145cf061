"""The CronJob of spec.reembed.schedule follows the spec, on the Kubernetes API emulator.

Any change of the desired Job template (the operator's image, parallelism, the window, the model's
secret) reaches the CronJob, also a field that was removed; a field it does not own (`suspend`, set
by hand) stays; removing the schedule or spec.reembed deletes the CronJob; a CronJob that is not
the operator's is never touched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.manifest.load import load_manifests
from controller.operator.jobs import JobPending, JobSettings, KubeJobApi, ensure_embedded
from controller.store.fs import Store
from tests.helpers import manifest, workspace, write_manifest
from tests.operator.conftest import NAMESPACE, Api, cluster  # noqa: F401
from tests.operator.kmock_state import StatefulEmulator
from tests.operator.test_embed_jobs_kmock import declare_batch, objects

kubernetes = pytest.importorskip("kubernetes")

CRON = f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs"
OWNER = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "name": "qs", "uid": "u-1",
         "controller": True}
HTTP_MODEL = {"provider": "http", "name": "e5", "version": "1", "dim": 384, "options": {
    "baseUrl": "http://tei:8080/v1", "secretRef": {"name": "openai", "key": "apiKey"}}}


class Cycles:
    """ensure_embedded as the operator's cycle calls it, off the event loop that serves the emulator."""

    def __init__(self, cluster: Api, tmp_path: Path) -> None:
        conf = kubernetes.client.Configuration()
        conf.host = cluster.url
        self.api = KubeJobApi(kubernetes.client.ApiClient(conf))
        self.patches = 0
        patch = self.api._batch.patch_namespaced_cron_job

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.patches += 1
            return patch(*args, **kwargs)

        self.api._batch.patch_namespaced_cron_job = counted
        self.ws = workspace(tmp_path, n_docs=5)
        self.store = Store(tmp_path / "store")

    def settings(self, image: str) -> JobSettings:
        return JobSettings(image=image, store_claim="store", store_mount=self.store.root, data_mount=self.ws)

    def run(self, doc: dict[str, Any], image: str = "eic:0.1.0", owner: dict[str, Any] = OWNER) -> None:
        [loaded] = load_manifests(write_manifest(self.ws, doc))
        try:
            ensure_embedded(self.api, self.settings(image), loaded, self.store, NAMESPACE, owner)
        except JobPending:
            pass

    async def __call__(self, doc: dict[str, Any], **kw: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.run(doc, **kw))


def scheduled(**reembed: Any) -> dict[str, Any]:
    doc = manifest("v1")
    doc["spec"]["reembed"] = {"schedule": "0 2 * * *", **reembed}
    return doc


def cronjob(cluster: Api, name: str = "qs-reembed") -> dict[str, Any] | None:
    return cluster.emulator.body("cronjobs", NAMESPACE, name)


def job_template(cluster: Api) -> dict[str, Any]:
    return cronjob(cluster)["spec"]["jobTemplate"]["spec"]  # type: ignore[index]


@pytest.fixture
def cycle(cluster: Api, tmp_path: Path) -> Cycles:
    """Reconcile cycles with embedding Jobs on, against an emulator that serves the batch API."""
    declare_batch(cluster.emulator)
    return Cycles(cluster, tmp_path)


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_every_change_of_the_job_template_reaches_the_cronjob(cluster: Api, cycle: Cycles) -> None:
    await cycle(scheduled(shards=4, parallelism=4, window="4h"))
    spec = job_template(cluster)
    assert (spec["completions"], spec["parallelism"], spec["activeDeadlineSeconds"]) == (4, 4, 4 * 3600)
    await cluster._call("PATCH", f"{CRON}/qs-reembed", {"spec": {"suspend": True}}, "application/merge-patch+json")

    await cycle(scheduled(shards=4, parallelism=4, window="4h"))
    assert cycle.patches == 0  # nothing changed: nothing written

    doc = scheduled(shards=4, parallelism=1)  # parallelism 4 -> 1, the window removed
    doc["spec"]["model"] = HTTP_MODEL  # a model whose API key comes from a Secret
    await cycle(doc, image="eic:0.2.0")  # a new operator image
    assert cycle.patches == 1
    spec = job_template(cluster)
    [container] = spec["template"]["spec"]["containers"]
    assert container["image"] == "eic:0.2.0" and spec["parallelism"] == 1 and spec["completions"] == 4
    assert "activeDeadlineSeconds" not in spec
    assert {"name": "EIC_EMBEDDING_API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "apiKey"}}} \
        in container["env"]
    assert cronjob(cluster)["spec"]["suspend"] is True  # type: ignore[index]  # not the operator's field

    await cycle(doc, image="eic:0.2.0")
    assert cycle.patches == 1  # converged


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_removing_the_schedule_or_reembed_deletes_the_cronjob(cluster: Api, cycle: Cycles) -> None:
    await cycle(scheduled(shards=2))
    assert cronjob(cluster) is not None

    unscheduled = manifest("v1")
    unscheduled["spec"]["reembed"] = {"shards": 2}
    await cycle(unscheduled)
    assert cronjob(cluster) is None
    assert [j["metadata"]["name"].startswith("qs-embed-") for j in objects(cluster, "jobs")] == [True]

    await cycle(scheduled(shards=2))
    assert cronjob(cluster) is not None
    await cycle(manifest("v1"))  # spec.reembed removed
    assert cronjob(cluster) is None
    await cycle(manifest("v1"))  # nothing left to delete: no error


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_a_cronjob_that_is_not_ours_is_never_deleted(cluster: Api, cycle: Cycles) -> None:
    from controller.operator.jobs import ForeignCronJob

    await cluster._call("POST", CRON, {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "qs-reembed", "labels": {"team": "search"}},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox"}]}}}}}})
    await cycle(manifest("v1"))
    assert cronjob(cluster)["metadata"]["labels"] == {"team": "search"}  # type: ignore[index]

    with pytest.raises(ForeignCronJob, match="not managed by embedding-index-controller"):
        await cycle(scheduled(shards=2))  # neither is it overwritten: the cycle fails naming it
    assert cronjob(cluster)["spec"]["schedule"] == "0 3 * * *"  # type: ignore[index]


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_a_recreated_resource_leaves_the_cronjob_of_the_other_owner(cluster: Api, cycle: Cycles) -> None:
    await cycle(scheduled(shards=2))
    await cycle(manifest("v1"), owner={**OWNER, "uid": "u-2"})  # same name, another object
    assert cronjob(cluster) is not None  # the garbage collector removes it with its own owner


def _cronjob_rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
    from controller.operator import render

    roles = [o for o in render.render_chart(values, release="eic", namespace="ops")
             if o and o.get("kind") in ("Role", "ClusterRole") and not o["metadata"]["name"].endswith("election")]
    return [r for role in roles for r in role["rules"] if "cronjobs" in r["resources"]]


def test_rbac_allows_deleting_cronjobs_scoped_like_the_routing_configmaps() -> None:
    jobs = {"embeddingJobs": {"enabled": True}}
    assert _cronjob_rules(jobs) == [{"apiGroups": ["batch"], "resources": ["cronjobs"],
                                     "verbs": ["get", "create", "patch", "delete"]}]
    long_name = "a" * 50  # cronjob_name cuts the index name to 40 characters
    scoped = _cronjob_rules({**jobs, "rbac": {"routingConfigMapIndexes": ["quickstart", long_name]}})
    assert scoped == [{"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["create"]},
                      {"apiGroups": ["batch"], "resources": ["cronjobs"],
                       "resourceNames": ["quickstart-reembed", "a" * 40 + "-reembed"],
                       "verbs": ["get", "patch", "delete"]}]
    from controller.operator.jobs import cronjob_name

    assert cronjob_name(long_name) == "a" * 40 + "-reembed"
    assert _cronjob_rules({}) == []  # no embedding Jobs: no batch rights at all
