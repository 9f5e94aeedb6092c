"""One guest boot that runs ``nvmf doctor`` against QEMU's CMB controller and Soft-RoCE and,
run by hand, records the sysfs trees the offline tests use.

Used by tests/guest/test_doctor_guest.py (which checks the reports) and runnable by hand to
re-record the trees under tests/data/sysfs::

    .venv/bin/python -m tests.platform.guest_capture

What the script does in the guest (``tests.vm.guest --cmb-nvme 16``, 2 CPUs, Linux 6.1):

1. Soft-RoCE: ``rdma link add rxe0 type rxe netdev lo``.
2. ``nvmf doctor`` while the kernel's nvme driver owns the controller (BAR0 cannot be
   mapped: Debian's kernel has CONFIG_IO_STRICT_DEVMEM), and, when run by hand (``RECORD``
   set: a recording costs minutes under emulation and no test reads it), a recording of that
   state (``qemu-nvme-bound``).
3. Unbind the controller from nvme and bind it to vfio-pci (as this project's userspace driver
   needs), record again by hand (``qemu-nvme-vfio``: BAR0 readable, CMB registers enabled by
   the nvme driver's earlier CMBMSC write).
4. Clear CMBMSC as a freshly reset controller has it (CRE=0, so CMBSZ reads 0), run the doctor,
   which must set CRE to read the CMB and restore CMBMSC; dump the registers before and after.
5. Run the doctor once more with ``--no-register-writes``.
6. ``nvmf doctor --verify-cmb`` on the idle controller (vfio-pci): the SSD reads 1 MiB at
   LBA 131072, where step 2 had the kernel's driver write a random pattern with ``dd``,
   into DRAM and into its CMB; JSON, then text.
7. Our target (``nvmf serve --workers 2``) serves an ``nvme_pci`` namespace on the controller
   with SQs and staging in the CMB; the doctor beside it (default control socket) reports the
   CMB and every process's placement from the target, and ``--verify-cmb`` is refused naming
   the target.  QEMU's trace (:data:`TRACE`) is the witness of step 6's reads.
"""

from __future__ import annotations

import json
import shutil
import sys

from tests.guest.harness import REPO, GuestResult, run_in_guest, shared_boot
from tests.guest.ssd_config import ssd_config

CMB_MB = 16
GUEST_CPUS = 2
#: QEMU trace events: each Create I/O SQ (with its address) and each data mapping the
#: controller makes (``_cmb`` too when the address is in its CMB).
TRACE = ("pci_nvme_map_addr*", "pci_nvme_create_sq")
#: Where step 2 writes the pattern step 6 verifies: 64 MiB into the namespace, 1 MiB.
PATTERN_LBA = 131072
SSD_NQN = "nqn.2024-01.io.nvmf:doctor"
#: The target of step 7 (``@BDF@`` stands for the controller's address).
SSD_CONFIG = json.dumps(ssd_config(SSD_NQN, "cmb", serial="doctor0001"), indent=1)
DATA = REPO / "tests" / "data" / "sysfs"

#: Reads (or with ``clear`` zeroes) the CMB registers of the NVMe controller through resource0.
REGS_PY = r"""
import glob, mmap, os, sys
devs = glob.glob("/sys/bus/pci/devices/*")
dev = [d for d in devs if open(d + "/class").read().startswith("0x010802")][0]
fd = os.open(dev + "/resource0", os.O_RDWR)
mm = mmap.mmap(fd, 4096)
w = memoryview(mm).cast("I")
if sys.argv[1:] == ["clear"]:
    w[0x50 // 4] = 0
    w[0x54 // 4] = 0
regs = (("CAP_HI", 4), ("VS", 8), ("CMBLOC", 0x38), ("CMBSZ", 0x3C), ("CMBMSC", 0x50),
        ("CMBSTS", 0x58))
print(os.path.basename(dev), " ".join(f"{n}=0x{w[o // 4]:08x}" for n, o in regs))
"""

