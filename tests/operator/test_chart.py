"""The CRD, the Helm chart and the plain manifests: generated, lint-clean, valid for Kubernetes 1.30.

helm-python-sdk renders and lints without a helm binary; kubernetes-validate checks
every rendered object against the Kubernetes 1.30 OpenAPI schemas in strict mode
(unknown fields are errors). The example custom resources are checked against the
CRD's own openAPIV3Schema, and that schema against the structural-schema rules.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from controller.manifest.crd import render_yaml as render_crd  # noqa: E402
from controller.operator import render  # noqa: E402
from controller.manifest.crd import crd  # noqa: E402
from controller.manifest.models import EmbeddingIndex  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "embedding-index-controller"
EXAMPLES = sorted((REPO / "examples" / "kubernetes").glob("*.yaml"))
K8S = "1.30"

NON_DEFAULT = {
    "rbac": {"clusterWide": True},
    "replicaCount": 2,
    "watchNamespaces": ["search", "team-b"],
    "store": {"persistence": {"existingClaim": "my-store"}},
    "data": {"existingClaim": "corpora"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "leaderElection": {"enabled": False},
    "image": {"tag": "1.2.3"},
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "embeddingJobs": {"enabled": True},
}
HARDENED = {
    "networkPolicy": {"enabled": True, "ingressFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                      "apiServer": {"cidrs": ["10.0.0.1/32"]},
                      "extraEgress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]},
    "rbac": {"routingConfigMapIndexes": ["quickstart", "products"]},
    "extraInitContainers": [{"name": "fetch", "image": "busybox:1.36", "command": ["true"]}],
}
NAMESPACED = {
    "rbac": {"clusterWide": False},
    "watchNamespaces": ["search"],
    "store": {"persistence": {"enabled": False}},
    "metrics": {"enabled": False},
}


def _kinds(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


# ---- generated files are up to date --------------------------------------------------------
def test_committed_crd_and_manifests_match_the_generated_ones() -> None:
    stale = render.stale_files()
    assert not stale, f"regenerate with `python -m controller.operator.render`: {stale}"


def test_crd_command_output_is_the_chart_crd() -> None:
    assert (CHART / "crds" / "embeddingindexes.indexops.dev.yaml").read_text() == render_crd()


# ---- the CRD --------------------------------------------------------------------------------
def test_crd_is_valid_for_kubernetes_1_30() -> None:
    assert kubernetes_validate.validate(crd(), K8S, strict=True) == K8S


def _walk(node: dict[str, Any], path: str = "$"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural() -> None:
    """The rules of https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema."""
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "definitions", "title"}
    for path, node in _walk(schema):
        assert not forbidden & node.keys(), f"{path} uses {forbidden & node.keys()}"
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert "type" in node or untyped_ok, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), f"{path} mixes both"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties false"
        if "default" in node:
            assert node["default"] is not None, f"{path} defaults to null"
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node, path
    assert schema["properties"]["metadata"] == {"type": "object"}


def test_crd_has_status_columns_short_name_and_cel_rules() -> None:
    spec = crd()["spec"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase", "Stable", "Candidate", "Weight", "Age"]
    assert spec["names"]["shortNames"] == ["eidx"]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["model"]["properties"]["options"]["x-kubernetes-preserve-unknown-fields"] is True
    pct = props["rollout"]["properties"]["percentage"]
    assert (pct["minimum"], pct["maximum"]) == (0, 100)
    gate = props["checks"]["properties"]["golden"]["properties"]["gates"]["items"]
    assert gate["x-kubernetes-validations"][0]["rule"] == "has(self.min) || has(self.maxDrop)"


def _cr_validator() -> jsonschema.Draft4Validator:
    # The CRD schema is OpenAPI v3.0 (boolean exclusiveMinimum): the draft-4 validator reads it.
    schema = copy.deepcopy(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_resources_validate_against_the_crd_and_the_models(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    _cr_validator().validate(doc)
    EmbeddingIndex.model_validate(doc)  # what the operator will do with it


def test_crd_schema_rejects_a_bad_percentage() -> None:
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["rollout"]["percentage"] = 150
    with pytest.raises(jsonschema.ValidationError, match="150"):
        _cr_validator().validate(doc)


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


# ---- the chart ------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [{}, NON_DEFAULT, NAMESPACED, HARDENED],
                         ids=["default", "non-default", "namespaced", "hardened"])
def test_chart_lints_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("values", [{}, NON_DEFAULT, NAMESPACED, HARDENED],
                         ids=["default", "non-default", "namespaced", "hardened"])
def test_every_rendered_object_validates_for_kubernetes_1_30(values: dict[str, Any]) -> None:
    objects = render.render_chart(values, release="eic", namespace="ops")
    assert objects
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # a Prometheus Operator CRD, not part of the Kubernetes API schemas
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_chart_crd_is_the_generated_one() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        crds = chart.crds
    assert [yaml.safe_load(c["data"]) for c in crds] == [crd()]


def test_default_render_is_namespaced_least_privilege_and_hardened() -> None:
    kinds = _kinds(render.render_chart({}, release="eic", namespace="ops"))
    assert "ClusterRole" not in kinds and "ServiceMonitor" not in kinds
    rules = [r for role in kinds["Role"] for r in role["rules"]]
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules)
    assert not any("secrets" in r["resources"] for r in rules)
    assert {"coordination.k8s.io"} <= {g for r in rules for g in r["apiGroups"]}
    deploy = kinds["Deployment"][0]
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "--namespace=ops" in container["args"] and "--leader-elect" in container["args"]
    assert container["resources"]["requests"]
    assert kinds["PersistentVolumeClaim"][0]["metadata"]["name"] == "eic-embedding-index-controller-store"
    assert {p["httpGet"]["path"] for p in (container["livenessProbe"], container["readinessProbe"])} == {
        "/healthz", "/readyz"}


def test_non_default_render_is_cluster_wide_with_an_existing_claim_and_a_service_monitor() -> None:
    kinds = _kinds(render.render_chart(NON_DEFAULT, release="eic", namespace="ops"))
    assert "ClusterRole" in kinds and "Role" not in kinds  # no lease role either: election off
    assert "PersistentVolumeClaim" not in kinds
    container = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in container["args"] and "--leader-elect" not in container["args"]
    assert container["image"].endswith(":1.2.3")
    volumes = {v["name"]: v for v in kinds["Deployment"][0]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["store"]["persistentVolumeClaim"]["claimName"] == "my-store"
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "corpora", "readOnly": True}
    assert kinds["ServiceMonitor"][0]["metadata"]["labels"]["release"] == "prom"


def _batch_rules(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    kinds = _kinds(objects)
    roles = kinds.get("ClusterRole", []) + kinds.get("Role", [])
    return {res: r["verbs"] for role in roles for r in role["rules"] if "batch" in r["apiGroups"]
            for res in r["resources"]}


def test_embedding_jobs_get_rbac_for_jobs_and_cronjobs_and_the_operator_the_job_flags() -> None:
    on = render.render_chart(NON_DEFAULT, release="eic", namespace="ops")
    assert _batch_rules(on) == {"jobs": ["get", "create"], "cronjobs": ["get", "create", "patch", "delete"]}
    container = _kinds(on)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert {"--job-store-claim=my-store", "--job-data-claim=corpora"} <= set(container["args"])
    assert any(a.startswith("--job-image=") and a.endswith(":1.2.3") for a in container["args"])
    assert _batch_rules(render.render_chart({}, release="eic", namespace="ops")) == {}  # off by default


def test_the_job_and_cronjob_the_operator_creates_validate_for_kubernetes_1_30(tmp_path: Path) -> None:
    from controller.manifest.load import load_manifests
    from controller.operator.jobs import JobSettings, cronjob_body, job_body
    from controller.store.fs import Store
    from tests.helpers import manifest, workspace, write_manifest

    doc = manifest("v1")
    doc["spec"]["reembed"] = {"schedule": "0 2 * * *", "window": "3h", "shards": 4, "parallelism": 2}
    doc["spec"]["model"] = {"provider": "http", "name": "e5", "version": "1", "dim": 384, "options": {
        "baseUrl": "http://tei:8080/v1", "secretRef": {"name": "openai", "key": "apiKey"}}}
    [loaded] = load_manifests(write_manifest(workspace(tmp_path, n_docs=5), doc))
    settings = JobSettings(image="ghcr.io/indexops/embedding-index-controller:1.2.3", store_claim="store",
                           store_mount=Path("/var/lib/eic"), data_mount=Path("/data"), data_claim="corpora")
    owner = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "name": "qs", "uid": "u-1",
             "controller": True}
    store, manifest_path = Store(tmp_path / "store"), Path("/var/lib/eic/search/jobs/qs.yaml")
    job = job_body(loaded, store, settings, manifest_path, "abc123", "search", owner)
    cron = cronjob_body(loaded, store, settings, manifest_path, "search", owner)
    for obj in (job, cron):
        assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["controller"] and container["args"][0] == "embed"
    secret = [e for e in container["env"] if e["name"] == "EIC_EMBEDDING_API_KEY"]
    assert secret == [{"name": "EIC_EMBEDDING_API_KEY",
                       "valueFrom": {"secretKeyRef": {"name": "openai", "key": "apiKey"}}}]
    assert job["spec"]["activeDeadlineSeconds"] == 3 * 3600


def test_namespaced_render_has_a_role_per_watched_namespace() -> None:
    kinds = _kinds(render.render_chart(NAMESPACED, release="eic", namespace="ops"))
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds["Role"]}
    assert {("ops", "eic-embedding-index-controller"), ("search", "eic-embedding-index-controller")} <= roles
    container = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=ops,search" in container["args"]
    assert "Service" not in kinds


def test_values_schema_rejects_bad_values() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"reconcile": {"onDelete": "shred"}})
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"unknownKey": 1})


def _configmap_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]
            if "configmaps" in r["resources"]]


def test_configmap_verbs_are_restricted_by_name_when_the_indexes_are_listed() -> None:
    rules = _configmap_rules(render.render_chart(HARDENED, release="eic", namespace="ops"))
    named = [r for r in rules if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == ["quickstart-routing", "products-routing"] for r in named)
    assert all(set(r["verbs"]) == {"get", "patch", "delete"} for r in named)
    unnamed = [r for r in rules if not r.get("resourceNames")]
    assert all(r["verbs"] == ["create"] for r in unnamed), "only create (which RBAC cannot name) is unnamed"
    # the default cannot know index names: unnamed verbs, with ownership enforced in code (test_routing_kmock)
    default = _configmap_rules(render.render_chart({}, release="eic", namespace="ops"))
    assert default and not any(r.get("resourceNames") for r in default)


def test_lease_get_and_update_are_limited_to_the_lease_name() -> None:
    roles = [o for o in render.render_chart({}, release="eic", namespace="ops")
             if o["kind"] == "Role" and o["metadata"]["name"].endswith("leader-election")]
    rules = roles[0]["rules"]
    assert {tuple(r["verbs"]): r.get("resourceNames") for r in rules} == {
        ("create",): None, ("get", "update"): ["embedding-index-controller"]}


def test_the_token_is_mounted_only_into_the_operator_pod_and_fs_group_is_set() -> None:
    kinds = _kinds(render.render_chart({}, release="eic", namespace="ops"))
    assert kinds["ServiceAccount"][0]["automountServiceAccountToken"] is False
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 65532
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/tmp", "a read-only root: HOME and TMPDIR on the /tmp emptyDir"
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts


def test_the_network_policy_is_optional_and_allows_only_probes_dns_api_and_extra_egress() -> None:
    assert "NetworkPolicy" not in _kinds(render.render_chart({}, release="eic", namespace="ops"))
    kinds = _kinds(render.render_chart(HARDENED, release="eic", namespace="ops"))
    policy = kinds["NetworkPolicy"][0]["spec"]
    pod_labels = kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert "app.kubernetes.io/component" not in pod_labels
    assert policy["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "DoesNotExist"}], "serve pods are not selected"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert {p["port"] for p in policy["ingress"][0]["ports"]} == {8080, 9090}
    assert policy["ingress"][0]["from"] == HARDENED["networkPolicy"]["ingressFrom"]
    dns, api, extra = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}] and {p["port"] for p in api["ports"]} == {443, 6443}
    assert extra == HARDENED["networkPolicy"]["extraEgress"][0]
    init = kinds["Deployment"][0]["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["fetch"]


def test_notes_name_files_that_exist() -> None:
    import re
    text = (CHART / "templates" / "NOTES.txt").read_text()
    named = set(re.findall(r"examples/kubernetes/[\w./-]+", text)) | set(re.findall(r"docs/[\w.-]+\.md", text))
    assert named
    for rel in named:
        assert (REPO / rel.rstrip(".")).exists(), f"NOTES.txt names {rel}, which does not exist"
