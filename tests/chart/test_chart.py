"""The Helm chart as a user meets it: lint, render, reject bad values, least privilege, install, upgrade."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.api.crd import KINDS as ALL_KINDS
from tests.chart.helpers import (
    CHART,
    KUBE_VERSION,
    ROOT,
    Cluster,
    Helm,
    Render,
    adopt_existing_crds,
    by_kind,
    metric_names,
    one,
    restore_crds,
)

pytestmark = pytest.mark.chart

MONITORING = ("monitoring.coreos.com/v1",)
KINDS = (
    "cloudcredentials",
    "images",
    "deployments",
    "instances",
    "scalingpolicies",
)  # what the operator and RBAC cover
RBAC_KINDS = ("ClusterRole", "Role")


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    operator: dict[str, Any]
    (operator,) = pod["containers"]
    return operator


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from>") for e in container(objects)["env"]}


# ---------------------------------------------------------------------------------------------
# lint


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["watchNamespaces={team-a,team-b}", "replicaCount=2"],
        ["metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "argocd.healthChecks=true"],
        ["grafana.dashboards.enabled=true", "crds.install=false", "rbac.aggregateToDefaultRoles=false"],
    ],
    ids=["defaults", "namespaced-ha", "monitoring-argocd", "dashboard-no-crds"],
)
def test_helm_lint_strict_passes(helm: Helm, sets: list[str]) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


# ---------------------------------------------------------------------------------------------
# what the defaults give


def test_defaults_render_the_operator_and_nothing_optional(render: Render) -> None:
    objects = render()
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert not by_kind(objects, "PodDisruptionBudget"), "a PDB for a single pod would block node drains"
    assert not by_kind(objects, "ConfigMap"), "Argo CD and Grafana extras are opt-in"


def test_operator_pod_runs_skyfleet_locked_down(render: Render) -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    operator = container(objects)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    assert operator["image"] == f"skyfleet/skyfleet:{chart['appVersion']}"
    # The image's exec-form ENTRYPOINT is `skyfleet run`; overriding command would bypass it.
    assert "command" not in operator
    assert "args" not in operator
    assert pod["serviceAccountName"] == "sf-skyfleet"

    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"metrics": 9090, "health": 8081}
    probe = operator["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}

    sc = operator["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    mounts = {m["mountPath"]: m["name"] for m in operator["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"

    assert operator["resources"]["requests"]["memory"]
    assert operator["resources"]["limits"]["memory"]

    env = env_of(objects)
    assert env["SKYFLEET_NAMESPACE"] == ""
    assert env["SKYFLEET_METRICS_PORT"] == "9090"
    assert env["SKYFLEET_LIVENESS"] == "http://0.0.0.0:8081/healthz"


def test_every_object_carries_the_recommended_labels(render: Render) -> None:
    objects = render(
        {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}, "replicaCount": 2},
        api_versions=MONITORING,
    )
    for obj in objects:
        labels = obj["metadata"]["labels"]
        for key in ("name", "instance", "version", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (obj["kind"], obj["metadata"]["name"], key)
        assert labels["app.kubernetes.io/instance"] == "sf"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_metrics_service_targets_the_named_port(render: Render) -> None:
    objects = render()
    service = one(objects, "Service")
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] == "metrics"
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_custom_ports_move_probes_and_service_together(render: Render) -> None:
    objects = render({"metrics": {"port": 9100}, "liveness": {"port": 9101}})
    operator = container(objects)
    assert {p["name"]: p["containerPort"] for p in operator["ports"]} == {"metrics": 9100, "health": 9101}
    assert one(objects, "Service")["spec"]["ports"][0]["port"] == 9100
    assert env_of(objects)["SKYFLEET_METRICS_PORT"] == "9100"
    assert env_of(objects)["SKYFLEET_LIVENESS"] == "http://0.0.0.0:9101/healthz"


def test_image_digest_pins_the_image(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    objects = render({"image": {"repository": "registry.example/skyfleet", "tag": "1.2.3", "digest": digest}})
    assert container(objects)["image"] == f"registry.example/skyfleet:1.2.3@{digest}"


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "watchNamespaces": ["a", "b"],
            "operator": {
                "clusterId": "prod-eu",
                "logLevel": "DEBUG",
                "workers": 4,
                "allowedEndpoints": ["keystone.lab.example.org", "10.20.0.0/16"],
            },
        },
    ],
    ids=["defaults", "custom"],
)
def test_operator_environment_is_valid_settings(
    render: Render, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SKYFLEET_* variable the chart sets is read by `skyfleet run`, under its current name."""
    from skyfleet.settings import DEPRECATED_ENV, Settings

    objects = render(values)
    for name in [n for n in os.environ if n.startswith("SKYFLEET_")]:
        monkeypatch.delenv(name)
    for var in container(objects)["env"]:
        if not var["name"].startswith("SKYFLEET_"):
            continue
        assert var["name"] not in DEPRECATED_ENV, f"{var['name']} is deprecated"
        if "value" in var:
            monkeypatch.setenv(var["name"], var["value"])
    parsed = Settings(lease_namespace="skyfleet-system")
    assert parsed.namespaces == values.get("watchNamespaces", [])
    assert parsed.metrics_port == 9090
    assert parsed.leader_election is True
    assert parsed.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    if "operator" in values:
        assert parsed.cluster_id == "prod-eu"
        assert parsed.allowed_endpoints == ["keystone.lab.example.org", "10.20.0.0/16"]
        assert parsed.log_level == "DEBUG"
        assert parsed.workers == 4
    else:
        assert parsed.allowed_endpoints == []


