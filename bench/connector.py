"""Benchmark: EC2 creates through the connector against hand-written libcloud loops.

Every variant creates the same VMs, tagged and with a ClientToken, through the fault proxy in
front of a local EC2 emulator (moto, in a subprocess so it does not share our GIL). The proxy
adds network latency and enforces AWS's RunInstances request bucket, so the physical bound is
(count - burst) / rate seconds, whatever the client does.

* naive   - one libcloud driver, one create after another, sleep 1 s when throttled
* ideal   - a thread pool of libcloud drivers with the same concurrency, paced by a client-side
            copy of the cloud's bucket, no owner-tag lookups: the best a hand-written pool does
* connector - LibcloudConnector.create (owner-tag lookup, ClientToken, retries, budgets)

Run:  .venv/bin/python bench/connector.py [--count 200] [--concurrency 10] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.base import NodeImage, NodeSize
from libcloud.compute.providers import get_driver

from skyfleet.connectors import CreateRequest, CredentialConfig, EndpointPolicy, Limits, OwnerTags
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.faultproxy import FaultProxy

AMI = "ami-03cf127a"
CLUSTER = "bench"
BURST, RATE = 5, 2.0  # AWS RunInstances request bucket
SECRET = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
# The emulator listens on loopback, which connectors reach only when allow-listed.
LOOPBACK = EndpointPolicy.parse(["127.0.0.1"])


def owner(i: int) -> OwnerTags:
    return OwnerTags(cluster_id=CLUSTER, instance_uid=f"uid-{i:04d}", deployment="bench", instance=f"vm-{i}")


def driver_for(endpoint: str) -> Any:
    port = int(endpoint.rstrip("/").rsplit(":", 1)[1])
    return get_driver("ec2")(
        SECRET["aws_access_key_id"],
        SECRET["aws_secret_access_key"],
        region="us-east-1",
        secure=False,
        host="127.0.0.1",
        port=port,
        signature_version="4",
    )


def libcloud_create(driver: Any, i: int, on_throttle: Callable[[], None]) -> None:
    size = NodeSize("t3.micro", "t3.micro", 0, 0, 0, 0, driver)
    while True:
        try:
            driver.create_node(
                name=f"vm-{i}",
                size=size,
                image=NodeImage(AMI, AMI, driver),
                ex_metadata=owner(i).to_tags(),
                ex_clienttoken=f"uid-{i:04d}",
            )
            return
        except BaseHTTPError as exc:
            if "RequestLimitExceeded" not in str(exc.message):
                raise
            on_throttle()


def naive(endpoint: str, count: int, concurrency: int) -> None:
    driver = driver_for(endpoint)
    for i in range(count):
        libcloud_create(driver, i, lambda: time.sleep(1.0))


class PacedBucket:
    """A client-side replica of the cloud's bucket: the pacing an oracle would choose."""

    def __init__(self, burst: int, rate: float) -> None:
        self.rate = rate
        self.tokens = float(burst)
        self.burst = burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


def ideal(endpoint: str, count: int, concurrency: int) -> None:
    local = threading.local()
    bucket = PacedBucket(BURST, RATE)

    def one(i: int) -> None:
        if not hasattr(local, "driver"):
            local.driver = driver_for(endpoint)
        bucket.take()
        libcloud_create(local.driver, i, bucket.take)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(count)))


def connector(endpoint: str, count: int, concurrency: int) -> None:
    config = CredentialConfig(
        name="bench",
        namespace="bench",
        provider="ec2",
        region="us-east-1",
        endpoint_url=endpoint,
        secret=SECRET,
        limits=Limits(requests_per_second=RATE, burst=BURST, max_concurrency=concurrency),
        endpoint_policy=LOOPBACK,
    )

    async def run() -> None:
        async with LibcloudConnector(config) as conn:
            requests = [
                CreateRequest(name=f"vm-{i}", image_id=AMI, size_id="t3.micro", owner=owner(i)) for i in range(count)
            ]
            await asyncio.gather(*(conn.create(r) for r in requests))

    asyncio.run(run())


def count_instances(emulator_url: str) -> tuple[int, int]:
    """(instances tagged with the bench cluster, distinct instance uids among them)."""
    config = CredentialConfig(
        name="count",
        namespace="bench",
        provider="ec2",
        endpoint_url=emulator_url,
        secret=SECRET,
        endpoint_policy=LOOPBACK,
    )

    async def run() -> tuple[int, int]:
        async with LibcloudConnector(config) as conn:
            nodes = await conn.list_cluster(CLUSTER)
            return len(nodes), len({n.tags[OwnerTags.INSTANCE_UID] for n in nodes})

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--only", choices=["naive", "ideal", "connector"], action="append")
    args = parser.parse_args()

    emulator = EmulatorProcess()
    variants: dict[str, Callable[[str, int, int], None]] = {"naive": naive, "ideal": ideal, "connector": connector}
    results: dict[str, float] = {}
    try:
        for name, run in variants.items():
            if args.only and name not in args.only:
                continue
            emulator.reset()
            with FaultProxy(emulator.url) as proxy:
                proxy.faults.latency = args.latency
                proxy.throttle("RunInstances", burst=BURST, rate=RATE)
                started = time.monotonic()
                run(proxy.endpoint, args.count, args.concurrency)
                results[name] = elapsed = time.monotonic() - started
                stats = dict(proxy.stats)
            made, distinct = count_instances(emulator.url)
            print(
                f"{name:>9}: {elapsed:7.1f} s  launches={stats.get('launches', 0)} "
                f"throttled={stats.get('throttled', 0)} requests={stats.get('requests', 0)} "
                f"instances={made} distinct={distinct}",
                flush=True,
            )
    finally:
        emulator.stop()

    bound = max(0.0, (args.count - BURST) / RATE) + args.latency
    print(f"    bound: {bound:7.1f} s  ((count - burst) / rate + one round trip)")
    if "connector" in results:
        for name in ("naive", "ideal"):
            if name in results:
                print(f"{name} / connector = {results[name] / results['connector']:.2f}")
        print(f"connector / bound = {results['connector'] / bound:.2f}")


if __name__ == "__main__":
    main()
