"""The chart's Secret-protection policy on the real API server.

A ValidatingAdmissionPolicy refuses to delete a Secret while a CloudCredential in its namespace
names it, so the operator needs no write access to Secrets. The session's control plane also has
the unscoped copy from crds/ installed; this module takes that one's binding away while it runs,
so what answers here is the chart's.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from skyfleet.api.policy import POLICY_FILENAME, POLICY_NAME
from tests.chart.helpers import CHART, ROOT, Cluster, Helm, restore_crds

pytestmark = pytest.mark.chart

RELEASE = "sfsp"
CHART_POLICY = f"{RELEASE}-skyfleet-credential-secrets"


@pytest.fixture(scope="module")
def cluster(control_plane: Any, helm: Helm) -> Iterator[Cluster]:
    cluster = Cluster(control_plane, helm)
    if cluster.kubectl("get", "crd/cloudcredentials.skyfleet.io", check=False).returncode != 0:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/cloudcredentials.skyfleet.io")
    cluster.kubectl("delete", "validatingadmissionpolicybinding", POLICY_NAME, "--ignore-not-found")
    # The API server drops the binding when its informer hears of the deletion: moments, not at
    # once. Until then the unscoped policy still answers; wait until it no longer does.
    probe = f"sfsp-probe-{uuid.uuid4().hex[:6]}"
    tenant(cluster, probe, "keys", credentials={"aws": "keys"})
    eventually(lambda: delete(cluster, probe, "secret", "keys", "--dry-run=server").returncode == 0, 30, "unbound")
    cluster.kubectl("delete", "namespace", probe, "--wait=false", check=False)
    yield cluster
    restore_crds(cluster)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / POLICY_FILENAME))


def credential(name: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "CloudCredential",
        "metadata": {"name": name},
        "spec": {"provider": "ec2", "region": "eu-central-1", "secretRef": {"name": secret}},
    }


def tenant(cluster: Cluster, namespace: str, *secrets: str, credentials: dict[str, str] | None = None) -> None:
    """A namespace with the given Secrets and CloudCredentials (name -> Secret it names)."""
    cluster.kubectl("create", "namespace", namespace)
    for secret in secrets:
        cluster.kubectl("create", "secret", "generic", secret, "-n", namespace, "--from-literal=secretAccessKey=x")
    for name, secret in (credentials or {}).items():
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(credential(name, secret)))


def delete(cluster: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    out: subprocess.CompletedProcess[str] = cluster.kubectl("delete", "-n", namespace, *args, check=False)
    return out


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check`` held."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)
    return time.monotonic() - started


def refused(answer: subprocess.CompletedProcess[str], secret: str) -> bool:
    return answer.returncode != 0 and f"Secret {secret} holds the keys of CloudCredential" in answer.stderr


@contextlib.contextmanager
def installed(cluster: Cluster, *sets: str, tenants: tuple[str, ...] = ()) -> Iterator[None]:
    """The chart installed (CRDs left as they are) with extra --set values; namespaces and
    ``tenants`` deleted afterwards."""
    namespace = f"sfsp-{uuid.uuid4().hex[:6]}"
    args = [arg for value in sets for arg in ("--set", value)]
    try:
        out = cluster.helm(
            "install", RELEASE, str(CHART), "-n", namespace, "--create-namespace", "--set", "crds.install=false", *args
        )
        assert out.returncode == 0, out.stderr
        yield
    finally:
        cluster.helm("uninstall", RELEASE, "-n", namespace)
        for ns in (namespace, *tenants):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_named_secret_cannot_be_deleted_until_its_credential_is_gone(cluster: Cluster) -> None:
    app = f"shop-{uuid.uuid4().hex[:6]}"
    with installed(cluster, tenants=(app,)):
        tenant(cluster, app, "keys", "spare", credentials={"aws": "keys"})
        # The API server learns of a new policy and new parameters from informers: moments, not at once.
        eventually(lambda: refused(delete(cluster, app, "secret", "keys", "--dry-run=server"), "keys"), 30, "policy")

        single = delete(cluster, app, "secret", "keys")
        assert refused(single, "keys"), single.stderr
        assert f"ValidatingAdmissionPolicy '{CHART_POLICY}'" in single.stderr
        assert "delete the CloudCredential first" in single.stderr
        everything = delete(cluster, app, "secret", "--all")
        assert refused(everything, "keys"), everything.stderr
        collection = cluster.kubectl("delete", "--raw", f"/api/v1/namespaces/{app}/secrets", check=False)
        assert refused(collection, "keys"), collection.stderr
        names = cluster.kubectl("get", "secrets", "-n", app, "-o", "name").stdout.split()
        assert names == ["secret/keys"], "only the named Secret is kept; the spare one went"

        delete(cluster, app, "cloudcredentials.skyfleet.io", "aws")
        eventually(lambda: delete(cluster, app, "secret", "keys").returncode == 0, 30, "the Secret deletable")
        assert cluster.kubectl("get", "secret", "keys", "-n", app, "--ignore-not-found", "-o", "name").stdout == ""


def set_finalizers(cluster: Cluster, namespace: str, finalizers: list[str] | None) -> None:
    patch = json.dumps({"metadata": {"finalizers": finalizers}})
    cluster.kubectl(
        "patch", "cloudcredentials.skyfleet.io", "aws", "-n", namespace, "--type=merge", "-p", patch, check=False
    )


def test_namespace_deletion_waits_for_the_credential_then_completes(cluster: Cluster) -> None:
    """The namespace controller deletes everything at once; the Secret goes last, and does go."""
    app = f"gone-{uuid.uuid4().hex[:6]}"

    def content_failure() -> str:
        status = json.loads(cluster.kubectl("get", "namespace", app, "-o", "json").stdout)["status"]
        failed = [c for c in status.get("conditions", []) if c["type"] == "NamespaceDeletionContentFailure"]
        return str(failed[0]["message"]) if failed and failed[0]["status"] == "True" else ""

    with installed(cluster, tenants=(app,)):
        tenant(cluster, app, "keys", credentials={"aws": "keys"})
        # What the operator's finalizer does while Instances still need the credential.
        set_finalizers(cluster, app, ["example.com/still-in-use"])
        try:
            eventually(
                lambda: refused(delete(cluster, app, "secret", "keys", "--dry-run=server"), "keys"), 30, "policy"
            )
            cluster.kubectl("delete", "namespace", app, "--wait=false")
            eventually(lambda: "holds the keys of CloudCredential aws" in content_failure(), 60, "the refusal shown")
            time.sleep(5)
            keys = json.loads(cluster.kubectl("get", "secret", "keys", "-n", app, "-o", "json").stdout)
            assert not keys["metadata"].get("deletionTimestamp"), "the keys stay while the credential does"
        finally:
            set_finalizers(cluster, app, None)
        gone = eventually(
            lambda: cluster.kubectl("get", "namespace", app, "--ignore-not-found", "-o", "name").stdout == "",
            120,
            "the namespace gone",
        )
        print(f"namespace gone {gone:.0f}s after its credential")


def test_namespaced_install_protects_only_the_namespaces_it_serves(cluster: Cluster) -> None:
    suffix = uuid.uuid4().hex[:6]
    watched, elsewhere = f"watched-{suffix}", f"elsewhere-{suffix}"
    for ns in (watched, elsewhere):
        tenant(cluster, ns, "keys", credentials={"aws": "keys"})
    with installed(cluster, f"watchNamespaces={{{watched}}}", tenants=(watched, elsewhere)):
        eventually(
            lambda: refused(delete(cluster, watched, "secret", "keys", "--dry-run=server"), "keys"), 30, "the policy"
        )
        other = delete(cluster, elsewhere, "secret", "keys", "--dry-run=server")
        assert other.returncode == 0, other.stderr
