"""Our target serving a namespace from an NVMe SSD through the userspace driver (``nvme_pci``).

One boot (``run_in_guest(..., cmb_mb=16)``: QEMU 7.2's NVMe controller with a 16 MiB CMB behind
an emulated IOMMU, bound to vfio-pci with the helpers of tests/guest/test_nvme_pci_guest.py):

1. for placements dram (SQ and staging in DRAM) and cmb (both in the CMB): ``nvmf serve
   --workers 2`` with the namespace on the SSD (one SSD queue pair for the control plane and
   one per worker), the kernel's NVMe/TCP host connects to 127.0.0.1 with two I/O queues (one
   per worker), fio writes and verifies (CRC32C) at 4 KiB and 128 KiB, ``nvmf status`` counts
   the bytes staged in DRAM and in the CMB, the target stops; its log names the placement each
   process got and why;
2. CMB staging behind an ``rdma`` port is refused at start with the reason;
3. the target is killed with ``kill -9`` in the middle of writes, started again on the device
   (it takes it again), and a known pattern is written through the fabric; the target stops,
   the controller goes back to the kernel's nvme driver, and ``dd`` from /dev/nvme0n1 reads
   the pattern.

The independent witness is QEMU's trace: between the Create I/O SQ of a target run and the
next, ``pci_nvme_map_addr_cmb`` (data taken from the CMB) fires only in the cmb run and
``pci_nvme_map_addr`` (data from host memory) only in the dram run, and the cmb run's SQ
address is inside the CMB.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

try:
    from tests.guest.harness import TRACE_FILE, GuestResult, run_in_guest
except ModuleNotFoundError:  # pytest started as a script: the repository is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.guest.harness import TRACE_FILE, GuestResult, run_in_guest
from tests.guest.ssd_config import ssd_config
from tests.guest.test_nvme_pci_guest import (
    TO_KERNEL,
    TO_VFIO,
    TRACE,
    Segment,
    cut_trace,
)

pytestmark = [pytest.mark.guest, pytest.mark.timeout(2700)]

NQN = "nqn.2024-01.io.nvmf:ssd"
PLACEMENTS = ("dram", "cmb")
#: Target runs in the order the script starts them, and how many SSD queue pairs each makes
#: (the control plane's and one per worker; the refused one stops before its workers start).
RUNS = {"dram": 3, "cmb": 3, "rdma": 1, "kill": 3, "restart": 3}


def _config(placement: str, rdma: bool = False) -> str:
    """The target's configuration, ``@BDF@`` standing for the controller's address."""
    cfg = ssd_config(
        NQN, placement, serial="nvmfpci0001", rdma=rdma, param={"inline_data_size": "8192"}
    )
    return json.dumps(cfg, indent=1)


SCRIPT = (
    """
exec 2>$OUT/stderr.txt
export PYTHONPATH=$REPO/src:$REPO
$PY -c "import nvmf; print(nvmf.__file__)" > $OUT/nvmf_path.txt
modprobe nvme-tcp
ip link set lo up
"""
    + TO_VFIO
    + f"""
readlink /sys/bus/pci/devices/$BDF/driver > $OUT/driver_vfio.txt
mkdir -p /tmp/t
cat > /tmp/t/dram.tmpl <<'EOF'
{_config("dram")}
EOF
cat > /tmp/t/cmb.tmpl <<'EOF'
{_config("cmb")}
EOF
cat > /tmp/t/rdma.tmpl <<'EOF'
{_config("cmb", rdma=True)}
EOF
NQN={NQN}
"""
    + r"""
for p in dram cmb rdma; do sed "s/@BDF@/$BDF/" /tmp/t/$p.tmpl > /tmp/t/$p.json; done
SOCK=/tmp/t/control.sock
start() {  # name config [serve args]: the target in the background ($target), until it listens
  name=$1; cfg=$2; shift 2
  $PY -m nvmf.cli.main serve -v --workers 2 --config /tmp/t/$cfg.json --control-socket $SOCK \
      "$@" > $OUT/target-$name.log 2>&1 &
  target=$!
  for i in $(seq 900); do
    grep -q 'nvmf: listening' $OUT/target-$name.log && break
    kill -0 $target 2>/dev/null || break
    sleep 0.2
  done
  grep -q 'nvmf: listening' $OUT/target-$name.log
  echo "start $name rc=$?" >> $OUT/results.txt
}
stop() {  # name: SIGTERM, wait
  kill $target; wait $target
  echo "stop $1 rc=$?" >> $OUT/results.txt
}
newdev() {  # the namespace block device of the only connected controller
  for i in $(seq 100); do
    d=$(ls /dev/ | grep -E '^nvme[0-9]+n[0-9]+$' | head -1)
    [ -n "$d" ] && { echo /dev/$d; return; }
    sleep 0.2
  done
}

