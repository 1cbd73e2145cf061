"""spec.reembed in operator mode: an Indexed Job (or a CronJob) embeds the corpus before the build.

Each pod runs `controller embed <manifest> --shard $(JOB_COMPLETION_INDEX)/N`
against the shared store volume, filling the content-addressed cache; the
operator does not build while the Job owns that work, reads the Job's
completion status, and then reconciles, which finds every vector in the cache
and embeds nothing. Failed shard pods are retried by the Job's backoffLimit.

With `schedule`, a CronJob runs the same Job template on that schedule (a
nightly re-embedding) and the operator waits for the cache to cover the corpus
rather than starting a Job itself. The Job's name carries a key of the model
fingerprint and the corpus content, so a new model or an edited corpus gets a
new Job, and a finished Job is never rerun for the same work.

Pods mount the store claim and the data claim named in the operator's
configuration at the operator's own paths; an API key comes from the Secret
named by the model's `options.secretRef` as an environment variable, never
through the manifest, the store or a log.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from controller.engine.embedding import SECRET_ENV, embedding_coverage, write_job_manifest
from controller.manifest.load import LoadedManifest
from controller.manifest.reembed import duration_seconds
from controller.operator.routing import MANAGED_BY
from controller.store.fs import Store

log = logging.getLogger("controller.operator.jobs")

INDEX_LABEL = "indexops.dev/index"
KEY_LABEL = "indexops.dev/embedding-key"
# on the CronJob's jobTemplate: the digest of the whole desired spec, so a field removed from it (a window,
# a secret) is seen too; the server's defaults in the live object cannot tell that
TEMPLATE_DIGEST = "indexops.dev/template-digest"


@dataclass(frozen=True)
class JobSettings:
    """How Job pods are made: the operator's own image and volumes (from the chart)."""

    image: str
    store_claim: str
    store_mount: Path
    data_mount: Path
    data_claim: str | None = None
    service_account: str | None = None
    poll: float = 10.0  # seconds between checks of a running Job


class JobPending(Exception):
    """The embedding work is owned by a Job (or awaits the schedule): the build waits.

    `status` is what status.reembed shows meanwhile (coverage, the Job, its state)."""

    def __init__(self, message: str, delay: float, status: dict[str, Any]) -> None:
        super().__init__(message)
        self.delay = delay
        self.status = status


class JobFailed(Exception):
    """The Job exhausted its backoffLimit: the build does not start until the Job is fixed or deleted."""


class JobApi(Protocol):
    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create_job(self, namespace: str, body: dict[str, Any]) -> None: ...
    def apply_cronjob(self, namespace: str, body: dict[str, Any]) -> None: ...


@runtime_checkable
class CronJobRemover(Protocol):
    """A JobApi that can also delete the index's CronJob (KubeJobApi); a Job-only double need not."""

    def delete_cronjob(self, namespace: str, name: str, index: str, owner_uid: str | None) -> bool: ...


class ForeignCronJob(RuntimeError):
    """A CronJob with the index's name exists but is not ours: neither patched nor deleted."""


def job_name(name: str, key: str) -> str:
    return f"{name[:40]}-embed-{key}"


def cronjob_name(name: str) -> str:
    return f"{name[:40]}-reembed"


def pod_template(loaded: LoadedManifest, store: Store, settings: JobSettings, manifest: Path) -> dict[str, Any]:
    reembed = loaded.manifest.spec.reembed
    assert reembed is not None
    args = ["embed", str(manifest), "--store", str(store.root), "--data-root", str(settings.data_mount),
            "--shard", f"$(JOB_COMPLETION_INDEX)/{reembed.shards}", "-o", "json"]
    env: list[dict[str, Any]] = [
        {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}]
    ref = (loaded.manifest.spec.model.options or {}).get("secretRef")
    if isinstance(ref, dict):
        env.append({"name": SECRET_ENV, "valueFrom": {"secretKeyRef": {
            "name": ref["name"], "key": ref.get("key", "apiKey")}}})
    mounts = [{"name": "store", "mountPath": str(settings.store_mount)},
              {"name": "data", "mountPath": str(settings.data_mount), "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    data_volume: dict[str, Any] = ({"persistentVolumeClaim": {"claimName": settings.data_claim, "readOnly": True}}
                                   if settings.data_claim else {"emptyDir": {}})
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # the image's user, and the store's group so the pods can write next to the operator
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            # the image's ENTRYPOINT is `controller operator`: the verb must replace it
            "name": "embed", "image": settings.image, "command": ["controller"], "args": args, "env": env,
            "volumeMounts": mounts,
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        }],
        "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": settings.store_claim}},
                    {"name": "data", **data_volume}, {"name": "tmp", "emptyDir": {}}],
        # SIGTERM at the window's end or an eviction: `embed` keeps what is in flight, then exits
        "terminationGracePeriodSeconds": 60,
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return {"metadata": {"labels": {INDEX_LABEL: loaded.name}}, "spec": spec}


