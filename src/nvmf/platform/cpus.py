"""The CPUs: how many are online (the Linux host's default I/O queue count) and whose they are.

``/sys/devices/system/cpu/online`` is what ``num_online_cpus()`` counts, the number the Linux
NVMe-oF host asks I/O queues for.  The CPU vendor and family matter to P2P DMA: the kernel lets
any AMD Zen (family 17h) or newer CPU route peer-to-peer traffic through its root complex without
a whitelist entry (``cpu_supports_p2pdma`` in drivers/pci/p2pdma.c).
"""

from __future__ import annotations

from dataclasses import dataclass

from nvmf.platform.sysfs import SysRoot, parse_cpu_list

#: Arm "CPU implementer" codes of /proc/cpuinfo for the Arm server vendors people ask about.
ARM_IMPLEMENTERS: dict[int, str] = {
    0x41: "Arm",
    0x42: "Broadcom",
    0x43: "Cavium/Marvell",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x50: "Applied Micro",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}


@dataclass
class CpuInfo:
    """Online CPU count, vendor and family (x86) or implementer (Arm)."""

    online: int | None
    online_list: str | None
    vendor: str | None
    family: int | None
    model_name: str | None

    @property
    def amd_zen_or_newer(self) -> bool:
        """AMD family 17h (Zen) or newer: the kernel's ``cpu_supports_p2pdma``."""
        return self.vendor == "AuthenticAMD" and (self.family or 0) >= 0x17


def inspect_cpus(fs: SysRoot) -> CpuInfo:
    """Read the online CPU list and the first processor's identity from /proc/cpuinfo."""
    online_list = fs.read_text("/sys/devices/system/cpu/online")
    online = len(parse_cpu_list(online_list)) if online_list else None
    vendor = family = model_name = None
    for line in (fs.read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if not key and vendor is not None:
            break  # end of the first processor's block
        if key == "vendor_id" and vendor is None:
            vendor = value
        elif key == "cpu family" and family is None and value.isdigit():
            family = int(value)
        elif key == "model name" and model_name is None:
            model_name = value
        elif key == "CPU implementer" and vendor is None:
            code = int(value, 16)
            vendor = f"Arm implementer 0x{code:02x} ({ARM_IMPLEMENTERS.get(code, 'unknown')})"
    return CpuInfo(online, online_list, vendor, family, model_name)
