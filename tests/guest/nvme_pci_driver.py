"""Drives QEMU's NVMe controller through ``nvmf.pci`` inside the guest (see
tests/guest/test_nvme_pci_guest.py, which runs it and reads what it writes).

Usage (as root, the controller bound to vfio-pci)::

    python nvme_pci_driver.py run OUT          # the checks; results in OUT/results.txt
    python nvme_pci_driver.py child BDF READY  # writes until killed (the kill -9 check)
    python nvme_pci_driver.py verify-block DEV OUT  # compare DEV with what was written

Each check writes one line ``name rc=N`` (0: passed) to OUT/results.txt; facts the test compares
with QEMU's trace are written as ``name value``.  Data written through the driver is recorded in
OUT/expect.json (start LBA, length, pattern seed) for ``verify-block``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from nvmf.memory.source import DramSource, Region
from nvmf.pci.controller import NvmeController
from nvmf.pci.queue import QueuePair
from nvmf.wire.opcodes import IoOpcode

LBA = 512
NSID = 1
DEPTH = 16
STAGING = 256 * 1024
#: Each placement combination writes inside its own MiB.
COMBO_LBAS = (1 << 20) // LBA
#: The kill -9 child writes far from the checked data.
CHILD_LBA = (64 << 20) // LBA
#: (case, offset in staging, bytes, LBA offset in the combination's MiB)
CASES = (
    ("4k", 0, 4096, 0),
    ("128k", 0, 128 * 1024, 64),
    ("unaligned", 512, 8192, 512),
)


def find_bdf() -> str:
    for dev in sorted(Path("/sys/bus/pci/devices").iterdir()):
        if (dev / "class").read_text().startswith("0x010802"):
            return dev.name
    raise SystemExit("no NVMe controller")


def pattern(seed: str, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


class Results:
    def __init__(self, out: Path) -> None:
        self.path = out / "results.txt"

    def line(self, text: str) -> None:
        with self.path.open("a") as f:
            f.write(text + "\n")

    def check(self, name: str, rc: int) -> None:
        self.line(f"{name} rc={rc}")


def wait(qp: QueuePair, cid: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for done in qp.reap():
            if done.cid == cid:
                return done.status
        time.sleep(0.0005)
    return -1


def staging_region(ctrl: NvmeController, placement: str) -> Region:
    if placement == "cmb":
        return ctrl.map_cmb(STAGING)
    return ctrl.map_dma(DramSource().map(STAGING))


def release_staging(ctrl: NvmeController, region: Region) -> None:
    if region.placement == "cmb":
        assert ctrl.cmb is not None
        ctrl.cmb.release(region)
    else:
        ctrl.unmap_dma(region)
        region.close()


def write_read(
    qp: QueuePair, region: Region, seed: str, offset: int, length: int, slba: int, fua: bool
) -> int:
    data = pattern(seed, length)
    region.view[offset : offset + length] = data
    status = wait(
        qp, qp.submit(IoOpcode.WRITE, NSID, slba, length // LBA, region, offset, length, fua=fua)
    )
    if status:
        return status
    region.view[offset : offset + length] = bytes(length)
    status = wait(qp, qp.submit(IoOpcode.READ, NSID, slba, length // LBA, region, offset, length))
    if status:
        return status
    return 0 if bytes(region.view[offset : offset + length]) == data else 1


def run(out: Path) -> None:
    res = Results(out)
    bdf = find_bdf()
    expect: list[tuple[int, int, str]] = []
    t0 = time.monotonic()
    with NvmeController(bdf) as ctrl:
        ident = ctrl.identify
        res.line(f"serial {ident.sn.strip()}")
        res.line(f"model {ident.mn.strip().replace(' ', '_')}")
        res.check("identify", 0 if ident.sn.strip() == "cmb0001" else 1)
        ns = ctrl.namespace(NSID)
        res.line(f"ns_bytes {ns.size}")
        res.line(f"lba_size {ns.lba_size}")
        res.line(f"mdts_bytes {ctrl.max_transfer}")
        res.check("namespace", 0 if ns.size == 1 << 30 and ns.lba_size == LBA else 1)
        assert ctrl.cmb is not None and ctrl.cmb_info is not None
        res.line(f"cba {ctrl.cmb.address:#x}")
        res.line(f"cmb_size {ctrl.cmb_info.size}")
        res.line(f"cmbsz {ctrl.cmb_info.cmbsz:#x}")
        try:
            ctrl.create_io_queue_pair(DEPTH, "dram", cq_placement="cmb")
            res.check("cq_in_cmb_refused", 1)
        except ValueError as exc:
            res.check("cq_in_cmb_refused", 0 if "CMBSZ.CQS" in str(exc) else 2)
        index = 0
        for sq in ("dram", "cmb"):
            for st in ("dram", "cmb"):
                name = f"{sq}-{st}"
                base = index * COMBO_LBAS + 2048
                index += 1
                qp = ctrl.create_io_queue_pair(DEPTH, sq, lba_size=LBA)
                res.line(f"sq_iova {name} {qp.layout.sq.iova:#x}")
                region = staging_region(ctrl, st)
                assert region.iova is not None
                res.line(f"staging_iova {name} {region.iova:#x}")
                for case, offset, length, lba_off in CASES:
                    seed = f"{name}-{case}"
                    rc = write_read(qp, region, seed, offset, length, base + lba_off, False)
                    res.check(f"io {name} {case}", rc)
                    expect.append((base + lba_off, length, seed))
                res.check(f"flush {name}", wait(qp, qp.submit(IoOpcode.FLUSH, NSID)))
                seed = f"{name}-fua"
                rc = write_read(qp, region, seed, 0, 4096, base + 1024, True)
                res.check(f"fua {name}", rc)
                expect.append((base + 1024, 4096, seed))
                ctrl.delete_io_queue_pair(qp)
                release_staging(ctrl, region)
        res.line(f"checks_seconds {time.monotonic() - t0:.1f}")
    res.check("close", 0)
    (out / "expect.json").write_text(json.dumps(expect))

    # kill -9 a process that owns the device in the middle of its I/O, then open it again.
    ready = out / "child.ready"
    child = subprocess.Popen([sys.executable, __file__, "child", bdf, str(ready), str(out)])
    deadline = time.monotonic() + 120
    while not ready.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
    res.check("child_running", 0 if ready.exists() and child.poll() is None else 1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    res.check("child_killed", 0 if child.returncode == -signal.SIGKILL else 1)
    t0 = time.monotonic()
    with NvmeController(bdf) as ctrl:
        qp = ctrl.create_io_queue_pair(DEPTH, "dram", lba_size=LBA)
        res.line(f"sq_iova reopen {qp.layout.sq.iova:#x}")
        region = staging_region(ctrl, "dram")
        seed = "reopen"
        rc = write_read(qp, region, seed, 0, 4096, 6 * COMBO_LBAS, False)
        expect.append((6 * COMBO_LBAS, 4096, seed))
        res.check("reopen_after_kill", rc)
        ctrl.delete_io_queue_pair(qp)
        release_staging(ctrl, region)
    res.line(f"reopen_seconds {time.monotonic() - t0:.1f}")
    (out / "expect.json").write_text(json.dumps(expect))


def child(bdf: str, ready: Path, out: Path) -> None:
    res = Results(out)
    ctrl = NvmeController(bdf)
    qp = ctrl.create_io_queue_pair(DEPTH, "dram", lba_size=LBA)
    res.line(f"sq_iova kill-child {qp.layout.sq.iova:#x}")
    region = staging_region(ctrl, "dram")
    region.view[:] = pattern("child", STAGING)
    written = 0
    slba = CHILD_LBA
    while True:
        while qp.outstanding < DEPTH - 1:
            qp.submit(IoOpcode.WRITE, NSID, slba, 64, region, 0, 64 * LBA)
            slba = CHILD_LBA + (slba + 64 - CHILD_LBA) % 8192
        written += len(qp.reap())
        if written >= 32 and not ready.exists():
            ready.write_text(str(written))


def verify_block(dev: str, out: Path) -> None:
    res = Results(out)
    expect = json.loads((out / "expect.json").read_text())
    bad = 0
    for slba, length, seed in expect:
        dump = out / f"dd-{slba}.bin"
        subprocess.run(
            [
                "dd",
                f"if={dev}",
                f"of={dump}",
                "bs=512",
                f"skip={slba}",
                f"count={length // LBA}",
                "iflag=direct",
                "status=none",
            ],
            check=True,
        )
        if dump.read_bytes() != pattern(seed, length):
            bad += 1
            res.line(f"kernel_mismatch {slba}")
        dump.unlink()
    res.line(f"kernel_ranges {len(expect)}")
    res.check("kernel_reads_our_writes", 0 if expect and not bad else 1)


def main() -> None:
    mode = sys.argv[1]
    try:
        if mode == "run":
            run(Path(sys.argv[2]))
        elif mode == "child":
            child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        elif mode == "verify-block":
            verify_block(sys.argv[2], Path(sys.argv[3]))
    except BaseException:
        traceback.print_exc()
        raise


if __name__ == "__main__":
    main()
