"""Drive this project's NVMe/RDMA host against a target in the guest and report what it saw.

``python -m tests.guest.rdma_host_driver ADDR NQN OUT.json [sequential|windows|plain]``: by
default it connects with two I/O queues over
RDMA, writes a known pattern at 4 KiB (in-capsule) and at 128 KiB (keyed SGL) on each I/O
queue, reads every extent back and records, as JSON: the queues' count, each queue's
in-capsule size, whether memory windows were used, the invalidation counters, and which
read-backs matched.  The test (tests/guest/test_rdma_target_guest.py) judges the file; the
patterns are reproducible (:func:`pattern`) so the test can also compare the backing file.
``windows`` and ``plain`` put 156 commands in flight on two queues (:func:`concurrent`), with
and without memory windows.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import sys
import traceback
from typing import Any

from nvmf.host import ConnectOptions, TransportError, connect, connect_with
from nvmf.host.rdma_queue import RdmaHostQueue

#: (name, byte offset, bytes) on I/O queue 0; queue 1 writes :data:`QUEUE_STRIDE` further on.
#: Offsets in bytes: the kernel target's file-backed namespace has the file system's block
#: size as its LBA size (4 KiB on tmpfs), not necessarily 512.
EXTENTS = [("4k", 256 * 1024, 4096), ("128k", 1 << 20, 128 * 1024)]
QUEUE_STRIDE = 2 << 20
#: Keep Alive Timeout, seconds: an emulated guest's Python can stall for seconds.
KATO = 30.0


def pattern(tag: str, size: int) -> bytes:
    """``size`` bytes that differ for every tag and every 8-byte position."""
    seed = sum(tag.encode()) & 0xFF
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))


async def run(addr: str, nqn: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    ctrl = await connect(addr, nqn, trtype="rdma", nr_io_queues=2, queue_size=32, kato=KATO)
    try:
        report["io_queues"] = len(ctrl.io_queues)
        report["queue_types"] = sorted({type(q).__name__ for q in [ctrl.admin, *ctrl.io_queues]})
        report["io_incapsule"] = [q.incapsule_size for q in ctrl.io_queues]
        report["max_transfer"] = ctrl.max_transfer
        geo = await ctrl.namespace(1)
        report["block_size"] = geo.block_size
        checks: dict[str, bool] = {}
        for qi in range(len(ctrl.io_queues)):
            for name, offset, size in EXTENTS:
                tag = f"{name}-q{qi}"
                slba = (offset + qi * QUEUE_STRIDE) // geo.block_size
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
        flags: dict[str, int] = {}
        for q in queues:
            for value, n in q.recv_wc_flags.items():
                flags[hex(value)] = flags.get(hex(value), 0) + n
        report["recv_wc_flags"] = flags
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


async def concurrent(addr: str, nqn: str, invalidate: bool) -> dict[str, Any]:
    """Many commands in flight at once: 31 writes of 4 KiB and 8 of 128 KiB on each of two I/O
    queues together, then the same reads, compared; with or without memory windows."""
    # The patterns first: computing them takes seconds under emulation, which must not hold
    # up the connected controller's keep-alive.
    base = 8 << 20  # past the sequential extents
    jobs = [(base + i * 4096, 4096) for i in range(62)]
    jobs += [(base + (1 << 20) + i * 131072, 131072) for i in range(16)]
    datas = [pattern(f"c{i}", size) for i, (_, size) in enumerate(jobs)]
    opts = ConnectOptions(
        addr,
        nqn,
        trtype="rdma",
        nr_io_queues=2,
        queue_size=32,
        rdma_invalidate=invalidate,
        kato=KATO,
    )
    ctrl = await connect_with(opts)
    report: dict[str, Any] = {}
    try:
        geo = await ctrl.namespace(1)
        bs = geo.block_size
        await asyncio.gather(
            *(
                ctrl.write(1, off // bs, size // bs, data, queue=i % 2)
                for i, ((off, size), data) in enumerate(zip(jobs, datas, strict=True))
            )
        )
        backs = await asyncio.gather(
            *(
                ctrl.read(1, off // bs, size // bs, queue=i % 2)
                for i, (off, size) in enumerate(jobs)
            )
        )
        report["mismatches"] = sum(bytes(b) != d for b, d in zip(backs, datas, strict=True))
        report["commands"] = 2 * len(jobs)
        queues = [q for q in ctrl.io_queues if isinstance(q, RdmaHostQueue)]
        report["uses_windows"] = [q.uses_windows for q in queues]
        report["invalidate_requests"] = sum(q.invalidate_requests for q in queues)
        report["invalidated_completions"] = sum(q.invalidated_completions for q in queues)
    finally:
        await ctrl.close()
    return report


def main() -> int:
    addr, nqn, out = sys.argv[1:4]
    mode = sys.argv[4] if len(sys.argv) > 4 else "sequential"
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    faulthandler.dump_traceback_later(240, exit=True)
    try:
        if mode == "sequential":
            report = asyncio.run(run(addr, nqn))
        else:
            report = asyncio.run(concurrent(addr, nqn, invalidate=mode == "windows"))
    except Exception:
        report = {"error": traceback.format_exc()}
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
