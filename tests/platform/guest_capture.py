"""One guest boot that runs ``nvmf doctor`` against QEMU's CMB controller and Soft-RoCE, and
records the sysfs trees the offline tests use.

Used by tests/guest/test_doctor_guest.py (which checks the reports) and runnable by hand to
re-record the trees under tests/data/sysfs::

    .venv/bin/python -m tests.platform.guest_capture

What the script does in the guest (``tests.vm.guest --cmb-nvme 16``, 2 CPUs, Linux 6.1):

1. Soft-RoCE: ``rdma link add rxe0 type rxe netdev lo``.
2. ``nvmf doctor`` while the kernel's nvme driver owns the controller (BAR0 cannot be
   mapped: Debian's kernel has CONFIG_IO_STRICT_DEVMEM), and a recording of that state
   (``qemu-nvme-bound``).
3. Unbind the controller from nvme and bind it to vfio-pci (as this project's userspace driver
   needs), record again (``qemu-nvme-vfio``: BAR0 readable, CMB registers enabled by the nvme
   driver's earlier CMBMSC write).
4. Clear CMBMSC as a freshly reset controller has it (CRE=0, so CMBSZ reads 0), run the doctor,
   which must set CRE to read the CMB and restore CMBMSC; dump the registers before and after.
5. Run the doctor once more with ``--no-register-writes``.
"""

from __future__ import annotations

import shutil
import sys

from tests.guest.harness import REPO, GuestResult, run_in_guest, shared_boot

CMB_MB = 16
GUEST_CPUS = 2
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
cat > $OUT/regs.py <<'PYEOF'
{REGS_PY}
PYEOF
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev lo
rdma link show > $OUT/rdma_link.txt
nproc > $OUT/nproc.txt

$PY -m nvmf.cli.main doctor > $OUT/bound.txt; echo $? > $OUT/bound.rc
$PY -m nvmf.cli.main doctor --json > $OUT/bound.json
$PY tests/platform/capture_sysfs.py $OUT/tree-bound

BDF=$(basename $(dirname $(grep -l 0x010802 /sys/bus/pci/devices/*/class)))
echo $BDF > $OUT/bdf.txt
echo $BDF > /sys/bus/pci/drivers/nvme/unbind
modprobe vfio-pci
echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override
echo $BDF > /sys/bus/pci/drivers/vfio-pci/bind
readlink /sys/bus/pci/devices/$BDF/driver > $OUT/driver_after.txt
$PY $OUT/regs.py > $OUT/regs_unbound.txt
$PY tests/platform/capture_sysfs.py $OUT/tree-vfio

$PY $OUT/regs.py clear > $OUT/regs_cleared.txt
$PY -m nvmf.cli.main doctor > $OUT/vfio.txt; echo $? > $OUT/vfio.rc
$PY $OUT/regs.py > $OUT/regs_after_text.txt
$PY -m nvmf.cli.main doctor --json > $OUT/vfio.json
$PY $OUT/regs.py > $OUT/regs_after.txt
$PY -m nvmf.cli.main doctor --json --no-register-writes > $OUT/vfio_ro.json
$PY -m nvmf.cli.main doctor --host-cpus 96 -i 8 --target-max-queues 4 > $OUT/whatif.txt
echo done > $OUT/done.txt
"""


def run(name: str = "doctor-capture") -> GuestResult:
    """Boot the guest with the 16 MiB CMB controller and run :data:`SCRIPT` alone."""
    return run_in_guest(name, SCRIPT, cmb_mb=CMB_MB)


#: The doctor's checks as a part of the boot the other CMB-controller checks share.
doctor = shared_boot("doctor", SCRIPT, cmb_mb=CMB_MB)


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


__all__ = ["CMB_MB", "DATA", "GUEST_CPUS", "SCRIPT", "copy_trees", "run"]
