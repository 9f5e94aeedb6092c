"""A host's association with one NVMe-oF controller: connect, admin and I/O commands, shutdown.

:func:`connect` follows the Linux host's sequence (``nvme_tcp_setup_ctrl`` and the fabrics core):

1. admin queue: TCP connect, ICReq/ICResp, Connect (QID 0, SQSIZE 31, CNTLID FFFFh so the
   target allocates a controller, KATO in ms) with the Connect data in the capsule;
2. Property Get CAP; Property Set CC = EN | CSS NVM | MPS 0 (4 KiB pages) | AMS round robin |
   IOSQES 6 (64-byte SQEs) | IOCQES 4 (16-byte CQEs); poll CSTS until RDY, for at most
   (CAP.TO + 1) * 500 ms (``nvme_wait_ready``);
3. Identify Controller (MDTS, IOCCSZ, KAS, CTRATT, ...); the keep-alive task starts, sending
   Keep Alive every KATO / 2 as the Linux host does; when CTRATT says Traffic Based Keep Alive,
   it looks every KATO / 4 and sends one only if no command completed since it last looked;
4. Set Features Number of Queues asking for N I/O queues; the grant is min(NSQA, NCQA) + 1 and
   the host uses min(N, grant) (``nvme_set_queue_count``);
5. one TCP connection per I/O queue: ICReq/ICResp, Connect (QID n, SQSIZE = queue size - 1,
   the CNTLID the admin Connect returned).

Over NVMe/RDMA (``trtype="rdma"``) each queue is an RDMA CM connection instead of a TCP one
(:mod:`nvmf.host.rdma_queue`; no in-capsule data on the admin queue, no digests); the
sequence of commands is the same.

A queue whose Connect response sets AUTHREQ.ATR authenticates right after it, before any other
command, with the secrets of :attr:`ConnectOptions.dhchap_secret` and
:attr:`ConnectOptions.dhchap_ctrl_secret` (:mod:`nvmf.host.auth`, the same over either fabric).

:meth:`Controller.close` tears down in the Linux order: I/O queues, then a normal shutdown
(CC.SHN = 01b, wait for CSTS.SHST = 10b), then the admin queue.  There is no reconnection: a
failed queue makes its commands fail with :class:`~nvmf.host.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from nvmf.host import commands as c
from nvmf.host.auth import AuthenticationError, DhchapKeys, authenticate
from nvmf.host.errors import HostError, NvmeError, TransportError
from nvmf.host.identity import default_hostid, default_hostnqn
from nvmf.host.queue import ADMIN_INCAPSULE_SIZE, Completion, HostQueue
from nvmf.protocol.dhchap import DhchapSecret
from nvmf.wire.auth import CONNECT_AUTHREQ_ASCR, CONNECT_AUTHREQ_ATR
from nvmf.wire.fabrics import CC, CNTLID_DYNAMIC, CSTS, Cap, Prop
from nvmf.wire.identify import (
    CTRATT_TBKAS,
    IDENTIFY_DATA_SIZE,
    NSID_ALL,
    Cns,
    IdentifyController,
    IdentifyNamespace,
    NamespaceList,
    NsIdDescriptor,
    decode_ns_id_descriptors,
)
from nvmf.wire.opcodes import FeatureId, IoOpcode
from nvmf.wire.sqe import DSM_MAX_RANGES, SQE_SIZE
from nvmf.wire.status import SC, Status

if TYPE_CHECKING:
    from typing import TypeAlias

    from nvmf.host.rdma_queue import RdmaHostQueue

    #: A host queue over either fabric: both offer what the controller uses (``submit``,
    #: ``close``, ``is_open``, ``error``, ``depth``, ``outstanding``).
    AnyQueue: TypeAlias = HostQueue | RdmaHostQueue
#: The transport types :func:`connect` knows (nvme-cli ``-t``).
TRTYPES = ("tcp", "rdma")

log = logging.getLogger(__name__)

_Buf = TypeVar("_Buf", bytearray, memoryview)
#: Command names for error messages, without an enum lookup per I/O.
_IO_NAMES: dict[int, str] = {
    IoOpcode.READ: "Read",
    IoOpcode.WRITE: "Write",
    IoOpcode.COMPARE: "Compare",
}

#: Admin queue entries the Linux host asks for (``NVME_AQ_DEPTH``); SQSIZE is this minus one.
ADMIN_QUEUE_SIZE = 32
#: nvme-cli's default I/O queue size (``NVMF_DEF_QUEUE_SIZE``).
DEFAULT_QUEUE_SIZE = 128
#: The Linux host's default keep-alive timeout, seconds (``NVME_DEFAULT_KATO``).
DEFAULT_KATO = 5.0
#: How long a normal shutdown may take before the host gives up (Linux ``shutdown_timeout``).
SHUTDOWN_TIMEOUT = 5.0
#: CC the host writes: EN, CSS NVM (000b), MPS 0, AMS round robin, IOSQES 6, IOCQES 4.
CC_ENABLE = CC.EN | (6 << CC.IOSQES_SHIFT) | (4 << CC.IOCQES_SHIFT)


@dataclass(frozen=True)
class ConnectOptions:
    """Everything :func:`connect` needs; names follow nvme-cli's options."""

    traddr: str
    subnqn: str
    trsvcid: str | int = 4420
    hostnqn: str | None = None
    hostid: uuid.UUID | None = None
    #: I/O queues to ask for (nvme-cli ``-i``); ``None``: one per CPU of this machine.
    nr_io_queues: int | None = None
    #: I/O queue entries (nvme-cli ``-Q``); clamped to CAP.MQES + 1.
    queue_size: int = DEFAULT_QUEUE_SIZE
    #: Keep-alive timeout in seconds (nvme-cli ``-k``); 0 disables keep alive.
    kato: float = DEFAULT_KATO
    hdr_digest: bool = False
    data_digest: bool = False
    #: TCP connect, ICResp and admin command timeout, seconds.
    timeout: float = 10.0
    #: A queue fails when one of its commands is older than this (seconds; ``None``: never).
    io_timeout: float | None = 30.0
    #: The fabric (nvme-cli ``-t``): ``tcp`` or ``rdma``.
    trtype: str = "tcp"
    #: NVMe/RDMA: ask the controller to invalidate each command's remote key with its response
    #: (keyed SGL sub type Fh), where the device has memory windows to make that possible.
    rdma_invalidate: bool = True
    #: The host's DH-HMAC-CHAP secret (nvme-cli ``--dhchap-secret``), used on every queue whose
    #: Connect response says authentication is required.  Never in a repr or message.
    dhchap_secret: DhchapSecret | None = field(default=None, repr=False)
    #: The controller's secret (``--dhchap-ctrl-secret``): the host then also checks that the
    #: controller holds it (bidirectional authentication).  Needs ``dhchap_secret``.
    dhchap_ctrl_secret: DhchapSecret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dhchap_ctrl_secret is not None and self.dhchap_secret is None:
            raise ValueError(
                "a controller secret (--dhchap-ctrl-secret) needs the host's own secret "
                "(--dhchap-secret)"
            )

    @property
    def dhchap_keys(self) -> DhchapKeys | None:
        """The DH-HMAC-CHAP secrets, or None when the host has none."""
        if self.dhchap_secret is None:
            return None
        return DhchapKeys(self.dhchap_secret, self.dhchap_ctrl_secret)


