"""Drive this project's NVMe/RDMA host against a target in the guest and report what it saw.

``python -m tests.guest.rdma_host_driver ADDR NQN OUT.json`` connects with two I/O queues over
RDMA, writes a known pattern at 4 KiB (in-capsule) and at 128 KiB (keyed SGL) on each I/O
queue, reads every extent back and records, as JSON: the queues' count, each queue's
in-capsule size, whether memory windows were used, the invalidation counters, and which
read-backs matched.  The test (tests/guest/test_rdma_host_guest.py) judges the file; the
patterns are reproducible (:func:`pattern`) so the test can also compare the backing file.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import sys
import traceback
from typing import Any

from nvmf.host import TransportError, connect
from nvmf.host.rdma_queue import RdmaHostQueue

#: (name, first LBA, bytes): 512-byte LBAs of the kernel target's file-backed namespace.
EXTENTS = [("4k", 64, 4096), ("128k", 2048, 128 * 1024)]


def pattern(tag: str, size: int) -> bytes:
    """``size`` bytes that differ for every tag and every 8-byte position."""
    seed = sum(tag.encode()) & 0xFF
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))


async def run(addr: str, nqn: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    ctrl = await connect(addr, nqn, trtype="rdma", nr_io_queues=2, queue_size=32, kato=5)
    try:
        report["io_queues"] = len(ctrl.io_queues)
        report["queue_types"] = sorted({type(q).__name__ for q in [ctrl.admin, *ctrl.io_queues]})
        report["io_incapsule"] = [q.incapsule_size for q in ctrl.io_queues]
        report["max_transfer"] = ctrl.max_transfer
        geo = await ctrl.namespace(1)
        report["block_size"] = geo.block_size
        checks: dict[str, bool] = {}
        for qi in range(len(ctrl.io_queues)):
            for name, lba, size in EXTENTS:
                tag = f"{name}-q{qi}"
                slba = lba + qi * 1024
                data = pattern(tag, size)
                await ctrl.write(1, slba, size // geo.block_size, data, queue=qi)
                back = await ctrl.read(1, slba, size // geo.block_size, queue=qi)
                checks[tag] = bytes(back) == data
        report["readback"] = checks
        queues = [q for q in [ctrl.admin, *ctrl.io_queues] if isinstance(q, RdmaHostQueue)]
        report["uses_windows"] = [q.uses_windows for q in queues]
        report["invalidate_requests"] = sum(q.invalidate_requests for q in queues)
        report["invalidated_completions"] = sum(q.invalidated_completions for q in queues)
        report["crqsize"] = [q.crqsize for q in queues]
    finally:
        await ctrl.close()
    # An admin queue deeper than the Linux target allows (32 entries): its reject, decoded.
    try:
        q = await RdmaHostQueue.open(addr, 4420, qid=0, depth=63)
    except TransportError as exc:
        report["reject"] = str(exc)
    else:
        q.close()
        report["reject"] = "accepted"
    return report


def main() -> int:
    addr, nqn, out = sys.argv[1:4]
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    faulthandler.dump_traceback_later(240, exit=True)
    try:
        report = asyncio.run(run(addr, nqn))
    except Exception:
        report = {"error": traceback.format_exc()}
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
