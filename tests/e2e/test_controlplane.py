"""The local control plane behaves like a real cluster, and leaves nothing behind when stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from skyfleet.testing.controlplane import ControlPlane, ControlPlaneError

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def eventually(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:.0f}s: {what}"
        time.sleep(0.2)


def live_processes_mentioning(text: str) -> set[int]:
    """Pids of non-zombie processes whose command line contains text."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.add(int(entry.name))
    return found


def missing(plane: ControlPlane, *args: str) -> Callable[[], bool]:
    return lambda: "NotFound" in plane.kubectl("get", *args, check=False).stderr


def test_readyz_is_ok(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout == "ok"
    assert control_plane.server.startswith("https://127.0.0.1:")


def test_rbac_forbids_a_service_account_until_it_is_bound(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    robot = f"--as=system:serviceaccount:{namespace}:robot"

    can_i = control_plane.kubectl("auth", "can-i", "list", "pods", "-n", namespace, robot, check=False)
    assert (can_i.returncode, can_i.stdout.strip()) == (1, "no")
    denied = control_plane.kubectl("get", "pods", "-n", namespace, robot, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr

    control_plane.kubectl(
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:robot",
        "-n",
        namespace,
    )
    assert control_plane.kubectl("auth", "can-i", "list", "pods", "-n", namespace, robot).stdout.strip() == "yes"
    assert control_plane.kubectl("get", "pods", "-n", namespace, robot).returncode == 0


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = control_plane.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(dependent))
    control_plane.kubectl("create", "configmap", "bystander", "-n", namespace)

    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    eventually(missing(control_plane, "configmap", "dependent", "-n", namespace), "dependent collected")
    control_plane.kubectl("get", "configmap", "bystander", "-n", namespace)


def test_garbage_collector_covers_skyfleet_kinds_from_the_start(control_plane: ControlPlane, namespace: str) -> None:
    image = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "examples" / "03-image-ubuntu.yaml").read_text())
        if doc["kind"] == "Image"
    )
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(image))
    name = image["metadata"]["name"]
    uid = control_plane.kubectl("get", "images.skyfleet.io", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    owner = {"apiVersion": image["apiVersion"], "kind": "Image", "name": name, "uid": uid.stdout}
    dependent = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dependent", "ownerReferences": [owner]}}
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(dependent))

    control_plane.kubectl("delete", "images.skyfleet.io", name, "-n", namespace)
    # Well under the collector's 30 s rediscovery period: the kind was known when it started.
    eventually(missing(control_plane, "configmap", "dependent", "-n", namespace), "dependent collected", seconds=15)


def test_deleting_a_namespace_removes_its_objects_and_then_itself(control_plane: ControlPlane) -> None:
    name = f"doomed-{os.getpid()}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("create", "configmap", "content", "-n", name)
    control_plane.kubectl("create", "serviceaccount", "worker", "-n", name)

    control_plane.kubectl("delete", "namespace", name, "--wait=false")
    # The namespace lingers as Terminating until the controller-manager has emptied it.
    eventually(missing(control_plane, "namespace", name), "namespace gone")
    assert control_plane.kubectl("get", "configmaps,serviceaccounts", "-n", name, "-o", "name").stdout == ""