# ---------------------------------------------------------------------------------------------
# CRDs


def crd_files() -> list[Path]:
    """The CRDs among crds/ (which also holds the Secret-protection policy, templated separately)."""
    paths = (ROOT / "crds").glob("*.yaml")
    return sorted(p for p in paths if next(yaml.safe_load_all(p.read_text()))["kind"] == "CustomResourceDefinition")


def test_chart_crd_copies_are_identical_to_crds_folder() -> None:
    """files/crds/ must be the generated CRDs byte for byte.

    Resync: cp crds/skyfleet.io_*.yaml charts/skyfleet/files/crds/
    """
    source = {p.name: p.read_bytes() for p in crd_files()}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert len(source) == len(ALL_KINDS)
    assert sorted(copies) == sorted(source), "files/crds holds the CRDs and nothing else (every file renders as a CRD)"
    stale = [name for name in source if source[name] != copies[name]]
    assert not stale, (
        f"charts/skyfleet/files/crds is stale for {stale}: cp crds/skyfleet.io_*.yaml charts/skyfleet/files/crds/"
    )


def test_rendered_crds_match_the_generated_ones_and_are_kept(render: Render) -> None:
    crds = {c["metadata"]["name"]: c for c in by_kind(render(), "CustomResourceDefinition")}
    assert sorted(crds) == sorted(f"{k.crd.plural}.skyfleet.io" for k in ALL_KINDS)
    for path in crd_files():
        generated = yaml.safe_load(path.read_text())
        rendered = crds[generated["metadata"]["name"]]
        assert rendered["spec"] == generated["spec"], path.name
        annotations = rendered["metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"
        assert annotations["argocd.argoproj.io/sync-wave"] == "-10"
        assert annotations["argocd.argoproj.io/sync-options"] == "Prune=false,Delete=false"
        assert generated["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()


def test_crds_can_be_left_to_someone_else(render: Render) -> None:
    objects = render({"crds": {"install": False}})
    assert not by_kind(objects, "CustomResourceDefinition")
    assert by_kind(objects, "Deployment")


def test_crds_without_keep_are_deleted_on_uninstall(render: Render) -> None:
    for crd in by_kind(render({"crds": {"keep": False, "annotations": {}}}), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


# ---------------------------------------------------------------------------------------------
# RBAC: least privilege

# What the operator may do in the namespaces it serves; any change to this table must be deliberate.
NAMESPACED_RULES = [
    (
        ("skyfleet.io",),
        ("cloudcredentials", "images", "deployments", "scalingpolicies"),
        ("get", "list", "watch", "patch", "update"),
    ),
    (("skyfleet.io",), ("instances",), ("get", "list", "watch", "create", "patch", "update", "delete")),
    (
        ("skyfleet.io",),
        (
            "cloudcredentials/status",
            "images/status",
            "deployments/status",
            "instances/status",
            "scalingpolicies/status",
        ),
        ("get", "patch", "update"),
    ),
    (("skyfleet.io",), ("deployments/finalizers",), ("update",)),
    # get by name, nothing else: an admission policy, not the operator, keeps a credential's Secret
    (("",), ("secrets",), ("get",)),
    # a CloudCredential's endpoint.caBundle may come from a ConfigMap in its namespace
    (("",), ("configmaps",), ("get",)),
    (("",), ("events",), ("create",)),
    (("events.k8s.io",), ("events",), ("create",)),
]
CRD_READ = (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("get", "list", "watch"))
NAMESPACES_WATCH = (("",), ("namespaces",), ("list", "watch"))
LEASES = (("coordination.k8s.io",), ("leases",), ("get", "create", "update"))


def rules_of(role: dict[str, Any]) -> list[tuple[tuple[str, ...], ...]]:
    return [
        (tuple(r.get("apiGroups", ())), tuple(r.get("resources", ())), tuple(r.get("verbs", ()))) for r in role["rules"]
    ]


def all_rbac(render: Render) -> list[dict[str, Any]]:
    value_sets: list[dict[str, Any]] = [{}, {"watchNamespaces": ["team-a", "team-b"]}]
    return [r for values in value_sets for o in [render(values)] for r in o if r["kind"] in RBAC_KINDS]


def test_no_role_grants_wildcards_escalation_or_secret_listing(render: Render) -> None:
    roles = all_rbac(render)
    assert len(roles) >= 6
    for role in roles:
        name = f"{role['kind']} {role['metadata']['name']}"
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, name
            for key in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule.get(key, [])), f"{name}: wildcard in {key}: {rule}"
            verbs = set(rule["verbs"])
            assert not verbs & {"escalate", "bind", "impersonate"}, f"{name}: {rule}"
            if "secrets" in rule["resources"]:
                assert verbs == {"get"}, f"{name} may {verbs} Secrets"
                assert rule["apiGroups"] == [""]
            if "serviceaccounts/token" in rule["resources"] or "pods/exec" in rule["resources"]:
                pytest.fail(f"{name}: {rule}")


def test_cluster_wide_operator_rules_are_exactly_what_it_needs(render: Render) -> None:
    objects = render()
    role = one(objects, "ClusterRole", "sf-skyfleet")
    assert sorted(rules_of(role)) == sorted([CRD_READ, NAMESPACES_WATCH, *NAMESPACED_RULES])
    binding = one(objects, "ClusterRoleBinding", "sf-skyfleet")
    assert binding["roleRef"]["name"] == "sf-skyfleet"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sf-skyfleet", "namespace": "skyfleet-system"}]
    lease = one(objects, "Role", "sf-skyfleet-leader-election")
    assert rules_of(lease) == [LEASES]
    assert lease["metadata"]["namespace"] == "skyfleet-system"


def test_watch_namespaces_use_a_role_per_namespace(render: Render) -> None:
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    cluster_role = one(objects, "ClusterRole", "sf-skyfleet")
    assert rules_of(cluster_role) == [CRD_READ, NAMESPACES_WATCH], "only read-only rules stay cluster-wide"
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objects, "Role") if r["metadata"]["name"] == "sf-skyfleet"}
    assert sorted(roles) == ["team-a", "team-b"]
    for role in roles.values():
        assert sorted(rules_of(role)) == sorted(NAMESPACED_RULES)
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objects, "RoleBinding")}
    assert {"team-a", "team-b", "skyfleet-system"} <= set(bindings)
    for ns in ("team-a", "team-b"):
        assert bindings[ns]["roleRef"]["kind"] == "Role"
        assert bindings[ns]["roleRef"]["name"] == "sf-skyfleet"
        assert bindings[ns]["subjects"][0]["namespace"] == "skyfleet-system"
    assert env_of(objects)["SKYFLEET_NAMESPACE"] == "team-a,team-b"


