"""``nvmf discover``, ``nvmf identify``, ``nvmf read``, ``nvmf write``: the host, nvme-cli style.

Thin: options in, :mod:`nvmf.host` does the work, a summary out.  The connection options keep
nvme-cli's letters (``-t -a -s -n -q -I -i -Q -k -g -G -S -C``) so a command line moves between
the two; ``-a`` takes an IPv6 address bare (``-a ::1``), as nvme-cli does.  ``-o/--output-format
normal|json`` prints nvme-cli's layouts, key names and value strings (:mod:`nvmf.cli.nvme_print`).
Bad arguments give one line naming the option and exit 2; a failure of the connection or of a
command gives one line and exit 1 (a Connect refused for its subsystem NQN also names the NQNs
the target's discovery log offers).

``-S/--dhchap-secret`` and ``-C/--dhchap-ctrl-secret`` are the DH-HMAC-CHAP secrets
(``DHHC-1:XX:BASE64:``) used when the controller requires in-band authentication.  They never
appear in an error or any other output: a malformed one is named by its option, and a secret
elsewhere in a refused command line is masked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO, NoReturn

from nvmf.cli.arguments import int_range, parse_size
from nvmf.cli.nvme_print import discovery_json, discovery_text, id_ctrl_json, id_ns_json
from nvmf.cli.secrets import mask_secrets
from nvmf.host import (
    ConnectOptions,
    Controller,
    HostError,
    NvmeError,
    connect_with,
    discover,
    offered_subsystems,
)
from nvmf.host.controller import DEFAULT_KATO, DEFAULT_QUEUE_SIZE
from nvmf.host.runtime import run as run_async
from nvmf.protocol.dhchap import DhchapSecret, SecretError
from nvmf.wire.identify import IdentifyController, IdentifyNamespace

#: Bytes moved per step by ``nvmf read``/``nvmf write`` (the library splits by MDTS below it).
RW_WINDOW = 16 << 20


# -- argument types ----------------------------------------------------------------------------


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is negative")
    return value


def traddr(text: str) -> str:
    """``-a``: an IPv4 or IPv6 address or a host name, as nvme-cli takes it.

    An IPv6 address is written bare (``-a ::1``, ``-a fe80::1%eth0``); nvme-cli hands the string
    to the kernel, which refuses the bracketed URL form, so ``[::1]`` is refused here too, with
    the spelling that works.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty address")
    if text.startswith("[") or text.endswith("]"):
        bare = text.strip("[]")
        raise argparse.ArgumentTypeError(
            f"{text!r}: write an IPv6 address without brackets, as nvme-cli takes it: -a {bare} "
            "(the port goes in -s)"
        )
    return text


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid UUID {text!r}") from None


def dhchap_secret(option: str) -> Callable[[str], DhchapSecret]:
    """``-S``/``-C``: a ``DHHC-1:XX:BASE64:`` secret; a malformed one is refused naming
    ``option`` and what is wrong, never the text given."""

    def parse(text: str) -> DhchapSecret:
        try:
            return DhchapSecret.parse(text, option)
        except SecretError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    parse.__name__ = "DH-HMAC-CHAP secret"
    return parse


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report a bad argument as one line (no usage block) and exit 2.  A
    secret quoted back in the message (argparse repeats an unknown argument) is masked."""

    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: {mask_secrets(message)}\n")

    setattr(parser, "error", error)  # noqa: B010 - an instance override of a method


def add_connect_options(
    parser: argparse.ArgumentParser,
    *,
    nqn: bool = True,
    io_queues: bool = True,
    nqn_required: bool = True,
) -> None:
    """nvme-cli's connection options."""
    g = parser.add_argument_group("connection (nvme-cli options)")
    g.add_argument(
        "-t",
        "--transport",
        default="tcp",
        choices=["tcp", "rdma"],
        help="transport type: tcp, or rdma (needs rdma-core's python3-pyverbs)",
    )
    g.add_argument(
        "-a",
        "--traddr",
        type=traddr,
        required=True,
        help="transport address: IPv4, IPv6 (bare: -a ::1) or host name of the target",
    )
    g.add_argument(
        "-s",
        "--trsvcid",
        type=int_range(1, 65535),
        default=4420,
        help="TCP port, or RDMA CM port (4420)",
    )
    if nqn:
        g.add_argument("-n", "--nqn", required=nqn_required, help="subsystem NQN")
    g.add_argument("-q", "--hostnqn", help="host NQN (default: /etc/nvme/hostnqn or generated)")
    g.add_argument("-I", "--hostid", type=_uuid, help="host identifier (UUID)")
    if io_queues:
        g.add_argument(
            "-i",
            "--nr-io-queues",
            type=int_range(1, 65535),
            default=None,
            help="I/O queues to ask for (default: number of CPUs)",
        )
        g.add_argument(
            "-Q",
            "--queue-size",
            type=int_range(2, 65536),
            default=DEFAULT_QUEUE_SIZE,
            help=f"I/O queue entries ({DEFAULT_QUEUE_SIZE})",
        )
    g.add_argument(
        "-k",
        "--keep-alive-tmo",
        type=nonneg_float,
        default=None,
        help=f"keep-alive timeout in seconds ({DEFAULT_KATO:g}; 0 disables)",
    )
    g.add_argument("-g", "--hdr-digest", action="store_true", help="enable the header digest")
    g.add_argument("-G", "--data-digest", action="store_true", help="enable the data digest")
    g.add_argument(
        "--timeout",
        type=nonneg_float,
        default=10.0,
        help="connect and admin command timeout in seconds (10)",
    )
    g.add_argument(
        "-S",
        "--dhchap-secret",
        type=dhchap_secret("--dhchap-secret"),
        metavar="DHHC-1:XX:KEY:",
        help="the host's DH-HMAC-CHAP secret, used when the controller requires "
        "authentication (as nvme connect --dhchap-secret)",
    )
    g.add_argument(
        "-C",
        "--dhchap-ctrl-secret",
        type=dhchap_secret("--dhchap-ctrl-secret"),
        metavar="DHHC-1:XX:KEY:",
        help="the controller's DH-HMAC-CHAP secret: authenticate the controller too "
        "(bidirectional; needs --dhchap-secret)",
    )


