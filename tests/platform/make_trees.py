"""Derive the topology test trees from the recorded guest tree ``qemu-nvme-vfio``.

The guest has one PCI host bridge with every device on its root bus, so the topologies the
doctor must judge (a PCIe switch shared by NIC and SSD, an Intel host bridge on the P2PDMA
whitelist, an Arm root complex, ACS redirect on the switch) are made by editing a copy of the
recorded tree the way sysfs would show them: new bridge directories with configuration spaces
that carry a PCI Express capability (port type) and an ACS extended capability, the NVMe
controller moved below them, a ConnectX NIC with an ``infiniband/mlx5_0`` device added next to
it, and the kernel configuration switched to ``CONFIG_PCI_P2PDMA=y``.  Re-run after re-recording::

    .venv/bin/python -m tests.platform.make_trees

tests/data/sysfs/README.md describes each tree.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

from nvmf.platform.pci import CAP_ID_PCIE, ConfigSpace

DATA = Path(__file__).resolve().parents[1] / "data" / "sysfs"
BASE = "qemu-nvme-vfio"
NVME_BDF = "0000:00:0a.0"

#: ACS Capability bits a typical switch downstream port / root port supports: SV RR CR UF EC DT.
ACS_SUPPORTED = 0x7D
#: What the kernel enables on such a port when an IOMMU is on (``pci_std_enable_acs``): SV RR CR UF.
ACS_KERNEL_ENABLED = 0x1D
#: Source Validation only: no redirect.
ACS_SV_ONLY = 0x01

ROOT_PORT, UPSTREAM, DOWNSTREAM, ENDPOINT = 0x4, 0x5, 0x6, 0x0


def config_space(
    vendor: int,
    device: int,
    class_code: int,
    *,
    port_type: int | None,
    acs: tuple[int, int] | None = None,
) -> bytes:
    """A 4 KiB configuration space: header, an optional PCIe capability, an optional ACS."""
    data = bytearray(4096)
    bridge = class_code >> 8 == 0x0604
    status = 0x0010 if port_type is not None else 0
    struct.pack_into(
        "<HHHHBBBBBBBB",
        data,
        0,
        vendor,
        device,
        0x0006,  # memory space + bus master
        status,
        0x01,
        class_code & 0xFF,
        (class_code >> 8) & 0xFF,
        class_code >> 16,
        0x10,
        0,
        0x01 if bridge else 0x00,
        0,
    )
    if port_type is not None:
        data[0x34] = 0x40
        struct.pack_into("<BBH", data, 0x40, CAP_ID_PCIE, 0, (port_type << 4) | 0x2)
    if acs is not None:
        struct.pack_into("<IHH", data, 0x100, 0x000D | (1 << 16), acs[0], acs[1])
    return bytes(data)


class Tree:
    """A recorded tree being edited; paths are system paths (``/sys/...``)."""

    def __init__(self, name: str) -> None:
        self.root = DATA / name
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(DATA / BASE, self.root, symlinks=True)

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def write(self, path: str, data: bytes | str) -> None:
        out = self.p(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data.encode() if isinstance(data, str) else data)

    def link(self, path: str, target: str) -> None:
        """A relative symbolic link at ``path`` to the system path ``target``."""
        out = self.p(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_symlink() or out.exists():
            out.unlink()
        os.symlink(os.path.relpath(target, os.path.dirname(path)), out)

    def add_pci(
        self,
        parent: str,
        bdf: str,
        config: bytes,
        *,
        driver: str | None = None,
        iommu_group: int | None = None,
    ) -> str:
        """Add a PCI function below the sysfs directory ``parent``; return its directory."""
        cs = ConfigSpace(config)
        vendor, device = cs.header[0], cs.header[1]
        class_code = config[11] << 16 | config[10] << 8 | config[9]
        d = f"{parent}/{bdf}"
        self.write(f"{d}/vendor", f"0x{vendor:04x}\n")
        self.write(f"{d}/device", f"0x{device:04x}\n")
        self.write(f"{d}/class", f"0x{class_code:06x}\n")
        self.write(f"{d}/config", config)
        self.write(f"{d}/numa_node", "-1\n")
        self.link(f"/sys/bus/pci/devices/{bdf}", d)
        if driver:
            self.link(f"{d}/driver", f"/sys/bus/pci/drivers/{driver}")
        if iommu_group is not None:
            self.link(f"{d}/iommu_group", f"/sys/kernel/iommu_groups/{iommu_group}")
            self.write(f"/sys/kernel/iommu_groups/{iommu_group}/type", "identity\n")
        return d

    def move_nvme(self, parent: str, bdf: str, *, port_type: int = ENDPOINT) -> str:
        """Move the recorded NVMe controller below ``parent`` as ``bdf`` (an endpoint now)."""
        old = f"/sys/devices/pci0000:00/{NVME_BDF}"
        new = f"{parent}/{bdf}"
        self.p(new).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.p(old), self.p(new))
        self.p(f"/sys/bus/pci/devices/{NVME_BDF}").unlink()
        self.link(f"/sys/bus/pci/devices/{bdf}", new)
        for name in ("driver", "iommu_group"):
            target = os.readlink(self.p(f"{new}/{name}"))
            absolute = os.path.normpath(os.path.join(old, target))
            self.link(f"{new}/{name}", absolute)
        config = bytearray(self.p(f"{new}/config").read_bytes())
        offset = ConfigSpace(bytes(config)).capabilities()[CAP_ID_PCIE]
        (flags,) = struct.unpack_from("<H", config, offset + 2)
        struct.pack_into("<H", config, offset + 2, (flags & ~0xF0) | (port_type << 4))
        self.write(f"{new}/config", bytes(config))
        return new

    def add_mlx5(self, parent: str, bdf: str, *, iommu_group: int) -> str:
        """A ConnectX-5 (15b3:1017) with its RDMA device ``mlx5_0`` (RoCE, port ACTIVE)."""
        d = self.add_pci(
            parent,
            bdf,
            config_space(0x15B3, 0x1017, 0x020000, port_type=ENDPOINT),
            driver="mlx5_core",
            iommu_group=iommu_group,
        )
        ib = f"{d}/infiniband/mlx5_0"
        self.link("/sys/class/infiniband/mlx5_0", ib)
        self.link(f"{ib}/device", d)
        for name, value in (
            ("node_type", "1: CA"),
            ("node_guid", "b859:9f03:00d4:2a10"),
            ("sys_image_guid", "b859:9f03:00d4:2a10"),
            ("fw_ver", "16.35.2000"),
            ("hca_type", "MT4119"),
            ("hw_rev", "0x0"),
            ("board_id", "MT_0000000008"),
        ):
            self.write(f"{ib}/{name}", value + "\n")
        port = f"{ib}/ports/1"
        for name, value in (
            ("state", "4: ACTIVE"),
            ("phys_state", "5: LinkUp"),
            ("link_layer", "Ethernet"),
            ("rate", "100 Gb/sec (4X EDR)"),
            ("lid", "0x0"),
            ("gids/0", "fe80:0000:0000:0000:ba59:9fff:fed4:2a10"),
            ("gid_attrs/types/0", "IB/RoCE v1"),
            ("gid_attrs/ndevs/0", "enp3s0f0np0"),
            ("gids/1", "fe80:0000:0000:0000:ba59:9fff:fed4:2a10"),
            ("gid_attrs/types/1", "RoCE v2"),
            ("gid_attrs/ndevs/1", "enp3s0f0np0"),
        ):
            self.write(f"{port}/{name}", value + "\n")
        return d

    def kconfig(self, name: str, value: str) -> None:
        boot = self.p("/boot")
        (config,) = boot.glob("config-*")
        lines = [
            ln
            for ln in config.read_text().splitlines()
            if not ln.startswith((f"{name}=", f"# {name} is not set"))
        ]
        lines.append(f"{name}={value}")
        config.write_text("\n".join(lines) + "\n")

    def host_bridge(self, vendor: int, device: int) -> None:
        """Make 0000:00:00.0 (the function the whitelist is checked against) vendor:device."""
        d = "/sys/devices/pci0000:00/0000:00:00.0"
        config = bytearray(self.p(f"{d}/config").read_bytes())
        struct.pack_into("<HH", config, 0, vendor, device)
        self.write(f"{d}/config", bytes(config))
        self.write(f"{d}/vendor", f"0x{vendor:04x}\n")
        self.write(f"{d}/device", f"0x{device:04x}\n")

    def bind_nvme_driver(self, ctrl_dir: str, bdf: str) -> None:
        """Show the controller as the nvme driver would on a P2PDMA kernel: CMB as p2pmem."""
        self.link(f"{ctrl_dir}/driver", "/sys/bus/pci/drivers/nvme")
        nvme = f"{ctrl_dir}/nvme/nvme0"
        self.link("/sys/class/nvme/nvme0", nvme)
        for name, value in (
            ("model", "QEMU NVMe Ctrl"),
            ("serial", "cmb0001"),
            ("firmware_rev", "7.2.22"),
            ("state", "live"),
            ("queue_count", "3"),
            ("address", bdf),
            ("transport", "pcie"),
        ):
            self.write(f"{nvme}/{name}", value + "\n")
        for name, value in (("size", "16777216"), ("available", "16777216"), ("published", "1")):
            self.write(f"{ctrl_dir}/p2pmem/{name}", value + "\n")


def switch_tree(name: str, downstream_acs: int) -> Tree:
    """Root port -> switch upstream port -> two downstream ports -> NIC and SSD."""
    t = Tree(name)
    t.kconfig("CONFIG_PCI_P2PDMA", "y")
    hb = "/sys/devices/pci0000:00"
    rp = t.add_pci(
        hb,
        "0000:00:1c.0",
        config_space(
            0x8086, 0xA110, 0x060400, port_type=ROOT_PORT, acs=(ACS_SUPPORTED, ACS_SV_ONLY)
        ),
        driver="pcieport",
        iommu_group=20,
    )
    up = t.add_pci(
        rp,
        "0000:01:00.0",
        config_space(0x10B5, 0x8747, 0x060400, port_type=UPSTREAM),
        driver="pcieport",
        iommu_group=21,
    )
    dsp_nic = t.add_pci(
        up,
        "0000:02:08.0",
        config_space(
            0x10B5, 0x8747, 0x060400, port_type=DOWNSTREAM, acs=(ACS_SUPPORTED, downstream_acs)
        ),
        driver="pcieport",
        iommu_group=22,
    )
    dsp_ssd = t.add_pci(
        up,
        "0000:02:10.0",
        config_space(
            0x10B5, 0x8747, 0x060400, port_type=DOWNSTREAM, acs=(ACS_SUPPORTED, downstream_acs)
        ),
        driver="pcieport",
        iommu_group=23,
    )
    t.add_mlx5(dsp_nic, "0000:03:00.0", iommu_group=24)
    ctrl = t.move_nvme(dsp_ssd, "0000:04:00.0")
    t.bind_nvme_driver(ctrl, "0000:04:00.0")
    return t


def main() -> int:
    # 1. NIC and SSD below one PCIe switch, no ACS redirect: direct P2P in the switch.
    switch_tree("switch-shared", ACS_SV_ONLY)

    # 2. ACS redirect on the switch's downstream ports (what the kernel enables when an IOMMU is
    #    on): traffic goes up to the root complex, whose host bridge (QEMU 8086:29c0) is not
    #    on the whitelist.
    t = switch_tree("acs-redirect", ACS_KERNEL_ENABLED)
    for group in (24, 10):
        t.write(f"/sys/kernel/iommu_groups/{group}/type", "DMA\n")

    # 3. NIC and SSD on two root ports of an Intel Skylake-E root complex whose host bridge
    #    8086:2020 is whitelisted.
    t = Tree("whitelisted-host-bridge")
    t.kconfig("CONFIG_PCI_P2PDMA", "y")
    t.host_bridge(0x8086, 0x2020)
    hb = "/sys/devices/pci0000:00"
    rp_a = t.add_pci(
        hb,
        "0000:00:02.0",
        config_space(0x8086, 0x2032, 0x060400, port_type=ROOT_PORT),
        driver="pcieport",
    )
    rp_b = t.add_pci(
        hb,
        "0000:00:03.0",
        config_space(0x8086, 0x2033, 0x060400, port_type=ROOT_PORT),
        driver="pcieport",
    )
    t.add_mlx5(rp_a, "0000:17:00.0", iommu_group=30)
    t.move_nvme(rp_b, "0000:18:00.0")

    # 4. An Arm server: HiSilicon Kunpeng 920 root ports (19e5:a120) with NIC and SSD on two of
    #    them, no switch; CPU implementer 0x48.  The host bridge is not on the whitelist.
    t = Tree("arm-root-complex")
    t.kconfig("CONFIG_PCI_P2PDMA", "y")
    t.host_bridge(0x19E5, 0xA120)
    t.write(
        "/sys/devices/pci0000:00/0000:00:00.0/config",
        config_space(0x19E5, 0xA120, 0x060400, port_type=ROOT_PORT, acs=(ACS_SUPPORTED, 0x1D)),
    )
    t.write("/sys/devices/pci0000:00/0000:00:00.0/class", "0x060400\n")
    rp = t.add_pci(
        "/sys/devices/pci0000:00",
        "0000:00:08.0",
        config_space(0x19E5, 0xA120, 0x060400, port_type=ROOT_PORT, acs=(ACS_SUPPORTED, 0x1D)),
        driver="pcieport",
    )
    t.add_mlx5("/sys/devices/pci0000:00/0000:00:00.0", "0000:01:00.0", iommu_group=40)
    t.move_nvme(rp, "0000:02:00.0")
    t.write(
        "/proc/cpuinfo",
        "processor\t: 0\nBogoMIPS\t: 200.00\nCPU implementer\t: 0x48\nCPU architecture: 8\n"
        "CPU variant\t: 0x1\nCPU part\t: 0xd01\nCPU revision\t: 0\n\n"
        "processor\t: 1\nBogoMIPS\t: 200.00\nCPU implementer\t: 0x48\nCPU architecture: 8\n"
        "CPU variant\t: 0x1\nCPU part\t: 0xd01\nCPU revision\t: 0\n",
    )
    print(f"derived trees written under {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
