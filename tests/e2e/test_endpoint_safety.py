"""A tenant's CloudCredential cannot make the operator fetch what it should not, nor copy it.

A loopback server plays the cloud metadata service: it serves a canary as "metadata" and
answers every other request with a 302 to it (the canary in the Location and the body too).
The operator allow-lists 127.0.0.1 (for the emulator), not 127.0.0.2.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.connector.loopback import Authority, LoopbackServer, make_authority
from tests.e2e.operator_fixtures import World, condition, eventually, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

CANARY = "METADATA-CANARY-31e7b0"
CRED = "cloudcredentials.skyfleet.io"


@pytest.fixture(scope="module")
def metadata_not_listed() -> Iterator[LoopbackServer]:
    with LoopbackServer(mode="redirect", canary=CANARY, host="127.0.0.2") as server:
        yield server


@pytest.fixture(scope="module")
def metadata_listed() -> Iterator[LoopbackServer]:
    with LoopbackServer(mode="redirect", canary=CANARY, host="127.0.0.1") as server:
        yield server


def ready(w: World, name: str) -> tuple[str | None, str | None]:
    return condition(w.kube.get(CRED, name))


def message(w: World, name: str) -> str:
    conditions = (w.kube.get(CRED, name).get("status") or {}).get("conditions") or []
    return next((c["message"] for c in conditions if c["type"] == "Ready"), "")


def refused(w: World, name: str, endpoint: str, **spec: Any) -> str:
    """Apply a credential for ``endpoint``; wait for EndpointNotAllowed and return its message."""
    w.kube.apply(*w.credential(name, "us-east-1", endpoint, **spec))
    eventually(lambda: ready(w, name) == ("False", "EndpointNotAllowed"), timeout=60, what=f"{name} refused")
    eventually(
        lambda: any(e["involvedObject"]["name"] == name for e in w.kube.events("EndpointNotAllowed")),
        timeout=30,
        what=f"EndpointNotAllowed event for {name}",
    )
    return message(w, name)


def test_destinations_the_operator_did_not_list_are_never_contacted(
    world: World, metadata_not_listed: LoopbackServer
) -> None:
    w = world
    port = metadata_not_listed.port
    plain = refused(w, "plain-loopback", f"http://127.0.0.2:{port}/")
    assert "allow-list" in plain
    assert "link-local" in refused(w, "metadata-service", "https://169.254.169.254/latest/meta-data/")
    assert "cluster-internal" in refused(w, "in-cluster", "https://kubernetes.default.svc/")
    # Looks like a name to a URL parser; the resolver makes it 127.0.0.2 when connecting.
    assert "loopback" in refused(w, "disguised", f"https://2130706434:{port}/")

    assert metadata_not_listed.visits == []


def test_a_listed_endpoint_that_redirects_is_not_followed(world: World, metadata_listed: LoopbackServer) -> None:
    w = world
    text = refused(w, "redirecting", metadata_listed.url)

    assert "redirect" in text
    assert metadata_listed.visits  # it was asked (it is allow-listed) ...
    assert not [v for v in metadata_listed.visits if v.path.startswith("/latest/meta-data")]  # ... never followed


def test_the_canary_is_nowhere(world: World) -> None:
    """After both tests above: not in any status, event or operator log line."""
    w = world
    statuses = json.dumps([c.get("status") for c in w.kube.items(CRED)])
    events = json.dumps(w.kube.items("events"))
    assert "EndpointNotAllowed" in statuses  # the statuses are there to look at
    for place in (statuses, events, w.operator.log()):
        assert CANARY not in place


# -- TLS: the CA bundle a credential names -------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("ca"), "private-cloud-ca")


@pytest.fixture(scope="module")
def private_cloud(authority: Authority) -> Iterator[LoopbackServer]:
    """An EC2 endpoint on loopback whose certificate a private CA signed."""
    with LoopbackServer(mode="slow", delay=0.0, tls=authority.server) as server:
        yield server


def test_a_ca_bundle_from_a_config_map_or_secret_makes_a_private_cloud_verifiable(
    world: World, authority: Authority, private_cloud: LoopbackServer
) -> None:
    w = world
    w.kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lab-ca"}, "data": {"ca.crt": authority.pem}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lab-ca-s"}, "stringData": {"ca": authority.pem}},
    )

    def with_bundle(name: str, bundle: dict[str, Any] | None) -> list[dict[str, Any]]:
        docs = w.credential(name, "us-east-1", private_cloud.url)
        if bundle:
            docs[1]["spec"]["endpoint"]["caBundle"] = bundle
        return docs

    w.kube.apply(
        *with_bundle("untrusted", None),
        *with_bundle("trusted", {"configMapKeyRef": {"name": "lab-ca", "key": "ca.crt"}}),
        *with_bundle("trusted-by-secret", {"secretKeyRef": {"name": "lab-ca-s", "key": "ca"}}),
        *with_bundle("no-such-key", {"configMapKeyRef": {"name": "lab-ca", "key": "nope.crt"}}),
    )

    eventually(lambda: ready(w, "trusted") == ("True", "Verified"), timeout=60, what="trusted Verified")
    eventually(lambda: ready(w, "trusted-by-secret") == ("True", "Verified"), timeout=60, what="Secret CA Verified")
    eventually(lambda: ready(w, "untrusted") == ("False", "VerificationFailed"), timeout=60, what="untrusted")
    assert "not trusted" in message(w, "untrusted")
    eventually(lambda: ready(w, "no-such-key") == ("False", "InvalidSpec"), timeout=60, what="missing key")
    assert "nope.crt" in message(w, "no-such-key")


def test_tls_options_are_checked_at_admission(world: World) -> None:
    w = world
    ref = {"configMapKeyRef": {"name": "x", "key": "y"}}
    both = {"url": "https://cloud.example.org/", "insecureSkipTlsVerify": True, "caBundle": ref}
    plain = {"url": "http://127.0.0.1:1/", "insecureSkipTlsVerify": True}
    for endpoint, why in ((both, "exclude each other"), (plain, "https:// endpoints only")):
        doc = w.credential("bad-tls", "us-east-1", "https://cloud.example.org/")[1]
        doc["spec"]["endpoint"] = endpoint
        proc = subprocess.run(
            [str(w.kube.tools_bin / "kubectl"), "-n", w.kube.namespace, "apply", "-f", "-"],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            env=w.kube.env,
            timeout=60,
            check=False,
        )
        assert proc.returncode != 0
        assert why in proc.stderr