def connect_options(args: argparse.Namespace, *, nr_io_queues: int | None = None) -> ConnectOptions:
    """The :class:`ConnectOptions` the parsed nvme-cli options describe."""
    kato = DEFAULT_KATO if args.keep_alive_tmo is None else args.keep_alive_tmo
    queues = getattr(args, "nr_io_queues", None)
    return ConnectOptions(
        traddr=args.traddr,
        subnqn=args.nqn,
        trsvcid=args.trsvcid,
        hostnqn=args.hostnqn,
        hostid=args.hostid,
        nr_io_queues=nr_io_queues if queues is None and nr_io_queues is not None else queues,
        queue_size=getattr(args, "queue_size", DEFAULT_QUEUE_SIZE),
        kato=kato,
        hdr_digest=args.hdr_digest,
        data_digest=args.data_digest,
        timeout=args.timeout or 10.0,
        trtype=args.transport,
        dhchap_secret=args.dhchap_secret,
        dhchap_ctrl_secret=args.dhchap_ctrl_secret,
    )


def add_output_format(parser: argparse.ArgumentParser) -> None:
    """nvme-cli's ``-o/--output-format normal|json`` (``--json`` is kept as a synonym)."""
    parser.add_argument(
        "-o",
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="normal",
        help="output format: normal or json (nvme-cli's names and value strings)",
    )
    parser.add_argument(
        "--json",
        dest="output_format",
        action="store_const",
        const="json",
        help="the same as -o json",
    )


#: nvme-cli's ``--output-format`` values this CLI prints (``binary`` has no meaning here).
OUTPUT_FORMATS = ("normal", "json")


async def connect_or_hint(opts: ConnectOptions, *, io_queues: bool = True) -> Controller:
    """:func:`connect_with`, and when the target refuses the subsystem NQN, an error that says
    which NQNs its discovery controller does offer this host."""
    try:
        return await connect_with(opts, io_queues=io_queues)
    except NvmeError as exc:
        if not exc.unknown_subsystem:
            raise
        try:
            offered = await offered_subsystems(opts)
        except (HostError, OSError):
            raise exc from None
        where = f"-a {opts.traddr} -s {opts.trsvcid}"
        if offered:
            hint = f"it offers {', '.join(offered)}"
        else:
            hint = "it offers no NVM subsystem to this host NQN"
        raise HostError(f"{exc}: {where} has no subsystem {opts.subnqn!r}; {hint}") from None


