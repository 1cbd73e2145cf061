"""The optional serve Deployment + Service of the chart: off by default, valid and read-only when on."""

from __future__ import annotations

import pytest

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from controller.operator import render  # noqa: E402

ON = {"serve": {"enabled": True, "replicas": 3, "indexes": ["scifact"], "events": {"existingClaim": "ev"}}}


def _serve_objects(values):
    return [o for o in render.render_chart(values, release="eic", namespace="ops")
            if o["metadata"]["name"].endswith("-serve")]


def test_serve_is_off_by_default():
    assert _serve_objects({}) == []


def test_serve_deployment_and_service_validate_and_mount_the_store_read_only():
    objects = _serve_objects(ON)
    kinds = {o["kind"]: o for o in objects}
    assert set(kinds) == {"Deployment", "Service"}
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
    dep = kinds["Deployment"]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--index=scifact" in container["args"] and container["args"][0] == "serve"
    store_mount = next(m for m in container["volumeMounts"] if m["name"] == "store")
    assert store_mount["readOnly"] is True
    store_volume = next(v for v in pod["volumes"] if v["name"] == "store")
    assert store_volume["persistentVolumeClaim"]["readOnly"] is True
    assert kinds["Service"]["spec"]["selector"]["app.kubernetes.io/component"] == "serve"
    report = helm.lint(str(render.CHART), ON, strict=True, kube_version="v1.30.0")
    assert report["errors"] == [] and report["messages"] == [], report


def test_values_schema_rejects_bad_serve_values():
    with helm.Chart.load(str(render.CHART)) as chart:
        chart.validate_schema(ON)
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"serve": {"port": 0}})
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"serve": {"replicaz": 2}})
