"""One host NVMe/RDMA queue: an RDMA CM connection and a reliable-connected queue pair, with
rdma-core's pyverbs on the asyncio event loop.

:class:`RdmaHostQueue` is the host side of one NVMe queue (admin, qid 0, or one I/O queue) over
RDMA (NVMe over Fabrics RDMA Transport Binding 1.0), the unit the Linux host calls ``struct
nvme_rdma_queue``.  It offers :class:`~nvmf.host.queue.HostQueue`'s interface to
:mod:`nvmf.host.controller` (``open``, ``submit``, ``close``, ``is_open``, ``error``,
``outstanding``, ``depth``, ``closed``), so the controller's bring-up is the same over either
fabric.

**Connection** (RDMA CM's active side, ``nvme_rdma_cm_handler``): resolve the address, then
the route (the CM ID is then bound to an RDMA device); this queue opens that device, creates
its protection domain, completion queue and queue pair (not the CM's: the queue pair must be
an extended one to bind memory windows), moves the QP to INIT, posts ``HRQSIZE`` receives for
responses and connects with the RDMA_CM_REQUEST private data (:mod:`nvmf.wire.rdma`).  The
controller's CONNECT_RESPONSE carries CRQSIZE; the QP goes to RTR and RTS with the attributes
RDMA CM computed and ``rdma_establish`` completes the handshake.  A REJECTED event becomes a
:class:`TransportError` naming the NVMe/RDMA status (:func:`~nvmf.host.rdma_capsule.rejected`).

**Memory**, all registered once per queue when it opens (nothing is registered per I/O): one
anonymous mapping holds the response receive buffers (16-byte CQEs), one command buffer per
CID (the SQE and, on I/O queues, room for in-capsule data) and one data buffer of
:data:`DATA_SLOT_SIZE` bytes per CID.  The caller's data is *copied* into the CID's data
buffer before a write and out of it after a read: a staging pool, the price of registering
once instead of per I/O (the Linux host maps each request's own pages with a fast
registration instead).  A command moves at most :data:`DATA_SLOT_SIZE` bytes; the controller
splits larger transfers (:attr:`Controller.max_transfer`).

**Commands** are SENDs of the command buffer; data rides in the capsule (writes that fit an I/O
queue's in-capsule size) or is named by a keyed SGL data block (:mod:`nvmf.host.rdma_capsule`).

**Remote invalidation.**  With ``invalidate`` (the default) and a device that has type 2
memory windows, each CID owns a memory window; a command with data binds it (BIND_MW work
request, posted in front of the SEND) to exactly that command's bytes with exactly the remote
access it needs, and its keyed SGL asks for invalidation (sub type Fh).  The controller answers
with SEND with Invalidate, the window is free again, and the receive completion says so
(``IBV_WC_WITH_INV``; on Soft-RoCE the kernel's flag arrives as ``IBV_WC_IP_CSUM_OK``, see
:data:`_WITH_INV`): :attr:`invalidated_completions` counts them.  The memory region itself
then grants no remote access at all.  A response that did not invalidate leaves the window
bound; the host invalidates it locally before binding it again.  A window keeps its key across
binds: rxe checks a bind's "current key" against the kernel's, and libibverbs never learns of
the key a bind work request sets, so a changed key would fail the next bind.  Without memory
windows the memory region's own remote key goes in plain keyed SGLs (sub type 0h).

**Failure**: a work completion in error, a DISCONNECTED (or device removal) CM event, a
response for a CID not outstanding, an invalidation of a key not the command's: the queue fails
and every outstanding command fails with :class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import mmap
import struct
import time
from collections import deque
from typing import Any

import pyverbs.cm_enums as ce
import pyverbs.enums as ve
from pyverbs.cmid import CMID, AddrInfo, CMEvent, CMEventChannel, ConnParam
from pyverbs.cq import CQ, CompChannel
from pyverbs.device import Context
from pyverbs.mr import MR, MW, MWBindInfo
from pyverbs.pd import PD
from pyverbs.pyverbs_error import PyverbsError, PyverbsRDMAError
from pyverbs.qp import QPCap, QPEx, QPInitAttrEx
from pyverbs.wr import SGE, RecvWR

from nvmf.host.errors import TransportError
from nvmf.host.queue import Completion
from nvmf.host.rdma_capsule import (
    DataPath,
    choose_data_path,
    connect_request,
    rejected,
    set_incapsule_sgl,
    set_keyed_sgl,
    set_null_sgl,
)
from nvmf.host.slots import CidTable, Watchdog, byte_view, raise_for_status
from nvmf.transport.verbs_events import (
    CM_CHANNEL,
    COMPLETION_CHANNEL,
    open_channel,
    take_cq_events,
)
from nvmf.transport.verbs_wr import recv_wr
from nvmf.wire.rdma import decode_accept
from nvmf.wire.sqe import CQE, CQE_SIZE, OFF_CID, SQE_SIZE

log = logging.getLogger(__name__)

_CID = struct.Struct("<H")
#: Bytes one command may move: each CID's registered data buffer.  128 KiB is what the Linux
#: target's default MDTS-bound transfers and fio's large blocks need, and 127 of them (one
#: I/O queue of 128 entries) are 16 MiB of pinned memory.
DATA_SLOT_SIZE = 128 * 1024
#: Work request kinds (bits 31:24 of a work request id; the buffer or CID below them).
_RECV, _SEND, _BIND, _INV = 1, 2, 3, 4
_INDEX_MASK = (1 << 24) - 1
#: Completions taken per poll call.
POLL_BATCH = 32
#: RDMA CM timeouts for address and route resolution (milliseconds), as the Linux host's.
RESOLVE_TIMEOUT_MS = 3000
#: Retries on transport errors and receiver-not-ready (7: forever), as the Linux host asks.
RETRY_COUNT = 7
RNR_RETRY_COUNT = 7

#: RDMA CM event names by value, for messages.
_CM_NAMES = {
    getattr(ce, name): name.removeprefix("RDMA_CM_EVENT_")
    for name in dir(ce)
    if name.startswith("RDMA_CM_EVENT_")
}
#: Receive completion flags that mean "with invalidate".  IBV_WC_WITH_INV (1 << 3) is what
#: verbs define; Soft-RoCE (rxe, Linux 6.1 and rdma-core 44 alike) copies the kernel's flags
#: to user space unconverted, and the kernel's IB_WC_WITH_INVALIDATE is 1 << 2, which user
#: space reads as IBV_WC_IP_CSUM_OK.  That flag has no meaning on a reliable-connected QP
#: (only UD and raw packet QPs receive IP packets), so here it is taken for what rxe meant;
#: the invalidated key that comes with it is checked against the command's either way.
_WITH_INV = ve.IBV_WC_WITH_INV | ve.IBV_WC_IP_CSUM_OK
#: CM events whose private data matters here.
_WITH_DATA = {
    ce.RDMA_CM_EVENT_CONNECT_RESPONSE,
    ce.RDMA_CM_EVENT_ESTABLISHED,
    ce.RDMA_CM_EVENT_REJECTED,
}
#: CM events that end an established connection.
_ENDING = {
    ce.RDMA_CM_EVENT_DISCONNECTED,
    ce.RDMA_CM_EVENT_DEVICE_REMOVAL,
    ce.RDMA_CM_EVENT_TIMEWAIT_EXIT,
    ce.RDMA_CM_EVENT_ADDR_CHANGE,
}


def _address(view: memoryview) -> int:
    """The address of a writable buffer's first byte (for a memory region or an SGE)."""
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # release the export at once: the mapping is closed with the queue


