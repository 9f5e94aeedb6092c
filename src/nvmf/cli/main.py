"""The ``nvmf`` command: one sub-command per module of this package, each thin.

Every sub-command module has ``register(subparsers)``, which adds its parser and sets ``func``
to a callable taking the parsed arguments and returning the exit status.

Conventions kept from nvme-cli: ``nvmf`` alone prints the help on stdout and exits 0 (``nvme``
with no arguments does the same), ``nvmf --version`` prints the version.  A reader that closes
the pipe early (``nvmf discover ... | head -1``) ends the command quietly, with the status a
tool killed by SIGPIPE has (128 + 13), and no traceback.

Only the module of the sub-command named on the command line is imported (:data:`ENTRY`):
importing all of them loads the whole target, host and cryptography, which costs 30 ms here
and tens of seconds in the emulated guest the tests run ``nvmf`` in, for every call.  With no
sub-command, or one this table does not know, every module registers (the full help, argparse's
own error for a misspelt name).
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
#: Each sub-command's module (a test checks it against what every module registers).
ENTRY: dict[str, str] = {
    "serve": "serve",
    "status": "status",
    "config": "config",
    "doctor": "doctor",
    "discover": "host",
    "identify": "host",
    "read": "host",
    "write": "host",
    "list": "listing",
    "bench": "bench",
    "gen-dhchap-key": "dhchap",
}
#: The exit status of a command whose stdout reader went away (a shell's 128 + SIGPIPE).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``nvmf`` parser: with ``command`` (a key of :data:`ENTRY`), only its module's
    sub-commands are registered; else every module's."""
    parser = argparse.ArgumentParser(
        prog="nvmf",
        description="NVMe over Fabrics target with software offload, host and diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"nvmf version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if command is None else (ENTRY[command],):
        importlib.import_module(f"nvmf.cli.{name}").register(sub)
    return parser


def _stdout_closed() -> int:
    """The reader of stdout has gone: point stdout at /dev/null so the interpreter's last flush
    does not fail again, and end like a tool SIGPIPE ended."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def command_named(args: Sequence[str]) -> str | None:
    """The sub-command ``args`` name, if :data:`ENTRY` knows it (the first word that is not an
    option: ``nvmf`` itself takes no option with a value)."""
    word = next((a for a in args if not a.startswith("-")), None)
    return word if word in ENTRY else None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(args_list))
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
