"""The `skyfleet` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from skyfleet import __version__


def _cmd_crds(args: argparse.Namespace) -> int:
    from skyfleet.api.crd import write_crds

    written = write_crds(Path(args.output))
    for path in written:
        print(path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from skyfleet.settings import Settings

    overrides = {
        "namespaces": args.namespace or ([] if args.all_namespaces else None),
        "cluster_id": args.cluster_id,
        "metrics_port": args.metrics_port,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "liveness_endpoint": args.liveness,
        "workers": args.workers,
        "allowed_endpoints": args.allow_endpoint,
        "cloud_threads": args.cloud_threads,
        "observe_period": args.observe_period,
        "resync_period": args.resync_period,
        "prometheus_url": args.prometheus_url,
        "scaling_period": args.scaling_period,
        "leader_election": False if args.no_leader_election else None,
        "lease_namespace": args.lease_namespace,
    }
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"skyfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="generate the CustomResourceDefinitions from the API models")
    crds.add_argument("--output", "-o", default="crds", help="directory to write the CRD YAML files into")
    crds.set_defaults(func=_cmd_crds)

    run = sub.add_parser(
        "run",
        help="run the operator",
        description="Run the operator. Every flag also has an environment variable SKYFLEET_<NAME>; flags win.",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="serve this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (default)")
    run.add_argument("--cluster-id", help="tag value that marks this installation's VMs")
    run.add_argument("--metrics-port", type=int, help="Prometheus port (0 disables)")
    run.add_argument("--log-format", choices=["text", "json"])
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--liveness", help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz ('' disables)")
    run.add_argument("--workers", type=int, help="threads for blocking work")
    run.add_argument(
        "--allow-endpoint",
        action="append",
        metavar="HOST|*.DOMAIN|IP|CIDR",
        help="let CloudCredentials reach this endpoint although it is loopback, link-local, private, "
        "cluster-internal or plain http (repeatable)",
    )
    run.add_argument("--cloud-threads", type=int, help="threads for cloud calls, shared by every credential")
    run.add_argument("--observe-period", type=float, help="seconds between VM observations per credential")
    run.add_argument("--resync-period", type=float, help="seconds between reconciles of unchanged objects")
    run.add_argument("--prometheus-url", help="Prometheus HTTP API ScalingPolicies query by default")
    run.add_argument("--scaling-period", type=float, help="seconds between evaluations of a ScalingPolicy")
    run.add_argument("--lease-namespace", help="namespace of the leader-election Lease")
    run.add_argument(
        "--no-leader-election", action="store_true", help="do not take the Lease (only for a single replica)"
    )
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
