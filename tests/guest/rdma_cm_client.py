"""An RDMA CM client that sends an NVMe/RDMA connect request with the private data it is told
and prints how the target answered (run in the guest by ``test_rdma_target_guest.py``).

The Linux host only sends well-formed requests; this one sends what a broken or hostile host
could: a short request, a wrong RECFMT, a QID the target does not grant, a zero or oversized
HSQSIZE, too few HRQSIZE buffers.  One line per request goes to stdout: the name, then
``rejected STATUS`` (the NVMe/RDMA status the reject carried), ``accepted CRQSIZE`` or
``error ...``::

    python rdma_cm_client.py ADDR PORT NAME=HEX [NAME=HEX ...]

Waiting is blocking (``CMEvent`` on the channel): the script does nothing else meanwhile.
"""

from __future__ import annotations

import sys

import pyverbs.cm_enums as ce
import pyverbs.enums as ve
from pyverbs.cmid import CMID, AddrInfo, CMEvent, CMEventChannel, ConnParam
from pyverbs.qp import QPCap, QPInitAttr

from nvmf.wire.rdma import decode_accept, decode_reject


def _wait(channel: CMEventChannel, wanted: int) -> None:
    event = CMEvent(channel)
    kind = event.event_type
    event.ack_cm_event()
    if kind != wanted:
        raise RuntimeError(f"expected event {wanted}, got {kind}")


def attempt(addr: str, port: str, data: bytes) -> str:
    """Connect with ``data`` as the private data; what the target answered."""
    channel = CMEventChannel()
    cmid = CMID(creator=channel, port_space=ce.RDMA_PS_TCP)
    try:
        info = AddrInfo(dst=addr, dst_service=port, port_space=ce.RDMA_PS_TCP)
        cmid.resolve_addr(info, 2000)
        _wait(channel, ce.RDMA_CM_EVENT_ADDR_RESOLVED)
        cmid.resolve_route(2000)
        _wait(channel, ce.RDMA_CM_EVENT_ROUTE_RESOLVED)
        cap = QPCap(max_send_wr=4, max_recv_wr=4, max_send_sge=1, max_recv_sge=1)
        cmid.create_qp(QPInitAttr(qp_type=ve.IBV_QPT_RC, cap=cap))
        param = ConnParam(resources=1, depth=1, retry=7, rnr_retry=7, data_len=len(data))
        param.set_private_data(data)
        cmid.connect(param)
        event = CMEvent(channel)
        kind = event.event_type
        private = event.private_data
        event.ack_cm_event()
        if kind == ce.RDMA_CM_EVENT_REJECTED:
            status = decode_reject(private)
            return f"rejected {status.name if status is not None else 'not-nvme'}"
        if kind == ce.RDMA_CM_EVENT_ESTABLISHED:
            cmid.disconnect()
            return f"accepted {decode_accept(private)}"
        return f"error event {kind}"
    finally:
        cmid.close()
        channel.close()


def main(argv: list[str]) -> int:
    addr, port = argv[0], argv[1]
    for spec in argv[2:]:
        name, _, hexdata = spec.partition("=")
        try:
            outcome = attempt(addr, port, bytes.fromhex(hexdata))
        except Exception as exc:  # report and go on with the next request
            outcome = f"error {exc}"
        print(f"{name} {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
