"""Record the parts of a live Linux system that ``nvmf doctor`` reads, as a small file tree.

Run it as root on the machine (or in the guest) to record::

    python tests/platform/capture_sysfs.py tests/data/sysfs/NAME

The tree mirrors the live paths under DEST (``DEST/sys/...``, ``DEST/proc/...``), keeps sysfs's
symbolic links as *relative* links inside the tree (so ``os.path.realpath`` walks them the same
way), and copies only the files the doctor looks at: the PCI devices' identity, config space and
the first 256 bytes of BAR0 for NVMe controllers (read through an ``mmap`` of ``resource0``, the
only way sysfs lets a memory BAR be read), RDMA devices' attributes and non-empty GIDs, the nvme
driver's controller attributes and parameters, the kernel's version, command line, loaded modules
and the relevant lines of its build configuration.  Files the kernel refuses to read are skipped.

Why a tool and not a ``cp -a``: sysfs is full of symbolic links (``/sys/bus/pci/devices/*``,
``/sys/class/*/*``, ``device``, ``driver``, ``subsystem``) that loop back on themselves, many
attributes are write-only or error on read, and BARs are not regular files.
"""

from __future__ import annotations

import argparse
import glob
import mmap
import os
import re
import shutil
import sys
from pathlib import Path

#: Kernel options whose lines are kept from the build configuration (the rest is noise).
KCONFIG_KEEP = re.compile(
    r"CONFIG_(PCI_P2PDMA|NVME_TARGET\w*|NVME_RDMA|NVME_TCP|NVME_CORE|BLK_DEV_NVME|INFINIBAND\w*"
    r"|RDMA_RXE|RDMA_SIW|MLX5_\w*|VFIO\w*|IOMMU\w*|INTEL_IOMMU\w*|AMD_IOMMU\w*|ARM_SMMU\w*"
    r"|PCI_ATS|PCI_PRI|PCI_PASID|ZONE_DEVICE|PCI_IOV|STRICT_DEVMEM|IO_STRICT_DEVMEM"
    r"|IKCONFIG\w*|LOCALVERSION\w*)[= ]"
)

#: Attributes recorded for every PCI device.
PCI_FILES = (
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
    "config",
    "resource",
    "numa_node",
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
    "p2pmem/size",
    "p2pmem/available",
    "p2pmem/published",
)
PCI_LINKS = ("driver", "iommu_group")

#: NVMe controller attributes (``/sys/class/nvme/nvmeN``).
NVME_FILES = (
    "model",
    "serial",
    "firmware_rev",
    "transport",
    "address",
    "state",
    "cntrltype",
    "queue_count",
    "sqsize",
    "cmb",
    "cmbloc",
    "cmbsz",
)

#: RDMA device attributes (``/sys/class/infiniband/DEV``).
IB_FILES = (
    "node_type",
    "node_guid",
    "sys_image_guid",
    "fw_ver",
    "hca_type",
    "hw_rev",
    "board_id",
    "node_desc",
    "parent",
)
IB_PORT_FILES = ("state", "phys_state", "link_layer", "rate", "lid")

BAR_BYTES = 256


