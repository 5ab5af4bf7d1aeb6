"""A CloudCredential's Secret outlives every VM that needs its keys, whoever tries to delete it.

The admission policy in crds/ (installed with the CRDs, as `skyfleet demo` and the chart do)
refuses to delete a Secret while a CloudCredential in its namespace names it; the credential
stays until its Instances' VMs are gone. Here the operator runs for real, so the credential's
own finalizer, the VMs and the namespace controller all play their part.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from skyfleet.testing.manifests import deployment, image
from tests.e2e.operator_fixtures import World, eventually, tags, world
from tests.e2e.operator_fixtures import small_group as group

pytestmark = pytest.mark.e2e
__all__ = ["world"]

REGION = "eu-central-1"


def app(name: str, credential: str) -> list[dict[str, Any]]:
    return [image("xenial"), deployment(name, group(1, credential))]


def kubectl(w: World, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl in the test's namespace, returning the answer whatever it is."""
    return subprocess.run(
        [str(w.kube.tools_bin / "kubectl"), "-n", w.kube.namespace, *args],
        capture_output=True,
        text=True,
        env=w.kube.env,
        timeout=60,
        check=False,
    )


def running_vms(w: World, deployment: str) -> list[dict[str, Any]]:
    return [vm for vm in w.vms(REGION) if tags(vm).get("skyfleet.io/deployment") == deployment]


def assert_refused(answer: subprocess.CompletedProcess[str], secret: str) -> None:
    assert answer.returncode != 0, f"the delete went through: {answer.stdout}"
    assert f"Secret {secret} holds the keys of CloudCredential" in answer.stderr, answer.stderr


def assert_intact(w: World, secret: str) -> None:
    found = w.kube.get("secret", secret)
    assert found is not None, f"Secret {secret} is gone"
    assert not found["metadata"].get("deletionTimestamp"), f"Secret {secret} is being deleted"


def test_a_secret_shared_by_two_credentials_stays_while_either_exists(world: World) -> None:
    """Two credentials share one Secret, only one of them has a VM: no delete of any kind may take
    the Secret while that VM runs, however many observation periods pass."""
    w = world
    secret_doc, used = w.credential("used", REGION, w.cloud.endpoint)
    _, idle = w.credential("idle", REGION, w.cloud.endpoint)
    secret = secret_doc["metadata"]["name"]
    idle["spec"]["secretRef"]["name"] = secret
    w.kube.apply(secret_doc, used, idle, *app("sharer", "used"))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/sharer", "--timeout=120s")
    w.kube("wait", "--for=condition=Ready", "cloudcredentials.skyfleet.io/idle", "--timeout=60s")
    assert len(running_vms(w, "sharer")) == 1

    # The operator observes each credential every second; deletes come in several periods apart.
    for _ in range(3):
        assert_refused(kubectl(w, "delete", "secret", secret, "--wait=false"), secret)
        time.sleep(1.5)
        assert_intact(w, secret)
    assert_refused(kubectl(w, "delete", "secret", "--all", "--wait=false"), secret)
    # A real deletecollection, as the namespace controller sends it.
    collection = f"/api/v1/namespaces/{w.kube.namespace}/secrets"
    assert_refused(kubectl(w, "delete", "--raw", collection), secret)
    time.sleep(3)
    assert_intact(w, secret)
    assert len(running_vms(w, "sharer")) == 1

    # The VM goes the normal way, which needs the keys.
    w.kube("delete", "deployments.skyfleet.io/sharer", "--timeout=90s")
    assert running_vms(w, "sharer") == []
    # Still named by both credentials, then by one: still refused.
    assert_refused(kubectl(w, "delete", "secret", secret, "--wait=false"), secret)
    w.kube("delete", "cloudcredentials.skyfleet.io/idle", "--timeout=60s")
    assert_refused(kubectl(w, "delete", "secret", secret, "--wait=false"), secret)
    # Once no credential names it, the Secret is the user's to delete.
    w.kube("delete", "cloudcredentials.skyfleet.io/used", "--timeout=60s")
    eventually(
        lambda: kubectl(w, "delete", "secret", secret, "--wait=false").returncode == 0,
        timeout=10,
        what="the Secret deletable once no credential names it",
    )
    eventually(lambda: w.kube.get("secret", secret) is None, timeout=10, what="the Secret gone")


def test_deleting_the_namespace_destroys_the_vms_before_their_keys_and_completes(world: World) -> None:
    """Namespace deletion deletes everything at once; the keys must still go last, and the
    namespace must not hang on the policy once the credential is gone. (Runs last: it deletes
    the module's namespace.)"""
    w = world
    docs = w.credential("doomed", REGION, w.cloud.endpoint)
    secret = docs[0]["metadata"]["name"]
    w.kube.apply(*docs, *app("doomed", "doomed"))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/doomed", "--timeout=120s")
    (vm,) = running_vms(w, "doomed")

    w.kube("delete", "namespace", w.kube.namespace, "--wait=false", ns=False)
    started = time.monotonic()
    secret_seen_gone_at = None
    while w.kube("get", "namespace", w.kube.namespace, "--ignore-not-found", "-o", "name", ns=False).strip():
        assert time.monotonic() - started < 240, kubectl(w, "get", "namespace", w.kube.namespace, "-o", "yaml").stdout
        keys_present = w.kube.get("secret", secret) is not None
        still_running = running_vms(w, "doomed")  # asked after the Secret, so running now means running then
        if not keys_present:
            assert not still_running, "the Secret went while its VM still ran"
            secret_seen_gone_at = secret_seen_gone_at or time.monotonic() - started
        time.sleep(0.5)
    gone_after = time.monotonic() - started
    assert running_vms(w, "doomed") == []
    terminated = w.cloud.vms(w.cluster_id, REGION, states=("shutting-down", "terminated"))
    assert vm["InstanceId"] in {t["InstanceId"] for t in terminated}
    print(f"namespace gone after {gone_after:.0f}s (Secret gone after {secret_seen_gone_at or gone_after:.0f}s)")
