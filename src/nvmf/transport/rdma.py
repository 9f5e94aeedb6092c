"""NVMe/RDMA transport (NVMe over Fabrics RDMA Transport Binding 1.0) on rdma-core's pyverbs.

One RDMA CM listener per port; one reliable-connected queue pair per NVMe queue.  How a queue
works (Linux ``drivers/nvme/target/rdma.c`` is the reference peer):

* **Connection.**  A connect request's private data (RECFMT, QID, HRQSIZE, HSQSIZE:
  :mod:`nvmf.wire.rdma`) is checked before anything is allocated; a bad one is rejected with
  its NVMe/RDMA status.  Otherwise the queue's QP is created in *this process's* protection
  domain (not by the CM: the same code then serves a QP that an offload worker creates, see
  docs/rdma.md), moved to INIT, RTR and RTS with the attributes RDMA CM computes for the
  connection (``rdma_init_qp_attr``), given HSQSIZE + 1 posted receives, and only then
  accepted with CRQSIZE = HSQSIZE + 1.
* **Commands** arrive by SEND into the posted receive buffers: 64 bytes of SQE, then up to the
  port's ``inline_data_size`` of in-capsule data on I/O queues (none on the admin queue, as
  the Linux host sends none there).  The SQE is copied into a request; the buffer is posted
  again at once unless it holds in-capsule data, which the command uses where it lies until
  it completes.
* **Data** moves through keyed SGL data blocks (the host's address, length and remote key):
  RDMA READ from the host into the request's staging buffer for a Write, RDMA WRITE from it
  for a Read.  The staging pool's whole region is registered once per device and process;
  nothing is registered per I/O.
* **Responses** are SENDs of the 16-byte CQE from a per-request response buffer, posted after
  a Read's RDMA WRITE on the same queue pair (ordered: the host sees the data before the
  completion), as SEND with Invalidate when the command's SGL asked for it (keyed SGL sub
  type Fh).  A request, its staging buffer and its response buffer are free again when the
  SEND completes; each queue has twice HSQSIZE + 1 of them, as Linux's target does, because a
  host may reuse its SQ slot before that completion arrives here.
* **Failures.**  A work request that fails (a key the host never registered, a host gone
  mid-transfer) puts the QP in the error state: that queue closes, the others never notice.
  A host's disconnect arrives as an RDMA CM event that pyverbs 44 does not tie to its
  connection, so each such event has every queue of the port ask the CM whether its
  connection still stands (:meth:`RdmaQueue.connected`).

Completions come from one completion queue per device and process, whose channel the event
loop watches (:mod:`nvmf.transport.verbs_events`); work request ids carry the queue, the kind
and the slot, so a completion costs one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import mmap
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyverbs.cm_enums as ce
import pyverbs.enums as ve
from pyverbs.cmid import CMID, AddrInfo, CMEvent, CMEventChannel, ConnParam
from pyverbs.cq import CQ, CompChannel
from pyverbs.device import Context
from pyverbs.mr import MR
from pyverbs.pd import PD
from pyverbs.pyverbs_error import PyverbsError, PyverbsRDMAError
from pyverbs.qp import QP, QPCap, QPInitAttr
from pyverbs.wr import SGE

from nvmf.protocol.request import Request, map_incapsule
from nvmf.transport.base import (
    DataDone,
    FabricQueue,
    Placement,
    PortInfo,
    QueueExport,
    QueuePlacer,
    TransportCaps,
    end_queue_on_bug,
)
from nvmf.transport.verbs_events import (
    CM_CHANNEL,
    COMPLETION_CHANNEL,
    open_channel,
    take_cq_events,
)
from nvmf.transport.verbs_qp import QpTransition
from nvmf.transport.verbs_wr import SlotWrs, recv_wr
from nvmf.wire.fabrics import (
    CONNECT_OFF_QID,
    CONNECT_OFF_SQSIZE,
    ConnectCommand,
    connect_invalid_parameters,
)
from nvmf.wire.opcodes import AdminOpcode, FabricsType
from nvmf.wire.rdma import CmRequest, CmStatus, check_request, encode_accept, encode_reject
from nvmf.wire.sqe import (
    CQE_SIZE,
    FLAGS_CHECKED,
    OFF_DPTR,
    OFF_FLAGS,
    PSDT_SGL_MPTR_CONTIG,
    SGL_INCAPSULE,
    SGL_RDMA_KEYED,
    SGL_RDMA_KEYED_INVALIDATE,
    SQE_SIZE,
)
from nvmf.wire.status import SC, SUCCESS, Status, error

if TYPE_CHECKING:
    from nvmf.memory.source import Region
    from nvmf.memory.staging import StagingBuffer
    from nvmf.transport.base import ListenPort, QueueOwner, QueueState

log = logging.getLogger(__name__)

#: What an unused request holds until a capsule loads it.
_BLANK_SQE = bytes(SQE_SIZE)
#: The keyed SGL data block's KEY (bytes 11:8 of the descriptor, at SQE offset 35).
_KEY = struct.Struct("<I")
_OFF_SGL_KEY = OFF_DPTR + 11
#: Work request kinds, in bits 31:24 of a work request id (the queue's number above them, the
#: slot below); an RDMA WRITE is 0.
_WRITE, _RECV, _READ, _SEND = 0, 1, 2, 3
_SLOT_MASK = (1 << 24) - 1
#: Completion queue entries per device and process: room for every queue's work requests.
CQ_ENTRIES = 8192
#: Completions taken per poll call.
POLL_BATCH = 32
#: Connection requests a listener keeps waiting.
BACKLOG = 128
#: Retries the host's QP makes on a transport error and on receiver-not-ready (7: forever).
RETRY_COUNT = 7
RNR_RETRY_COUNT = 7


def _address(view: memoryview) -> int:
    """The address of a writable buffer's first byte (for a memory region or an SGE)."""
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # release the buffer export at once: the mapping may be closed later


