"""`skyfleet demo`: the whole product on one machine, with no cluster and no cloud account.

A local control plane (the one the tests use), an EC2 emulator on loopback acting as two clouds
(the examples' two credentials point at two regions of it), the CRDs, the operator as a
subprocess exactly as users run it, and the two-tier example from examples/. Everything it
starts is stopped, and its temporary state removed, however it ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from skyfleet.testing.launcher import OperatorConfig, OperatorProcess
from skyfleet.testing.net import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = (
    "01-cloud-aws-frankfurt.yaml",
    "02-cloud-aws-virginia.yaml",
    "03-image-ubuntu.yaml",
    "04-deployment-shop.yaml",
)
KINDS = "cloudcredentials.skyfleet.io,images.skyfleet.io,deployments.skyfleet.io,instances.skyfleet.io"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    once: bool = False
    timeout_seconds: float = 600.0
    use_current_cluster: bool = False
    namespace: str = "shop"
    examples_dir: Path = ROOT / "examples"
    crds_dir: Path = ROOT / "crds"
    poll_seconds: float = 2.0


def configured_cluster_reachable(env: Mapping[str, str]) -> bool:
    """Whether a kubeconfig is configured and its current context answers within a few seconds."""
    configured = env.get("KUBECONFIG") or (Path.home() / ".kube" / "config")
    if not Path(str(configured).split(os.pathsep)[0]).exists():
        return False
    kubectl = shutil.which("kubectl", path=env.get("PATH"))
    if kubectl is None:
        return True  # configured, and we cannot prove otherwise: refuse rather than guess
    probe = subprocess.run(
        [kubectl, "get", "--raw", "/readyz", "--request-timeout=3s"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0


def demo_manifests(examples_dir: Path, endpoint_url: str) -> list[dict[str, Any]]:
    """The example objects, with every CloudCredential pointed at the emulator."""
    docs: list[dict[str, Any]] = []
    for name in EXAMPLES:
        for doc in yaml.safe_load_all((examples_dir / name).read_text()):
            if not doc:
                continue
            if doc["kind"] == "CloudCredential":
                doc["spec"]["endpoint"] = {"url": endpoint_url}
            docs.append(doc)
    return docs


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            return dict(cond)
    return None


def deployment_ready(obj: Mapping[str, Any]) -> bool:
    ready = _condition(obj, "Ready")
    generation = obj.get("metadata", {}).get("generation")
    observed = obj.get("status", {}).get("observedGeneration")
    return ready is not None and ready.get("status") == "True" and observed == generation


def render_table(deployments: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]]) -> str:
    """What a person watching the demo sees: one row per Instance, one line per Deployment."""
    rows = [("GROUP", "INSTANCE", "CLOUD", "PHASE", "ADDRESS")]
    for inst in sorted(instances, key=lambda i: (i["spec"].get("group", ""), i["metadata"]["name"])):
        status = inst.get("status", {})
        rows.append(
            (
                inst["spec"].get("group", ""),
                inst["metadata"]["name"],
                inst["spec"].get("credential", ""),
                status.get("phase", "Pending"),
                status.get("address", "-") or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no Instances yet)")
    lines.append("")
    for dep in deployments:
        conds = " ".join(
            f"{c['type']}={c['status']}({c.get('reason', '')})" for c in dep.get("status", {}).get("conditions", [])
        )
        phase = dep.get("status", {}).get("phase", "Pending")
        lines.append(f"deployment/{dep['metadata']['name']}: {phase}  {conds or 'no conditions yet'}")
    return "\n".join(lines)


class Kubectl:
    def __init__(self, binary: Path | str, env: Mapping[str, str]) -> None:
        self.binary = str(binary)
        self.env = dict(env)

    def __call__(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [self.binary, *args], env=self.env, input=input, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result.stdout

    def items(self, resource: str, namespace: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self("get", resource, "-n", namespace, "-o", "json"))["items"]
        return listed


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so cleanup runs however the demo is stopped."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _operator(env: Mapping[str, str], log_path: Path, metrics_port: int) -> OperatorProcess:
    """``skyfleet run`` configured only by its environment, as a Deployment's pod spec does it."""
    config = OperatorConfig(
        log_path=log_path,
        env={
            **env,
            "SKYFLEET_CLUSTER_ID": "skyfleet-demo",
            "SKYFLEET_METRICS_PORT": str(metrics_port),
            "SKYFLEET_METRICS_HOST": "127.0.0.1",
            # The emulated clouds listen on loopback, which tenants may not reach unless listed.
            "SKYFLEET_ALLOW_ENDPOINT": "127.0.0.1",
            "SKYFLEET_LEASE_NAMESPACE": "default",
        },
        metrics_port=None,
        liveness=None,
        lease_namespace=None,
        allow_endpoint=None,
        # Its own process group: the terminal's Ctrl-C reaches the demo, which stops it in order.
        new_session=True,
    )
    return OperatorProcess(config)


class Watcher:
    """Prints the table whenever it changes."""

    def __init__(self, kubectl: Kubectl, namespace: str, out: TextIO) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.out = out
        self.last = ""

    def step(self) -> bool:
        """Refresh the view; True once every Deployment is Ready."""
        deployments = self.kubectl.items("deployments.skyfleet.io", self.namespace)
        instances = self.kubectl.items("instances.skyfleet.io", self.namespace)
        table = render_table(deployments, instances)
        if table != self.last:
            print(table + "\n", file=self.out, flush=True)
            self.last = table
        return bool(deployments) and all(deployment_ready(d) for d in deployments)