class Recorder:
    """Copies files from the live root into DEST, mirroring the symbolic links on the way."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def _mirror_link(self, live: str) -> None:
        """Record the symbolic link ``live`` as a relative link at the same place in the tree."""
        target = os.readlink(live)
        if os.path.isabs(target):
            target = os.path.relpath(target, os.path.dirname(live))
        out = self.dest / live.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_symlink() or out.exists():
            return
        os.symlink(target, out)

    def _walk(self, live: str) -> str | None:
        """Mirror every symbolic link on the way to ``live``; return its fully resolved path."""
        cur = "/"
        for part in live.strip("/").split("/"):
            nxt = os.path.join(cur, part)
            if os.path.islink(nxt):
                self._mirror_link(nxt)
                resolved = os.path.realpath(nxt)
                self._walk(resolved)  # the target's own parents may be links too
                cur = resolved
            elif os.path.exists(nxt):
                cur = nxt
            else:
                return None
        return cur

    def link(self, live: str) -> None:
        """Record the symbolic link ``live`` itself (not what it points to)."""
        parent = self._walk(os.path.dirname(live))
        if parent is None:
            return
        real = os.path.join(parent, os.path.basename(live))
        if os.path.islink(real):
            self._mirror_link(real)

    def file(self, live: str, data: bytes | None = None) -> bool:
        """Copy one file (or write ``data`` in its place); False if it cannot be read."""
        real = self._walk(live)
        if real is None or os.path.isdir(real):
            return False
        if data is None:
            try:
                with open(real, "rb") as fh:
                    data = fh.read()
            except OSError:
                return False
        out = self.dest / real.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return True

    def directory(self, live: str) -> None:
        """Record that a directory exists (and the links leading to it), with none of its files."""
        real = self._walk(live)
        if real is not None:
            (self.dest / real.lstrip("/")).mkdir(parents=True, exist_ok=True)


def read_bar0(path: str) -> bytes | None:
    """The first BAR_BYTES of an NVMe controller's BAR0 through ``mmap`` (sysfs has no read()).

    A controller with CAP.CMBS (NVMe 1.4+) reads CMBLOC/CMBSZ as zero until CMBMSC.CRE is set;
    the recording is taken with CRE set (as the doctor reads it) and CMBMSC is then restored.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        with mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            # 32-bit accesses: NVMe registers must not be read or written bytewise.
            words = memoryview(mm).cast("I")
            cmbs = words[1] >> (57 - 32) & 1
            cmbmsc = words[0x50 // 4]
            enable = bool(cmbs) and not cmbmsc & 1
            if enable:
                words[0x50 // 4] = cmbmsc | 1
            snapshot = [int(words[i]) for i in range(BAR_BYTES // 4)]
            if enable:
                words[0x50 // 4] = cmbmsc
            words.release()
        return b"".join(w.to_bytes(4, "little") for w in snapshot)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def capture(dest: Path) -> None:
    rec = Recorder(dest)
    for name in ("osrelease",):
        rec.file(f"/proc/sys/kernel/{name}")
    for name in ("cmdline", "modules", "cpuinfo"):
        rec.file(f"/proc/{name}")
    release = Path("/proc/sys/kernel/osrelease").read_text().strip()
    for cfg in (f"/boot/config-{release}",):
        if os.path.exists(cfg):
            kept = [ln for ln in Path(cfg).read_text().splitlines() if KCONFIG_KEEP.search(ln)]
            rec.file(cfg, ("\n".join(kept) + "\n").encode())
    for name in ("online", "possible", "present"):
        rec.file(f"/sys/devices/system/cpu/{name}")

    for dev in sorted(glob.glob("/sys/bus/pci/devices/*")):
        rec.link(dev)
        for name in PCI_FILES:
            rec.file(f"{dev}/{name}")
        for name in PCI_LINKS:
            rec.link(f"{dev}/{name}")
        group = os.path.join(dev, "iommu_group")
        if os.path.exists(group):
            rec.file(f"{group}/type")
        cls = Path(dev, "class").read_text().strip()
        if cls.startswith("0x0108"):
            bar = read_bar0(f"{dev}/resource0")
            if bar is not None:
                rec.file(f"{dev}/resource0", bar)
    for host_bridge in sorted(glob.glob("/sys/devices/pci*")):
        rec.directory(host_bridge)

    for ctrl in sorted(glob.glob("/sys/class/nvme/nvme*")):
        rec.link(ctrl)
        for name in NVME_FILES:
            rec.file(f"{ctrl}/{name}")
        rec.link(f"{ctrl}/device")
    for mq in sorted(glob.glob("/sys/block/nvme*/mq/*")):
        rec.file(f"{mq}/cpu_list")
    for param in sorted(glob.glob("/sys/module/nvme*/parameters/*")):
        rec.file(param)

    for ib in sorted(glob.glob("/sys/class/infiniband/*")):
        rec.link(ib)
        for name in IB_FILES:
            rec.file(f"{ib}/{name}")
        rec.link(f"{ib}/device")
        for port in sorted(glob.glob(f"{ib}/ports/*")):
            for name in IB_PORT_FILES:
                rec.file(f"{port}/{name}")
            for gid in sorted(glob.glob(f"{port}/gids/*"), key=lambda p: int(p.rsplit("/", 1)[1])):
                try:
                    value = Path(gid).read_text().strip()
                except OSError:
                    continue
                if value.replace(":", "").strip("0"):
                    index = gid.rsplit("/", 1)[1]
                    rec.file(gid)
                    rec.file(f"{port}/gid_attrs/types/{index}")
                    rec.file(f"{port}/gid_attrs/ndevs/{index}")

    for iommu in sorted(glob.glob("/sys/class/iommu/*")):
        rec.link(iommu)
    for qid_max in sorted(glob.glob("/sys/kernel/config/nvmet/subsystems/*/attr_qid_max")):
        rec.file(qid_max)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory to write the tree into (replaced)")
    args = parser.parse_args(argv)
    if args.dest.exists():
        shutil.rmtree(args.dest)
    args.dest.mkdir(parents=True)
    capture(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
