"""What the benchmarks share: the control plane and the operator as a run starts them, the API
server read directly (admin GETs, watches, request counters), the emulated cloud seen directly,
and the small statistics their reports print.

Each benchmark (fleet.py, scale.py, chaos.py, hostile.py, bake.py, scaling_reaction.py) is a
driver over these pieces; the manifests come from ``skyfleet.testing.manifests`` and the
operator from ``skyfleet.testing.launcher``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import boto3  # type: ignore[import-untyped]

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.launcher import OperatorConfig, OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_TAG = "skyfleet.io/cluster-id"
UID_TAG = "skyfleet.io/instance-uid"


class BenchError(RuntimeError):
    """Something the benchmark waited for did not happen."""


# -- a run: the control plane, a scratch directory, nothing left behind ----------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def bench_run(name: str) -> Iterator[tuple[ControlPlane, Path]]:
    """A control plane with the CRDs installed and a scratch directory, both gone afterwards; a
    SIGTERM to the benchmark unwinds through here like Ctrl-C, so it stops what it started."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix=f"skyfleet-bench-{name}-"))
    try:
        with ControlPlane(crds=[ROOT / "crds"]) as plane:
            yield plane, workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def keep_log(log_path: Path, name: str) -> None:
    """Copy a failed run's operator log out of the scratch directory that is about to go."""
    if log_path.exists():
        kept = Path(tempfile.gettempdir()) / f"skyfleet-{name}-operator-{os.getpid()}.log"
        shutil.copy(log_path, kept)
        print(f"operator log kept at {kept}")


def operator(plane: ControlPlane, namespace: str, cluster_id: str, log_path: Path, **options: Any) -> OperatorProcess:
    """``skyfleet run`` against ``plane`` serving ``namespace`` (not yet started); ``options``
    are :class:`OperatorConfig` fields. It dies with the benchmark, however the benchmark dies."""
    config = OperatorConfig(
        log_path=log_path,
        env={**os.environ, **plane.env},
        namespace=namespace,
        cluster_id=cluster_id,
        die_with_parent=True,
        cwd=ROOT,
        **options,
    )
    return OperatorProcess(config)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


# -- kubectl, as a user runs it ------------------------------------------------------------------


@dataclass
class Kubectl:
    """kubectl in one namespace of the benchmark's control plane."""

    plane: ControlPlane
    namespace: str
    timeout: float = 180.0

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = self.plane.kubectl("-n", self.namespace, *args, input=input, check=check, timeout=self.timeout)
        return proc.stdout

    def apply(self, *docs: dict[str, Any], tries: int = 1) -> bool:
        """``kubectl apply`` of ``docs`` as one List (JSON: a YAML round trip could turn quoted
        numbers into ints), retried as a user retries it when ``tries`` > 1: an object vanishing
        mid-apply (its deletion just finished) fails one attempt, not the run."""
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})
        for attempt in range(tries):
            if attempt:
                time.sleep(1.0)
            if (
                self.plane.kubectl(
                    "-n", self.namespace, "apply", "-f", "-", input=body, check=tries == 1, timeout=self.timeout
                ).returncode
                == 0
            ):
                return True
        return False

    def wait_credentials(self, timeout: int = 120) -> None:
        self("wait", "--for=condition=Ready", "cloudcredentials.skyfleet.io", "--all", f"--timeout={timeout}s")

    def patch_replicas(self, deployment: str, replicas: int, group: int = 0) -> None:
        patch = [{"op": "replace", "path": f"/spec/nodeGroups/{group}/replicas", "value": replicas}]
        self("patch", "deployments.skyfleet.io", deployment, "--type=json", "-p", json.dumps(patch))


def is_ready(obj: dict[str, Any] | None, replicas: int | None) -> bool:
    """A Deployment Ready with ``replicas`` ready replicas."""
    status = (obj or {}).get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return conditions.get("Ready") == "True" and status.get("readyReplicas") == replicas