def job_spec(loaded: LoadedManifest, store: Store, settings: JobSettings, manifest: Path) -> dict[str, Any]:
    reembed = loaded.manifest.spec.reembed
    assert reembed is not None
    spec: dict[str, Any] = {
        "completionMode": "Indexed", "completions": reembed.shards, "parallelism": reembed.parallelism,
        "backoffLimit": reembed.backoff_limit,
        "template": pod_template(loaded, store, settings, manifest),
    }
    if reembed.window:
        spec["activeDeadlineSeconds"] = duration_seconds(reembed.window)
    return spec


def labels(name: str, key: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, INDEX_LABEL: name}
    if key:
        out[KEY_LABEL] = key
    return out


def job_body(loaded: LoadedManifest, store: Store, settings: JobSettings, manifest: Path, key: str,
             namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(loaded.name, key), "namespace": namespace,
                         "labels": labels(loaded.name, key), "ownerReferences": [owner]},
            "spec": job_spec(loaded, store, settings, manifest)}


def cronjob_body(loaded: LoadedManifest, store: Store, settings: JobSettings, manifest: Path,
                 namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    reembed = loaded.manifest.spec.reembed
    assert reembed is not None and reembed.schedule
    spec: dict[str, Any] = {"schedule": reembed.schedule, "concurrencyPolicy": "Forbid",
                            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                            "jobTemplate": {"metadata": {"labels": labels(loaded.name)},
                                            "spec": job_spec(loaded, store, settings, manifest)}}
    spec["jobTemplate"]["metadata"]["annotations"] = {TEMPLATE_DIGEST: spec_digest(spec)}
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": cronjob_name(loaded.name), "namespace": namespace,
                         "labels": labels(loaded.name), "ownerReferences": [owner]},
            "spec": spec}


def spec_digest(spec: dict[str, Any]) -> str:
    """A digest of the whole desired CronJob spec (without the annotation that carries it)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cronjob_current(live_spec: dict[str, Any], desired_spec: dict[str, Any]) -> bool:
    """Whether the live CronJob runs the desired spec: the same digest (nothing added, changed or removed
    since it was written) and every desired value still there (nobody edited one by hand)."""
    template_meta = (live_spec.get("jobTemplate") or {}).get("metadata") or {}
    digest = (template_meta.get("annotations") or {}).get(TEMPLATE_DIGEST)
    wanted = desired_spec["jobTemplate"]["metadata"]["annotations"][TEMPLATE_DIGEST]
    return digest == wanted and contains(live_spec, desired_spec)


def contains(live: Any, desired: Any) -> bool:
    """`desired` is in `live`: the API server adds defaults (imagePullPolicy, dnsPolicy, fieldRef's
    apiVersion, ...) that the desired object leaves out, so equality would patch on every cycle."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(live) == len(desired)
                and all(contains(a, b) for a, b in zip(live, desired)))
    return bool(live == desired)