class _Command:
    """One outstanding command: its CID, the future its submitter awaits, where a read's data
    goes once the response arrives, and whether its memory window was bound for it."""

    __slots__ = ("cid", "data_in", "future", "start", "window")

    def __init__(
        self, cid: int, future: asyncio.Future[Completion], data_in: memoryview | None
    ) -> None:
        self.cid = cid
        self.future = future
        self.data_in = data_in
        self.start = time.monotonic()
        #: The remote key of the memory window bound for this command (None: none bound).
        self.window: int | None = None


class RdmaHostQueue:
    """The host side of one NVMe/RDMA queue; see the module docstring.

    Create it with :meth:`open`.  ``depth`` is how many commands may be outstanding at once
    (the Connect's SQSIZE: the queue's entries minus one); ``incapsule_size`` how much write
    data a command capsule may carry (0 on the admin queue; IOCCSZ * 16 - 64 on I/O queues).
    """

    #: The most bytes one command may move (the controller splits larger transfers).
    max_transfer = DATA_SLOT_SIZE

    def __init__(
        self,
        *,
        qid: int,
        depth: int,
        incapsule_size: int = 0,
        io_timeout: float | None = None,
        invalidate: bool = True,
        name: str = "",
        cntlid: int = 0,
    ) -> None:
        if not 1 <= depth < 0xFFFF:
            raise ValueError(f"queue depth {depth} is not 1-65534")
        self.qid = qid
        self.depth = depth
        self.incapsule_size = incapsule_size if qid else 0
        self.io_timeout = io_timeout
        self.want_invalidate = invalidate
        self.name = name or f"rdma qid {qid}"
        self.loop = asyncio.get_running_loop()
        self.request = connect_request(qid, depth, cntlid)
        #: Receive buffers posted for responses (HRQSIZE).
        self.nrecv = self.request.hrqsize
        #: The controller's receive buffers for commands, from its accept.
        self.crqsize = 0
        #: Responses whose receive completion had IBV_WC_WITH_INV (the controller invalidated
        #: the command's key with SEND with Invalidate).
        self.invalidated_completions = 0
        #: Commands whose keyed SGL asked for invalidation (sub type Fh).
        self.invalidate_requests = 0
        #: How many response receive completions had each ``wc_flags`` value (evidence of
        #: what the device reports; see :data:`_WITH_INV`).
        self.recv_wc_flags: dict[int, int] = {}
        #: Whether keyed SGLs use memory windows and ask for invalidation (decided at open).
        self.uses_windows = False
        self.cids: CidTable[_Command] = CidTable(depth, self.loop)
        #: Per CID: its memory window's key when a response has not invalidated it yet.
        self._bound: list[int | None] = [None] * depth
        self._cm_events: deque[tuple[int, bytes]] = deque()
        self._cm_wakeup: asyncio.Future[None] | None = None
        self._established = False
        self._watchdog = Watchdog(self.loop, self.cids, io_timeout or 0.0, self._abort, self.name)
        self._readers: list[int] = []
        # Verbs objects, created by open().
        self.channel: Any = None
        self.cmid: Any = None
        self.ctx: Any = None
        self.pd: Any = None
        self.comp: Any = None
        self.cq: Any = None
        self.qp: Any = None
        self.mr: Any = None
        self._recv_wrs: list[RecvWR] = []
        self._send_sge: SGE | None = None
        self.windows: list[Any] = []
        self._mem: mmap.mmap | None = None
        self._view: memoryview | None = None
        #: Why the queue is closed (``None`` while it is open).
        self.error: TransportError | None = None
        self.closed = asyncio.Event()

    # -- life cycle ------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        traddr: str,
        trsvcid: str | int,
        *,
        qid: int,
        depth: int,
        incapsule_size: int = 0,
        timeout: float = 10.0,
        io_timeout: float | None = None,
        invalidate: bool = True,
        cntlid: int = 0,
    ) -> RdmaHostQueue:
        """Connect to the NVMe/RDMA controller at ``traddr:trsvcid`` (see the module doc); an
        I/O queue's connect request names ``cntlid``, its controller."""
        queue = cls(
            qid=qid,
            depth=depth,
            incapsule_size=incapsule_size,
            io_timeout=io_timeout,
            invalidate=invalidate,
            name=f"rdma {traddr}:{trsvcid} qid {qid}",
            cntlid=cntlid,
        )
        try:
            async with asyncio.timeout(timeout):
                await queue._connect(traddr, str(trsvcid))
        except TimeoutError:
            queue.close(f"no connection in {timeout:g} s")
            raise TransportError(f"{queue.name}: no connection in {timeout:g} s") from None
        except PyverbsError as exc:
            raise queue._abort(TransportError(f"{queue.name}: {exc}")) from exc
        except BaseException:
            queue.close("connect failed")
            raise
        if io_timeout:
            queue._watchdog.arm()
        return queue

    async def _connect(self, traddr: str, trsvcid: str) -> None:
        self.channel, cm_fd = open_channel(CMEventChannel, CM_CHANNEL)
        self.cmid = CMID(creator=self.channel, port_space=ce.RDMA_PS_TCP)
        self._watch(cm_fd, self._on_cm_event)
        try:
            info = AddrInfo(dst=traddr, dst_service=trsvcid, port_space=ce.RDMA_PS_TCP)
        except PyverbsError as exc:
            raise TransportError(f"{self.name}: cannot resolve {traddr}: {exc}") from exc
        self.cmid.resolve_addr(info, RESOLVE_TIMEOUT_MS)
        await self._expect(ce.RDMA_CM_EVENT_ADDR_RESOLVED)
        self.cmid.resolve_route(RESOLVE_TIMEOUT_MS)
        await self._expect(ce.RDMA_CM_EVENT_ROUTE_RESOLVED)
        self._setup_verbs(self.cmid.dev_name)
        param = ConnParam(
            resources=self._rd_atom,
            depth=0,
            retry=RETRY_COUNT,
            rnr_retry=RNR_RETRY_COUNT,
            qp_num=self.qp.qp_num,
            data_len=32,
        )
        param.set_private_data(self.request.encode())
        self.cmid.connect(param)
        kind, data = await self._expect(
            ce.RDMA_CM_EVENT_CONNECT_RESPONSE, ce.RDMA_CM_EVENT_ESTABLISHED
        )
        try:
            self.crqsize = decode_accept(data)
        except ValueError as exc:
            raise TransportError(f"{self.name}: {exc}") from None
        if kind == ce.RDMA_CM_EVENT_CONNECT_RESPONSE:
            # Our own QP: RDMA CM leaves RTR, RTS and the handshake's last step to us.  INIT
            # again first, as librdmacm and the kernel do (``ucma_modify_qp_rtr``,
            # ``cma_modify_qp_rtr``): the INIT before the connect request got no remote access
            # rights (no IB CM connection existed yet), and without REMOTE_READ the
            # controller's RDMA READ of a write's data fails with "remote invalid request".
            for state in (ve.IBV_QPS_INIT, ve.IBV_QPS_RTR, ve.IBV_QPS_RTS):
                attr, mask = self.cmid.init_qp_attr(state)
                self.qp.modify(attr, mask)
            self.cmid.establish()
        self._established = True
        if self.crqsize and self.crqsize < self.depth:
            log.info(
                "%s: controller posted %d receives for %d", self.name, self.crqsize, self.depth
            )

    def _setup_verbs(self, device: str) -> None:
        """The device's context, a protection domain, the completion queue and its channel,
        the registered memory, the memory windows and the queue pair in INIT with the
        response receives posted."""
        self.ctx = Context(name=device)
        attr = self.ctx.query_device()
        self._rd_atom = min(int(attr.max_qp_rd_atom), 255)
        self.pd = PD(self.ctx)
        self.comp, cq_fd = open_channel(lambda: CompChannel(self.ctx), COMPLETION_CHANNEL)
        send_wrs = 3 * self.depth + 1  # per command: invalidate, bind, SEND
        self.cq = CQ(self.ctx, self.nrecv + send_wrs, None, self.comp, 0)
        self.cq.req_notify()
        self._watch(cq_fd, self._on_cq_event)
        windows = self.want_invalidate and bool(
            int(attr.device_cap_flags) & ve.IBV_DEVICE_MEM_WINDOW_TYPE_2B
        )
        if windows:
            try:
                self.windows = [MW(self.pd, ve.IBV_MW_TYPE_2) for _ in range(self.depth)]
            except PyverbsError as exc:
                log.info("%s: no type 2 memory windows (%s): plain keyed SGLs", self.name, exc)
                windows = False
        # The memory: responses, commands, data; page-aligned data buffers.
        self.cmd_size = -(-(SQE_SIZE + self.incapsule_size) // 64) * 64
        recv_bytes = self.nrecv * CQE_SIZE
        self._cmd_off = recv_bytes
        data_off = -(-(recv_bytes + self.depth * self.cmd_size) // mmap.PAGESIZE) * mmap.PAGESIZE
        self._data_off = data_off
        size = data_off + self.depth * DATA_SLOT_SIZE
        self._mem = mmap.mmap(-1, size)
        self._view = memoryview(self._mem)
        self.base = _address(self._view)
        access = ve.IBV_ACCESS_LOCAL_WRITE
        if windows:
            access |= ve.IBV_ACCESS_MW_BIND
        else:
            access |= ve.IBV_ACCESS_REMOTE_READ | ve.IBV_ACCESS_REMOTE_WRITE
        self.mr = MR(self.pd, size, access, address=self.base)
        lkey = self.mr.lkey
        self._recv_wrs = [
            recv_wr(_RECV << 24 | i, self.base + i * CQE_SIZE, CQE_SIZE, lkey)
            for i in range(self.nrecv)
        ]
        # The SGE of every command's SEND: the values are copied into the work request as it
        # is built (ibv_wr_set_sge), so one serves them all (see nvmf.transport.verbs_wr).
        self._send_sge = SGE(0, 0, lkey)
        self._send_ops = ve.IBV_QP_EX_WITH_SEND
        if windows:
            self._send_ops |= ve.IBV_QP_EX_WITH_BIND_MW | ve.IBV_QP_EX_WITH_LOCAL_INV
        cap = QPCap(max_send_wr=send_wrs, max_recv_wr=self.nrecv, max_send_sge=1, max_recv_sge=1)
        init = QPInitAttrEx(
            qp_type=ve.IBV_QPT_RC,
            scq=self.cq,
            rcq=self.cq,
            cap=cap,
            pd=self.pd,
            comp_mask=ve.IBV_QP_INIT_ATTR_PD | ve.IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
            send_ops_flags=self._send_ops,
        )
        self.qp = QPEx(self.ctx, init)
        self.uses_windows = windows
        attr_init, mask = self.cmid.init_qp_attr(ve.IBV_QPS_INIT)
        self.qp.modify(attr_init, mask)
        for wr in self._recv_wrs:
            self.qp.post_recv(wr)

    def close(self, reason: str = "closed by the host") -> None:
        """Disconnect; outstanding commands fail with :class:`TransportError`."""
        self._abort(TransportError(f"{self.name}: {reason}"))

    @property
    def is_open(self) -> bool:
        return self.error is None

    @property
    def outstanding(self) -> int:
        """Commands submitted and not yet completed (including abandoned ones)."""
        return self.cids.outstanding

    def _abort(self, exc: TransportError) -> TransportError:
        """Fail the queue once: disconnect, fail every command and waiter, free the verbs
        objects (queue pair first: no work request touches the memory after it is gone)."""
        if self.error is not None:
            return self.error
        self.error = exc
        self._watchdog.cancel()
        for fd in self._readers:
            self.loop.remove_reader(fd)
        self._readers.clear()
        if self._cm_wakeup is not None and not self._cm_wakeup.done():
            self._cm_wakeup.set_exception(exc)
        self.cids.fail(exc)
        self._release_verbs()
        self.closed.set()
        return exc

    def _release_verbs(self) -> None:
        if self.cmid is not None and self._established:
            try:
                self.cmid.disconnect()
            except PyverbsError:
                pass  # the controller left first
        for obj in (self.qp, *self.windows, self.mr, self.cq, self.comp, self.pd, self.ctx):
            if obj is None:
                continue
            try:
                obj.close()
            except PyverbsError as err:
                log.debug("%s: closing %s: %s", self.name, type(obj).__name__, err)
        self.qp = self.mr = self.cq = self.comp = self.pd = self.ctx = None
        self.windows = []
        for wr in self._recv_wrs:  # pyverbs frees their C memory only when told
            wr.close()
        self._recv_wrs = []
        if self._send_sge is not None:
            self._send_sge.close()
            self._send_sge = None
        for obj in (self.cmid, self.channel):
            if obj is not None:
                try:
                    obj.close()
                except PyverbsError as err:
                    log.debug("%s: closing %s: %s", self.name, type(obj).__name__, err)
        self.cmid = self.channel = None
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mem is not None:
            self._mem.close()
            self._mem = None

    # -- events ----------------------------------------------------------------------------------
    def _watch(self, fd: int, callback: Any) -> None:
        self.loop.add_reader(fd, callback)
        self._readers.append(fd)

    def _on_cm_event(self) -> None:
        """RDMA CM events: queued for :meth:`_expect` while connecting; afterwards the end of
        the connection fails the queue."""
        while self.error is None:
            try:
                event = CMEvent(self.channel)
            except PyverbsRDMAError as exc:
                if exc.error_code == errno.EAGAIN:
                    return
                self._abort(TransportError(f"{self.name}: RDMA CM event channel: {exc}"))
                return
            kind = event.event_type
            data = bytes(event.private_data) if kind in _WITH_DATA else b""
            event.ack_cm_event()
            log.debug("%s: RDMA CM %s, private data %s", self.name, _CM_NAMES.get(kind), data.hex())
            if self._established:
                if kind in _ENDING:
                    self._abort(
                        TransportError(
                            f"{self.name}: the controller disconnected ({_CM_NAMES.get(kind)})"
                        )
                    )
                    return
                continue
            self._cm_events.append((kind, data))
            if self._cm_wakeup is not None and not self._cm_wakeup.done():
                self._cm_wakeup.set_result(None)

    async def _expect(self, *kinds: int) -> tuple[int, bytes]:
        """The private data of the next CM event, which must be one of ``kinds``; a reject or
        an error event becomes the :class:`TransportError` that says what went wrong."""
        while not self._cm_events:
            if self.error is not None:
                raise self.error
            self._cm_wakeup = self.loop.create_future()
            await self._cm_wakeup
        kind, data = self._cm_events.popleft()
        if kind in kinds:
            return kind, data
        if kind == ce.RDMA_CM_EVENT_REJECTED:
            raise rejected(self.name, data)
        what = _CM_NAMES.get(kind, str(kind))
        hint = {
            ce.RDMA_CM_EVENT_ADDR_ERROR: " (no RDMA device reaches that address?)",
            ce.RDMA_CM_EVENT_ROUTE_ERROR: " (no route to it over RDMA)",
            ce.RDMA_CM_EVENT_UNREACHABLE: " (the controller does not answer)",
            ce.RDMA_CM_EVENT_CONNECT_ERROR: "",
        }.get(kind, "")
        expected = " or ".join(_CM_NAMES.get(k, str(k)) for k in kinds)
        raise TransportError(f"{self.name}: RDMA CM {what}{hint}, expected {expected}")

    def _on_cq_event(self) -> None:
        """Completion events: acknowledge them, re-arm, then take every completion queued."""
        try:
            take_cq_events(self.comp, self.cq)
        except PyverbsRDMAError as exc:
            self._abort(TransportError(f"{self.name}: completion channel: {exc}"))
            return
        while self.error is None:
            n, wcs = self.cq.poll(POLL_BATCH)
            for wc in wcs:
                self._completion(wc)
                if not self.is_open:  # that completion failed the queue
                    return
            if n < POLL_BATCH:
                return

    def _completion(self, wc: Any) -> None:
        kind = (wc.wr_id >> 24) & 0xFF
        index = wc.wr_id & _INDEX_MASK
        if wc.status != ve.IBV_WC_SUCCESS:
            what = {_RECV: "receive", _SEND: "send", _BIND: "memory window bind"}.get(
                kind, "local invalidate"
            )
            self._abort(
                TransportError(
                    f"{self.name}: {what} failed: work completion status {wc.status} "
                    f"(vendor error {wc.vendor_err:#x})"
                )
            )
            return
        if kind == _RECV:
            self._response(index, wc)

    def _response(self, buf: int, wc: Any) -> None:
        """A response capsule in receive buffer ``buf``: complete its command, post the
        buffer again."""
        assert self._view is not None
        if wc.byte_len < CQE_SIZE:
            self._abort(TransportError(f"{self.name}: a {wc.byte_len}-byte response"))
            return
        dw0, dw1, sqhd, sqid, cid, status = CQE.unpack_from(self._view, buf * CQE_SIZE)
        cmd = self.cids.get(cid)
        if cmd is None:
            self._abort(TransportError(f"{self.name}: a response for cid {cid}, not outstanding"))
            return
        flags = int(wc.wc_flags)
        self.recv_wc_flags[flags] = self.recv_wc_flags.get(flags, 0) + 1
        if flags & _WITH_INV:
            rkey = int(wc.imm_data)  # the union's invalidated_rkey
            if cmd.window is None or rkey != cmd.window:
                self._abort(
                    TransportError(
                        f"{self.name}: the controller invalidated key {rkey:#x}, not cid {cid}'s"
                    )
                )
                return
            self.invalidated_completions += 1
            self._bound[cid] = None
        try:
            self.qp.post_recv(self._recv_wrs[buf])
        except PyverbsError as exc:
            self._abort(TransportError(f"{self.name}: cannot post a receive: {exc}"))
            return
        if cmd.data_in is not None:
            n = len(cmd.data_in)
            start = self._data_off + cid * DATA_SLOT_SIZE
            cmd.data_in[:] = self._view[start : start + n]
        self.cids.release(cid)
        if not cmd.future.done():
            cmd.future.set_result(Completion(dw0, dw1, sqhd, sqid, cid, status >> 1))

    # -- submission ------------------------------------------------------------------------------
    async def submit(
        self,
        sqe: bytearray,
        *,
        data_out: bytes | bytearray | memoryview | None = None,
        data_in: bytearray | memoryview | None = None,
        command: str = "command",
        check: bool = True,
    ) -> Completion:
        """Send the 64-byte command ``sqe`` and wait for its completion.

        ``data_out`` is host to controller data (in the capsule when it fits an I/O queue's
        in-capsule size, else copied to the CID's registered buffer and named by a keyed SGL);
        ``data_in`` the buffer controller to host data is copied into when the response
        arrives.  The CID, PSDT and DPTR fields of ``sqe`` are filled here.  With ``check`` a
        non-zero status raises :class:`NvmeError`.  Cancelling the caller does not recall the
        command: its CID stays taken until the controller completes it or the queue closes.
        """
        if self.error is not None:
            raise self.error
        out = byte_view(data_out, False) if data_out is not None else None
        inp = byte_view(data_in, True) if data_in is not None else None
        out_len = len(out) if out is not None else 0
        in_len = len(inp) if inp is not None else 0
        if max(out_len, in_len) > DATA_SLOT_SIZE:
            raise ValueError(
                f"{command}: {max(out_len, in_len)} bytes in one command; NVMe/RDMA queues "
                f"here move at most {DATA_SLOT_SIZE}"
            )
        path = choose_data_path(
            out_length=out_len, in_length=in_len, incapsule_size=self.incapsule_size, qid=self.qid
        )
        cid = await self.cids.take()
        future: asyncio.Future[Completion] = self.loop.create_future()
        cmd = _Command(cid, future, inp if in_len else None)
        self.cids.hold(cmd)
        _CID.pack_into(sqe, OFF_CID, cid)
        try:
            self._post_command(cmd, sqe, path, out, out_len or in_len)
        except PyverbsError as exc:
            raise self._abort(TransportError(f"{self.name}: cannot post {command}: {exc}")) from exc
        completion = await future
        if check:
            raise_for_status(completion.status_field, completion.dw0, command)
        return completion

    def _post_command(
        self, cmd: _Command, sqe: bytearray, path: DataPath, out: memoryview | None, length: int
    ) -> None:
        """Fill DPTR, copy the data where the controller will find it, post (bind and) SEND."""
        assert self._view is not None
        view = self._view
        cid = cmd.cid
        cmd_start = self._cmd_off + cid * self.cmd_size
        send_len = SQE_SIZE
        qp = self.qp
        qp.wr_start()
        if path is DataPath.NONE:
            set_null_sgl(sqe)
        elif path is DataPath.INCAPSULE:
            assert out is not None
            set_incapsule_sgl(sqe, length)
            view[cmd_start + SQE_SIZE : cmd_start + SQE_SIZE + length] = out
            send_len += length
        else:
            data_addr = self.base + self._data_off + cid * DATA_SLOT_SIZE
            if out is not None:
                start = self._data_off + cid * DATA_SLOT_SIZE
                view[start : start + length] = out
            if self.uses_windows:
                window = self.windows[cid]
                stale = self._bound[cid]
                if stale is not None:  # the last response did not invalidate it
                    qp.wr_id = _INV << 24 | cid
                    qp.wr_flags = 0
                    qp.wr_local_inv(stale)
                access = (
                    ve.IBV_ACCESS_REMOTE_READ if out is not None else ve.IBV_ACCESS_REMOTE_WRITE
                )
                qp.wr_id = _BIND << 24 | cid
                qp.wr_flags = 0
                qp.wr_bind_mw(window, window.rkey, MWBindInfo(self.mr, data_addr, length, access))
                cmd.window = self._bound[cid] = window.rkey
                set_keyed_sgl(sqe, data_addr, length, window.rkey, invalidate=True)
                self.invalidate_requests += 1
            else:
                set_keyed_sgl(sqe, data_addr, length, self.mr.rkey)
        view[cmd_start : cmd_start + SQE_SIZE] = sqe
        qp.wr_id = _SEND << 24 | cid
        qp.wr_flags = ve.IBV_SEND_SIGNALED
        qp.wr_send()
        sge = self._send_sge
        assert sge is not None  # made with the queue pair, freed with it
        sge.addr, sge.length = self.base + cmd_start, send_len
        qp.wr_set_sge(sge)
        qp.wr_complete()
