"""This project's NVMe/RDMA host against the Linux 6.1 kernel target (``nvmet-rdma``) over
Soft-RoCE in the guest: one boot, every check reads what the script left in files.

The kernel target serves a namespace on a loop device (a file namespace on the guest's /tmp
refuses O_DIRECT, and with ``buffered_io`` gets an LBA size of 1 byte) on a port at the
Soft-RoCE device's own address (a dummy netdev: pyverbs 44 cannot bind loopback addresses,
docs/rdma.md).  Then, each with our host over ``-t rdma``:

* ``nvmf discover`` reads the discovery log;
* ``nvmf identify`` brings up a controller and sees the namespace;
* ``tests/guest/rdma_host_driver.py`` connects with two I/O queues, writes a pattern at 4 KiB
  (in-capsule) and at 128 KiB (keyed SGL) on each queue and reads it back, counts the
  responses that invalidated the command's memory window, and opens an admin queue deeper
  than the target allows to see its reject decoded;
* ``nvmf bench -i 2 --verify`` moves data on two I/O queues and checks it;
* the namespace's loop device is read with ``dd`` afterwards: the target wrote the bytes our
  host sent where they belong (not only what our host reads back).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.guest.harness import GuestResult, run_in_guest
from tests.guest.rdma_host_driver import EXTENTS, QUEUE_STRIDE, pattern

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1800)]

ADDR = "10.99.0.1"
NQN = "nqn.2024-01.io.nvmf:rdmahost"

SCRIPT = r"""
exec > $OUT/trace.txt 2>&1
export PYTHONPATH=$REPO/src:$REPO
# Byte code survives between boots here: compiling the CLI's imports under emulation takes
# minutes.
export PYTHONPYCACHEPREFIX=$REPO/tests/guest/out/.pycache
NVMF="$PY -X faulthandler -m nvmf.cli.main"
ip link set lo up
ip link add nvmf0 type dummy && ip addr add ADDR/24 dev nvmf0 && ip link set nvmf0 up
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev nvmf0
echo "rxe rc=$?" >> $OUT/results.txt
ibv_devinfo -v -d rxe0 > $OUT/devinfo.txt 2>&1
modprobe nvmet-rdma
echo "nvmet-rdma rc=$?" >> $OUT/results.txt
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
truncate -s 16M /tmp/nsimg
# A loop device: 512-byte LBAs (a file namespace on the guest's /tmp gets its odd block size).
modprobe loop
L=$(losetup -f --show /tmp/nsimg)
S=/sys/kernel/config/nvmet/subsystems/NQN
mkdir $S && echo 1 > $S/attr_allow_any_host
mkdir $S/namespaces/1
echo $L > $S/namespaces/1/device_path
echo 1 > $S/namespaces/1/enable
echo "namespace rc=$?" >> $OUT/results.txt
P=/sys/kernel/config/nvmet/ports/1
mkdir $P
echo rdma > $P/addr_trtype; echo ipv4 > $P/addr_adrfam
echo ADDR > $P/addr_traddr; echo 4420 > $P/addr_trsvcid
ln -s $S $P/subsystems/
echo "port rc=$?" >> $OUT/results.txt
dmesg -C
dmesg -w > $OUT/kmsg.txt 2>&1 &
timeout -s ABRT 400 $NVMF discover -t rdma -a ADDR -s 4420 > $OUT/discover.txt 2>&1
echo "discover rc=$?" >> $OUT/results.txt
timeout -s ABRT 300 $NVMF identify -t rdma -a ADDR -n NQN > $OUT/identify.txt 2>&1
echo "identify rc=$?" >> $OUT/results.txt
timeout -s ABRT 300 $PY -X faulthandler -m tests.guest.rdma_host_driver ADDR NQN \
    $OUT/driver.json > $OUT/driver.log 2>&1