def run_host_command(name: str, coro: Coroutine[Any, Any, int]) -> int:
    """Run the command's coroutine; library failures become one line on stderr.

    The host library's own warnings (a queue's fatal error, a failed shutdown) say what the
    error line says again, so they are kept off stderr: every error is printed once.
    """
    logging.getLogger("nvmf.host").setLevel(logging.ERROR)
    try:
        return run_async(coro)
    except BrokenPipeError:
        raise  # stdout closed by the reader: nvmf.cli.main ends quietly
    except ValueError as exc:
        print(f"nvmf {name}: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
    except (HostError, OSError) as exc:
        print(f"nvmf {name}: {mask_secrets(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _discover(args: argparse.Namespace) -> int:
    log = await discover(
        args.traddr,
        args.trsvcid,
        args.hostnqn,
        hostid=args.hostid,
        hdr_digest=args.hdr_digest,
        data_digest=args.data_digest,
        timeout=args.timeout or 10.0,
        trtype=args.transport,
        dhchap_secret=args.dhchap_secret,
        dhchap_ctrl_secret=args.dhchap_ctrl_secret,
    )
    if args.output_format == "json":
        print(json.dumps(discovery_json(log), indent=2))
    else:
        print(discovery_text(log))
    return 0


def run_discover(args: argparse.Namespace) -> int:
    return run_host_command("discover", _discover(args))


# -- identify ----------------------------------------------------------------------------------


def _version(ver: int) -> str:
    return f"{ver >> 16}.{(ver >> 8) & 0xFF}" + (f".{ver & 0xFF}" if ver & 0xFF else "")


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.2f} {unit}"
    return f"{n} B"


def format_identify(
    ctrl: Controller, idc: IdentifyController, nss: list[tuple[int, IdentifyNamespace]]
) -> str:
    lines = [
        f"Controller {ctrl.cntlid} of {idc.subnqn or ctrl.options.subnqn}",
        f"  model (mn)      : {idc.mn}",
        f"  serial (sn)     : {idc.sn}",
        f"  firmware (fr)   : {idc.fr}",
        f"  vid/ssvid       : {idc.vid:#06x}/{idc.ssvid:#06x}",
        f"  version (ver)   : {_version(idc.ver)}",
        f"  cntlid          : {idc.cntlid}",
        f"  mdts            : {idc.mdts} ({_human(ctrl.max_transfer)} per command)",
        f"  ioccsz/iorcsz   : {idc.ioccsz}/{idc.iorcsz} "
        f"({ctrl.io_incapsule_size} bytes in-capsule)",
        f"  maxcmd          : {idc.maxcmd}",
        f"  kas             : {idc.kas} ({idc.kas * 100} ms granularity)",
        f"  sgls            : {idc.sgls:#010x}",
        f"  oncs            : {idc.oncs:#06x}",
        f"  vwc             : {idc.vwc:#04x}",
        f"  nn              : {idc.nn}",
        f"  cap.mqes        : {ctrl.cap.mqes + 1} entries, cap.to {ctrl.cap.to * 500} ms",
        f"  namespaces      : {len(nss)} active",
    ]
    for nsid, ns in nss:
        fmt = ns.lba_format
        bs = 1 << fmt.lbads
        lines += [
            f"Namespace {nsid}",
            f"  nsze/ncap/nuse  : {ns.nsze}/{ns.ncap}/{ns.nuse} blocks",
            f"  lba size        : {bs} bytes (+{fmt.ms} metadata), format {ns.flbas & 0xF} of "
            f"{ns.nlbaf + 1}",
            f"  capacity        : {_human(ns.nsze * bs)}",
            f"  nguid           : {ns.nguid.hex()}",
            f"  eui64           : {ns.eui64.hex()}",
        ]
    return "\n".join(lines)


async def _identify(args: argparse.Namespace) -> int:
    opts = connect_options(args, nr_io_queues=0)
    async with await connect_or_hint(opts, io_queues=False) as ctrl:
        idc = await ctrl.identify_controller()
        nsids = await ctrl.active_namespaces()
        nss = [(nsid, await ctrl.identify_namespace(nsid)) for nsid in nsids]
        if args.output_format == "json":
            out = {
                "controller": id_ctrl_json(idc),
                "namespaces": [{"nsid": nsid, **id_ns_json(ns)} for nsid, ns in nss],
            }
            print(json.dumps(out, indent=2))
        else:
            print(format_identify(ctrl, idc, nss))
    return 0


def run_identify(args: argparse.Namespace) -> int:
    return run_host_command("identify", _identify(args))


# -- read / write ------------------------------------------------------------------------------


def _extent(args: argparse.Namespace, block_size: int, default_bytes: int | None) -> int:
    """Blocks to move from ``--nlb`` or ``--length`` (or the input's size for a write)."""
    if args.nlb is not None:
        return int(args.nlb)
    if args.length is not None:
        if args.length % block_size:
            raise ValueError(
                f"--length: {args.length} is not a multiple of the LBA size {block_size}"
            )
        return int(args.length) // block_size
    if default_bytes is None:
        raise ValueError("--nlb or --length is required")
    return max(1, -(-default_bytes // block_size))


async def _read(args: argparse.Namespace) -> int:
    async with await connect_or_hint(connect_options(args, nr_io_queues=1)) as ctrl:
        geo = await ctrl.namespace(args.nsid)
        nlb = _extent(args, geo.block_size, None)
        out: BinaryIO = open(args.file, "wb") if args.file else sys.stdout.buffer  # noqa: SIM115
        try:
            per = max(1, RW_WINDOW // geo.block_size)
            buf = bytearray(min(nlb, per) * geo.block_size)
            done = 0
            while done < nlb:
                n = min(per, nlb - done)
                view = memoryview(buf)[: n * geo.block_size]
                await ctrl.read(args.nsid, args.slba + done, n, view, fua=args.fua)
                out.write(view)
                done += n
        finally:
            if args.file:
                out.close()
            else:
                out.flush()
    print(
        f"nvmf read: {nlb} blocks ({nlb * geo.block_size} bytes) from LBA {args.slba} of nsid "
        f"{args.nsid}",
        file=sys.stderr,
    )
    return 0


async def _write(args: argparse.Namespace) -> int:
    src: Any = open(args.file, "rb") if args.file else sys.stdin.buffer  # noqa: SIM115
    try:
        size = os.fstat(src.fileno()).st_size if args.file else None
        async with await connect_or_hint(connect_options(args, nr_io_queues=1)) as ctrl:
            geo = await ctrl.namespace(args.nsid)
            if size is None and args.nlb is None and args.length is None:
                data = src.read()
                size = len(data)
                src.close()
                src = _BytesSource(data)
            nlb = _extent(args, geo.block_size, size)
            per = max(1, RW_WINDOW // geo.block_size)
            buf = bytearray(min(nlb, per) * geo.block_size)
            done = 0
            while done < nlb:
                n = min(per, nlb - done)
                view = memoryview(buf)[: n * geo.block_size]
                got = _fill(src, view)
                view[got:] = bytes(len(view) - got)  # past the input's end: zeroes
                await ctrl.write(args.nsid, args.slba + done, n, view, fua=args.fua)
                done += n
    finally:
        src.close()
    print(
        f"nvmf write: {nlb} blocks ({nlb * geo.block_size} bytes) to LBA {args.slba} of nsid "
        f"{args.nsid}",
        file=sys.stderr,
    )
    return 0


def _fill(src: Any, view: memoryview) -> int:
    """Read into ``view`` until it is full or the input ends; the byte count."""
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class _BytesSource:
    """The bytes read from stdin, as a ``readinto`` source."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), len(self._view))
        buf[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def close(self) -> None:
        pass


def run_read(args: argparse.Namespace) -> int:
    return run_host_command("read", _read(args))


def run_write(args: argparse.Namespace) -> int:
    return run_host_command("write", _write(args))


# -- registration ------------------------------------------------------------------------------


def _rw_parser(sub: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=helptext, description=helptext)
    one_line_errors(p)
    add_connect_options(p)
    p.add_argument("--nsid", type=int_range(1, 0xFFFFFFFE), default=1, help="namespace (1)")
    p.add_argument("--slba", type=int_range(0, (1 << 64) - 1), default=0, help="first LBA (0)")
    extent = p.add_mutually_exclusive_group()
    extent.add_argument("--nlb", type=int_range(1, 1 << 48), help="number of blocks (1-based)")
    extent.add_argument("--length", type=parse_size, help="bytes (a multiple of the LBA size)")
    p.add_argument("--fua", action="store_true", help="Force Unit Access")
    return p


def register(sub: Any) -> None:
    p = sub.add_parser(
        "discover",
        help="read a discovery controller's log (like nvme discover)",
        description="Connect to the discovery controller and print its Discovery log page.",
    )
    one_line_errors(p)
    add_connect_options(p, nqn=False, io_queues=False)
    add_output_format(p)
    p.set_defaults(func=run_discover)

    p = sub.add_parser(
        "identify",
        help="identify a controller and its namespaces",
        description="Connect (admin queue only) and print Identify Controller and Identify "
        "Namespace of every active namespace.",
    )
    one_line_errors(p)
    add_connect_options(p, io_queues=False)
    add_output_format(p)
    p.set_defaults(func=run_identify)

    p = _rw_parser(sub, "read", "read blocks into a file (or stdout)")
    p.add_argument("--file", "-f", metavar="F", help="output file (default: stdout)")
    p.set_defaults(func=run_read)

    p = _rw_parser(sub, "write", "write blocks from a file (or stdin)")
    p.add_argument(
        "--file",
        "-f",
        metavar="F",
        help="input file (default: stdin); without --nlb/--length its size, rounded up to "
        "whole blocks with zeroes",
    )
    p.set_defaults(func=run_write)
