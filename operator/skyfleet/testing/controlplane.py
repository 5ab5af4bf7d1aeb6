"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

The binaries come from ``skyfleet.testing.tools`` (built from upstream). Every start gets a fresh
CA, serving and client certificates, service-account keys and etcd data, RBAC authorization, and
an admin kubeconfig; nothing listens beyond 127.0.0.1. The controller-manager is there so that
owner-reference garbage collection, namespace deletion and service-account tokens behave as in a
real cluster. There is no scheduler and there are no nodes: pods stay Pending.

In Python::

    with ControlPlane() as plane:
        plane.kubectl("get", "namespaces")
        subprocess.run([...], env={**os.environ, **plane.env})

From a shell (state under ``${SKYFLEET_CLUSTER_DIR:-~/.cache/skyfleet/cluster}``)::

    python -m skyfleet.testing.controlplane up       # detached, crds/ installed; prints KUBECONFIG, TOOLS_BIN
    python -m skyfleet.testing.controlplane down     # stops it and removes its state; idempotent
    python -m skyfleet.testing.controlplane measure  # start-to-ready seconds and memory, then stops

Children run in their own process group and receive SIGKILL when the process that started them
dies, even by SIGKILL (``PR_SET_PDEATHSIG``). Linux ties that signal to the starting *thread*:
start a ControlPlane from a thread that lives as long as the plane should.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import functools
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skyfleet.testing.net import free_ports as _free_ports
from skyfleet.testing.processes import die_with_parent
from skyfleet.testing.tools import repo_root
from skyfleet.testing.tools import tools_bin as build_tools

__all__ = ["COMPONENTS", "ControlPlane", "ControlPlaneError", "KubectlError", "cluster_dir", "main"]

ETCD, APISERVER, CONTROLLER_MANAGER = "etcd", "kube-apiserver", "kube-controller-manager"
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER)
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Controllers that only act on nodes or clouds; none exist here, so they would only log noise.
CONTROLLERS = "*,-cloud-node-lifecycle-controller,-node-route-controller,-service-lb-controller,-node-ipam-controller"
_STOP_GRACE_SECONDS = 10.0
_PORT_RACE_ATTEMPTS = 3
_TEMP_PREFIX = "skyfleet-controlplane-"
_OWNER_FILE = "owner.pid"
_STATE_SUBDIRS = ("etcd", "logs", "pki", "kubecache")


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries the tail of every component's log."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message includes what kubectl said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


