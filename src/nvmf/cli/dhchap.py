"""``nvmf gen-dhchap-key``: a DH-HMAC-CHAP secret in the ``DHHC-1`` format, as ``nvme
gen-dhchap-key`` prints it (same options: ``--hmac``, ``--key-length``, ``--nqn``,
``--secret``).

With ``--hmac 1..3`` the key is transformed with the host NQN (``--nqn``, default
``/etc/nvme/hostnqn``) before it is printed, as nvme-cli does; the hash is named in the
secret's prefix.  The secret goes to stdout only.
"""

from __future__ import annotations

import argparse
import sys

from nvmf.host.identity import default_hostnqn
from nvmf.protocol.dhchap import KEY_LENGTHS, HashId, generate_secret


def _hmac(text: str) -> int:
    value = int(text)
    if value not in (0, 1, 2, 3):
        raise argparse.ArgumentTypeError("must be 0 (none), 1 (SHA-256), 2 (SHA-384), 3 (SHA-512)")
    return value


def _key_length(text: str) -> int:
    value = int(text)
    if value not in KEY_LENGTHS:
        raise argparse.ArgumentTypeError("must be 32, 48 or 64")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``gen-dhchap-key`` sub-command."""
    parser = sub.add_parser(
        "gen-dhchap-key",
        help="print a new DH-HMAC-CHAP secret (DHHC-1 format, as nvme gen-dhchap-key)",
        description=(
            "Generate a DH-HMAC-CHAP secret for NVMe in-band authentication, for a host's "
            "dhchap.key or dhchap.ctrl_key in the configuration and nvme connect --dhchap-secret."
        ),
    )
    parser.add_argument(
        "-m",
        "--hmac",
        type=_hmac,
        default=0,
        metavar="0-3",
        help="HMAC of the key transformation: 0 none, 1 SHA-256, 2 SHA-384, 3 SHA-512",
    )
    parser.add_argument(
        "-l",
        "--key-length",
        type=_key_length,
        metavar="32|48|64",
        help="key length in bytes (default: the hash's length, 32 without one)",
    )
    parser.add_argument(
        "-n", "--nqn", help="host NQN of the transformation (default: /etc/nvme/hostnqn)"
    )
    parser.add_argument(
        "-s", "--secret", metavar="HEX", help="the key bytes in hexadecimal (default: random)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    length = args.key_length or (HashId(args.hmac).length if args.hmac else 32)
    secret = None
    if args.secret is not None:
        try:
            secret = bytes.fromhex(args.secret)
        except ValueError:
            print("nvmf gen-dhchap-key: --secret is not hexadecimal", file=sys.stderr)
            return 2
    nqn = args.nqn or (default_hostnqn() if args.hmac else "")
    try:
        print(generate_secret(args.hmac, length, nqn, secret))
    except ValueError as exc:  # lengths only: never the secret itself
        print(f"nvmf gen-dhchap-key: {exc}", file=sys.stderr)
        return 2
    return 0
