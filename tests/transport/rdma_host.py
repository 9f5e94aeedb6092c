"""The transport contract suite's NVMe/RDMA host queue: RDMA CM's active side and one RC queue
pair, driven synchronously with pyverbs (it needs an RDMA device: the suite runs it in the guest
on Soft-RoCE, ``tests/guest/test_rdma_target_guest.py``).

The target runs on an event loop in a thread of the same process, and pyverbs 44's blocking
waits keep the GIL, so this host never blocks in pyverbs: its CM channel is non-blocking
(:func:`~nvmf.transport.verbs_events.open_channel`) and it polls the channel and its completion
queue with short sleeps in between.

Data moves the NVMe/RDMA way: a keyed SGL data block pointing into one registered buffer
(remote read and write allowed) for host data either way, or the data in the capsule after the
SQE (offset SGL) where the queue takes it (I/O queues; the admin queue has no in-capsule data
on NVMe/RDMA, so a Connect's data goes keyed there, as the Linux host sends it).
"""

from __future__ import annotations

import errno
import time
from collections import deque
from typing import TYPE_CHECKING

import pyverbs.cm_enums as ce
import pyverbs.enums as ve
from pyverbs.cmid import CMID, AddrInfo, CMEvent, CMEventChannel, ConnParam
from pyverbs.cq import CQ
from pyverbs.mr import MR
from pyverbs.pyverbs_error import PyverbsRDMAError
from pyverbs.qp import QPCap, QPInitAttr

from nvmf.transport.verbs_events import CM_CHANNEL, open_channel
from nvmf.wire.rdma import CmRequest, CmStatus, decode_reject
from nvmf.wire.sqe import CQE_SIZE, SQE_SIZE, Cqe, SglDescriptor, Sqe

if TYPE_CHECKING:
    from tests.transport.fabrics import RunningTarget

#: Commands (and responses) this host keeps room for; the Connect's SQSIZE (31) matches it.
DEPTH = 32
#: The data buffer: the most any contract test moves in one command, and the send buffer.
DATA_BYTES = 1 << 20
SEND_BYTES = SQE_SIZE + (64 << 10)
ACCESS = ve.IBV_ACCESS_LOCAL_WRITE | ve.IBV_ACCESS_REMOTE_READ | ve.IBV_ACCESS_REMOTE_WRITE
POLL_S = 0.0005
#: What a read's buffer holds before the command (data the target sends replaces it).
_MARKER = b"\xa5"


class Rejected(ConnectionError):
    """The target did not establish the connection: RDMA CM event ``event`` (REJECTED, or
    another when nothing listens), with the NVMe/RDMA reject ``status`` if it carried one."""

    def __init__(self, event: int, status: CmStatus | None) -> None:
        super().__init__(f"NVMe/RDMA connect refused: event {event}, status {status!r}")
        self.event = event
        self.status = status


