"""``nvmf doctor``: what this machine can do for NVMe over Fabrics, and why.

Thin: parses options, asks a running target (``nvmf serve``) over its control socket for the
SSDs it owns, runs :func:`nvmf.platform.doctor.diagnose` and prints the report (text, or JSON
with ``--json``).  All the logic lives in :mod:`nvmf.platform`; the one thing done here is the
control-socket request, since :mod:`nvmf.platform` knows nothing of the control plane.

``--verify-cmb BDF`` runs :func:`nvmf.platform.verify_cmb.verify_cmb` instead of the report:
exit status 0 when the CMB held what the SSD read, 1 on a mismatch, 2 when the check could not
run (refused, or the device failed it).
"""

from __future__ import annotations

import argparse
import sys

from nvmf.cli.arguments import parse_size
from nvmf.cli.status import control_socket_option
from nvmf.control.rpc import ControlSocketError, RequestError, default_socket_path, request
from nvmf.platform import verify_report
from nvmf.platform.doctor import DoctorOptions, diagnose
from nvmf.platform.report import render_json, render_text
from nvmf.platform.target import TargetFacts, parse_devices
from nvmf.platform.verify_cmb import VERIFY_BYTES, VerifyError, verify_cmb

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
    verify = parser.add_argument_group(
        "CMB verification",
        "have the SSD read the same blocks into DRAM and into its CMB, compare and time both "
        "(the device must be bound to vfio-pci and not in use)",
    )
    verify.add_argument(
        "--verify-cmb",
        metavar="BDF",
        help="verify the CMB of the NVMe controller at this PCI address instead of the report",
    )
    verify.add_argument(
        "--verify-cmb-lba",
        type=_count,
        default=0,
        metavar="LBA",
        help="first block of namespace 1 to read (default 0)",
    )
    verify.add_argument(
        "--verify-cmb-bytes",
        type=parse_size,
        default=VERIFY_BYTES,
        metavar="SIZE",
        help="bytes to read, whole blocks (default 1m; QEMU emulates every CMB access)",
    )
    verify.add_argument(
        "--verify-cmb-write",
        action="store_true",
        help="allow writing: a random pattern goes to the blocks first and their contents are "
        "written back afterwards (default: read only)",
    )
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


def run_verify(args: argparse.Namespace) -> int:
    """``--verify-cmb``: 0 match, 1 mismatch, 2 could not run."""
    bdf = args.verify_cmb
    try:
        target = ask_target(args.control_socket or default_socket_path())
        held = target.holding(bdf) if target is not None else None
        if target is not None and held is not None:
            raise VerifyError(
                f"this project's target (pid {target.pid}, control socket {target.socket}) owns "
                f"{bdf}: it serves namespace {held.nsid} of {held.subsystem}; stop it to verify "
                "the CMB (nvmf doctor without --verify-cmb shows the CMB and what the target "
                "placed in it)"
            )
        result = verify_cmb(
            bdf,
            slba=args.verify_cmb_lba,
            length=args.verify_cmb_bytes,
            write=args.verify_cmb_write,
        )
    except VerifyError as exc:
        if args.json:
            sys.stdout.write(verify_report.render_json(verify_report.error_dict(bdf, exc)))
        sys.stderr.write(verify_report.render_error(bdf, exc))
        return 2
    if args.json:
        sys.stdout.write(verify_report.render_json(verify_report.to_dict(result)))
    else:
        sys.stdout.write(verify_report.render_text(result))
    return 0 if result.match else 1


def run(args: argparse.Namespace) -> int:
    """Build the report and print it; 0 unless the report itself could not be built."""
    if args.verify_cmb:
        return run_verify(args)
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