# 1. Both placements: fio verify through the fabric onto the SSD.
for p in dram cmb; do
  start $p $p
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -i 2
  echo "connect $p rc=$?" >> $OUT/results.txt
  dev=$(newdev)
  for bs in 4k 128k; do
    [ $bs = 4k ] && size=1m || size=4m
    # Two jobs, one per guest CPU, so through both of the host's I/O queues (one per worker),
    # each on its own range.
    fio --name=$p-$bs --filename=$dev --ioengine=libaio --direct=1 --iodepth=4 \
        --numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split --offset_increment=$size \
        --rw=randwrite --bs=$bs --size=$size --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --verify_state_save=0 --output-format=json --output=$OUT/fio-$p-$bs.json
    echo "fio $p-$bs rc=$?" >> $OUT/results.txt
  done
  $PY -m nvmf.cli.main status -o json --control-socket $SOCK > $OUT/status-$p.json
  echo "status $p rc=$?" >> $OUT/results.txt
  nvme disconnect -n $NQN > /dev/null
  echo "disconnect $p rc=$?" >> $OUT/results.txt
  sleep 1
  stop $p
done

# 2. CMB staging behind an RDMA port: refused at start, with the reason.
$PY -m nvmf.cli.main serve -v --workers 2 --config /tmp/t/rdma.json --control-socket none \
    > $OUT/target-rdma.log 2>&1
echo "serve rdma rc=$?" >> $OUT/results.txt

# 3. kill -9 in the middle of writes; the device is taken again; a pattern goes through.
start kill cmb
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -i 2
echo "connect kill rc=$?" >> $OUT/results.txt
dev=$(newdev)
dd if=/dev/urandom of=$dev bs=128k count=64 oflag=direct 2>/dev/null &
writer=$!
sleep 3
kill -9 $target
wait $target
echo "kill9 rc=$?" >> $OUT/results.txt
# The workers die with it (PR_SET_PDEATHSIG); until they have, they hold the device.
for i in $(seq 100); do pgrep -f nvmf.offload.worker > /dev/null || break; sleep 0.2; done
pgrep -f nvmf.offload.worker > /dev/null
echo "workers gone rc=$?" >> $OUT/results.txt
nvme disconnect -n $NQN > /dev/null
echo "disconnect kill rc=$?" >> $OUT/results.txt
wait $writer
sleep 1
start restart cmb
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -i 2
echo "connect restart rc=$?" >> $OUT/results.txt
dev=$(newdev)
head -c 1M /dev/urandom > /tmp/t/pattern.bin
dd if=/tmp/t/pattern.bin of=$dev bs=1M seek=64 oflag=direct conv=fsync 2>/dev/null
echo "pattern write rc=$?" >> $OUT/results.txt
dd if=$dev of=/tmp/t/fabric.bin bs=1M skip=64 count=1 iflag=direct 2>/dev/null
cmp /tmp/t/pattern.bin /tmp/t/fabric.bin
echo "pattern fabric read rc=$?" >> $OUT/results.txt
$PY -m nvmf.cli.main status -o json --control-socket $SOCK > $OUT/status-restart.json
nvme disconnect -n $NQN > /dev/null
echo "disconnect restart rc=$?" >> $OUT/results.txt
sleep 1
stop restart
"""
    + TO_KERNEL
    + r"""
