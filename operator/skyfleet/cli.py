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


def _cmd_not_yet(what: str, issue: str) -> int:
    print(
        f"skyfleet: `{what}` is not implemented yet ({issue}); nothing was started.",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"skyfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="generate the CustomResourceDefinitions from the API models")
    crds.add_argument("--output", "-o", default="crds", help="directory to write the CRD YAML files into")
    crds.set_defaults(func=_cmd_crds)

    run = sub.add_parser("run", help="run the operator")
    run.set_defaults(func=lambda _a: _cmd_not_yet("skyfleet run", "the operator is the next milestone"))

    demo = sub.add_parser("demo", help="run the operator on a local control plane and emulated clouds")
    demo.set_defaults(func=lambda _a: _cmd_not_yet("skyfleet demo", "it needs the operator first"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
