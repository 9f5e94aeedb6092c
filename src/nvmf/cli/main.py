"""The ``nvmf`` command: one sub-command per module of this package, each thin.

Every sub-command module has ``register(subparsers)``, which adds its parser and sets ``func``
to a callable taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Sub-command modules under ``nvmf.cli``, in the order ``nvmf --help`` lists them.
COMMANDS: tuple[str, ...] = ("serve", "status", "config", "doctor", "host", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvmf",
        description="NVMe over Fabrics target with software offload, host and diagnostics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"nvmf.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