def _check_alive(operator: OperatorProcess) -> None:
    if not operator.running:
        raise DemoError(f"the operator exited with code {operator.returncode}")


def wait_until_ready(
    watcher: Watcher,
    operator: OperatorProcess,
    options: DemoOptions,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    deadline = clock() + options.timeout_seconds
    while True:
        _check_alive(operator)
        if watcher.step():
            return
        if clock() > deadline:
            raise DemoError(f"not Ready after {options.timeout_seconds:.0f}s; the last state is shown above")
        time.sleep(options.poll_seconds)


# What the demo runs that a plain ``pip install skyfleet`` does not bring: the EC2 emulator (moto)
# and the local control plane's certificates (cryptography). ``pip install 'skyfleet[demo]'``.
DEMO_PACKAGES = {"moto": "moto[server]", "cryptography": "cryptography"}


def missing_demo_packages(find: Callable[[str], object | None] = importlib.util.find_spec) -> list[str]:
    """The packages of the ``skyfleet[demo]`` extra that are not installed."""
    return [dist for module, dist in DEMO_PACKAGES.items() if find(module) is None]


def _demo_extra_installed() -> bool:
    missing = missing_demo_packages()
    if missing:
        print(
            f"skyfleet demo needs {', '.join(missing)}, which a plain install does not bring: "
            "pip install 'skyfleet[demo]'",
            file=sys.stderr,
        )
    return not missing


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo (see the module doc); 2 when the ``skyfleet[demo]`` extra is missing."""
    return _run_demo(options, out) if _demo_extra_installed() else 2


def _run_demo(options: DemoOptions, out: TextIO) -> int:
    # Imported here, not at module level: they need the demo extra (see DEMO_PACKAGES).
    from skyfleet.testing.controlplane import ControlPlane
    from skyfleet.testing.ec2emulator import EC2Emulator
    from skyfleet.testing.tools import tools_bin

    env = dict(os.environ)
    state = Path(tempfile.mkdtemp(prefix="skyfleet-demo-"))
    operator_log = state / "operator.log"
    try:
        with _signals_as_interrupt(), contextlib.ExitStack() as stack:
            if configured_cluster_reachable(env):
                if not options.use_current_cluster:
                    raise DemoError(
                        "a reachable cluster is configured (KUBECONFIG or ~/.kube/config); the demo will not touch "
                        "it. Unset KUBECONFIG to run on a local control plane, or pass --use-current-cluster to "
                        "install the CRDs into it and run the operator there."
                    )
                kubectl_path = shutil.which("kubectl", path=env.get("PATH")) or str(tools_bin() / "kubectl")
            else:
                print("starting a local control plane (etcd, kube-apiserver, kube-controller-manager) ...", file=out)
                plane = stack.enter_context(ControlPlane())
                env = {**env, **plane.env}
                kubectl_path = str(plane.tools_bin / "kubectl")
            kubectl = Kubectl(kubectl_path, env)

            emulator = stack.enter_context(EC2Emulator())
            print(
                f"EC2 emulator at {emulator.endpoint} (regions eu-central-1 and us-east-1 act as two clouds)", file=out
            )
            kubectl("apply", "--server-side", "-f", str(options.crds_dir))
            kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{k}" for k in KINDS.split(",")])

            metrics_port = free_port()
            operator = stack.enter_context(_operator(env, operator_log, metrics_port))
            print(f"operator started (pid {operator.pid}, log {operator_log})", file=out)

            kubectl("create", "namespace", options.namespace)
            manifests = {
                "apiVersion": "v1",
                "kind": "List",
                "items": demo_manifests(options.examples_dir, emulator.endpoint),
            }
            kubectl("apply", "-n", options.namespace, "-f", "-", input=json.dumps(manifests))
            print(f"applied the two-tier example into namespace {options.namespace}\n", file=out)

            watcher = Watcher(kubectl, options.namespace, out)
            try:
                wait_until_ready(watcher, operator, options)
            except DemoError:
                print(_tail(operator_log), file=out)
                raise
            if options.once:
                print("Ready", file=out, flush=True)
                return 0
            print(how_to_talk(env, Path(kubectl_path).parent, options.namespace, metrics_port), file=out, flush=True)
            while True:
                time.sleep(options.poll_seconds)
                _check_alive(operator)
                watcher.step()
    except KeyboardInterrupt:
        print("\nstopped; cleaning up", file=out)
        return 130
    except DemoError as err:
        print(f"skyfleet demo: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(state, ignore_errors=True)


def how_to_talk(env: Mapping[str, str], bin_dir: Path, namespace: str, metrics_port: int) -> str:
    patch = '[{"op":"replace","path":"/spec/nodeGroups/1/replicas","value":5}]'
    return (
        "\nEverything is Ready. Talk to it from another shell:\n"
        f"  export KUBECONFIG={env.get('KUBECONFIG', '~/.kube/config')}\n"
        f"  export PATH={bin_dir}:$PATH\n"
        f"  kubectl get skyfleet -n {namespace}\n"
        f"  kubectl patch deployments.skyfleet.io shop -n {namespace} --type=json -p='{patch}'   # web: 3 -> 5 VMs\n"
        f"  curl -s http://127.0.0.1:{metrics_port}/metrics | grep ^skyfleet_\n"
        "Press Ctrl-C to stop; everything started here is stopped and removed.\n"
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "operator log (last lines):\n" + "\n".join(text[-lines:])
