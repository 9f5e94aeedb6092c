"""Work requests made once per request slot and reused for every I/O, for the RDMA target.

pyverbs builds each ``SendWR`` and ``SGE`` as a Python object with a logger of its own and a
``malloc``'d C array, and never frees that array when the object is collected (its destructor
is misspelt ``__dealloc``, so only an explicit ``close()`` frees it).  Built per I/O, as the
target did, they cost about 15 µs of CPU per command natively (two WRs and an SGE) and leaked
32 bytes each: 200,000 of either grew the process by 6.4 MB.

So each slot gets, once: the response SEND (its SGE the slot's CQE buffer), an RDMA WRITE
chained before it for a Read's data, and an RDMA READ for a Write's data, the two data WRs
sharing one SGE that each command points at its staging buffer.  ``ibv_post_send`` copies a
work request into the send queue before it returns, so changing the fields for the next command
never disturbs a posted one.

Memory: a data WR is built with a copy of the SGE, whose array is freed at once, and then made
to point at the SGE's own ``ibv_sge`` (pyverbs' ``sg_list`` setter), so that setting the SGE's
address and length is all a command needs.  :meth:`SlotWrs.close` frees every array exactly once:
each SGE's, and each SEND's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyverbs.enums as ve
from pyverbs.wr import SGE, RecvWR, SendWR


class SlotWrs:
    """The send-side work requests of ``len(responses)`` request slots.

    A work request's id is ``tag | kind << 24 | slot``, with the kinds given for SEND, RDMA
    READ and RDMA WRITE; ``responses`` are the slots' CQE buffers (their SGEs stay the
    caller's)."""

    def __init__(
        self,
        responses: Sequence[SGE],
        tag: int,
        send_kind: int,
        read_kind: int,
        write_kind: int,
    ) -> None:
        self.data_sges = [SGE(0, 0, 0) for _ in responses]
        self.sends = [
            SendWR(tag | send_kind << 24 | slot, ve.IBV_WR_SEND, 1, sg=[sge])
            for slot, sge in enumerate(responses)
        ]
        self.writes: list[SendWR] = []
        self.reads: list[SendWR] = []
        for slot, sge in enumerate(self.data_sges):
            rdma_write = SendWR(
                tag | write_kind << 24 | slot,
                ve.IBV_WR_RDMA_WRITE,
                1,
                sg=[sge],
                send_flags=0,  # the SEND after it is signalled, and completes after it
                next_wr=self.sends[slot],
            )
            rdma_read = SendWR(tag | read_kind << 24 | slot, ve.IBV_WR_RDMA_READ, 1, sg=[sge])
            for wr in (rdma_write, rdma_read):
                wr.close()  # its own copy of the SGE: freed now ...
                wr.sg_list = sge  # ... and the slot's SGE used in its place
            self.writes.append(rdma_write)
            self.reads.append(rdma_read)
        self.closed = False

    def read(self, slot: int, addr: int, length: int, lkey: int, rkey: int, raddr: int) -> SendWR:
        """The RDMA READ of ``length`` bytes at the host's ``raddr`` (key ``rkey``) into local
        ``addr`` (key ``lkey``)."""
        sge = self.data_sges[slot]
        sge.addr, sge.length, sge.lkey = addr, length, lkey
        wr = self.reads[slot]
        wr.set_wr_rdma(rkey, raddr)
        return wr

    def response(self, slot: int, invalidate: int | None) -> SendWR:
        """The response SEND alone; with Invalidate of the host's key ``invalidate`` if given."""
        send = self.sends[slot]
        if invalidate is None:
            send.opcode = ve.IBV_WR_SEND
        else:
            send.opcode = ve.IBV_WR_SEND_WITH_INV
            send.imm_data = invalidate  # the union's invalidate_rkey
        return send

    def write_then_response(
        self,
        slot: int,
        addr: int,
        length: int,
        lkey: int,
        rkey: int,
        raddr: int,
        invalidate: int | None,
    ) -> SendWR:
        """The RDMA WRITE of a Read's data to the host, chained before the response SEND."""
        self.response(slot, invalidate)
        sge = self.data_sges[slot]
        sge.addr, sge.length, sge.lkey = addr, length, lkey
        wr = self.writes[slot]
        wr.set_wr_rdma(rkey, raddr)
        return wr

    def close(self) -> None:
        """Free the C memory (once the queue pair that used them is gone); idempotent."""
        if self.closed:
            return
        self.closed = True
        for sge in self.data_sges:
            sge.close()  # the data WRs point at these: theirs were freed when made
        for send in self.sends:
            send.close()


def recv_wr(wr_id: int, addr: int, length: int, lkey: int) -> RecvWR:
    """A receive work request for one buffer.  The SGE it is built from is copied into it, so it
    is freed at once; the work request's own copy is freed by its ``close()``."""
    sge = SGE(addr, length, lkey)
    try:
        return RecvWR(wr_id, 1, [sge])
    finally:
        sge.close()