# -- the API server, read directly (kubectl would cost a process per poll) -------------------------


class Api:
    """Admin GETs and watches against the control plane, with the certificates it wrote."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        pki = plane.state_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self.server = plane.server
        self.group_path = f"/apis/skyfleet.io/v1alpha1/namespaces/{namespace}"
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def open(self, path: str, timeout: float = 30.0) -> Any:
        return self.opener.open(self.server + path, timeout=timeout)

    def get(self, path: str) -> Any:
        with self.open(path) as response:
            return json.load(response)

    def items(self, plural: str, query: str = "") -> list[dict[str, Any]]:
        """The namespace's objects of one skyfleet.io kind."""
        items: list[dict[str, Any]] = self.get(f"{self.group_path}/{plural}{query}")["items"]
        return items

    def requests_total(self) -> list[tuple[dict[str, str], int]]:
        """``apiserver_request_total``: every series' labels and count."""
        return [(labels, int(value)) for labels, value in self.series("apiserver_request_total")]

    def series(self, *names: str) -> list[tuple[dict[str, str], float]]:
        """Every series of the API server's metrics ``names``: labels (with ``__name__``) and value."""
        with self.open("/metrics") as response:
            text = response.read().decode()
        wanted = "|".join(re.escape(n) for n in names)
        return [
            (
                {**dict(re.findall(r'(\w+)="([^"]*)"', match.group(2))), "__name__": match.group(1)},
                float(match.group(3)),
            )
            for match in re.finditer(rf"^({wanted})\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE)
        ]

    def resource_versions(self, *plurals: str) -> dict[str, str]:
        """``plural/name`` -> resourceVersion of every object of these kinds."""
        return {
            f"{plural}/{obj['metadata']['name']}": obj["metadata"]["resourceVersion"]
            for plural in plurals
            for obj in self.items(plural)
        }


def changed_between(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The objects whose resourceVersion moved (or that went) between two snapshots."""
    return sorted(k for k, v in before.items() if after.get(k) != v)


@dataclass(frozen=True)
class Event:
    at: float
    type: str
    name: str
    deployment: str
    phase: str | None
    resource_version: str
    generation: int


@dataclass
class Watch:
    """Every watch event of one skyfleet.io kind in the namespace, timestamped as it arrives."""

    api: Api
    plural: str
    events: list[Event] = field(default_factory=list)
    error: BaseException | None = None
    stopping: bool = False
    reconnects: int = 0
    # With ``keep``, the latest object of each name (what a poll would read, without the LIST).
    keep: bool = False
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        listing = self.api.get(f"{self.api.group_path}/{self.plural}")
        version: str = listing["metadata"]["resourceVersion"]
        if self.keep:
            with self._cond:
                self.latest.update({o["metadata"]["name"]: o for o in listing["items"]})
        threading.Thread(target=self._run, args=(version,), name=f"watch-{self.plural}", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True

    def _run(self, version: str) -> None:
        """Follow the watch, resuming from the last resourceVersion seen when the server ends it
        (it closes watchers it finds slow, which happens while a fleet is being created)."""
        failures = 0
        while not self.stopping and self.error is None:
            path = f"{self.api.group_path}/{self.plural}?watch=1&resourceVersion={version}&timeoutSeconds=3600"
            try:
                with self.api.open(path, timeout=3600) as response:
                    for line in response:
                        version = self._record(json.loads(line)) or version
                        failures = 0
            except (OSError, ValueError) as exc:
                failures += 1
                if failures >= 5 and not self.stopping:
                    self.error = exc
            self.reconnects += 1
        with self._cond:
            self._cond.notify_all()

    def _record(self, event: dict[str, Any]) -> str | None:
        obj = event["object"]
        if event["type"] == "ERROR":  # 410 Gone: too far behind to resume
            self.error = BenchError(f"the {self.plural} watch failed: {obj.get('message')}")
            return None
        if event["type"] == "BOOKMARK":
            return str(obj["metadata"]["resourceVersion"])
        meta = obj.get("metadata", {})
        item = Event(
            at=time.monotonic(),
            type=event["type"],
            name=meta.get("name", ""),
            deployment=(meta.get("labels") or {}).get("skyfleet.io/deployment", ""),
            phase=(obj.get("status") or {}).get("phase"),
            resource_version=meta.get("resourceVersion", ""),
            generation=int(meta.get("generation", 0)),
        )
        with self._cond:
            self.events.append(item)
            if self.keep and event["type"] == "DELETED":
                self.latest.pop(item.name, None)
            elif self.keep:
                self.latest[item.name] = obj
            self._cond.notify_all()
        return item.resource_version

    def objects(self, timeout: float = 0.0) -> dict[str, dict[str, Any]]:
        """The latest objects (``keep``), after waiting up to ``timeout`` s for a new event."""
        with self._cond:
            if timeout:
                self._cond.wait(timeout)
            return dict(self.latest)

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def since(self, mark: int) -> list[Event]:
        with self._cond:
            return self.events[mark:]

    def wait(self, match: Callable[[Event], bool], since: int, timeout: float, what: str) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if match(event):
                        return event
                if self.error is not None:
                    raise BenchError(f"waiting for {what}: {self.error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(remaining)

    def check(self) -> None:
        if self.error is not None:
            raise BenchError(f"the {self.plural} watch failed: {self.error}")


# -- the cloud, seen directly (not through any fault proxy) ----------------------------------------


def ec2_client(endpoint: str, region: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="not-a-secret",  # noqa: S106 - the emulator accepts any key
    )


def live_vms(ec2: Any, cluster_id: str, *filters: dict[str, Any]) -> list[dict[str, Any]]:
    """The cluster's pending and running VMs (``filters`` narrow them further)."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
            *filters,
        ]
    )
    return [vm for page in pages for r in page["Reservations"] for vm in r["Instances"]]