def test_workload_controllers_run(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", namespace)

    def two_pods() -> bool:
        pods = control_plane.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split()
        return len(pods) == 2

    eventually(two_pods, "the ReplicaSet's two pods exist")
    pod = json.loads(control_plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"][0]
    # Admission gave the pod the namespace's default ServiceAccount and its token volume.
    assert pod["spec"]["serviceAccountName"] == "default"
    assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
    assert pod["status"]["phase"] == "Pending"  # no scheduler, no nodes


def test_a_second_plane_runs_alongside_and_stop_leaves_nothing(control_plane: ControlPlane) -> None:
    second = ControlPlane(tools_bin=control_plane.tools_bin)
    try:
        second.start()
        assert second.server != control_plane.server
        second.kubectl("create", "configmap", "only-in-second")
        assert "NotFound" in control_plane.kubectl("get", "configmap", "only-in-second", check=False).stderr
        pids, state_dir = second.pids(), second.state_dir
        assert sorted(pids) == ["etcd", "kube-apiserver", "kube-controller-manager"]
        assert live_processes_mentioning(str(state_dir)) == set(pids.values())
    finally:
        second.stop()

    assert not any(Path(f"/proc/{pid}").exists() for pid in pids.values())
    assert live_processes_mentioning(str(state_dir)) == set()
    assert not state_dir.exists()
    second.stop()  # idempotent
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_a_failed_start_explains_itself_and_leaves_nothing(control_plane: ControlPlane, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("etcd", "kubectl", "kube-controller-manager"):
        (bin_dir / name).symlink_to(control_plane.tools_bin / name)
    broken = bin_dir / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'E0101 unable to load server certificate: boom' >&2\nexit 1\n")
    broken.chmod(0o755)
    plane = ControlPlane(tools_bin=bin_dir)

    with pytest.raises(ControlPlaneError, match="kube-apiserver \\(exit 1\\)") as failure:
        plane.start()

    assert "unable to load server certificate: boom" in str(failure.value)
    assert not plane.state_dir.exists()
    assert live_processes_mentioning(str(plane.state_dir)) == set()


def cli(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skyfleet.testing.controlplane", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def cli_env(control_plane: ControlPlane, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SKYFLEET_CLUSTER_DIR": str(tmp_path / "cluster"),
        "SKYFLEET_TOOLS_BIN": str(control_plane.tools_bin),
    }


def test_cli_up_prints_two_lines_reuses_the_running_plane_and_down_cleans_up(cli_env: dict[str, str]) -> None:
    cluster = Path(cli_env["SKYFLEET_CLUSTER_DIR"])
    up = cli("up", cli_env)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["KUBECONFIG", "TOOLS_BIN"]
    kubeconfig, tools = (Path(line.split("=", 1)[1]) for line in lines)
    assert (tools / "kubectl").exists()
    assert (tools / "helm").exists()
    kubectl = [str(tools / "kubectl"), "--kubeconfig", str(kubeconfig)]
    ready = subprocess.run([*kubectl, "get", "--raw", "/readyz"], capture_output=True, text=True, check=True)
    assert ready.stdout == "ok"
    # crds/ is installed, so what the README promises works right away.
    explain = subprocess.run(
        [*kubectl, "explain", "deployments.skyfleet.io.spec"], capture_output=True, text=True, check=False
    )
    assert "nodeGroups" in explain.stdout, explain.stderr
    components = live_processes_mentioning(str(cluster))
    assert len(components) == 4  # the supervisor and its three components

    again = cli("up", cli_env)
    assert (again.returncode, again.stdout) == (0, up.stdout)
    assert live_processes_mentioning(str(cluster)) == components

    down = cli("down", cli_env)
    assert down.returncode == 0, down.stderr
    assert live_processes_mentioning(str(cluster)) == set()
    assert not cluster.exists()
    assert cli("down", cli_env).returncode == 0


def test_components_die_with_a_killed_parent(cli_env: dict[str, str]) -> None:
    cluster = Path(cli_env["SKYFLEET_CLUSTER_DIR"])
    assert cli("up", cli_env).returncode == 0
    supervisor = int((cluster / "supervisor.pid").read_text())
    components = live_processes_mentioning(str(cluster)) - {supervisor}
    assert len(components) == 3

    os.kill(supervisor, signal.SIGKILL)  # no cleanup code runs: only the kernel can stop the components
    eventually(lambda: live_processes_mentioning(str(cluster)) == set(), "components gone", seconds=10)
    assert cli("down", cli_env).returncode == 0
    assert not cluster.exists()