echo "driver rc=$?" >> $OUT/results.txt
# What the target wrote into the namespace, for each extent the driver wrote.
for e in EXTENTS; do
    set -- ${e//,/ }
    dd if=$L of=$OUT/file-$1.bin bs=4096 skip=$2 count=$3 iflag=direct status=none
done
dmesg > $OUT/dmesg-sequential.txt
# Then load: many commands in flight, without and with memory windows, then nvmf bench (last:
# if Soft-RoCE falls over under load, the evidence above is already written).
for mode in plain windows; do
    timeout -s ABRT 300 $PY -X faulthandler -m tests.guest.rdma_host_driver ADDR NQN \
        $OUT/concurrent-$mode.json $mode > $OUT/concurrent-$mode.log 2>&1
    echo "concurrent-$mode rc=$?" >> $OUT/results.txt
    sync
done
timeout -s ABRT 300 $NVMF bench -t rdma -a ADDR -n NQN -i 2 --numjobs 2 --rw randrw \
    --bs 4k --iodepth 8 --runtime 5 --size 1m --offset 12m --verify --json \
    > $OUT/bench.json 2> $OUT/bench.err
echo "bench rc=$?" >> $OUT/results.txt
dmesg > $OUT/dmesg.txt
echo done > $OUT/finished
"""


def _script() -> str:
    extents = []
    for qi in range(2):
        for name, offset, size in EXTENTS:
            extents.append(f"{name}-q{qi},{(offset + qi * QUEUE_STRIDE) // 4096},{size // 4096}")
    return SCRIPT.replace("NQN", NQN).replace("ADDR", ADDR).replace("EXTENTS", " ".join(extents))


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return run_in_guest("rdma-host", _script(), timeout=1700)


def _results(guest: GuestResult) -> dict[str, str]:
    out = {}
    for line in guest.lines("results.txt"):
        key, _, value = line.partition("=")
        out[key] = value
    return out


def _driver(guest: GuestResult) -> dict[str, Any]:
    text = guest.read("driver.json")
    assert text, guest.read("driver.log")[-3000:] + guest.read("trace.txt")[-2000:]
    report: dict[str, Any] = json.loads(text)
    assert "error" not in report, report["error"] + guest.read("dmesg.txt")[-2000:]
    return report


def test_the_kernel_target_listens_on_soft_roce(guest: GuestResult) -> None:
    res = _results(guest)
    assert res, guest.console[-3000:]
    for step in ("rxe rc", "nvmet-rdma rc", "namespace rc", "port rc"):
        assert res.get(step) == "0", (step, guest.read("trace.txt")[-3000:])


def test_discover_over_rdma(guest: GuestResult) -> None:
    assert _results(guest).get("discover rc") == "0", guest.read("discover.txt")[-3000:]
    text = guest.read("discover.txt")
    assert "trtype:  rdma" in text, text
    assert f"subnqn:  {NQN}" in text, text
    assert f"traddr:  {ADDR}" in text, text


def test_identify_over_rdma(guest: GuestResult) -> None:
    assert _results(guest).get("identify rc") == "0", guest.read("identify.txt")[-3000:]
    text = guest.read("identify.txt")
    assert f"Controller 1 of {NQN}" in text or f"of {NQN}" in text, text
    assert "namespaces      : 1 active" in text, text
    # The Linux target's I/O queues take 4 KiB in the capsule (IOCCSZ 260).
    assert "(4096 bytes in-capsule)" in text, text


def test_two_io_queues_write_and_read_back_at_4k_and_128k(guest: GuestResult) -> None:
    report = _driver(guest)
    assert report["io_queues"] == 2, report
    assert report["queue_types"] == ["RdmaHostQueue"], report
    assert report["io_incapsule"] == [4096, 4096], report
    assert report["block_size"] == 512, report
    expected = {f"{name}-q{qi}" for qi in range(2) for name, _, _ in EXTENTS}
    assert set(report["readback"]) == expected, report
    assert all(report["readback"].values()), report["readback"]


def test_the_target_wrote_our_bytes_into_the_backing_file(guest: GuestResult) -> None:
    _driver(guest)
    for qi in range(2):
        for name, _, size in EXTENTS:
            tag = f"{name}-q{qi}"
            data = (guest.out / f"file-{tag}.bin").read_bytes()
            assert data == pattern(tag, size), f"{tag}: backing file differs"


def test_the_controller_invalidates_every_key_the_host_asked_it_to(guest: GuestResult) -> None:
    report = _driver(guest)
    assert "MEM_WINDOW_TYPE_2B" in guest.read("devinfo.txt"), guest.read("devinfo.txt")
    # Soft-RoCE on 6.1 has type 2B memory windows: every queue binds them.
    assert report["uses_windows"] == [True, True, True], report
    assert report["invalidate_requests"] > 0, report
    assert report["invalidated_completions"] == report["invalidate_requests"], report
    # rxe reports the invalidation with the kernel's flag bit (1 << 2), not IBV_WC_WITH_INV.
    assert set(report["recv_wc_flags"]) <= {"0x1", "0x5", "0x9", "0xd"}, report


def test_a_rejected_queue_names_the_nvme_rdma_status(guest: GuestResult) -> None:
    report = _driver(guest)
    # An admin queue of 64 entries: the Linux target allows 32 (NVME_AQ_DEPTH).
    assert "NVMe/RDMA status 0x4 (invalid host SQ size)" in report["reject"], report


@pytest.mark.parametrize("mode", ["plain", "windows"])
def test_many_commands_in_flight(guest: GuestResult, mode: str) -> None:
    text = guest.read(f"concurrent-{mode}.json")
    assert text, guest.read(f"concurrent-{mode}.log")[-3000:] + guest.read("kmsg.txt")[-3000:]
    report = json.loads(text)
    assert "error" not in report, report["error"] + guest.read("kmsg.txt")[-3000:]
    assert report["commands"] == 156 and report["mismatches"] == 0, report
    assert report["uses_windows"] == [mode == "windows"] * 2, report
    if mode == "windows":
        # Every read and every 128 KiB write (94); the 62 writes of 4 KiB ride in the capsule.
        assert report["invalidated_completions"] == report["invalidate_requests"] == 94, report
    else:
        assert report["invalidate_requests"] == report["invalidated_completions"] == 0, report


def test_bench_verifies_data_on_two_io_queues(guest: GuestResult) -> None:
    assert guest.read("finished"), guest.read("kmsg.txt")[-3000:] + guest.console[-3000:]
    assert _results(guest).get("bench rc") == "0", guest.read("bench.err")[-3000:]
    summary = json.loads(guest.read("bench.json"))
    assert summary["io_queues"] == 2, summary
    assert summary["error"] is None, summary
    assert summary["read"]["ios"] > 0 and summary["write"]["ios"] > 0, summary
    assert summary["verify"]["checked"] > 0, summary
    assert summary["verify"]["mismatches"] == 0, summary
