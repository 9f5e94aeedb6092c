"""An RDMA CM listener that answers every NVMe/RDMA connect request with a reject (run in the
guest by ``test_rdma_target_guest.py``).

It is the first step of the RDMA transport (issue 9) against the real Linux host: rdma-core's
pyverbs listens in this project's own Python on Soft-RoCE, each connect request's private data
goes through :func:`nvmf.wire.rdma.check_request`, and the reject carries the NVMe/RDMA status
chosen on the command line.  What arrived is written to ``OUT/requests.txt``, one line per
request: the private data in hex, then what ``check_request`` made of it.

    python rdma_cm_probe.py ADDR PORT STATUS OUT

It waits for CM events the way the transport will, on an asyncio event loop watching the
channel's descriptor (:func:`nvmf.transport.verbs_events.open_channel`: pyverbs 44's own blocking
wait keeps the GIL and the channel hides its descriptor), and runs until killed; the guest
script stops it once the host has given up.
"""

from __future__ import annotations

import asyncio
import errno
import sys
from pathlib import Path

import pyverbs.cm_enums as ce
from pyverbs.cmid import CMID, AddrInfo, CMEvent, CMEventChannel
from pyverbs.pyverbs_error import PyverbsRDMAError

from nvmf.transport.verbs_events import CM_CHANNEL, open_channel
from nvmf.wire.rdma import CM_REQUEST, CmStatus, check_request, encode_reject


async def main(addr: str, port: str, status_name: str, out: Path) -> None:
    status = CmStatus[status_name]
    channel, fd = open_channel(CMEventChannel, CM_CHANNEL)
    listener = CMID(creator=channel, port_space=ce.RDMA_PS_TCP)
    info = AddrInfo(src=addr, src_service=port, port_space=ce.RDMA_PS_TCP, flags=ce.RAI_PASSIVE)
    listener.bind_addr(info)
    listener.listen(8)
    lines: list[str] = []

    def readable() -> None:
        while True:
            try:
                event = CMEvent(channel)
            except PyverbsRDMAError as exc:
                if exc.error_code == errno.EAGAIN:
                    return  # nothing more pending: back to the event loop
                raise
            if event.event_type != ce.RDMA_CM_EVENT_CONNECT_REQUEST:
                event.ack_cm_event()
                continue
            data = bytes(event.private_data or b"")[: CM_REQUEST.size]
            verdict = check_request(data, max_qid=4, io_queue_depth=128)
            lines.append(f"{data.hex()} {verdict!r}")
            (out / "requests.txt").write_text("".join(line + "\n" for line in lines))
            request = CMID(creator=event, listen_id=listener)
            event.ack_cm_event()
            request.reject(encode_reject(status))
            request.close()

    asyncio.get_running_loop().add_reader(fd, readable)
    (out / "listening").write_text("yes\n")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
