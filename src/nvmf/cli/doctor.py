"""``nvmf doctor``: what this machine can do for NVMe over Fabrics, and why.

Thin: parses options, asks a running target (``nvmf serve``) over its control socket for the
SSDs it owns, runs :func:`nvmf.platform.doctor.diagnose` and prints the report (text, or JSON
with ``--json``).  All the logic lives in :mod:`nvmf.platform`; the one thing done here is the
control-socket request, since :mod:`nvmf.platform` knows nothing of the control plane.
"""

from __future__ import annotations

import argparse
import sys

from nvmf.cli.status import control_socket_option
from nvmf.control.rpc import ControlSocketError, RequestError, default_socket_path, request
from nvmf.platform.doctor import DoctorOptions, diagnose
from nvmf.platform.report import render_json, render_text
from nvmf.platform.target import TargetFacts, parse_devices

#: How long the doctor waits for a target's answer (it answers from memory, at once).
TARGET_TIMEOUT_S = 10.0


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _count(text: str) -> int:
    """argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` sub-command."""
    parser = sub.add_parser(
        "doctor",
        help="inspect this machine: kernel, NVMe CMB, RDMA, P2P, queue plan, verdicts",
        description=(
            "Inspect the running system (sysfs, procfs, the kernel config, PCI config space and "
            "NVMe controller registers) and report what it can do for NVMe over Fabrics."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--root", default="/", help=argparse.SUPPRESS)
    parser.add_argument(
        "--host-cpus",
        type=_positive,
        metavar="N",
        help="queue plan for a host with N online CPUs (default: this machine's)",
    )
    parser.add_argument(
        "--target-max-queues",
        type=_positive,
        metavar="N",
        help="this project's target grant (default: one per online core of this machine)",
    )
    parser.add_argument(
        "-i",
        "--nr-io-queues",
        type=_positive,
        metavar="N",
        help="as nvme connect -i N: ask for N I/O queues (capped at the host's CPUs)",
    )
    parser.add_argument(
        "-W", "--nr-write-queues", type=_count, default=0, metavar="N", help="as nvme connect -W"
    )
    parser.add_argument(
        "-P", "--nr-poll-queues", type=_count, default=0, metavar="N", help="as nvme connect -P"
    )
    parser.add_argument(
        "--no-register-writes",
        action="store_true",
        help="never set CMBMSC.CRE to read an NVMe 1.4+ controller's CMB size",
    )
    control_socket_option(parser)
    parser.set_defaults(func=run)


def ask_target(path: str) -> TargetFacts | None:
    """What this project's target on ``path`` says of the SSDs it owns; None when no target
    listens there (the doctor then reads every device itself, as it always did)."""
    try:
        answer = request(path, "pci_devices", timeout=TARGET_TIMEOUT_S)
    except ControlSocketError:
        return None
    except RequestError as exc:  # an older target without the op, or a refusal
        return TargetFacts(path, None, [], error=f"it did not report its devices: {exc}")
    return parse_devices(answer, path)


def run(args: argparse.Namespace) -> int:
    """Build the report and print it; 0 unless the report itself could not be built."""
    options = DoctorOptions(
        root=args.root,
        host_cpus=args.host_cpus,
        nr_io_queues=args.nr_io_queues,
        nr_write_queues=args.nr_write_queues,
        nr_poll_queues=args.nr_poll_queues,
        target_max_queues=args.target_max_queues,
        target_max_source="--target-max-queues" if args.target_max_queues else "",
        register_writes=not args.no_register_writes,
        # A recorded tree (--root) is not this machine: no running target speaks for it.
        target=ask_target(args.control_socket or default_socket_path())
        if args.root == "/"
        else None,
    )
    report = diagnose(options)
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    return 0