def tags(vm: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in vm.get("Tags", [])}


# -- statistics -------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def delta(after: Counter[Any], before: Counter[Any]) -> dict[Any, int]:
    return dict(sorted((after - before).items()))


def wait_ready(
    api: Api,
    replicas: Mapping[str, int],
    names: Iterable[str],
    timeout: float,
    *,
    alive: Callable[[], object],
    poll: float = 1.0,
    progress: Callable[[float, set[str], dict[str, dict[str, Any]]], None] | None = None,
    progress_every: float = 30.0,
    watch: Watch | None = None,
) -> float:
    """Seconds until every Deployment of ``names`` is Ready with ``replicas[name]`` ready replicas,
    polled every ``poll`` s; ``alive`` raises when something the wait depends on has died
    (the operator, a watch), ``progress`` is told what is missing every ``progress_every`` s.
    With ``watch`` (a Deployments watch with ``keep``), read from it, woken by its events, instead
    of a LIST per poll (which costs the API server 150-290 ms at hundreds of Deployments)."""
    wanted = set(names)
    started = reported = time.monotonic()
    while True:
        if watch is not None:
            objects = watch.objects(timeout=poll)
        else:
            objects = {o["metadata"]["name"]: o for o in api.items("deployments") if o["metadata"]["name"] in wanted}
        missing = {name for name in wanted if not is_ready(objects.get(name), replicas.get(name))}
        if not missing:
            return time.monotonic() - started
        now = time.monotonic()
        alive()
        if now - started > timeout:
            first = sorted(missing)[0]
            raise BenchError(
                f"{len(missing)} Deployments not Ready after {timeout:.0f} s: {sorted(missing)[:5]}; "
                f"{first}: {objects.get(first)!r}"
            )
        if progress is not None and now - reported >= progress_every:
            progress(now - started, missing, objects)
            reported = now
        if watch is None:
            time.sleep(poll)