def test_aggregated_roles_extend_view_and_edit_without_creating_instances(render: Render) -> None:
    objects = render()
    view = one(objects, "ClusterRole", "sf-skyfleet-view")
    edit = one(objects, "ClusterRole", "sf-skyfleet-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    assert rules_of(view) == [
        (("skyfleet.io",), KINDS, ("get", "list", "watch")),
        (("skyfleet.io",), ("scalingpolicies/scale",), ("get",)),
    ]
    edit_rules = {res: set(verbs) for _, resources, verbs in rules_of(edit) for res in resources}
    assert {"create", "update", "patch", "delete"} <= edit_rules["deployments"]
    assert {"create", "update", "patch", "delete"} <= edit_rules["scalingpolicies"]
    assert {"update", "patch"} <= edit_rules["scalingpolicies/scale"], "editors may kubectl scale a policy"
    assert "create" not in edit_rules["instances"], "Instances are Skyfleet's records; users never create them"
    assert not by_kind(render({"rbac": {"aggregateToDefaultRoles": False}}), "ClusterRole")[1:]


# ---------------------------------------------------------------------------------------------
# NetworkPolicy: what the operator's pods may reach and be reached by


def rule_ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_network_policy_admits_metrics_and_probes_and_reaches_api_dns_and_https(render: Render) -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]

    metrics, health = policy["spec"]["ingress"]
    assert rule_ports(metrics) == {(9090, "TCP")}
    assert metrics["from"] == [{"namespaceSelector": {}}], "scrapers: pods, not the whole internet"
    assert rule_ports(health) == {(8081, "TCP")}
    assert "from" not in health, "the kubelet probes from the node, not from a pod"
    assert {p["containerPort"] for p in container(objects)["ports"]} == {9090, 8081}

    api, dns, clouds = policy["spec"]["egress"]
    assert rule_ports(api) == {(443, "TCP"), (6443, "TCP")}
    assert "to" not in api
    assert rule_ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
    assert rule_ports(clouds) == {(443, "TCP")}
    blocks = {peer["ipBlock"]["cidr"]: peer["ipBlock"].get("except", []) for peer in clouds["to"]}
    assert blocks == {"0.0.0.0/0": ["169.254.0.0/16"], "::/0": ["fe80::/10"]}, "never instance metadata"