SCRIPT = f"""
exec 2>$OUT/stderr.txt
export PYTHONPATH=$REPO/src:$REPO
$PY -c "import nvmf; print(nvmf.__file__)" > $OUT/nvmf_path.txt
cat > $OUT/regs.py <<'PYEOF'
{REGS_PY}
PYEOF
ip link set lo up
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev lo
rdma link show > $OUT/rdma_link.txt
nproc > $OUT/nproc.txt

# nvmf commands that run one after another go in one Python process (the harness's batch).
batch "out=$OUT/bound.txt rc=$OUT/bound.rc doctor" "out=$OUT/bound.json doctor --json"
[ -z "${{RECORD:-}}" ] || $PY tests/platform/capture_sysfs.py $OUT/tree-bound
# A pattern the kernel's driver writes, for --verify-cmb to find (step 6).
head -c 1M /dev/urandom > /tmp/pattern.bin
dd if=/tmp/pattern.bin of=/dev/nvme0n1 bs=1M seek={PATTERN_LBA * 512 >> 20} oflag=direct \\
  conv=fsync 2>/dev/null
echo "pattern write rc=$?" >> $OUT/results.txt
sha256sum /tmp/pattern.bin | cut -d' ' -f1 > $OUT/pattern.sha256

BDF=$(basename $(dirname $(grep -l 0x010802 /sys/bus/pci/devices/*/class)))
echo $BDF > $OUT/bdf.txt
echo $BDF > /sys/bus/pci/drivers/nvme/unbind
modprobe vfio-pci
echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override
echo $BDF > /sys/bus/pci/drivers/vfio-pci/bind
readlink /sys/bus/pci/devices/$BDF/driver > $OUT/driver_after.txt
$PY $OUT/regs.py > $OUT/regs_unbound.txt
[ -z "${{RECORD:-}}" ] || $PY tests/platform/capture_sysfs.py $OUT/tree-vfio

$PY $OUT/regs.py clear > $OUT/regs_cleared.txt
$PY -m nvmf.cli.main doctor > $OUT/vfio.txt; echo $? > $OUT/vfio.rc
$PY $OUT/regs.py > $OUT/regs_after_text.txt
$PY -m nvmf.cli.main doctor --json > $OUT/vfio.json
$PY $OUT/regs.py > $OUT/regs_after.txt
# 5, then 6: the SSD reads the pattern into DRAM and into its CMB.
R="rc=$OUT/results.txt"
batch "out=$OUT/vfio_ro.json doctor --json --no-register-writes" \\
  "out=$OUT/whatif.txt doctor --host-cpus 96 -i 8 --target-max-queues 4" \\
  "out=$OUT/verify.json $R tag='verify json' \\
   doctor --verify-cmb $BDF --verify-cmb-lba {PATTERN_LBA} --json" \\
  "out=$OUT/verify.txt $R tag='verify text' doctor --verify-cmb $BDF --verify-cmb-lba {PATTERN_LBA}"

# 7. Our target owns the controller; the doctor asks it (default control socket).
cat > /tmp/ssd.tmpl <<'JSONEOF'
{SSD_CONFIG}
JSONEOF
sed "s/@BDF@/$BDF/" /tmp/ssd.tmpl > /tmp/ssd.json
$PY -m nvmf.cli.main serve -v --workers 2 --config /tmp/ssd.json > $OUT/target.log 2>&1 &
target=$!
echo $target > $OUT/target.pid
for i in $(seq 900); do
  grep -q 'nvmf: control socket' $OUT/target.log && break
  kill -0 $target 2>/dev/null || break
  sleep 0.2
done
grep -q 'nvmf: control socket' $OUT/target.log
echo "target start rc=$?" >> $OUT/results.txt
batch "out=$OUT/held.json $R tag='held json' doctor --json" \\
  "out=$OUT/verify_held.txt err=$OUT/verify_held.txt $R tag='verify held' \\
   doctor --verify-cmb $BDF"
kill $target; wait $target
echo "target stop rc=$?" >> $OUT/results.txt
echo done > $OUT/done.txt
"""


def run(name: str = "doctor-capture") -> GuestResult:
    """Boot the guest with the 16 MiB CMB controller and run :data:`SCRIPT` alone, recording
    the sysfs trees."""
    return run_in_guest(name, "RECORD=1\n" + SCRIPT, cmb_mb=CMB_MB, trace=TRACE)


#: The doctor's checks as a part of the boot the other CMB-controller checks share.
doctor = shared_boot("doctor", SCRIPT, cmb_mb=CMB_MB, trace=TRACE)


def copy_trees(result: GuestResult) -> None:
    """Replace the recorded guest trees under tests/data/sysfs with this run's."""
    for src, dst in (("tree-bound", "qemu-nvme-bound"), ("tree-vfio", "qemu-nvme-vfio")):
        target = DATA / dst
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(result.out / src, target, symlinks=True)


def main() -> int:
    result = run("doctor-capture")
    if not (result.out / "done.txt").exists():
        print(result.console[-4000:], file=sys.stderr)
        return 1
    copy_trees(result)
    print(f"recorded {DATA / 'qemu-nvme-bound'} and {DATA / 'qemu-nvme-vfio'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CMB_MB",
    "DATA",
    "GUEST_CPUS",
    "PATTERN_LBA",
    "SCRIPT",
    "SSD_NQN",
    "TRACE",
    "copy_trees",
    "run",
]