def cronjob_patch(desired_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch that sets every field of the spec the operator owns; `add` of an existing member
    replaces it whole, so the jobTemplate loses what the desired one no longer has (merge patch would
    keep a removed window or secret). Fields it does not own (`suspend`, set by hand to pause) stay."""
    return [{"op": "add", "path": f"/spec/{key}", "value": value} for key, value in desired_spec.items()]


def is_ours(meta: dict[str, Any], index: str) -> bool:
    found = meta.get("labels") or {}
    return found.get("app.kubernetes.io/managed-by") == MANAGED_BY and found.get(INDEX_LABEL) == index


def job_state(job: dict[str, Any]) -> str:
    """Complete, Failed or Running, from the Job's conditions (what kube-controller-manager writes)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return "Running"


def ensure_embedded(api: JobApi, settings: JobSettings, loaded: LoadedManifest, store: Store,
                    namespace: str, owner: dict[str, Any]) -> dict[str, Any] | None:
    """Return once the build may start; raise JobPending while a Job (or the schedule) owns the work.

    Returns status.reembed (coverage and the Job), None when spec.reembed is absent or the
    model is not one the cache holds.
    """
    reembed = loaded.manifest.spec.reembed
    coverage = embedding_coverage(loaded, store) if reembed is not None else None
    if reembed is None or coverage is None or not reembed.schedule:
        remove_cronjob(api, namespace, loaded.name, owner)
    if reembed is None or coverage is None:
        return None
    manifest = write_job_manifest(loaded, store)
    status: dict[str, Any] = {"coverage": coverage.to_dict(), "priority": reembed.priority}
    if reembed.schedule:
        api.apply_cronjob(namespace, cronjob_body(loaded, store, settings, manifest, namespace, owner))
        status["cronJob"] = cronjob_name(loaded.name)
    else:
        status["job"] = job_name(loaded.name, coverage.key)
    if coverage.complete:  # the same keys every time: the status is merge-patched
        return {**status, "state": "Complete"}
    progress = f"{coverage.embedded} of {coverage.documents} documents embedded"
    if reembed.schedule:
        raise JobPending(f"waiting for the scheduled re-embedding ({reembed.schedule}, CronJob "
                         f"{namespace}/{cronjob_name(loaded.name)}): {progress}", settings.poll,
                         {**status, "state": "Scheduled"})
    name = status["job"]
    job = api.read_job(namespace, name)
    if job is None:
        api.create_job(namespace, job_body(loaded, store, settings, manifest, coverage.key, namespace, owner))
        log.info("created Indexed Job %s/%s (%d shards): %s", namespace, name, reembed.shards, progress)
        raise JobPending(f"created Job {namespace}/{name} ({reembed.shards} shards): {progress}", settings.poll,
                         {**status, "state": "Running"})
    state = job_state(job)
    if state == "Failed":
        raise JobFailed(f"Job {namespace}/{name} failed after its backoffLimit ({reembed.backoff_limit}) with "
                        f"{progress}; see `kubectl logs -n {namespace} job/{name}`, then delete the Job to retry")
    if state == "Running":
        raise JobPending(f"Job {namespace}/{name} is embedding: {progress}", settings.poll,
                         {**status, "state": "Running"})
    return {**status, "state": "Complete"}  # the build embeds whatever the Job did not (a corpus edited meanwhile)


def remove_cronjob(api: JobApi, namespace: str, index: str, owner: dict[str, Any]) -> None:
    """No schedule is wanted (spec.reembed or its schedule removed): a CronJob left from one would go on
    re-embedding every night with the old settings, so it is deleted."""
    if not isinstance(api, CronJobRemover):
        return
    name = cronjob_name(index)
    if api.delete_cronjob(namespace, name, index, owner.get("uid")):
        log.info("deleted CronJob %s/%s: %s has no spec.reembed.schedule any more", namespace, name, index)


class KubeJobApi:
    """Jobs and CronJobs through the official client."""

    def __init__(self, api_client: Any, timeout: float = 30.0) -> None:
        from kubernetes import client  # operator extra

        self._batch = client.BatchV1Api(api_client)
        self._api_client = api_client
        self._t = {"_request_timeout": timeout}

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            job = self._batch.read_namespaced_job(name, namespace, **self._t)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._api_client.sanitize_for_serialization(job)

    def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        self._batch.create_namespaced_job(namespace, body, **self._t)

    def apply_cronjob(self, namespace: str, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            current = self._batch.read_namespaced_cron_job(name, namespace, **self._t)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._batch.create_namespaced_cron_job(namespace, body, **self._t)
            return
        live = self._api_client.sanitize_for_serialization(current)
        index = body["metadata"]["labels"][INDEX_LABEL]
        if not is_ours(live.get("metadata") or {}, index):
            raise ForeignCronJob(f"CronJob {namespace}/{name} exists and is not managed by {MANAGED_BY} "
                                 f"(labels app.kubernetes.io/managed-by={MANAGED_BY}, {INDEX_LABEL}={index} "
                                 "missing); not overwriting it: rename or delete it")
        if cronjob_current(live.get("spec") or {}, body["spec"]):
            return
        self._batch.patch_namespaced_cron_job(name, namespace, cronjob_patch(body["spec"]),
                                              _content_type="application/json-patch+json", **self._t)

    def delete_cronjob(self, namespace: str, name: str, index: str, owner_uid: str | None) -> bool:
        """Delete the index's CronJob (and, in the background, the Jobs it started); True when deleted.

        Only one labelled as ours for `index` and, with `owner_uid`, owned by that resource; the delete
        carries uid and resourceVersion preconditions. 404 and 403 are "nothing to delete": with
        rbac.routingConfigMapIndexes an index the value does not list gets 403 on its CronJob, and then
        apply_cronjob (which reads before it creates) cannot have made one."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            current = self._api_client.sanitize_for_serialization(
                self._batch.read_namespaced_cron_job(name, namespace, **self._t))
            meta = current.get("metadata") or {}
            owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
            if not is_ours(meta, index) or (owner_uid and owners and owner_uid not in owners):
                return False  # someone else's, or a recreated resource's of the same name: leave it
            preconditions = client.V1Preconditions(uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))
            self._batch.delete_namespaced_cron_job(name, namespace, **self._t, body=client.V1DeleteOptions(
                preconditions=preconditions, propagation_policy="Background"))
        except ApiException as exc:
            if exc.status in (403, 404):
                return False
            raise
        return True