class RdmaHostQueue:
    """:class:`~tests.transport.fabrics.HostQueue` over NVMe/RDMA (one queue, synchronous)."""

    def __init__(
        self,
        traddr: str,
        trsvcid: str,
        request: CmRequest,
        *,
        timeout: float = 10.0,
    ) -> None:
        """Connect to ``traddr:trsvcid`` with ``request`` as the connect request's private
        data (a broken one too: the queue is only this host's buffers, sized :data:`DEPTH`);
        ``timeout`` bounds each wait for a completion.  A reject raises :class:`Rejected`."""
        self.qid = request.qid
        self.timeout = timeout
        self.closed = False
        #: RDMA CM said the connection ended (seen while waiting for a completion).
        self._ended = False
        self.channel, _fd = open_channel(CMEventChannel, CM_CHANNEL)
        self.cmid = CMID(creator=self.channel, port_space=ce.RDMA_PS_TCP)
        info = AddrInfo(dst=traddr, dst_service=trsvcid, port_space=ce.RDMA_PS_TCP)
        self.cmid.resolve_addr(info, 2000)
        self._expect(ce.RDMA_CM_EVENT_ADDR_RESOLVED)
        self.cmid.resolve_route(2000)
        self._expect(ce.RDMA_CM_EVENT_ROUTE_RESOLVED)
        pd = self.cmid.pd
        self.cq = CQ(self.cmid.context, 4 * DEPTH, None, None, 0)
        cap = QPCap(max_send_wr=DEPTH, max_recv_wr=DEPTH, max_send_sge=1, max_recv_sge=1)
        self.cmid.create_qp(QPInitAttr(qp_type=ve.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap))
        self.data = MR(pd, DATA_BYTES, ACCESS)
        self.send = MR(pd, SEND_BYTES, ve.IBV_ACCESS_LOCAL_WRITE)
        # pyverbs posts a CM ID's receives at an MR's start: one small MR per response
        # buffer; receives complete in the order they were posted (a FIFO receive queue).
        self._posted: deque[MR] = deque()
        for _ in range(DEPTH):
            self._post_recv(MR(pd, CQE_SIZE, ve.IBV_ACCESS_LOCAL_WRITE))
        param = ConnParam(resources=16, depth=0, retry=7, rnr_retry=7, data_len=32)
        param.set_private_data(request.encode())
        self.cmid.connect(param)
        kind, private = self._event()
        if kind != ce.RDMA_CM_EVENT_ESTABLISHED:
            status = decode_reject(private) if kind == ce.RDMA_CM_EVENT_REJECTED else None
            self.closed = True
            self.cmid.close()
            self.channel.close()
            raise Rejected(kind, status)

    @classmethod
    def of(cls, target: RunningTarget, qid: int = 0) -> RdmaHostQueue:
        """A queue ``qid`` of ``target``'s port, asked for as the Linux host asks
        (:data:`DEPTH` entries)."""
        port = target.port
        return cls(port.traddr, port.trsvcid, CmRequest(qid, DEPTH, DEPTH - 1))

    def _post_recv(self, mr: MR) -> None:
        self.cmid.post_recv(mr, CQE_SIZE)
        self._posted.append(mr)

    def _event(self, timeout: float = 10.0) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = CMEvent(self.channel)
            except PyverbsRDMAError as exc:
                if exc.error_code != errno.EAGAIN:
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError("no RDMA CM event") from None
                time.sleep(POLL_S)
                continue
            kind, private = event.event_type, event.private_data
            event.ack_cm_event()
            return kind, private

    def _expect(self, kind: int) -> None:
        got, _ = self._event()
        if got != kind:
            raise ConnectionError(f"expected RDMA CM event {kind}, got {got}")

    def command(
        self,
        sqe: Sqe,
        data_out: bytes | None = None,
        data_in: int = 0,
        *,
        incapsule: bool = False,
        keep_sgl: bool = False,
    ) -> tuple[Cqe, bytes]:
        if self.closed:
            raise ConnectionError("queue closed")
        inline = b""
        length = len(data_out) if data_out else data_in
        # The admin queue takes no in-capsule data (the Linux target posts 64-byte receives
        # for it), so its data goes keyed, unless the caller keeps its own SGL.
        if data_out and incapsule and (self.qid or keep_sgl):
            inline = data_out
            if not keep_sgl:
                sqe.sgl = SglDescriptor.incapsule(len(inline))
        else:
            if data_out:
                self.data.write(data_out, len(data_out), 0)
            elif data_in:  # a marker, to tell whether the target wrote anything
                self.data.write(_MARKER * data_in, data_in, 0)
            if not keep_sgl:
                address = self.data.buf if length else 0
                sqe.sgl = SglDescriptor.keyed(address, length, self.data.rkey)
        self.post(sqe, inline)
        self._completion(ve.IBV_WC_RECV, self.timeout)
        mr = self._posted.popleft()
        cqe = Cqe.decode(mr.read(CQE_SIZE, 0))
        self._post_recv(mr)
        if not data_in:
            return cqe, b""
        back = self.data.read(data_in, 0)
        if cqe.decoded_status().ok or back != _MARKER * data_in:
            return cqe, back
        return cqe, b""  # a failed command that moved no data

    def post(self, sqe: Sqe, data: bytes = b"") -> None:
        """Send ``sqe`` with ``data`` in the capsule (its SGL as it is) and wait for nothing."""
        capsule = sqe.encode() + data
        self.send.write(capsule, len(capsule), 0)
        self.cmid.post_send(self.send, ve.IBV_SEND_SIGNALED, len(capsule))

    def _completion(self, opcode: int, timeout: float = 10.0) -> None:
        """Poll until a completion of ``opcode`` (others, the sends', are passed over); a failed
        one (the target closed the queue) raises ``ConnectionError``."""
        deadline = time.monotonic() + timeout
        while True:
            n, wcs = self.cq.poll(1)
            if n:
                wc = wcs[0]
                if wc.status != ve.IBV_WC_SUCCESS:
                    self.closed = True
                    raise ConnectionError(f"work completion status {wc.status}")
                if wc.opcode == opcode:
                    return
                continue
            if self._cm_ended():  # the target ended it: nothing more completes
                self.closed = True
                raise ConnectionError("the target ended the connection")
            if time.monotonic() > deadline:
                raise TimeoutError("no completion")
            time.sleep(POLL_S)

    def _cm_ended(self) -> bool:
        """Whether RDMA CM said the connection ended, as a host learns of it (looked at without
        waiting; on Soft-RoCE this queue's posted receives are not flushed when the target's
        queue pair goes, so its completion queue alone would wait for ever)."""
        if not self._ended:
            try:
                event = CMEvent(self.channel)
            except PyverbsRDMAError as exc:
                if exc.error_code != errno.EAGAIN:
                    raise
                return False
            kind = event.event_type
            event.ack_cm_event()
            self._ended = kind in (ce.RDMA_CM_EVENT_DISCONNECTED, ce.RDMA_CM_EVENT_TIMEWAIT_EXIT)
        return self._ended

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.cmid.disconnect()
            except PyverbsRDMAError:
                pass
        self.cmid.close()
        self.channel.close()

    def wait_closed(self, timeout: float) -> bool:
        """The target ended the queue: RDMA CM says the connection is gone."""
        if self._ended:
            return True
        try:
            kind, _ = self._event(timeout)
        except TimeoutError:
            return False
        self.closed = True
        return kind in (ce.RDMA_CM_EVENT_DISCONNECTED, ce.RDMA_CM_EVENT_TIMEWAIT_EXIT)