@dataclass(frozen=True, slots=True)
class NamespaceGeometry:
    """What I/O needs to know about a namespace: its LBA size and size in LBAs."""

    nsid: int
    block_size: int
    nsze: int
    ms: int = 0

    @property
    def size_bytes(self) -> int:
        return self.nsze * self.block_size


@dataclass
class Controller:
    """A connected controller: the admin queue, the I/O queues and what Identify said."""

    options: ConnectOptions
    admin: AnyQueue
    cntlid: int
    cap: Cap
    hostnqn: str
    hostid: uuid.UUID
    id_ctrl: IdentifyController | None = None
    io_queues: list[AnyQueue] = field(default_factory=list)
    cc: int = 0
    #: The I/O queue count the controller granted (min(NSQA, NCQA) + 1).
    granted_io_queues: int = 0
    #: The most a command may move because of the transport (0: no limit of its own), such as
    #: the NVMe/RDMA host's registered per-command buffers.
    transport_max_transfer: int = 0
    _ns: dict[int, NamespaceGeometry] = field(default_factory=dict)
    _keep_alive: asyncio.Task[None] | None = None
    #: Keep Alive commands the keep-alive task sent.
    keep_alives_sent: int = 0
    _rr: itertools.count[int] = field(default_factory=itertools.count)
    #: DH-HMAC-CHAP transaction identifiers, one per transaction on any queue of this
    #: controller (the Linux host's ``ctrl->transaction``).
    _t_ids: Iterator[int] = field(default_factory=itertools.count)
    _closed: bool = False

    # -- context manager -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- limits ----------------------------------------------------------------------------------
    @property
    def max_transfer(self) -> int:
        """Most bytes one command may move: MDTS in units of CAP.MPSMIN pages (0: no limit,
        taken as 1 MiB as nothing here needs more at once), and no more than the transport's
        own limit (:attr:`transport_max_transfer`)."""
        mdts = self.id_ctrl.mdts if self.id_ctrl is not None else 0
        limit = (1 << mdts) * (1 << (12 + self.cap.mpsmin)) if mdts else 1 << 20
        if self.transport_max_transfer:
            limit = min(limit, self.transport_max_transfer)
        return limit

    @property
    def io_incapsule_size(self) -> int:
        """Bytes of write data an I/O command capsule may carry: IOCCSZ * 16 - 64."""
        ioccsz = self.id_ctrl.ioccsz if self.id_ctrl is not None else 0
        return max(0, ioccsz * 16 - SQE_SIZE)

    # -- admin commands --------------------------------------------------------------------------
    async def admin_command(
        self,
        sqe: bytearray,
        *,
        data_out: bytes | bytearray | memoryview | None = None,
        data_in: bytearray | memoryview | None = None,
        command: str = "admin command",
    ) -> Completion:
        """Submit ``sqe`` on the admin queue, at most ``options.timeout`` seconds."""
        try:
            async with asyncio.timeout(self.options.timeout):
                return await self.admin.submit(
                    sqe, data_out=data_out, data_in=data_in, command=command
                )
        except TimeoutError:
            raise TransportError(
                f"{command}: no completion in {self.options.timeout:g} s"
            ) from None

    async def get_property(self, prop: Prop, size: int = 4) -> int:
        comp = await self.admin_command(
            c.property_get(prop, size), command=f"Property Get {prop.name}"
        )
        return comp.result if size == 8 else comp.dw0

    async def set_property(self, prop: Prop, value: int, size: int = 4) -> None:
        await self.admin_command(
            c.property_set(prop, value, size), command=f"Property Set {prop.name}"
        )

    async def identify(self, cns: int, *, nsid: int = 0, cntid: int = 0, csi: int = 0) -> bytes:
        """The 4096 bytes of an Identify with ``cns``."""
        buf = bytearray(IDENTIFY_DATA_SIZE)
        await self.admin_command(
            c.identify(cns, nsid=nsid, cntid=cntid, csi=csi),
            data_in=buf,
            command=f"Identify CNS {cns:#04x}",
        )
        return bytes(buf)

    async def identify_controller(self) -> IdentifyController:
        """Identify Controller (CNS 01h); also refreshes the cached copy."""
        self.id_ctrl = IdentifyController.decode(await self.identify(Cns.CTRL))
        return self.id_ctrl

    async def identify_namespace(self, nsid: int) -> IdentifyNamespace:
        """Identify Namespace (CNS 00h); also caches the namespace's geometry for I/O."""
        ns = IdentifyNamespace.decode(await self.identify(Cns.NS, nsid=nsid))
        if ns.nsze:
            fmt = ns.lba_format
            self._ns[nsid] = NamespaceGeometry(nsid, 1 << fmt.lbads, ns.nsze, fmt.ms)
        return ns

    async def active_namespaces(self) -> list[int]:
        """Every active NSID (CNS 02h, continued past 1024 entries)."""
        nsids: list[int] = []
        after = 0
        while True:
            page = NamespaceList.decode(await self.identify(Cns.NS_ACTIVE_LIST, nsid=after))
            nsids += page.nsids
            if len(page.nsids) < NamespaceList.MAX_ENTRIES:
                return nsids
            after = page.nsids[-1]

    async def ns_descriptors(self, nsid: int) -> list[NsIdDescriptor]:
        """The Namespace Identification Descriptors (CNS 03h): EUI64, NGUID, UUID, CSI."""
        return decode_ns_id_descriptors(await self.identify(Cns.NS_DESC_LIST, nsid=nsid))

    async def get_log_page(
        self,
        lid: int,
        length: int,
        offset: int = 0,
        nsid: int = NSID_ALL,
        *,
        lsp: int = 0,
        rae: bool = False,
    ) -> bytes:
        """``length`` bytes of log page ``lid`` from byte ``offset``, in MDTS-sized pieces."""
        out = bytearray(length)
        step = min(self.max_transfer, 1 << 20)
        pos = 0
        while pos < length:
            size = min(step, length - pos)
            await self.admin_command(
                c.get_log_page(lid, size, offset=offset + pos, nsid=nsid, lsp=lsp, rae=rae),
                data_in=memoryview(out)[pos : pos + size],
                command=f"Get Log Page {lid:#04x}",
            )
            pos += size
        return bytes(out)

    async def get_features(self, fid: int, *, nsid: int = 0, sel: int = 0, cdw11: int = 0) -> int:
        """Get Features: the value (CQE DW0)."""
        comp = await self.admin_command(
            c.get_features(fid, nsid=nsid, sel=sel, cdw11=cdw11),
            command=f"Get Features {fid:#04x}",
        )
        return comp.dw0

    async def set_features(self, fid: int, value: int, *, nsid: int = 0, save: bool = False) -> int:
        """Set Features: CQE DW0 (command specific, e.g. the Number of Queues grant)."""
        comp = await self.admin_command(
            c.set_features(fid, value, nsid=nsid, save=save),
            command=f"Set Features {fid:#04x}",
        )
        return comp.dw0

    async def keep_alive(self) -> None:
        await self.admin_command(c.keep_alive(), command="Keep Alive")

    # -- namespaces ------------------------------------------------------------------------------
    async def namespace(self, nsid: int) -> NamespaceGeometry:
        """The geometry of ``nsid`` (Identify Namespace the first time)."""
        geo = self._ns.get(nsid)
        if geo is None:
            await self.identify_namespace(nsid)
            geo = self._ns.get(nsid)
            if geo is None:
                raise NvmeError(
                    Status(SC.INVALID_NS, dnr=True),
                    command=f"namespace {nsid}: not active (nsze 0)",
                )
        return geo

    # -- I/O -------------------------------------------------------------------------------------
    def queue(self, index: int | None = None) -> AnyQueue:
        """I/O queue ``index`` (modulo the count), or the next one round robin."""
        if not self.io_queues:
            raise HostError("no I/O queues: this controller was connected without any")
        if index is None:
            index = next(self._rr)
        return self.io_queues[index % len(self.io_queues)]

    def _io(
        self,
        opcode: int,
        nsid: int,
        slba: int,
        nlb: int,
        buf: memoryview,
        write: bool,
        fua: bool,
        queue: int | None,
    ) -> Awaitable[Any]:
        """The awaitable that moves ``buf`` (Read/Write/Compare); one command when it fits
        MDTS and 65536 LBAs, else several issued together on one queue.

        A plain function returning the queue's own coroutine keeps the hot path one coroutine
        frame deep; only the first I/O to a namespace detours through Identify Namespace.
        """
        geo = self._ns.get(nsid)
        if geo is None:
            return self._io_after_identify(opcode, nsid, slba, nlb, buf, write, fua, queue)
        bs = geo.block_size
        if len(buf) != nlb * bs:
            raise ValueError(f"buffer is {len(buf)} bytes; {nlb} blocks of {bs} need {nlb * bs}")
        if nlb <= 0 or slba < 0 or slba + nlb > geo.nsze:
            raise ValueError(
                f"LBAs {slba}..{slba + nlb - 1} outside namespace {nsid} (nsze {geo.nsze})"
            )
        queues = self.io_queues
        if not queues:
            raise HostError("no I/O queues: this controller was connected without any")
        q = queues[(next(self._rr) if queue is None else queue) % len(queues)]
        name = _IO_NAMES.get(opcode, "I/O")
        per = max(1, min(c.MAX_NLB, self.max_transfer // bs))
        if nlb <= per:
            sqe = c.rw(opcode, nsid, slba, nlb, fua=fua)
            if write:
                return q.submit(sqe, data_out=buf, command=name)
            return q.submit(sqe, data_in=buf, command=name)
        parts = []
        for i in range(0, nlb, per):
            n = min(per, nlb - i)
            view = buf[i * bs : (i + n) * bs]
            sqe = c.rw(opcode, nsid, slba + i, n, fua=fua)
            if write:
                parts.append(q.submit(sqe, data_out=view, command=name))
            else:
                parts.append(q.submit(sqe, data_in=view, command=name))
        return asyncio.gather(*parts)

    async def _io_after_identify(
        self,
        opcode: int,
        nsid: int,
        slba: int,
        nlb: int,
        buf: memoryview,
        write: bool,
        fua: bool,
        queue: int | None,
    ) -> None:
        await self.namespace(nsid)
        await self._io(opcode, nsid, slba, nlb, buf, write, fua, queue)

    @overload
    async def read(
        self,
        nsid: int,
        slba: int,
        nlb: int,
        buf: None = None,
        *,
        fua: bool = False,
        queue: int | None = None,
    ) -> bytearray: ...

    @overload
    async def read(
        self,
        nsid: int,
        slba: int,
        nlb: int,
        buf: _Buf,
        *,
        fua: bool = False,
        queue: int | None = None,
    ) -> _Buf: ...

    async def read(
        self,
        nsid: int,
        slba: int,
        nlb: int,
        buf: bytearray | memoryview | None = None,
        *,
        fua: bool = False,
        queue: int | None = None,
    ) -> bytearray | memoryview:
        """Read ``nlb`` blocks from ``slba`` into ``buf`` (allocated when ``None``); returns it.

        The data is received straight into ``buf``.  Transfers above MDTS are split into
        commands issued together on one queue.  ``fua`` reads from non-volatile media.
        """
        if buf is None:
            geo = self._ns.get(nsid) or await self.namespace(nsid)
            buf = bytearray(nlb * geo.block_size)
        view = memoryview(buf)
        if view.format != "B":
            view = view.cast("B")
        await self._io(IoOpcode.READ, nsid, slba, nlb, view, False, fua, queue)
        return buf

    async def write(
        self,
        nsid: int,
        slba: int,
        nlb: int,
        data: bytes | bytearray | memoryview,
        *,
        fua: bool = False,
        queue: int | None = None,
    ) -> None:
        """Write ``nlb`` blocks at ``slba`` from ``data`` (exactly ``nlb`` blocks long)."""
        view = memoryview(data)
        if view.format != "B":
            view = view.cast("B")
        await self._io(IoOpcode.WRITE, nsid, slba, nlb, view, True, fua, queue)

    async def compare(
        self,
        nsid: int,
        slba: int,
        nlb: int,
        data: bytes | bytearray | memoryview,
        *,
        queue: int | None = None,
    ) -> bool:
        """Compare: True when the blocks equal ``data``, False on Compare Failure."""
        view = memoryview(data)
        if view.format != "B":
            view = view.cast("B")
        try:
            await self._io(IoOpcode.COMPARE, nsid, slba, nlb, view, True, False, queue)
        except NvmeError as exc:
            if exc.code == SC.COMPARE_FAILED:
                return False
            raise
        return True

    async def flush(self, nsid: int, *, queue: int | None = None) -> None:
        await self.queue(queue).submit(c.flush(nsid), command="Flush")

    async def write_zeroes(
        self, nsid: int, slba: int, nlb: int, *, deallocate: bool = False, queue: int | None = None
    ) -> None:
        geo = self._ns.get(nsid) or await self.namespace(nsid)
        q = self.queue(queue)
        per = c.MAX_NLB
        if slba < 0 or slba + nlb > geo.nsze:
            raise ValueError(f"LBAs {slba}..{slba + nlb - 1} outside namespace {nsid}")
        await asyncio.gather(
            *(
                q.submit(
                    c.write_zeroes(nsid, slba + i, min(per, nlb - i), deallocate=deallocate),
                    command="Write Zeroes",
                )
                for i in range(0, nlb, per)
            )
        )

    async def deallocate(
        self, nsid: int, ranges: Iterable[tuple[int, int]], *, queue: int | None = None
    ) -> None:
        """Dataset Management, Deallocate, of ``(slba, nlb)`` ranges (256 per command)."""
        items = list(ranges)
        q = self.queue(queue)
        for i in range(0, len(items), DSM_MAX_RANGES):
            part = items[i : i + DSM_MAX_RANGES]
            await q.submit(
                c.dsm_deallocate(nsid, len(part)),
                data_out=c.dsm_ranges(part),
                command="Dataset Management",
            )

    # -- keep alive and shutdown -----------------------------------------------------------------
    def _start_keep_alive(self) -> None:
        if self.options.kato > 0:
            traffic_based = self.id_ctrl is not None and bool(self.id_ctrl.ctratt & CTRATT_TBKAS)
            self._keep_alive = asyncio.get_running_loop().create_task(
                self._keep_alive_loop(self.options.kato, traffic_based)
            )

    def completions(self) -> int:
        """Commands completed on every queue of this controller so far."""
        return self.admin.cids.completed + sum(q.cids.completed for q in self.io_queues)

    async def _keep_alive_loop(self, kato: float, traffic_based: bool) -> None:
        """Keep Alive every KATO / 2 while the admin queue lives (a late or failed one is
        logged; the controller, not the host, decides that the association is lost).

        With Traffic Based Keep Alive (CTRATT.TBKAS: any command restarts the controller's
        timer) look every KATO / 4 instead and send one only if no command completed since the
        last look, as the Linux host does (``comp_seen``): a command is then never more than
        about KATO / 2 older than the next one, and a busy controller gets no Keep Alive."""
        period = kato / 4 if traffic_based else kato / 2
        seen = self.completions()
        while self.admin.is_open:
            await asyncio.sleep(period)
            if traffic_based:
                now = self.completions()
                if now != seen:
                    seen = now
                    continue
            try:
                await self.keep_alive()
            except HostError as exc:
                if self.admin.error is not None:
                    return
                log.warning("keep alive: %s", exc)
            self.keep_alives_sent += 1
            seen = self.completions()  # its own completion is not traffic

    async def close(self) -> None:
        """Disconnect: I/O queues, normal shutdown (CC.SHN), admin queue.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keep_alive
        for q in self.io_queues:
            q.close("controller disconnect")
        if self.admin.is_open and self.cc & CC.EN:
            try:
                await self._shutdown()
            except (HostError, TimeoutError) as exc:
                log.warning("shutdown of controller %d: %s", self.cntlid, exc)
        self.admin.close("controller disconnect")

    async def _shutdown(self) -> None:
        self.cc = (self.cc & ~CC.SHN_MASK) | CC.SHN_NORMAL
        await self.set_property(Prop.CC, self.cc)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        delay = 0.001
        while True:
            csts = await self.get_property(Prop.CSTS)
            if csts & CSTS.SHST_MASK == CSTS.SHST_CMPLT:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"CSTS.SHST not complete after {SHUTDOWN_TIMEOUT:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


async def _enable(ctrl: Controller) -> None:
    """CC.EN = 1 with the Linux host's CC fields, then wait for CSTS.RDY within CAP.TO."""
    ctrl.cc = CC_ENABLE
    await ctrl.set_property(Prop.CC, ctrl.cc)
    limit = (ctrl.cap.to + 1) * 0.5
    deadline = time.monotonic() + limit
    delay = 0.001
    while True:
        csts = await ctrl.get_property(Prop.CSTS)
        if csts & CSTS.CFS:
            raise HostError(f"controller {ctrl.cntlid}: fatal status (CSTS {csts:#x}) on enable")
        if csts & CSTS.RDY:
            return
        if time.monotonic() > deadline:
            raise TransportError(
                f"controller {ctrl.cntlid}: CSTS.RDY not set within CAP.TO ({limit:g} s)"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def rdma_queue_class() -> type[RdmaHostQueue]:
    """:class:`~nvmf.host.rdma_queue.RdmaHostQueue`, imported on first use: only NVMe/RDMA
    needs rdma-core's pyverbs, and its absence is a :class:`HostError` that says what to
    install."""
    try:
        from nvmf.host.rdma_queue import RdmaHostQueue
    except ImportError as exc:
        raise HostError(
            f"-t rdma needs rdma-core's Python binding pyverbs ({exc}): install the Debian "
            "package python3-pyverbs (scripts/setup installs it and links it into the "
            "project's virtual environment)"
        ) from None
    return RdmaHostQueue


async def _connect_queue(
    opts: ConnectOptions,
    *,
    qid: int,
    queue_size: int,
    cntlid: int,
    hostnqn: str,
    hostid: uuid.UUID,
    incapsule_size: int,
    t_ids: Iterator[int],
) -> tuple[AnyQueue, int]:
    """Open one queue, send its Connect and, when the controller asks for it, authenticate
    (with a transaction id from ``t_ids``); returns the queue and the CNTLID it answered."""
    q: AnyQueue
    if opts.trtype == "rdma":
        q = await rdma_queue_class().open(
            opts.traddr,
            opts.trsvcid,
            qid=qid,
            depth=queue_size - 1,
            incapsule_size=incapsule_size if qid else 0,
            timeout=opts.timeout,
            io_timeout=opts.io_timeout if qid else None,
            invalidate=opts.rdma_invalidate,
            cntlid=cntlid,
        )
    else:
        q = await HostQueue.open(
            opts.traddr,
            opts.trsvcid,
            qid=qid,
            depth=queue_size - 1,
            hdgst=opts.hdr_digest,
            ddgst=opts.data_digest,
            incapsule_size=incapsule_size,
            timeout=opts.timeout,
            io_timeout=opts.io_timeout if qid else None,
        )
    try:
        kato_ms = round(opts.kato * 1000) if qid == 0 else 0
        data = c.connect_data(hostid.bytes, cntlid, opts.subnqn, hostnqn)
        async with asyncio.timeout(opts.timeout):
            comp = await q.submit(
                c.connect(qid, queue_size - 1, kato_ms=kato_ms),
                data_out=data,
                command=f"Connect qid {qid}",
            )
    except TimeoutError:
        q.close("Connect timed out")
        raise TransportError(f"Connect qid {qid}: no completion in {opts.timeout:g} s") from None
    except BaseException:
        q.close("Connect failed")
        raise
    try:
        await _authenticate_if_asked(q, opts, comp.dw0, qid=qid, hostnqn=hostnqn, t_ids=t_ids)
    except BaseException:
        q.close("authentication failed")
        raise
    return q, comp.dw0 & 0xFFFF


async def _authenticate_if_asked(
    q: AnyQueue, opts: ConnectOptions, dw0: int, *, qid: int, hostnqn: str, t_ids: Iterator[int]
) -> None:
    """DH-HMAC-CHAP on ``q`` when its Connect response's AUTHREQ (DW0) asks for it, as the Linux
    host's ``nvmf_connect_admin_queue`` / ``nvmf_connect_io_queue`` decide."""
    keys = opts.dhchap_keys
    if dw0 & CONNECT_AUTHREQ_ASCR:
        raise AuthenticationError(
            qid,
            "the controller requires secure channel concatenation (Connect AUTHREQ.ASCR), "
            "which this host does not implement",
        )
    if not dw0 & CONNECT_AUTHREQ_ATR:
        if qid == 0 and keys is not None and keys.bidirectional:
            log.warning(
                "the controller did not ask for DH-HMAC-CHAP (Connect AUTHREQ.ATR clear): "
                "it was not authenticated with the controller secret"
            )
        return
    if keys is None:
        raise AuthenticationError(
            qid,
            "the controller requires authentication (Connect AUTHREQ.ATR) and no host secret "
            "was given (--dhchap-secret)",
        )
    await authenticate(
        q,
        keys,
        qid=qid,
        t_id=next(t_ids),
        hostnqn=hostnqn,
        subnqn=opts.subnqn,
        timeout=opts.timeout,
    )


async def connect(
    traddr: str,
    subnqn: str,
    *,
    trsvcid: str | int = 4420,
    hostnqn: str | None = None,
    hostid: uuid.UUID | None = None,
    nr_io_queues: int | None = None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    kato: float = DEFAULT_KATO,
    hdr_digest: bool = False,
    data_digest: bool = False,
    timeout: float = 10.0,
    io_timeout: float | None = 30.0,
    trtype: str = "tcp",
    dhchap_secret: str | DhchapSecret | None = None,
    dhchap_ctrl_secret: str | DhchapSecret | None = None,
) -> Controller:
    """Connect to ``subnqn`` at ``traddr:trsvcid`` and bring the controller up (see the module
    docstring); the keywords are :class:`ConnectOptions`' fields.  The DH-HMAC-CHAP secrets may
    be given as ``DHHC-1:XX:BASE64:`` text (a malformed one is a ValueError naming the
    keyword, never its value)."""
    return await connect_with(
        ConnectOptions(
            traddr,
            subnqn,
            trsvcid=trsvcid,
            hostnqn=hostnqn,
            hostid=hostid,
            nr_io_queues=nr_io_queues,
            queue_size=queue_size,
            kato=kato,
            hdr_digest=hdr_digest,
            data_digest=data_digest,
            timeout=timeout,
            io_timeout=io_timeout,
            trtype=trtype,
            dhchap_secret=parse_secret(dhchap_secret, "dhchap_secret"),
            dhchap_ctrl_secret=parse_secret(dhchap_ctrl_secret, "dhchap_ctrl_secret"),
        )
    )


def parse_secret(secret: str | DhchapSecret | None, name: str) -> DhchapSecret | None:
    """``secret`` parsed from its ``DHHC-1`` text (ValueError naming ``name`` when malformed)."""
    if secret is None or isinstance(secret, DhchapSecret):
        return secret
    return DhchapSecret.parse(secret, name)


async def connect_with(opts: ConnectOptions, *, io_queues: bool = True) -> Controller:
    """:func:`connect` from a :class:`ConnectOptions`; ``io_queues=False`` stops after the admin
    queue is up (what a discovery controller needs)."""
    return await _bring_up(opts, io_queues=io_queues)


async def _bring_up(opts: ConnectOptions, *, io_queues: bool) -> Controller:
    hostnqn = opts.hostnqn or default_hostnqn()
    hostid = opts.hostid or default_hostid(hostnqn)
    if opts.queue_size < 2:
        raise ValueError(f"queue size {opts.queue_size} must be at least 2")
    if opts.trtype not in TRTYPES:
        raise ValueError(f"transport {opts.trtype!r}: this host speaks {', '.join(TRTYPES)}")
    if opts.trtype == "rdma" and (opts.hdr_digest or opts.data_digest):
        raise ValueError("NVMe/RDMA has no header or data digests (-g, -G are NVMe/TCP's)")
    t_ids = itertools.count()
    admin, cntlid = await _connect_queue(
        opts,
        qid=0,
        queue_size=ADMIN_QUEUE_SIZE,
        cntlid=CNTLID_DYNAMIC,
        hostnqn=hostnqn,
        hostid=hostid,
        # NVMe/RDMA: no in-capsule data on the admin queue (the Linux target posts no room).
        incapsule_size=0 if opts.trtype == "rdma" else ADMIN_INCAPSULE_SIZE,
        t_ids=t_ids,
    )
    ctrl = Controller(opts, admin, cntlid, Cap(mqes=0), hostnqn, hostid, _t_ids=t_ids)
    ctrl.transport_max_transfer = getattr(admin, "max_transfer", 0)
    try:
        ctrl.cap = Cap.decode(await ctrl.get_property(Prop.CAP, 8))
        await _enable(ctrl)
        await ctrl.identify_controller()
        ctrl._start_keep_alive()
        if io_queues:
            await _connect_io_queues(ctrl)
    except BaseException:
        await ctrl.close()
        raise
    return ctrl


async def _connect_io_queues(ctrl: Controller) -> None:
    opts = ctrl.options
    wanted = opts.nr_io_queues if opts.nr_io_queues is not None else (os.cpu_count() or 1)
    if wanted <= 0:
        return
    grant = await ctrl.set_features(FeatureId.NUM_QUEUES, (wanted - 1) | ((wanted - 1) << 16))
    ctrl.granted_io_queues = min(grant & 0xFFFF, grant >> 16) + 1
    count = min(wanted, ctrl.granted_io_queues)
    size = min(opts.queue_size, ctrl.cap.mqes + 1)
    if ctrl.id_ctrl is not None and ctrl.id_ctrl.maxcmd:
        size = min(size, ctrl.id_ctrl.maxcmd)
    for qid in range(1, count + 1):
        q, _ = await _connect_queue(
            opts,
            qid=qid,
            queue_size=size,
            cntlid=ctrl.cntlid,
            hostnqn=ctrl.hostnqn,
            hostid=ctrl.hostid,
            incapsule_size=ctrl.io_incapsule_size,
            t_ids=ctrl._t_ids,
        )
        ctrl.io_queues.append(q)
