"""Smoke tests of the benchmark suite's own parts (``bench/``): the raw NVMe/TCP responder,
in Python and with its I/O queues in C (``--native``), answers this project's host through its
whole connect sequence and serves reads with the right bytes, writes both in the capsule and on
R2T, and a short :func:`run_bench` completes I/Os (the C loop also refuses a transfer outside
the namespace, and a missing compiler is said plainly); the
``/proc`` reader sees a child's CPU time on the children's side; and one measurement of the
suite (responder and client in processes of their own) completes I/Os and counts CPU."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import local
import procstat
import pytest
import rawnvme

from nvmf.host import connect
from nvmf.host.bench import BenchSpec, run_bench
from nvmf.host.errors import NvmeError
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import Sqe
from nvmf.wire.status import SC

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _against_responder(native: bool) -> None:
    server = await rawnvme.serve(0, size=64 << 20, native=native)
    port = server.sockets[0].getsockname()[1]
    try:
        ctrl = await connect("127.0.0.1", rawnvme.SUBNQN, trsvcid=port, nr_io_queues=2)
        async with ctrl:
            assert len(ctrl.io_queues) == 2
            assert ctrl.io_incapsule_size == rawnvme.INLINE_DATA
            geo = await ctrl.namespace(1)
            assert (geo.block_size, geo.size_bytes) == (512, 64 << 20)
            # The data lands where the target's would: written blocks read back, others are 0.
            small = bytes(range(256)) * 16
            large = os.urandom(131072)
            await ctrl.write(1, 0, 8, small)  # in the capsule
            await ctrl.write(1, 1000, 256, large)  # R2T, H2CData received in place
            middle = large[:16384]
            await ctrl.write(1, 5000, 32, middle)  # R2T, H2CData parsed from the buffer
            for nlb, slba, queue, expected in (
                (8, 0, 0, small),
                (256, 1000, 1, large),
                (4, 1002, 0, large[1024:3072]),
                (32, 5000, 1, middle),
                (8, 77, 1, bytes(4096)),
            ):
                buf = bytearray(b"\xee" * nlb * 512)
                await ctrl.read(1, slba, nlb, buf, queue=queue)
                assert buf == expected, f"read of {nlb} blocks at {slba}"
            if native:  # what keeps the C loop inside the namespace's memory
                queue = ctrl.io_queues[1]
                last = (64 << 20) // 512 - 4  # 4 blocks before the end: 8 reach past it
                for opcode, out, into in (
                    (IoOpcode.READ, None, bytearray(4096)),
                    (IoOpcode.WRITE, large, None),  # on R2T
                    (IoOpcode.WRITE, small, None),  # in the capsule
                ):
                    nlb = len(out or into or b"") // 512
                    sqe = Sqe(opcode=opcode, nsid=1, cdw10=last, cdw12=nlb - 1).encode()
                    with pytest.raises(NvmeError) as info:
                        await queue.submit(bytearray(sqe), data_out=out, data_in=into)
                    assert info.value.code == SC.LBA_RANGE, opcode
                await ctrl.read(1, 0, 8, buf := bytearray(4096), queue=1)
                assert buf == small, "the queue serves on after the errors"
            for rw, bs in (("randread", 4096), ("write", 131072)):
                spec = BenchSpec(rw=rw, bs=bs, iodepth=8, numjobs=2, runtime=0.2, size=16 << 20)
                result = await run_bench(ctrl, spec)
                assert result.error is None
                d = result.read if rw == "randread" else result.write
                assert d is not None and d.ios > 10, (rw, d)
    finally:
        server.close()


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
def test_raw_responder_serves_the_host(native: bool) -> None:
    run(_against_responder(native))


def test_native_responder_without_a_compiler_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rawnvme, "NATIVE_BUILD", tmp_path)  # nothing built yet
    monkeypatch.setenv("CC", "")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
    with pytest.raises(rawnvme.NativeUnavailable, match=r"needs a C compiler.*apt-get install gcc"):
        rawnvme.native_library()


def test_tree_cpu_counts_a_busy_child() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        seen = 0.0
        while time.monotonic() < deadline and parent.poll() is None:
            cpu = procstat.tree_cpu(parent.pid)
            seen = max(seen, cpu.children)
            time.sleep(0.05)
        assert seen >= 0.15, f"children CPU seen: {seen}"
    finally:
        parent.wait(10)


def test_measure_against_the_raw_responder_process() -> None:
    with local.raw_target() as target, local.Clients(target, queues=2) as clients:
        w = local.Workload("4k randread QD8", "randread", 4096, 8)
        run = local.measure(clients, w, 0.3, jobs=2)
        more = local.measure(clients, w, 0.3, jobs=2)
    assert run.error is None and more.error is None
    assert run.ios > 10 and more.ios > 10
    assert run.cpu_children == 0  # the responder is one process
    both = local.combine([run, more])
    assert both.ios == run.ios + more.ios
    assert both.cpu == run.cpu + more.cpu