# -- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _private_pem(self.key)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    common_name: str,
    issuer: _Pair | None = None,
    *,
    organization: str | None = None,
    usage: Sequence[x509.ObjectIdentifier] = (),
    sans: Sequence[x509.GeneralName] = (),
) -> _Pair:
    """A certificate for a fresh P-256 key (cheap to generate, unlike RSA); self-signed CA when no issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    signer = issuer.key if issuer else key
    now = datetime.datetime.now(datetime.UTC)
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated so a clock step between issuing and use cannot make it "not yet valid".
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return _Pair(cert=builder.sign(signer, hashes.SHA256()), key=key)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _kubeconfig(server: str, ca: _Pair, client: _Pair, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "skyfleet", "cluster": {"server": server, "certificate-authority-data": b64(ca.cert_pem())}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(client.cert_pem()), "client-key-data": b64(client.key_pem())},
            }
        ],
        "contexts": [{"name": "skyfleet", "context": {"cluster": "skyfleet", "user": user}}],
        "current-context": "skyfleet",
    }
    return yaml.safe_dump(config, sort_keys=False)


# -- processes -------------------------------------------------------------------------------------


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _signal(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # Only while unreaped: afterwards the pid (and so the group id) may belong to someone else.
    if _alive(proc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def _wait_all(procs: Sequence[subprocess.Popen[bytes]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _remove_orphaned_state() -> None:
    """Remove temporary state left by planes whose owning process was killed before it could clean up.

    Their components died with the owner; only files remain. A directory is kept while its owner pid
    exists, even if that pid now belongs to someone else: leaking a directory beats deleting a live one.
    """
    for candidate in Path(tempfile.gettempdir()).glob(_TEMP_PREFIX + "*"):
        try:
            owner = int((candidate / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{owner}").exists():
            shutil.rmtree(candidate, ignore_errors=True)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, ready when ``start()`` returns.

    ``state_dir`` (default: a fresh temporary directory) holds certificates, etcd data, the
    kubeconfig and one log per component. ``stop()`` removes a temporary directory entirely, and
    from a given one only what the plane put there.

    ``crds`` (files or directories for ``kubectl apply``) are installed before the controller-manager
    starts. Its garbage collector discovers resource types at start and then only every 30 s, so
    dependents of custom resources created soon after a later install are collected up to about
    40 s late (measured); in a real cluster the CRDs have long been there when the operator runs.
    """

    def __init__(
        self,
        tools_bin: Path | None = None,
        state_dir: Path | None = None,
        startup_timeout: float = 180.0,
        crds: Sequence[Path] = (),
    ) -> None:
        self._tools_bin = tools_bin
        self._requested_state_dir = state_dir
        self.startup_timeout = startup_timeout
        self.crds = tuple(crds)
        self.state_dir = Path()
        self.kubeconfig = Path()
        self.server = ""
        self.env: dict[str, str] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._opener: urllib.request.OpenerDirector | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def tools_bin(self) -> Path:
        if self._tools_bin is None:
            self._tools_bin = build_tools()
        return self._tools_bin

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start every component and wait until the cluster serves like a fresh real one."""
        if self._processes:
            raise RuntimeError("already started")
        tools = self.tools_bin
        if self._requested_state_dir is None:
            _remove_orphaned_state()
            self.state_dir = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
            (self.state_dir / _OWNER_FILE).write_text(str(os.getpid()))
        else:
            self.state_dir = self._requested_state_dir.resolve()
            self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(1, _PORT_RACE_ATTEMPTS + 1):
                try:
                    self._start_once(tools, time.monotonic() + self.startup_timeout)
                    return self
                except ControlPlaneError as err:
                    # Another process may grab a port between our probe and the component's bind.
                    if attempt == _PORT_RACE_ATTEMPTS or "address already in use" not in str(err):
                        raise
                    self._terminate()
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Terminate every component (SIGTERM, then SIGKILL) and remove the state directory. Idempotent."""
        self._terminate()
        if self.state_dir == Path():
            return
        if self._requested_state_dir is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            return
        for sub in _STATE_SUBDIRS:
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        (self.state_dir / "kubeconfig").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()

    def _terminate(self) -> None:
        # The API server first: it would otherwise keep retrying a vanished etcd during its shutdown.
        procs = self._processes
        for group in ([procs.get(CONTROLLER_MANAGER), procs.get(APISERVER)], [procs.get(ETCD)]):
            members = [proc for proc in group if proc is not None]
            for proc in members:
                _signal(proc, signal.SIGTERM)
            _wait_all(members, _STOP_GRACE_SECONDS)
            for proc in members:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        self._processes = {}

    # -- start -------------------------------------------------------------------------------------

    def _start_once(self, tools: Path, deadline: float) -> None:
        state = self.state_dir
        for sub in _STATE_SUBDIRS:
            shutil.rmtree(state / sub, ignore_errors=True)
            (state / sub).mkdir(mode=0o700)
        etcd_port, peer_port, api_port = _free_ports(3)
        self.server = f"https://127.0.0.1:{api_port}"
        pki = self._write_pki(state / "pki")

        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        self._spawn(
            tools,
            ETCD,
            f"--data-dir={state / 'etcd'}",
            "--name=default",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Throwaway data: durability buys nothing and fsync dominates write latency on CI disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self._spawn(
            tools,
            APISERVER,
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={state / 'pki'}",
            f"--tls-cert-file={pki['apiserver.crt']}",
            f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Endpoints validation rejects loopback addresses, so the `kubernetes` Service cannot get
            # any here; the reconciler would only log that rejection every 10 s.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        )
        self.env = {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.pathsep.join([str(tools), os.environ.get("PATH", os.defpath)]),
            # kubectl's discovery cache is keyed by host:port, and ports are reused by later planes.
            "KUBECACHEDIR": str(state / "kubecache"),
        }
        self._wait("kube-apiserver /readyz", functools.partial(self._found, "/readyz"), deadline)
        if self.crds:
            self._install_crds(deadline)

        # Started only now: it gives up if the API server is not healthy soon after it starts.
        self._spawn(
            tools,
            CONTROLLER_MANAGER,
            f"--kubeconfig={pki['controller-manager.kubeconfig']}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--controllers={CONTROLLERS}",
            # As kubeadm does: each controller acts as its own ServiceAccount under RBAC.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki['sa.key']}",
            f"--root-ca-file={pki['ca.crt']}",
            f"--cluster-signing-cert-file={pki['ca.crt']}",
            f"--cluster-signing-key-file={pki['ca.key']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The default client limit (20/s) paces its start-up discovery and token requests:
            # the default ServiceAccount appeared 5 s after start instead of 0.7 s.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        # Pods are rejected until the namespace's default ServiceAccount exists and their token
        # volume needs kube-root-ca.crt: both come from the controller-manager.
        for path in (
            "/api/v1/namespaces/default/serviceaccounts/default",
            "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
        ):
            self._wait(path, functools.partial(self._found, path), deadline)

    def _install_crds(self, deadline: float) -> None:
        seconds = max(1, int(deadline - time.monotonic()))
        files = [arg for path in self.crds for arg in ("-f", str(path))]
        for args in (
            ("apply", "--server-side", *files),
            ("wait", "--for=condition=Established", "crd", "--all", f"--timeout={seconds}s"),
        ):
            result = self.kubectl(*args, check=False, timeout=seconds + 10)
            if result.returncode != 0:
                raise ControlPlaneError(f"kubectl {args[0]} of {self.crds} failed: {result.stderr}\n{self.logs()}")

    def _write_pki(self, pki: Path) -> dict[str, Path]:
        ca = _issue("skyfleet-test-ca")
        server_names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        apiserver = _issue(
            "kube-apiserver",
            ca,
            usage=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=[
                *(x509.DNSName(n) for n in [*server_names, "kubernetes.default.svc.cluster.local"]),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
            ],
        )
        admin = _issue("skyfleet-admin", ca, organization="system:masters", usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
        manager = _issue("system:kube-controller-manager", ca, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
        service_accounts = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": _write(pki / "ca.crt", ca.cert_pem()),
            "ca.key": _write(pki / "ca.key", ca.key_pem(), private=True),
            "apiserver.crt": _write(pki / "apiserver.crt", apiserver.cert_pem()),
            "apiserver.key": _write(pki / "apiserver.key", apiserver.key_pem(), private=True),
            "admin.crt": _write(pki / "admin.crt", admin.cert_pem()),
            "admin.key": _write(pki / "admin.key", admin.key_pem(), private=True),
            "sa.key": _write(pki / "sa.key", _private_pem(service_accounts), private=True),
            "sa.pub": _write(
                pki / "sa.pub",
                service_accounts.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
            "controller-manager.kubeconfig": _write(
                pki / "controller-manager.kubeconfig",
                _kubeconfig(self.server, ca, manager, "system:kube-controller-manager").encode(),
                private=True,
            ),
        }
        self.kubeconfig = _write(
            self.state_dir / "kubeconfig", _kubeconfig(self.server, ca, admin, "admin").encode(), private=True
        )
        context = ssl.create_default_context(cafile=str(files["ca.crt"]))
        context.load_cert_chain(files["admin.crt"], files["admin.key"])
        # No proxy: a developer's HTTPS_PROXY must not intercept loopback calls.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        return files

    def _spawn(self, tools: Path, name: str, *args: str) -> None:
        # etcd reads ETCD_* variables as flags; a developer's shell must not reconfigure it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_") and k != "KUBECONFIG"}
        with (self.state_dir / "logs" / f"{name}.log").open("ab") as log:
            self._processes[name] = subprocess.Popen(
                [str(tools / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run between fork and exec
            )

    def _status(self, path: str) -> int:
        """The HTTP status of an admin GET, 0 when the server does not answer."""
        try:
            assert self._opener is not None
            with self._opener.open(self.server + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code
        except (OSError, ssl.SSLError):
            return 0

    def _found(self, path: str) -> bool:
        return self._status(path) == 200

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            exited = self.exited()
            if exited:
                raise ControlPlaneError(f"{', '.join(exited)} exited while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out after {self.startup_timeout:.0f}s waiting for {what}\n{self.logs()}"
                )
            time.sleep(0.1)

    # -- use ---------------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this control plane; on failure (with check) raise KubectlError."""
        result = subprocess.run(
            [str(self.tools_bin / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def pids(self) -> dict[str, int]:
        """Process id per running component."""
        return {name: proc.pid for name, proc in self._processes.items() if _alive(proc)}

    def exited(self) -> list[str]:
        """Components that have exited, with their exit codes."""
        return [f"{name} (exit {proc.returncode})" for name, proc in self._processes.items() if not _alive(proc)]

    def rss_mib(self) -> dict[str, float]:
        """Resident memory per running component, in MiB."""
        return {name: _rss_mib(pid) for name, pid in self.pids().items()}

    def logs(self, lines: int = 25) -> str:
        """The tail of each component's log."""
        return "\n".join(
            f"--- {name} ({self.state_dir / 'logs' / (name + '.log')}) ---\n"
            + _tail(self.state_dir / "logs" / f"{name}.log", lines)
            for name in COMPONENTS
            if name in self._processes
        )


# -- command line ----------------------------------------------------------------------------------


def cluster_dir() -> Path:
    """Where ``up`` keeps its control plane: ``SKYFLEET_CLUSTER_DIR`` or ``~/.cache/skyfleet/cluster``."""
    configured = os.environ.get("SKYFLEET_CLUSTER_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "skyfleet" / "cluster").resolve()


@dataclass(frozen=True)
class _Files:
    root: Path

    @property
    def pid(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def ready(self) -> Path:
        return self.root / "ready"

    @property
    def log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def state(self) -> Path:
        return self.root / "state"


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
    raise _Stop


def _serve(files: _Files, crds: Sequence[Path]) -> int:
    """The detached supervisor behind ``up``: owns the plane until SIGTERM, or until a component dies."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        with ControlPlane(state_dir=files.state, crds=crds) as plane:
            partial = files.ready.with_suffix(".tmp")
            partial.write_text(f"KUBECONFIG={plane.kubeconfig}\nTOOLS_BIN={plane.tools_bin}\n")
            partial.rename(files.ready)
            print(f"ready at {plane.server}", file=sys.stderr, flush=True)
            try:
                while not plane.exited():
                    time.sleep(1)
                print(f"stopping: {', '.join(plane.exited())}\n{plane.logs()}", file=sys.stderr, flush=True)
                return 1
            finally:
                files.ready.unlink(missing_ok=True)
    except _Stop:
        return 0


def _supervisor_pid(files: _Files) -> int | None:
    """The pid of a live supervisor for this directory, if any."""
    try:
        pid = int(files.pid.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    ours = b"skyfleet.testing.controlplane" in cmdline and str(files.root).encode() in cmdline
    return pid if ours and state != "Z" else None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    # The parent directory is locked, not a file inside root, because `down` removes root.
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(root.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _down(files: _Files) -> None:
    pid = _supervisor_pid(files)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3 * _STOP_GRACE_SECONDS
        while _supervisor_pid(files) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if _supervisor_pid(files) == pid:
            # Its components follow it: they die with their parent.
            os.kill(pid, signal.SIGKILL)
            while _supervisor_pid(files) == pid:
                time.sleep(0.1)
    # Only what `up` created: the directory may be one the user chose and shares with other files.
    shutil.rmtree(files.state, ignore_errors=True)
    for path in (files.pid, files.ready, files.ready.with_suffix(".tmp"), files.log):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        files.root.rmdir()


def _up(files: _Files, timeout: float, crds: Sequence[Path]) -> int:
    if _supervisor_pid(files) is not None and files.ready.is_file():
        print(files.ready.read_text(), end="")
        return 0
    _down(files)  # whatever a crashed or half-started supervisor left behind
    tools = build_tools()
    files.root.mkdir(parents=True, exist_ok=True)
    with files.log.open("ab") as log:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skyfleet.testing.controlplane",
                "serve",
                "--dir",
                str(files.root),
                *(f"--crds={path.resolve()}" for path in crds),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SKYFLEET_TOOLS_BIN": str(tools)},
            start_new_session=True,  # outlives this command and the terminal it ran in
        )
    files.pid.write_text(str(supervisor.pid))
    deadline = time.monotonic() + timeout
    try:
        while not files.ready.is_file():
            if supervisor.poll() is not None or time.monotonic() > deadline:
                print(f"the control plane did not start; {files.log}:\n{_tail(files.log, 60)}", file=sys.stderr)
                _down(files)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        _down(files)  # an interrupted `up` leaves nothing running
        return 130
    print(files.ready.read_text(), end="")
    return 0


def _measure(settle: float) -> int:
    started = time.monotonic()
    with ControlPlane(tools_bin=build_tools()) as plane:
        # Building (or finding) the tools is not part of start-up; the certificates are.
        ready = time.monotonic() - started
        print(f"start_to_ready_seconds={ready:.1f}")

        def report(when: str) -> None:
            rss = plane.rss_mib()
            parts = " ".join(f"{name}={rss[name]:.0f}" for name in COMPONENTS)
            print(f"rss_mib={sum(rss.values()):.0f} ({parts}) {when}", flush=True)

        report("at ready")
        if settle > 0:
            time.sleep(settle)
            report(f"{settle:.0f}s later")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyfleet.testing.controlplane", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start in the background; print KUBECONFIG and TOOLS_BIN")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    default_crds = repo_root() / "crds"
    up.add_argument(
        "--crds",
        type=Path,
        action="append",
        help=f"CRD file or directory to install before the controller-manager starts (default: {default_crds})",
    )
    up.add_argument("--no-crds", action="store_true", help="install no CRDs")
    commands.add_parser("down", help="stop the background control plane and remove its state")
    measure = commands.add_parser("measure", help="start one, print start-to-ready seconds and RSS, stop it")
    measure.add_argument("--settle", type=float, default=10.0, help="seconds to wait for a second RSS reading")
    serve = commands.add_parser("serve")  # internal: the detached process `up` starts
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--crds", type=Path, action="append", default=[])
    args = parser.parse_args(argv)

    if args.command == "serve":
        return _serve(_Files(args.dir), args.crds)
    if args.command == "measure":
        return _measure(args.settle)
    files = _Files(cluster_dir())
    with _locked(files.root):
        if args.command == "up":
            crds = [] if args.no_crds else args.crds or [p for p in [default_crds] if p.is_dir()]
            return _up(files, args.timeout, crds)
        _down(files)
        return 0


if __name__ == "__main__":
    sys.exit(main())