def test_network_policy_follows_ports_and_takes_private_endpoints(render: Render) -> None:
    keystone = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 5000, "protocol": "TCP"}]}
    api_server = [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
    objects = render(
        {
            "metrics": {"port": 9100},
            "liveness": {"port": 9101},
            "networkPolicy": {
                "ingress": {"metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]},
                "egress": {"apiServer": {"ports": [8443], "to": api_server}, "extra": [keystone]},
            },
        }
    )
    policy = one(objects, "NetworkPolicy")
    metrics, health = policy["spec"]["ingress"]
    assert rule_ports(metrics) == {(9100, "TCP")}
    assert metrics["from"] == [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]
    assert rule_ports(health) == {(9101, "TCP")}
    api, _, clouds, extra = policy["spec"]["egress"]
    assert rule_ports(api) == {(8443, "TCP")}
    assert api["to"] == api_server
    assert rule_ports(clouds) == {(443, "TCP")}
    assert extra == keystone


def test_metrics_off_closes_the_port_everywhere(render: Render) -> None:
    objects = render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, api_versions=MONITORING)
    assert env_of(objects)["SKYFLEET_METRICS_PORT"] == "0"
    assert [p["name"] for p in container(objects)["ports"]] == ["health"]
    assert not by_kind(objects, "Service")
    assert not by_kind(objects, "ServiceMonitor")
    (health,) = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert rule_ports(health) == {(8081, "TCP")}


def test_network_policy_can_be_left_out(render: Render) -> None:
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_metrics_and_probe_ports_must_differ(helm: Helm) -> None:
    out = helm("template", "sf", str(CHART), "--kube-version", KUBE_VERSION, "--set", "metrics.port=8081")
    assert out.returncode != 0
    assert "metrics.port and liveness.port must differ" in out.stderr


# ---------------------------------------------------------------------------------------------
# the admission policy that keeps credentials' Secrets


def generated_policy() -> tuple[dict[str, Any], dict[str, Any]]:
    policy, binding = yaml.safe_load_all((ROOT / "crds" / "policy-credential-secrets.yaml").read_text())
    return policy, binding


def test_chart_renders_the_generated_secret_protection_policy(render: Render) -> None:
    policy, binding = generated_policy()
    objects = render()
    rendered = one(objects, "ValidatingAdmissionPolicy", "sf-skyfleet-credential-secrets")
    assert rendered["spec"] == policy["spec"], "the chart's policy differs from crds/ (make crds)"
    rendered_binding = one(objects, "ValidatingAdmissionPolicyBinding", "sf-skyfleet-credential-secrets")
    assert rendered_binding["spec"] == {**binding["spec"], "policyName": "sf-skyfleet-credential-secrets"}
    assert rendered["spec"]["paramKind"] == {"apiVersion": "skyfleet.io/v1alpha1", "kind": "CloudCredential"}
    assert rendered_binding["spec"]["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Allow"}
    assert "namespace" not in rendered_binding["spec"]["paramRef"], "params from the Secret's own namespace"


def test_namespaced_install_protects_only_its_namespaces(render: Render) -> None:
    binding = one(render({"watchNamespaces": ["team-a", "team-b"]}), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    }
    objects = render({"secretProtection": {"enabled": False}})
    assert not by_kind(objects, "ValidatingAdmissionPolicy")
    assert not by_kind(objects, "ValidatingAdmissionPolicyBinding")


# ---------------------------------------------------------------------------------------------
# optional extras


def test_monitoring_needs_the_value_and_the_prometheus_operator_api(render: Render) -> None:
    monitoring = {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        }
    }
    without_api = render(monitoring)
    assert not [o for o in without_api if o["apiVersion"].startswith("monitoring.coreos.com")]
    assert not [o for o in render(api_versions=MONITORING) if o["apiVersion"].startswith("monitoring.coreos.com")]

    objects = render(monitoring, api_versions=MONITORING)
    service_monitor = one(objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = one(objects, "Service")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pod_monitor = one(objects, "PodMonitor")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_alerts_cover_stalls_orphans_throttling_and_dead_watches(render: Render) -> None:
    objects = render({"metrics": {"prometheusRule": {"enabled": True}}}, api_versions=MONITORING)
    rules = [r for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    assert {"SkyfleetReconcileStalled", "SkyfleetOrphanedVMs", "SkyfleetCloudThrottled", "SkyfleetWatchStale"} <= set(
        alerts
    )
    exported = metric_names()
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs/troubleshooting.md").read_text(), flags=re.MULTILINE)
    runbooks = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    for alert in alerts.values():
        used = set(re.findall(r"\bskyfleet_[a-z_]+", alert["expr"]))
        assert used, alert["alert"]
        assert used <= exported, f"{alert['alert']} uses metrics the operator does not export: {used - exported}"
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
        # Every alert links its runbook: a heading of docs/troubleshooting.md.
        path, anchor = alert["annotations"]["runbook_url"].split("#")
        assert path == "docs/troubleshooting.md"
        assert anchor in runbooks, f"{alert['alert']}: no heading #{anchor} in docs/troubleshooting.md"
    assert "skyfleet_orphaned_vms" in alerts["SkyfleetOrphanedVMs"]["expr"]
    assert "skyfleet_cloud_throttled_total" in alerts["SkyfleetCloudThrottled"]["expr"]
    assert "skyfleet_watch_last_event_timestamp_seconds" in alerts["SkyfleetWatchStale"]["expr"]


def test_pdb_only_with_more_than_one_replica(render: Render) -> None:
    assert not by_kind(render({"replicaCount": 1}), "PodDisruptionBudget")
    objects = render({"replicaCount": 2})
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert one(objects, "Deployment")["spec"]["replicas"] == 2


def test_argocd_health_checks_and_dashboard_are_shipped_behind_values(render: Render) -> None:
    objects = render({"argocd": {"healthChecks": True}, "grafana": {"dashboards": {"enabled": True}}})
    health = one(objects, "ConfigMap", "sf-skyfleet-argocd-health")
    assert sorted(health["data"]) == [
        f"resource.customizations.health.skyfleet.io_{kind}"
        for kind in ("CloudCredential", "Deployment", "Image", "Instance", "ScalingPolicy")
    ]
    for kind in ("CloudCredential", "Deployment", "Image", "Instance", "ScalingPolicy"):
        script = health["data"][f"resource.customizations.health.skyfleet.io_{kind}"]
        assert script.rstrip().endswith((CHART / "argocd" / f"{kind.lower()}.lua").read_text().rstrip())
    dashboard = one(objects, "ConfigMap", "sf-skyfleet-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["skyfleet.json"] == (CHART / "dashboards" / "skyfleet.json").read_text().rstrip("\n")


# ---------------------------------------------------------------------------------------------
# the schema rejects what a user mistypes


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (["replicaCont=2"], "replicaCont"),
        (["metrics.serviceMonitor.enable=true"], "enable"),
        (["securityContext.readOnlyRootFileSystem=false"], "readOnlyRootFileSystem"),
        (["replicaCount=two"], "replicaCount"),
        (["watchNamespaces=team-a"], "watchNamespaces"),
        (["operator.logFormat=yaml"], "logFormat"),
        (["operator.logLevel=info"], "logLevel"),
        (["podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
        (["securityContext.capabilities.add={NET_ADMIN}"], "add"),
        (["image.digest=latest"], "digest"),
    ],
    ids=[
        "typo-top-level",
        "typo-nested",
        "typo-security",
        "wrong-type",
        "string-not-list",
        "unknown-enum",
        "lowercase-level",
        "root",
        "capabilities",
        "bad-digest",
    ],
)
def test_schema_rejects_bad_values(helm: Helm, sets: list[str], complaint: str) -> None:
    args = ["template", "sf", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    assert out.returncode != 0, f"{sets} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr
    assert complaint in out.stderr


def test_values_file_passes_the_schema_and_documents_every_value(helm: Helm) -> None:
    """Each value has a comment right above it, or sits inside a documented block."""
    out = helm("template", "sf", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(CHART / "values.yaml"))
    assert out.returncode == 0, out.stderr
    lines = (CHART / "values.yaml").read_text().splitlines()
    ancestors: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):(.*)$", line)
        if not m:
            continue
        indent, leaf = len(m.group(1)), bool(m.group(3).strip())
        ancestors = [a for a in ancestors if a[0] < indent]
        documented = (i > 0 and lines[i - 1].strip().startswith("#")) or any(d for _, d in ancestors)
        if leaf and not documented:
            undocumented.append(line.strip())
        ancestors.append((indent, documented))
    assert not undocumented


# ---------------------------------------------------------------------------------------------
# install, upgrade and uninstall on the real control plane (no nodes: objects, not pods)

RELEASE = "sf"
STUB_MONITORING_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %(plural)s.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: %(kind)s, plural: %(plural)s, singular: %(singular)s, listKind: %(kind)sList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""
MONITORING_KINDS = (
    ("ServiceMonitor", "servicemonitors"),
    ("PodMonitor", "podmonitors"),
    ("PrometheusRule", "prometheusrules"),
)


@pytest.fixture(scope="module")
def cluster(control_plane: Any, helm: Helm) -> Iterator[Cluster]:
    cluster = Cluster(control_plane, helm)
    yield cluster
    restore_crds(cluster)


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[tuple[str, subprocess.CompletedProcess[str]]]:
    """The chart installed cluster-wide, with two replicas and every ConfigMap extra, in a fresh namespace."""
    namespace = f"skyfleet-{uuid.uuid4().hex[:8]}"
    adopt_existing_crds(cluster, RELEASE, namespace)
    out = cluster.helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--create-namespace",
        "--set",
        "replicaCount=2",
        "--set",
        "argocd.healthChecks=true",
        "--set",
        "grafana.dashboards.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--timeout",
        "60s",
    )
    assert out.returncode == 0, out.stderr
    yield namespace, out
    cluster.helm("uninstall", RELEASE, "-n", namespace)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def manifest_objects(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.helm("get", "manifest", RELEASE, "-n", namespace)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_install_is_accepted_server_side(cluster: Cluster, release: tuple[str, Any]) -> None:
    namespace, out = release
    assert "It serves Skyfleet objects in every namespace." in out.stdout
    assert "no ServiceMonitor, PodMonitor or PrometheusRule was created" in out.stdout
    objects = manifest_objects(cluster, namespace)
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "Deployment", "PodDisruptionBudget", "ConfigMap", "ClusterRole"} <= kinds
    assert "ServiceMonitor" not in kinds, "the API is not served here"
    found = cluster.kubectl("get", "-f", "-", "-o", "name", input=yaml.safe_dump_all(objects)).stdout.split()
    assert len(found) == len(objects)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{k}.skyfleet.io" for k in KINDS))
    deployment = json.loads(cluster.kubectl("get", "deploy", "sf-skyfleet", "-n", namespace, "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]


def test_installed_rbac_is_least_privilege_as_the_api_server_sees_it(
    cluster: Cluster, release: tuple[str, Any]
) -> None:
    namespace, _ = release
    sa = f"system:serviceaccount:{namespace}:sf-skyfleet"
    allowed = [
        ("get", "secrets", "-n", "shop"),
        ("watch", "deployments.skyfleet.io", "-A"),
        ("patch", "deployments.skyfleet.io/status", "-n", "shop"),
        ("create", "instances.skyfleet.io", "-n", "shop"),
        ("delete", "instances.skyfleet.io", "-n", "shop"),
        ("create", "events", "-n", "shop"),
        ("create", "events.events.k8s.io", "-n", "shop"),
        ("update", "leases.coordination.k8s.io", "-n", namespace),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    denied = [
        ("patch", "secrets", "-n", "kube-system"),
        ("patch", "secrets", "-n", "shop"),
        ("update", "secrets", "-n", "shop"),
        ("delete", "secrets", "-n", "shop"),
        ("list", "secrets", "-n", "shop"),
        ("watch", "secrets", "-A"),
        ("create", "secrets", "-n", "shop"),
        ("create", "deployments.skyfleet.io", "-n", "shop"),
        ("delete", "cloudcredentials.skyfleet.io", "-n", "shop"),
        ("update", "leases.coordination.k8s.io", "-n", "shop"),
        ("create", "pods", "-n", namespace),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("escalate", "clusterroles"),
        ("impersonate", "users"),
    ]
    assert [a for a in allowed if not cluster.can(sa, *a)] == []
    assert [d for d in denied if cluster.can(sa, *d)] == []


def test_default_edit_and_view_roles_cover_skyfleet_kinds(cluster: Cluster, release: tuple[str, Any]) -> None:
    namespace, _ = release
    cluster.kubectl("create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", namespace)
    deadline = time.monotonic() + 30
    # The controller-manager folds the labelled ClusterRoles into edit/view asynchronously.
    while not cluster.can("alice", "create", "deployments.skyfleet.io", "-n", namespace):
        assert time.monotonic() < deadline, "edit was never extended to deployments.skyfleet.io"
        time.sleep(0.5)
    assert cluster.can("alice", "delete", "instances.skyfleet.io", "-n", namespace)
    assert not cluster.can("alice", "create", "instances.skyfleet.io", "-n", namespace)
    assert cluster.can("bob", "list", "cloudcredentials.skyfleet.io", "-n", namespace)
    assert not cluster.can("bob", "patch", "deployments.skyfleet.io", "-n", namespace)


def test_upgrade_updates_the_crds(cluster: Cluster, release: tuple[str, Any], chart_copy: Path) -> None:
    namespace, _ = release
    assert "upgradeProbe" not in json.dumps(cluster.crd("images"))

    # The next chart version ships a CRD with a new field (as `make crds` would produce).
    crd_file = chart_copy / "files" / "crds" / "skyfleet.io_images.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["upgradeProbe"] = {"type": "string", "description": "Added by the next version."}
    crd_file.write_text(yaml.safe_dump(crd))
    chart_yaml = chart_copy / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.2.0"))

    out = cluster.helm("upgrade", RELEASE, str(chart_copy), "-n", namespace, "--reuse-values")
    assert out.returncode == 0, out.stderr
    served = cluster.crd("images")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert served["properties"]["upgradeProbe"]["description"] == "Added by the next version."

    # And back: upgrading to the repository's chart restores the repository's CRD.
    out = cluster.helm("upgrade", RELEASE, str(CHART), "-n", namespace, "--reuse-values")
    assert out.returncode == 0, out.stderr
    generated = yaml.safe_load((ROOT / "crds" / "skyfleet.io_images.yaml").read_text())
    assert cluster.crd("images")["spec"]["versions"][0]["schema"] == generated["spec"]["versions"][0]["schema"]


def test_namespaced_install_with_prometheus_operator(cluster: Cluster, release: tuple[str, Any]) -> None:
    """A second, namespace-scoped release: Roles only where asked, monitoring objects once the API exists."""
    suffix = uuid.uuid4().hex[:6]
    namespace, team_a, team_b = (f"{n}-{suffix}" for n in ("sf2", "team-a", "team-b"))
    for ns in (team_a, team_b):
        cluster.kubectl("create", "namespace", ns)
    stubs = "---".join(
        STUB_MONITORING_CRDS % {"kind": kind, "plural": plural, "singular": kind.lower()}
        for kind, plural in MONITORING_KINDS
    )
    cluster.kubectl("apply", "-f", "-", input=stubs)
    try:
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{p}.monitoring.coreos.com" for _, p in MONITORING_KINDS),
        )
        out = cluster.helm(
            "install",
            "sf2",
            str(CHART),
            "-n",
            namespace,
            "--create-namespace",
            "--set",
            "crds.install=false",
            "--set",
            f"watchNamespaces={{{team_a},{team_b}}}",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        )
        assert out.returncode == 0, out.stderr
        assert f"in these namespaces only: {team_a}, {team_b}" in out.stdout
        for kind, _ in MONITORING_KINDS:
            cluster.kubectl("get", kind.lower(), "sf2-skyfleet", "-n", namespace)
        sa = f"system:serviceaccount:{namespace}:sf2-skyfleet"
        assert cluster.can(sa, "watch", "deployments.skyfleet.io", "-n", team_a)
        assert cluster.can(sa, "create", "instances.skyfleet.io", "-n", team_b)
        assert not cluster.can(sa, "watch", "deployments.skyfleet.io", "-A")
        assert not cluster.can(sa, "get", "secrets", "-n", "default")
        assert cluster.can(sa, "get", "secrets", "-n", team_a)
        assert not cluster.can(sa, "patch", "secrets", "-n", team_a)
        assert not cluster.can(sa, "patch", "secrets", "-n", "kube-system")
        assert not cluster.can(sa, "list", "cloudcredentials.skyfleet.io", "-n", "default")
        cluster.helm("uninstall", "sf2", "-n", namespace)
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=stubs, check=False)
        for ns in (namespace, team_a, team_b):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_uninstall_keeps_the_crds(cluster: Cluster, release: tuple[str, Any]) -> None:
    namespace, _ = release
    out = cluster.helm("uninstall", RELEASE, "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert cluster.kubectl("get", "deploy", "sf-skyfleet", "-n", namespace, check=False).returncode != 0
    for plural in KINDS:
        crd = cluster.crd(plural)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_schema_closes_every_section() -> None:
    """Any object in values.schema.json with named properties refuses unknown ones, so typos fail."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_sections = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_sections.append(path or "(root)")
            for key, child in node.items():
                walk(child, f"{path}.{key}" if key not in ("properties", "items", "anyOf") else path)
        elif isinstance(node, list):
            for child in node:
                walk(child, path)

    walk(schema, "")
    assert open_sections == []
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), "every top-level value is described by the schema"
