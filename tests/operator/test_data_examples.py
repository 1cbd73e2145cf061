"""examples/kubernetes/data/: ways to fill the data volume, valid for Kubernetes 1.30 and wired to the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from controller.operator import render  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "kubernetes" / "data"
VALUES = sorted(DATA.glob("values-*.yaml"))
K8S = "1.30"


def _pod(values: dict[str, Any]) -> dict[str, Any]:
    deploy = next(o for o in render.render_chart(values, release="eic", namespace="embedding-index-controller")
                  if o["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]


def test_there_is_a_job_filled_claim_and_init_container_values():
    assert (DATA / "pvc-filled-by-job.yaml").is_file()
    assert {p.name for p in VALUES} >= {"values-init-from-object-storage.yaml", "values-git-sync.yaml"}


def test_the_job_and_its_claim_validate_and_feed_the_chart():
    objects = [o for o in yaml.safe_load_all((DATA / "pvc-filled-by-job.yaml").read_text()) if o]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)
    claim = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    job = next(o for o in objects if o["kind"] == "Job")
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    pod = _pod({"data": {"existingClaim": claim["metadata"]["name"]}})
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    # the operator can read what the Job writes: same uid/gid
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert job_pod["securityContext"][key] == pod["securityContext"][key]
    assert claim["metadata"]["namespace"] == job["metadata"]["namespace"] == render.NAMESPACE


@pytest.mark.parametrize("path", VALUES, ids=[p.name for p in VALUES])
def test_values_files_render_valid_objects_with_an_init_container_on_the_data_volume(path: Path):
    values = yaml.safe_load(path.read_text())
    objects = render.render_chart(values, release="eic", namespace="embedding-index-controller")
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)
    pod = _pod(values)
    volumes = {v["name"] for v in pod["volumes"]}
    init = pod["initContainers"]
    assert init and all({m["name"] for m in c["volumeMounts"]} <= volumes for c in init)
    assert any(m["name"] == "data" and not m.get("readOnly") for c in init for m in c["volumeMounts"])
    operator_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data")
    assert operator_mount["readOnly"] is True, "only the init container writes the data"
