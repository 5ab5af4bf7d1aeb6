"""/metrics scraped while the operator brings the example shop up on a throttling cloud."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skyfleet import __version__
from skyfleet.testing.net import free_port
from tests.e2e.operator_fixtures import World, eventually, example_docs, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]


class Scraper:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def __call__(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.url, timeout=5) as answer:  # noqa: S310 - loopback only
            text = answer.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self().get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of ``name`` whose labels include ``labels``."""
        return sum(v for (n, lbls), v in self().items() if n == name and set(labels.items()) <= set(lbls))


@pytest.fixture(scope="module")
def scrape(world: World) -> Scraper:
    """The module's operator, restarted with its metrics served on a loopback port."""
    port = free_port()
    world.operator.stop()
    world.kube.env["SKYFLEET_METRICS_HOST"] = "127.0.0.1"
    world.operator.start("--metrics-port", str(port))
    scraper = Scraper(port)

    def serving() -> bool:
        try:
            return bool(scraper())
        except OSError:
            return False

    eventually(serving, timeout=60, what="the metrics endpoint")
    return scraper


def test_metrics_follow_the_shop_from_nothing_to_ready(world: World, scrape: Scraper) -> None:
    started = time.time()
    assert scrape.value("skyfleet_build_info", version=__version__) == 1
    assert scrape.total("skyfleet_cloud_requests_total", operation="create") == 0

    # Frankfurt answers through a proxy with EC2's RunInstances bucket set very tight.
    proxy = world.cloud.proxy()
    proxy.throttle("RunInstances", burst=1, rate=0.5)
    world.kube.apply(*example_docs(world.cloud.endpoint, {"aws-frankfurt": proxy.endpoint}))
    world.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=180s")

    vms = len(world.vms())
    assert vms == 4  # db + three web
    creates = scrape.value("skyfleet_cloud_requests_total", provider="ec2", operation="create", outcome="success")
    assert creates == vms
    # Each throttled answer the cloud sent is counted once.
    assert scrape.value("skyfleet_cloud_throttled_total", provider="ec2", operation="create") == proxy.count(
        "throttled:RunInstances"
    )
    assert proxy.count("throttled:RunInstances") > 0
    assert scrape.value("skyfleet_instance_time_to_ready_seconds_count", provider="ec2") == vms
    eventually(
        lambda: scrape.value("skyfleet_instances", provider="ec2", phase="Running") == vms or None,
        timeout=30,
        what="4 Running instances in the gauge",
    )
    assert scrape.value("skyfleet_orphaned_vms", provider="ec2") == 0
    assert scrape.value("skyfleet_reconcile_total", controller="deployment", result="success") > 0
    assert scrape.value("skyfleet_reconcile_total", controller="cloudcredential", result="success") >= 2
    assert scrape.value("skyfleet_reconcile_errors_total", controller="deployment") == 0
    assert scrape.value("skyfleet_watch_last_event_timestamp_seconds", resource="instances") >= started
    # Nothing identifying a single object leaks into labels.
    labels = {k for (_, lbls) in scrape() for k, _ in lbls}
    assert not labels & {"name", "namespace", "instance", "credential", "provider_id"}

    # Deleting the Deployment destroys every VM: each VM counted, and the delete requests (on EC2
    # one TerminateInstances may name all of them) under operation "destroy".
    del_before = scrape.total("skyfleet_cloud_requests_total", operation="destroy")
    destroyed_before = scrape.total("skyfleet_vms_destroyed_total", provider="ec2")
    world.kube("delete", "deployments.skyfleet.io", "shop", "--timeout=120s")
    assert scrape.total("skyfleet_cloud_requests_total", operation="destroy") >= del_before + 1
    assert scrape.total("skyfleet_vms_destroyed_total", provider="ec2") == destroyed_before + vms
    assert len(world.vms()) == 0