def _connected(cmid: CMID) -> bool:
    """Whether RDMA CM still has ``cmid``'s connection: it computes RTS attributes only for a
    connection being set up or established, not for one disconnected or timed out.  (pyverbs
    44 does not say which CM ID an event is for, so a disconnect is found by asking.)"""
    try:
        cmid.init_qp_attr(ve.IBV_QPS_RTS)
    except PyverbsError:
        return False
    return True


#: The QP states a passive side's QP goes through before the accept.
_STATES = (ve.IBV_QPS_INIT, ve.IBV_QPS_RTR, ve.IBV_QPS_RTS)


def _transitions(cmid: CMID) -> list[QpTransition]:
    return [QpTransition.of(*cmid.init_qp_attr(state)) for state in _STATES]


class _Device:
    """This process's use of one RDMA device: a context of its own, a protection domain, one
    completion queue with its channel watched by the event loop, and the staging regions
    registered in that domain (once each)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ctx = Context(name=name)
        self.pd = PD(self.ctx)
        attr = self.ctx.query_device()
        #: The most RDMA READs a queue pair of this device may have outstanding.
        self.max_rd_atomic = int(attr.max_qp_init_rd_atom)
        self.channel, self.fd = open_channel(lambda: CompChannel(self.ctx), COMPLETION_CHANNEL)
        #: Completion queue entries not yet promised to a queue (:meth:`reserve`).
        self.cq_free = min(CQ_ENTRIES, int(attr.max_cqe))
        self.cq = CQ(self.ctx, self.cq_free, None, self.channel, 0)
        self.cq.req_notify()
        #: Queues by their number (bits 63:32 of their work request ids).
        self.queues: dict[int, RdmaQueue] = {}
        self._next = 1
        #: What this device registered, to deregister on close.
        self._registered: list[tuple[Region, str]] = []
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._events)

    def reserve(self, entries: int) -> None:
        """Promise ``entries`` completion queue entries to a new queue (its receives and its
        signalled sends): more completions than the CQ holds would overflow it and break every
        queue of the device, so a queue that does not fit is refused (the connection is
        rejected with "resource not found")."""
        if entries > self.cq_free:
            raise OSError(
                errno.ENOSPC,
                f"{self.name}: the completion queue has room for {self.cq_free} more "
                f"completions, a queue needs {entries}",
            )
        self.cq_free -= entries

    def add(self, queue: RdmaQueue) -> int:
        number = self._next
        self._next += 1
        self.queues[number] = queue
        return number

    def register(self, region: Region) -> MR:
        """The memory region of ``region`` in this domain, registered the first time."""
        key = f"rdma:{self.name}"
        mr = region.registrations.get(key)
        if mr is None:
            mr = MR(self.pd, region.size, ve.IBV_ACCESS_LOCAL_WRITE, address=_address(region.view))
            region.registrations[key] = mr
            self._registered.append((region, key))
            if region.lkey is None:
                region.lkey, region.rkey = mr.lkey, mr.rkey
        return mr

    def _events(self) -> None:
        """Completion events: acknowledge them, re-arm, then take every completion queued."""
        try:
            take_cq_events(self.channel, self.cq)
        except PyverbsRDMAError as exc:
            self._broken(f"completion channel: {exc}")
            return
        queues = self.queues
        while True:
            n, wcs = self.cq.poll(POLL_BATCH)
            for wc in wcs:
                queue = queues.get(wc.wr_id >> 32)
                if queue is not None:  # else: a closed queue's flushed work request
                    try:
                        queue.completion(wc)
                    except Exception:  # the rest of the batch is other queues' completions
                        end_queue_on_bug(queue, "handling a work completion")
            if n < POLL_BATCH:
                return

    def _broken(self, reason: str) -> None:
        """The completion channel failed: nothing on this device completes any more, so its
        queues end (their hosts reconnect) rather than wait forever."""
        log.error("rdma %s: %s; closing its queues", self.name, reason)
        self.loop.remove_reader(self.fd)
        for queue in list(self.queues.values()):
            queue.close(reason)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        for region, key in self._registered:
            region.registrations.pop(key).close()
            region.lkey = region.rkey = None
        self.cq.close()
        self.channel.close()
        self.pd.close()
        self.ctx.close()


class RdmaQueue:
    """One NVMe/RDMA queue on the target: a :class:`~nvmf.transport.base.FabricQueue` over a
    reliable-connected queue pair (see the module docstring for its life)."""

    def __init__(
        self,
        device: _Device,
        request: CmRequest,
        port: ListenPort,
        owner: QueueOwner,
        on_close: Callable[[RdmaQueue], None],
        cmid: CMID | None = None,
    ) -> None:
        """Create the queue's buffers, memory region and QP (in RESET) and open its session.

        ``cmid`` is the connection's CM ID when this process holds it (the control plane
        serving a queue itself): closing the queue then disconnects it.  A queue placed in a
        worker has none; its ``on_close`` tells the control plane, which holds the ID."""
        self.device = device
        self.cmid = cmid
        self.port = port
        self.owner = owner
        self.loop = device.loop
        self.closed = False
        #: Closes the queue if no Connect came in time (armed by :meth:`connect`, again by
        #: each Connect that arrives).
        self._connect_timer: asyncio.TimerHandle | None = None
        self._connect_within = 0.0
        self._on_close = on_close
        self.requested_qid = request.qid
        self.depth = request.queue_depth
        incapsule = port.inline_data_size if request.qid else 0
        self.slot_size = SQE_SIZE + incapsule
        nreqs = 2 * self.depth
        #: Completions this queue can have outstanding: its receives, and per request one
        #: signalled RDMA READ or SEND (RDMA WRITEs are unsignalled).
        self.cq_entries = self.depth + 2 * nreqs
        device.reserve(self.cq_entries)
        self.number = 0
        try:
            self._setup(request, port, owner, nreqs)
        except BaseException:
            device.cq_free += self.cq_entries  # the connection is rejected: give it back
            device.queues.pop(self.number, None)
            raise

    def _setup(self, request: CmRequest, port: ListenPort, owner: QueueOwner, nreqs: int) -> None:
        """Buffers, memory region, requests, session and QP (the constructor's fallible part)."""
        device = self.device
        # Receive buffers, then response buffers: one mapping, one memory region.
        recv_bytes = self.depth * self.slot_size
        size = -(-(recv_bytes + nreqs * CQE_SIZE) // mmap.PAGESIZE) * mmap.PAGESIZE
        self._mem = mmap.mmap(-1, size)
        self._view = memoryview(self._mem)
        base = _address(self._view)
        self._mr = MR(device.pd, size, ve.IBV_ACCESS_LOCAL_WRITE, address=base)
        lkey = self._mr.lkey
        self._recv_views = [
            self._view[i * self.slot_size : (i + 1) * self.slot_size] for i in range(self.depth)
        ]
        self._resp_views = [
            self._view[recv_bytes + i * CQE_SIZE : recv_bytes + (i + 1) * CQE_SIZE]
            for i in range(nreqs)
        ]
        self.number = device.add(self)
        tag = self.number << 32
        self._recv_wrs = [
            recv_wr(tag | _RECV << 24 | i, base + i * self.slot_size, self.slot_size, lkey)
            for i in range(self.depth)
        ]
        self._resp_sges = [
            SGE(base + recv_bytes + i * CQE_SIZE, CQE_SIZE, lkey) for i in range(nreqs)
        ]
        self._wrs = SlotWrs(self._resp_sges, tag, _SEND, _READ, _WRITE)
        #: Requests by slot; the free ones; per slot the receive buffer a command's in-capsule
        #: data holds (-1: none), its SGL's remote key and whether the host asked for it to be
        #: invalidated, and the callback of a running RDMA READ.
        self._reqs = [Request(_BLANK_SQE) for _ in range(nreqs)]
        self._free = list(range(nreqs - 1, -1, -1))
        self._held_recv = [-1] * nreqs
        self._rkey = [0] * nreqs
        self._invalidate = [False] * nreqs
        self._fetching: dict[int, DataDone] = {}
        self.session: QueueState = owner.open_queue(self, port)
        # Payload is staged: the medium's own memory is not registered with the device.
        self.session.in_place = False
        self._staging_region = self.session.pool.region
        staging = device.register(self._staging_region)
        self._staging_base = _address(self._staging_region.view)
        self._staging_lkey = staging.lkey
        cq = device.cq
        cap = QPCap(
            max_send_wr=2 * nreqs + 1, max_recv_wr=self.depth, max_send_sge=1, max_recv_sge=1
        )
        self.qp = QP(device.pd, QPInitAttr(qp_type=ve.IBV_QPT_RC, scq=cq, rcq=cq, cap=cap))
        self.peer = f"qp {self.qp.qp_num}"
        #: RDMA READs this QP may have outstanding (set by :meth:`connect`).
        self.rd_atomic = 0

    def connect(self, transitions: list[QpTransition], connect_within: float) -> None:
        """INIT, RTR, RTS with the connection's attributes from RDMA CM (what ``rdma_accept``
        does for a QP the CM created itself), then the receives for HSQSIZE + 1 commands.  The
        RDMA READ depth is the host's responder resources, at most what this device allows.

        The host then has ``connect_within`` seconds (``nvmf.idle_timeout_ms``) to connect the
        queue with its Connect: a connection that never sends one would otherwise hold its QP,
        its registered receive buffers and its share of the completion queue for ever, and
        enough of them would leave no room for other hosts."""
        for transition in transitions:
            if transition.values["qp_state"] == ve.IBV_QPS_RTS:
                transition = transition.with_rd_atomic(self.device.max_rd_atomic)
                self.rd_atomic = transition.values["max_rd_atomic"]
            self.qp.modify(transition.attr(), transition.mask)
        for wr in self._recv_wrs:
            self.qp.post_recv(wr)
        self._connect_within = connect_within
        self._await_connect(connect_within)

    def _await_connect(self, seconds: float) -> None:
        """Close the queue unless a Connect connected it within ``seconds`` from now."""
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        self._connect_timer = self.loop.call_later(seconds, self._connect_overdue, seconds)

    def _connect_overdue(self, seconds: float) -> None:
        self._connect_timer = None
        if self.session.qid is None:
            self.close(f"no Connect in {seconds:g} s")

    # -- FabricQueue ---------------------------------------------------------------------------
    @property
    def qid(self) -> int:
        return self.session.qid or 0

    def local_address(self) -> tuple[str, str]:
        return self.port.traddr, self.port.trsvcid

    def map_sgl(self, req: Request) -> Status:
        if req.flags & FLAGS_CHECKED != PSDT_SGL_MPTR_CONTIG:
            return error(SC.INVALID_FIELD, OFF_FLAGS)
        sgl_type = req.dptr_type
        slot = req.ttag
        if sgl_type in (SGL_RDMA_KEYED, SGL_RDMA_KEYED_INVALIDATE):
            req.sgl_length = req.dptr_length & 0xFFFFFF  # 24-bit length; KEY follows it
            self._rkey[slot] = _KEY.unpack_from(req.raw, _OFF_SGL_KEY)[0]
            self._invalidate[slot] = sgl_type == SGL_RDMA_KEYED_INVALIDATE
            req.data = None
            return SUCCESS
        if sgl_type == SGL_INCAPSULE:
            offset, length = req.dptr_address, req.dptr_length
            if offset + length > self.slot_size - SQE_SIZE:
                return error(SC.SGL_INVALID_OFFSET, OFF_DPTR)
            req.incapsule = bool(length)
            return map_incapsule(req)
        return error(SC.SGL_INVALID_TYPE, OFF_DPTR + 15)

    def _local(self, staging: StagingBuffer) -> tuple[int, int]:
        """Address and local key of ``staging``: in this queue's pool (registered when the
        queue was made), or in a medium's own pool (``MediaQueue.pool``, an SSD's DMA-mapped
        DRAM), registered with the device the first time it is seen."""
        region = staging.region
        if region is None or region is self._staging_region:
            return self._staging_base + staging.offset, self._staging_lkey
        mr = self.device.register(region)
        base = region.registrations.get("address")
        if base is None:
            base = region.registrations["address"] = _address(region.view)
        return base + staging.offset, mr.lkey

    def fetch_data(self, req: Request, done: DataDone) -> None:
        """One RDMA READ of the host's buffer into the request's staging buffer."""
        staging = req.staging
        if self.closed or staging is None or req.data is None:
            self.loop.call_soon(done, req, Status(SC.TRANSIENT_TR_ERR))
            return
        slot = req.ttag
        addr, lkey = self._local(staging)
        wr = self._wrs.read(slot, addr, len(req.data), lkey, self._rkey[slot], req.dptr_address)
        self._fetching[slot] = done
        try:
            self.qp.post_send(wr)
        except PyverbsError as exc:
            del self._fetching[slot]
            self.loop.call_soon(done, req, Status(SC.TRANSIENT_TR_ERR))
            self.close(f"cannot post an RDMA READ: {exc}")

    def complete(self, req: Request, cqe: bytes) -> None:
        slot = req.ttag
        if self.closed:
            req.release()
            return
        status = req.status
        n = req.c2h_length
        invalidate = self._rkey[slot] if self._invalidate[slot] else None
        self._resp_views[slot][:] = cqe
        staging = req.staging
        if n and staging is not None and (status is SUCCESS or status.ok):
            addr, lkey = self._local(staging)
            first = self._wrs.write_then_response(
                slot, addr, n, lkey, self._rkey[slot], req.dptr_address, invalidate
            )
        else:
            first = self._wrs.response(slot, invalidate)
        held = self._held_recv[slot]
        try:
            if held >= 0:  # the in-capsule data is used: the buffer takes the next command
                self._held_recv[slot] = -1
                self.qp.post_recv(self._recv_wrs[held])
            self.qp.post_send(first)
        except PyverbsError as exc:
            self.close(f"cannot post a completion: {exc}")

    def send_cqe(self, cqe: bytes) -> None:
        """A completion for a command this process did not run: sent from a free slot."""
        if self.closed or not self._free:
            return
        slot = self._free.pop()
        req = self._reqs[slot]
        req.load(_BLANK_SQE)
        req.ttag = slot
        self._invalidate[slot] = False
        self.complete(req, cqe)

    async def export_state(self) -> QueueExport:
        raise RuntimeError("an NVMe/RDMA queue pair cannot move to another process")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        log.info("rdma %s qid %s closed: %s", self.peer, self.session.qid, reason)
        self.device.queues.pop(self.number, None)
        self.device.cq_free += self.cq_entries
        if self.cmid is not None:
            try:
                self.cmid.disconnect()
            except PyverbsError:
                pass  # the host left first
        # No work request runs once the QP is gone: buffers can go back to their pools.
        self.qp.close()
        fetching, self._fetching = self._fetching, {}
        for slot, done in fetching.items():
            self.loop.call_soon(done, self._reqs[slot], Status(SC.TRANSIENT_TR_ERR))
        for slot, req in enumerate(self._reqs):
            if slot not in fetching and req.staging is not None and slot not in self._free:
                req.release()
        self.owner.queue_closed(self.session)
        self._wrs.close()
        for wr in self._recv_wrs:
            wr.close()
        for sge in self._resp_sges:
            sge.close()
        self._mr.close()
        if self.cmid is not None:
            self.cmid.close()
        self._on_close(self)

    def release_memory(self) -> None:
        """Unmap the receive and response buffers (after :meth:`close`, so the NIC no longer
        reaches them: their memory region is gone).

        A command still running as its queue ends may hold a view of its capsule's data in a
        receive buffer (an in-capsule Write in the medium's queue): the mapping then goes when
        the last such view does, not now (unmapping memory a view still exports is refused)."""
        self._recv_views.clear()
        self._resp_views.clear()
        self._view.release()
        try:
            self._mem.close()
        except BufferError:
            pass

    # -- completions ---------------------------------------------------------------------------
    def connected(self) -> bool:
        """Whether RDMA CM still has this connection (not disconnected or timed out)."""
        return self.cmid is None or _connected(self.cmid)

    def completion(self, wc: Any) -> None:
        kind = (wc.wr_id >> 24) & 0xFF
        slot = wc.wr_id & _SLOT_MASK
        if wc.status != ve.IBV_WC_SUCCESS:
            what = {_RECV: "receive", _READ: "RDMA READ", _SEND: "send"}.get(kind, "RDMA WRITE")
            self.close(f"{what} failed: work completion status {wc.status}")
            return
        if kind == _RECV:
            self._capsule(slot, wc.byte_len)
        elif kind == _READ:
            done = self._fetching.pop(slot)
            done(self._reqs[slot], SUCCESS)
        elif kind == _SEND:
            req = self._reqs[slot]
            staging = req.staging
            if staging is not None:
                req.staging = None
                staging.release()
            req.data = None
            self._free.append(slot)

    def _capsule(self, buf: int, length: int) -> None:
        """A command capsule in receive buffer ``buf``: load a request and submit it."""
        if length < SQE_SIZE:
            self.close(f"a {length}-byte capsule is shorter than a command")
            return
        if not self._free:
            self.close(f"the host sent more commands than its SQ holds ({self.depth})")
            return
        slot = self._free.pop()
        req = self._reqs[slot]
        view = self._recv_views[buf]
        req.load(view[:SQE_SIZE])
        req.ttag = slot
        self._invalidate[slot] = False
        if length > SQE_SIZE:
            req.data = view[SQE_SIZE:length]
            self._held_recv[slot] = buf
        else:
            try:
                self.qp.post_recv(self._recv_wrs[buf])
            except PyverbsError as exc:
                self.close(f"cannot post a receive: {exc}")
                return
        if self.session.qid is None and _is_connect(req):  # the queue's Connect
            # A full period again: a Connect the control plane is still running (it may take
            # a while with workers) must not see its queue closed under it, and a refused one
            # may be tried again.
            self._await_connect(self._connect_within)
            refused = self._contradicts_request(req)
            if refused is not None:
                self.owner.complete(self.session, req, refused)
                return
        self.owner.submit(self.session, req)

    def _contradicts_request(self, req: Request) -> Status | None:
        """A Connect whose QID or SQSIZE is not what this queue's connect request said:
        Connect Invalid Parameters naming that field.  NVMe/RDMA 1.0b has the request's QID be
        the queue's and its HSQSIZE "set to" the Connect's SQSIZE, and the queue was made for
        them (an I/O queue's in-capsule buffers, its place in a worker, HSQSIZE + 1 receives):
        an admin Connect on a connection asked for as an I/O queue would leave its controller
        in a worker that never attaches it.  (The Linux and SPDK targets take the Connect's.)"""
        cmd = ConnectCommand.decode(req.raw)
        if cmd.qid != self.requested_qid:
            return connect_invalid_parameters(CONNECT_OFF_QID, in_data=False)
        if cmd.sqsize + 1 != self.depth:
            return connect_invalid_parameters(CONNECT_OFF_SQSIZE, in_data=False)
        return None


def _is_connect(req: Request) -> bool:
    return req.opcode == AdminOpcode.FABRICS and req.raw[4] == FabricsType.CONNECT


class _Listener:
    """A port's RDMA CM listener, its event channel, the queues this process serves on it and
    the connections whose queues it placed in workers."""

    def __init__(self, port: ListenPort, owner: QueueOwner) -> None:
        self.port = port
        self.owner = owner
        self.queues: set[RdmaQueue] = set()
        self.placed: set[_Placed] = set()
        self.channel, self.fd = open_channel(CMEventChannel, CM_CHANNEL)
        self.cmid = CMID(creator=self.channel, port_space=ce.RDMA_PS_TCP)
        #: New connections are taken (until :meth:`RdmaTransport.stop_accepting`).
        self.accepting = True

    def close(self) -> None:
        self.cmid.close()
        self.channel.close()


class _Placed:
    """A connection accepted here whose queue an offload worker serves: its CM ID stays here
    (disconnect, the end of the connection), the QP there."""

    __slots__ = ("cmid", "ended", "key", "worker")

    def __init__(self, cmid: CMID) -> None:
        self.cmid = cmid
        self.worker = -1
        self.key = -1
        self.ended = False


def check_listen_address(port: ListenPort) -> None:
    """Refuse what RDMA CM cannot listen on here, naming the port: pyverbs 44 binds a wildcard
    or loopback address without a device and then crashes on the missing verbs context."""
    if port.adrfam not in ("ipv4", "ipv6"):
        raise OSError(errno.EAFNOSUPPORT, f"port {port.portid}: adrfam {port.adrfam} over RDMA CM")
    try:
        addr = ipaddress.ip_address(port.traddr)
    except ValueError as exc:
        raise OSError(errno.EINVAL, f"port {port.portid}: traddr {port.traddr!r}: {exc}") from exc
    if addr.is_unspecified or addr.is_loopback:
        raise OSError(
            errno.EADDRNOTAVAIL,
            f"port {port.portid}: NVMe/RDMA listens on an RDMA device's own address, not "
            f"{port.traddr} (a wildcard or loopback address binds no device)",
        )


class RdmaTransport:
    """NVMe/RDMA ports: an RDMA CM listener per port, an :class:`RdmaQueue` per connection.

    In the control plane, an admin queue's QP is made here; an I/O queue's is made by an
    offload worker (:attr:`placer`) when there are workers, here otherwise.  In a worker,
    :meth:`adopt_placement` makes the QP the control plane asked for."""

    trtype = "rdma"
    caps = TransportCaps(exportable=False)

    def __init__(self) -> None:
        #: How long an accepted connection may wait for its Connect (nothing waits on a byte
        #: stream here: a capsule is whole once received).
        self.idle_timeout = 30.0
        #: Kept for the contract: a send here is a posted work request, which the provider
        #: moves; no ``sendmsg`` of this process delivers it.
        self.unpreempted_sends = True
        #: The highest I/O queue ID and the deepest I/O queue a connect request may ask for.
        self.queue_limits = (64, 128)
        self.placer: QueuePlacer | None = None
        self._listeners: dict[int, _Listener] = {}
        self._devices: dict[str, _Device] = {}
        #: Queues made for the control plane in this process (a worker's).
        self._adopted: set[RdmaQueue] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: The request IDs' listener stand-in: pyverbs gives a request ID its listener's device
        #: context and protection domain and frees them when the ID closes; this one has none.
        self._bare = CMID()

    async def add_port(self, port: ListenPort, owner: QueueOwner) -> None:
        check_listen_address(port)
        lst: _Listener | None = None
        try:
            info = AddrInfo(
                src=port.traddr,
                src_service=port.trsvcid,
                port_space=ce.RDMA_PS_TCP,
                flags=ce.RAI_PASSIVE,
            )
            lst = _Listener(port, owner)
            lst.cmid.bind_addr(info)
            lst.cmid.listen(BACKLOG)
        except PyverbsError as exc:
            if lst is not None:
                lst.close()
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"port {port.portid}: cannot listen with RDMA CM on {port.traddr}:"
                f"{port.trsvcid}: {exc} (is there an RDMA device, such as Soft-RoCE, on the "
                f"interface with that address? nvmf doctor lists them)",
            ) from exc
        self._listeners[port.portid] = lst
        asyncio.get_running_loop().add_reader(lst.fd, self._cm_events, lst)
        log.info("nvme/rdma port %d listening on %s:%s", port.portid, port.traddr, port.trsvcid)

    def _device(self, name: str) -> _Device:
        device = self._devices.get(name)
        if device is None:
            device = self._devices[name] = _Device(name)
        return device

    def _cm_events(self, lst: _Listener) -> None:
        """Connection requests and the end of connections, as RDMA CM reports them."""
        ended = False
        while True:
            try:
                event = CMEvent(lst.channel)
            except PyverbsRDMAError as exc:
                if exc.error_code == errno.EAGAIN:
                    break
                raise
            kind = event.event_type
            if kind == ce.RDMA_CM_EVENT_CONNECT_REQUEST:
                data = event.private_data
                cmid = CMID(creator=event, listen_id=self._bare)
                event.ack_cm_event()
                self._connect_request(lst, cmid, data)
                continue
            event.ack_cm_event()
            ended = ended or kind != ce.RDMA_CM_EVENT_ESTABLISHED
        if ended:
            for queue in list(lst.queues):
                if not queue.closed and not queue.connected():
                    queue.close("the host disconnected")
            for placed in list(lst.placed):
                if placed.worker >= 0 and not _connected(placed.cmid):
                    if self.placer is not None:
                        self.placer.end(placed.worker, placed.key, "the host disconnected")
                    self._end_placed(lst, placed)

    def _connect_request(self, lst: _Listener, cmid: CMID, data: bytes) -> None:
        if not lst.accepting:
            log.info("rdma port %d: connect request rejected: stopping", lst.port.portid)
            self._reject(cmid, CmStatus.NO_RSC)
            return
        max_qid, io_depth = self.queue_limits
        verdict = check_request(data, max_qid=max_qid, io_queue_depth=io_depth)
        if isinstance(verdict, CmStatus):
            log.info("rdma port %d: connect request rejected: %s", lst.port.portid, verdict.message)
            self._reject(cmid, verdict)
            return
        try:
            transitions = _transitions(cmid)
        except PyverbsError as exc:
            log.info("rdma port %d: connect request gone: %s", lst.port.portid, exc)
            cmid.close()
            return
        if verdict.qid and self.placer is not None:
            task = asyncio.get_running_loop().create_task(
                self._place(lst, cmid, verdict, transitions, self.placer)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            queue = RdmaQueue(
                self._device(cmid.dev_name), verdict, lst.port, lst.owner, self._closed(lst), cmid
            )
        except (PyverbsError, OSError, MemoryError) as exc:
            log.warning("rdma port %d: cannot set up a queue: %s", lst.port.portid, exc)
            self._reject(cmid, CmStatus.NO_RSC)
            return
        lst.queues.add(queue)
        try:
            queue.connect(transitions, self.idle_timeout)
            _accept(cmid, queue.qp.qp_num, verdict.queue_depth, queue.rd_atomic)
        except PyverbsError as exc:
            queue.close(f"cannot accept the connection: {exc}")

    async def _place(
        self,
        lst: _Listener,
        cmid: CMID,
        request: CmRequest,
        transitions: list[QpTransition],
        placer: QueuePlacer,
    ) -> None:
        """Have a worker make the I/O queue's QP, then accept the connection with it."""
        placed = _Placed(cmid)
        lst.placed.add(placed)
        placement = Placement(
            PortInfo.of(lst.port),
            {
                "device": cmid.dev_name,
                "qid": request.qid,
                "hrqsize": request.hrqsize,
                "hsqsize": request.hsqsize,
                "transitions": transitions,
            },
        )

        def ended(reason: str) -> None:
            log.info("rdma port %d: placed queue ended: %s", lst.port.portid, reason)
            self._end_placed(lst, placed)

        try:
            placed.worker, placed.key, answer = await placer.place(placement, ended)
        except (RuntimeError, OSError) as exc:
            log.warning("rdma port %d: no worker took the queue: %s", lst.port.portid, exc)
            lst.placed.discard(placed)
            if not placed.ended:
                placed.ended = True
                self._reject(cmid, CmStatus.NO_RSC)
            return
        if placed.ended:
            return
        try:
            _accept(cmid, answer["qpn"], request.queue_depth, answer["rd_atomic"])
        except PyverbsError as exc:
            placer.end(placed.worker, placed.key, f"cannot accept the connection: {exc}")
            self._end_placed(lst, placed)

    @staticmethod
    def _end_placed(lst: _Listener, placed: _Placed) -> None:
        """A placed queue's connection is over: disconnect and free its CM ID (once)."""
        if placed.ended:
            return
        placed.ended = True
        lst.placed.discard(placed)
        try:
            placed.cmid.disconnect()
        except PyverbsError:
            pass  # never connected, or the host left first
        placed.cmid.close()

    def adopt_placement(
        self, placement: Placement, owner: QueueOwner, ended: Callable[[str], None]
    ) -> tuple[FabricQueue, dict[str, Any]]:
        """In a worker: make the QP of a connection the control plane holds, in this process's
        own device context and protection domain, connect it with the attributes RDMA CM gave
        there, and answer its number (and RDMA READ depth) for the accept."""
        state = placement.state
        request = CmRequest(state["qid"], state["hrqsize"], state["hsqsize"])

        def closed(queue: RdmaQueue) -> None:
            self._adopted.discard(queue)
            queue.release_memory()
            ended(f"queue {queue.peer} closed")

        queue = RdmaQueue(self._device(state["device"]), request, placement.port, owner, closed)
        self._adopted.add(queue)
        try:
            queue.connect(state["transitions"], self.idle_timeout)
        except PyverbsError as exc:
            queue.close(f"cannot connect the queue pair: {exc}")
            raise OSError(errno.EIO, f"cannot connect the queue pair: {exc}") from exc
        return queue, {"qpn": queue.qp.qp_num, "rd_atomic": queue.rd_atomic}

    @staticmethod
    def _reject(cmid: CMID, status: CmStatus) -> None:
        try:
            cmid.reject(encode_reject(status))
        except PyverbsError as exc:
            log.info("rdma: reject failed: %s", exc)
        cmid.close()

    @staticmethod
    def _closed(lst: _Listener) -> Callable[[RdmaQueue], None]:
        def closed(queue: RdmaQueue) -> None:
            lst.queues.discard(queue)
            queue.release_memory()

        return closed

    def import_queue(self, export: QueueExport, port: ListenPort, owner: QueueOwner) -> RdmaQueue:
        raise RuntimeError("an NVMe/RDMA queue pair cannot be imported from another process")

    async def close_all(self) -> None:
        for queue in list(self._adopted):
            queue.close("target stopping")
        for lst in self._listeners.values():
            for queue in list(lst.queues):
                queue.close("target stopping")
        if not self._listeners:
            self._close_devices()

    def _close_devices(self) -> None:
        """Release every device context in order (queues first): left to the garbage
        collector at exit, pyverbs frees them in any order and the process aborts in
        ``free()``, as a worker did in the guest."""
        for device in self._devices.values():
            device.close()
        self._devices.clear()

    def stop_accepting(self, port: ListenPort) -> None:
        """Reject every new connect request: the listener's CM channel also carries the events
        of the port's queues (their disconnects), so it stays open until :meth:`remove_port`."""
        lst = self._listeners.get(port.portid)
        if lst is not None:
            lst.accepting = False

    async def remove_port(self, port: ListenPort) -> None:
        lst = self._listeners.pop(port.portid, None)
        if lst is None:
            return
        asyncio.get_running_loop().remove_reader(lst.fd)
        for queue in list(lst.queues):
            queue.close("port removed")
        for placed in list(lst.placed):
            if self.placer is not None and placed.worker >= 0:
                self.placer.end(placed.worker, placed.key, "port removed")
            self._end_placed(lst, placed)
        lst.close()
        if not self._listeners and not self._adopted:
            self._close_devices()

    def bound_address(self, port: ListenPort) -> tuple[str, int]:
        return port.traddr, int(port.trsvcid)


def _accept(cmid: CMID, qpn: int, depth: int, rd_atomic: int) -> None:
    """Accept a connection for the QP ``qpn`` (already in RTS), with CRQSIZE = ``depth``."""
    param = ConnParam(
        resources=0,
        depth=rd_atomic,
        retry=RETRY_COUNT,
        rnr_retry=RNR_RETRY_COUNT,
        qp_num=qpn,
        data_len=32,
    )
    param.set_private_data(encode_accept(depth))
    cmid.accept(param)