readlink /sys/bus/pci/devices/$BDF/driver > $OUT/driver_back.txt
dd if=/dev/nvme0n1 of=/tmp/t/kernel.bin bs=1M skip=64 count=1 iflag=direct 2>/dev/null
cmp /tmp/t/pattern.bin /tmp/t/kernel.bin
echo "kernel reads pattern rc=$?" >> $OUT/results.txt
echo done > $OUT/done.txt
"""
)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    result = run_in_guest("nvme-pci-target", SCRIPT, cmb_mb=16, timeout=2400, trace=TRACE)
    (result.out / "seconds.txt").write_text(f"{result.seconds:.0f}\n")
    result.finished()
    return result


def _rc(guest: GuestResult, name: str) -> str:
    results = guest.results()
    assert f"{name} rc" in results, f"no result for {name}: {results}"
    return results[f"{name} rc"]


def test_guest_ran_this_worktree_with_vfio(guest: GuestResult) -> None:
    assert guest.read("nvmf_path.txt").strip() == str(
        Path(__file__).resolve().parents[2] / "src" / "nvmf" / "__init__.py"
    )
    assert guest.read("driver_vfio.txt").strip().endswith("/vfio-pci")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_fio_verify_through_the_fabric_onto_the_ssd(guest: GuestResult, placement: str) -> None:
    for step in ("start", "connect", "fio {}-4k", "fio {}-128k", "status", "disconnect", "stop"):
        name = step.format(placement) if "{}" in step else f"{step} {placement}"
        assert _rc(guest, name) == "0", (name, guest.read(f"target-{placement}.log")[-3000:])
    log = guest.read(f"target-{placement}.log")
    assert "Traceback" not in log


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_log_names_the_placement_and_why(guest: GuestResult, placement: str) -> None:
    log = guest.read(f"target-{placement}.log")
    if placement == "cmb":
        sq = r"in CMB \(configured cmb, CMBSZ.SQS set\)"
        staging = r"in CMB \(configured cmb, CMBSZ.RDS set and CMBSZ.WDS set\)"
    else:
        sq = staging = r"in DRAM \(configured dram\)"
    for who in ("control plane", "offload worker 0", "offload worker 1"):
        line = rf"{who}: SQ \d+ at 0x[0-9a-f]+ {sq}, staging \d+ bytes at 0x[0-9a-f]+ {staging}"
        assert re.search(line, log), (who, log)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_counters_say_where_payload_was_staged(guest: GuestResult, placement: str) -> None:
    status = json.loads(guest.read(f"status-{placement}.json"))
    key = f"{NQN}/1"
    per_process = [status["control_plane"]["namespaces"].get(key, {})]
    per_process += [w["namespaces"].get(key, {}) for w in status["workers"]]
    counters = {
        name: sum(c.get(name, 0) for c in per_process)
        for name in ("staged_dram_bytes", "staged_cmb_bytes")
    }
    # Both workers served I/O: the host's two queues went one to each.
    assert all(w["namespaces"][key]["write_cmds"] for w in status["workers"]), status
    # fio's two jobs each wrote and read back 1 MiB at 4 KiB and 4 MiB at 128 KiB.
    here, other = (
        ("staged_cmb_bytes", "staged_dram_bytes")
        if placement == "cmb"
        else ("staged_dram_bytes", "staged_cmb_bytes")
    )
    assert counters[here] >= 2 * 2 * (5 << 20), counters
    assert counters[other] == 0, counters


def test_cmb_staging_behind_rdma_is_refused_with_the_reason(guest: GuestResult) -> None:
    assert _rc(guest, "serve rdma") == "1"
    log = guest.read("target-rdma.log")
    assert "staging_placement cmb on" in log and "cannot be served over rdma" in log, log
    assert "P2PDMA" in log, log


def test_restart_after_kill_9_takes_the_device_again(guest: GuestResult) -> None:
    assert _rc(guest, "start kill") == "0"
    assert _rc(guest, "kill9") == "137"
    assert _rc(guest, "workers gone") == "1"  # pgrep found none
    assert _rc(guest, "start restart") == "0", guest.read("target-restart.log")[-3000:]
    assert _rc(guest, "connect restart") == "0"
    assert _rc(guest, "pattern write") == "0"
    assert _rc(guest, "pattern fabric read") == "0"
    assert _rc(guest, "stop restart") == "0"


def test_the_kernel_driver_reads_what_came_through_the_fabric(guest: GuestResult) -> None:
    assert guest.read("driver_back.txt").strip().endswith("/nvme")
    assert _rc(guest, "kernel reads pattern") == "0"


_SQ_LOG = re.compile(r": SQ \d+ at (0x[0-9a-f]+) in")
_CMB_LOG = re.compile(r"CMB of (\d+) bytes at (0x[0-9a-f]+)")


def segments(guest: GuestResult) -> list[Segment]:
    """Cut QEMU's trace at every Create I/O SQ; tag the pieces our target runs started, in the
    order they ran (each run logged its SQs' addresses, in the order it made them)."""
    expected = []
    for run, pairs in RUNS.items():
        found = _SQ_LOG.findall(guest.read(f"target-{run}.log"))
        assert len(found) == pairs, f"target-{run}.log names {len(found)} SQs, not {pairs}"
        expected += [(run, int(address, 16)) for address in found]
    return cut_trace(guest.read(TRACE_FILE), expected)


def test_qemu_trace_shows_the_cmb_used_only_in_the_cmb_run(guest: GuestResult) -> None:
    logged = _CMB_LOG.search(guest.read("target-cmb.log"))
    assert logged, "the target did not log the CMB"
    size, cba = int(logged.group(1)), int(logged.group(2), 16)
    assert size == 16 << 20
    pieces = segments(guest)
    runs: dict[str, list[int]] = {}
    counts = []
    for p in pieces:
        cmb_maps, dram_maps = len(p.cmb_maps()), len(p.dram_maps(cba, cba + size))
        counts.append((p, cmb_maps, dram_maps))
        total = runs.setdefault(p.name, [0, 0])
        total[0] += cmb_maps
        total[1] += dram_maps
        in_cmb = cba <= p.sq_address < cba + size
        assert in_cmb == (p.name != "dram"), p  # every run but the first places SQs in the CMB
    assert runs["dram"][1] > 0 and runs["dram"][0] == 0, runs["dram"]
    assert runs["cmb"][0] > 0 and runs["cmb"][1] == 0, runs["cmb"]
    (guest.out / "trace_counts.txt").write_text(
        "".join(
            f"{p.name} sq={p.sq_address:#x} map_addr_cmb={cmb} map_addr_dram={dram}\n"
            for p, cmb, dram in counts
        )
    )
