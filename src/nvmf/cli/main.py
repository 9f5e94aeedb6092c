"""The ``nvmf`` command: one sub-command per module of this package, each thin.

Every sub-command module has ``register(subparsers)``, which adds its parser and sets ``func``
to a callable taking the parsed arguments and returning the exit status.

Conventions kept from nvme-cli: ``nvmf`` alone prints the help on stdout and exits 0 (``nvme``
with no arguments does the same), ``nvmf --version`` prints the version.  A reader that closes
the pipe early (``nvmf discover ... | head -1``) ends the command quietly, with the status a
tool killed by SIGPIPE has (128 + 13), and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from nvmf import __version__

#: Sub-command modules under ``nvmf.cli``, in the order ``nvmf --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "serve",
    "status",
    "config",
    "doctor",
    "host",
    "listing",
    "bench",
    "dhchap",
)
#: The exit status of a command whose stdout reader went away (a shell's 128 + SIGPIPE).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvmf",
        description="NVMe over Fabrics target with software offload, host and diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"nvmf version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"nvmf.cli.{name}").register(sub)
    return parser


def _stdout_closed() -> int:
    """The reader of stdout has gone: point stdout at /dev/null so the interpreter's last flush
    does not fail again, and end like a tool SIGPIPE ended."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        if not args_list:
            parser.print_help()
            sys.stdout.flush()
            return 0
        args = parser.parse_args(args_list)
        status: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_closed()
    return status


if __name__ == "__main__":
    sys.exit(main())
