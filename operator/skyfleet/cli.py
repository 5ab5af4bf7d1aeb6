"""The `skyfleet` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skyfleet import __version__


def _cmd_crds(args: argparse.Namespace) -> int:
    from skyfleet.api.crd import write_crds

    written = write_crds(Path(args.output))
    if args.reference:
        from skyfleet.api.reference import render_reference

        reference = Path(args.reference)
        reference.write_text(render_reference())
        written.append(reference)
    for path in written:
        print(path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from skyfleet.settings import DEPRECATED_ENV, Settings

    overrides = {field: getattr(args, field) for _, field, _ in RUN_FLAGS}
    overrides["namespaces"] = args.namespaces or ([] if args.all_namespaces else None)
    for old, new in DEPRECATED_ENV.items():
        if old in os.environ:
            print(f"skyfleet run: {old} is deprecated, set {new} instead", file=sys.stderr)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        print(f"skyfleet run: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from skyfleet.operator import run

    return run(settings)


def _cmd_demo(args: argparse.Namespace) -> int:
    from skyfleet.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(once=args.once, timeout_seconds=args.timeout, use_current_cluster=args.use_current_cluster)
    )


def env_var(flag: str) -> str:
    """The environment variable of a ``skyfleet run`` flag: SKYFLEET_<FLAG>."""
    return "SKYFLEET_" + flag.removeprefix("--").replace("-", "_").upper()


def _help(text: str, flag: str, default: str) -> str:
    return f"{text} (default: {default}; env: {env_var(flag)})"


# (flag, settings field, argparse keywords): the help of each says its default and its variable.
RUN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--namespace",
        "namespaces",
        {
            "short": ["-n"],
            "action": "append",
            "help": _help("serve this namespace (repeatable; env: comma-separated)", "--namespace", "all namespaces"),
        },
    ),
    (
        "--all-namespaces",
        "namespaces",
        {"short": ["-A"], "action": "store_true", "help": "serve every namespace (the default)"},
    ),
    (
        "--cluster-id",
        "cluster_id",
        {
            "help": _help(
                "tag value that marks this installation's VMs", "--cluster-id", "k8s-<UID of namespace kube-system>"
            )
        },
    ),
    (
        "--metrics-port",
        "metrics_port",
        {"type": int, "help": _help("Prometheus port (0 disables)", "--metrics-port", "9090")},
    ),
    (
        "--metrics-host",
        "metrics_host",
        {"help": _help("address the metrics server binds", "--metrics-host", "0.0.0.0")},  # noqa: S104 - help text
    ),
    ("--log-format", "log_format", {"choices": ["text", "json"], "help": _help("log format", "--log-format", "text")}),
    (
        "--log-level",
        "log_level",
        {"choices": ["DEBUG", "INFO", "WARNING", "ERROR"], "help": _help("log level", "--log-level", "INFO")},
    ),
    (
        "--liveness",
        "liveness_endpoint",
        {"help": _help("liveness endpoint URL ('' disables)", "--liveness", "http://0.0.0.0:8081/healthz")},
    ),
    (
        "--workers",
        "workers",
        {"type": int, "help": _help("threads for blocking Kubernetes API calls", "--workers", "8")},
    ),
    (
        "--allow-endpoint",
        "allowed_endpoints",
        {
            "action": "append",
            "metavar": "HOST|*.DOMAIN|IP|CIDR",
            "help": _help(
                "let CloudCredentials reach this endpoint although it is loopback, link-local, private, "
                "cluster-internal or plain http (repeatable; env: comma-separated)",
                "--allow-endpoint",
                "none",
            ),
        },
    ),
    (
        "--cloud-threads",
        "cloud_threads",
        {"type": int, "help": _help("threads for cloud calls, shared by every credential", "--cloud-threads", "32")},
    ),
    (
        "--observe-period",
        "observe_period",
        {"type": float, "help": _help("seconds between VM observations per credential", "--observe-period", "15")},
    ),
    (
        "--resync-period",
        "resync_period",
        {"type": float, "help": _help("seconds between reconciles of unchanged objects", "--resync-period", "60")},
    ),
    (
        "--prometheus-url",
        "prometheus_url",
        {"help": _help("Prometheus HTTP API that ScalingPolicies query by default", "--prometheus-url", "none")},
    ),
    (
        "--scaling-period",
        "scaling_period",
        {"type": float, "help": _help("seconds between evaluations of a ScalingPolicy", "--scaling-period", "15")},
    ),
    (
        "--lease-namespace",
        "lease_namespace",
        {"help": _help("namespace of the leader-election Lease", "--lease-namespace", "$POD_NAMESPACE or default")},
    ),
    (
        "--leader-election",
        "leader_election",
        {
            "action": argparse.BooleanOptionalAction,
            "default": None,
            "help": _help("take the Lease; --no-leader-election only for a single replica", "--leader-election", "on"),
        },
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"skyfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="generate the CustomResourceDefinitions from the API models")
    crds.add_argument("--output", "-o", default="crds", help="directory to write the CRD YAML files into")
    crds.add_argument("--reference", metavar="FILE", help="also write the API reference (Markdown) generated from them")
    crds.set_defaults(func=_cmd_crds)

    run = sub.add_parser(
        "run",
        help="run the operator",
        description="Run the operator. Every flag --<flag> also reads the environment variable "
        "SKYFLEET_<FLAG> (upper case, dashes as underscores); flags win over the environment.",
    )
    scope = run.add_mutually_exclusive_group()
    for flag, field, spec in RUN_FLAGS:
        parent = scope if flag in ("--namespace", "--all-namespaces") else run
        kwargs = dict(spec)
        names = [flag, *kwargs.pop("short", [])]
        if kwargs.get("action") not in ("store_true", argparse.BooleanOptionalAction):
            kwargs.setdefault("metavar", flag.removeprefix("--").replace("-", "_").upper())
        parent.add_argument(*names, dest=field if flag != "--all-namespaces" else "all_namespaces", **kwargs)
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="run the operator on a local control plane and emulated clouds")
    demo.add_argument("--once", action="store_true", help="exit 0 as soon as every Deployment is Ready")
    demo.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for Ready before giving up (default: 600)"
    )
    demo.add_argument(
        "--use-current-cluster",
        action="store_true",
        help="when a reachable cluster is configured, install the CRDs into it and run the operator there",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
