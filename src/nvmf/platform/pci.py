"""PCI devices as sysfs shows them: identity, configuration space, capabilities, ACS, topology.

Configuration space comes from ``/sys/bus/pci/devices/BDF/config``.  Only root sees more than its
first 64 bytes, and the capabilities the doctor needs (PCI Express, ACS) live beyond them, so a
truncated read is reported rather than taken for "no capability".

Layouts (the spec's names kept):

* The common header, PCI Local Bus 3.0 §6.1 / PCIe Base 3.1 §7.5 (type 0 and type 1 headers).
* The PCI Express Capability (ID 10h), PCIe Base 3.1 §7.8: ``Device/Port Type`` is bits 7:4 of
  the PCI Express Capabilities register at +2 (Linux ``PCI_EXP_FLAGS_TYPE``).
* The ACS Extended Capability (ID 000Dh), PCIe Base 3.1 §7.16: ACS Capability register at +4,
  ACS Control register at +6, with the bits of :data:`ACS_BITS` (Linux ``PCI_ACS_*``).

Topology follows the kernel's own rule (``pci_upstream_bridge``): a device's upstream bridge is
the bridge whose secondary bus it sits on, which is the directory above it in
``/sys/devices/pciDDDD:BB/...``; devices on a root bus have none, and their host bridge is the
``pciDDDD:BB`` directory itself.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from nvmf.platform.sysfs import SysRoot

BDF_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
HOST_BRIDGE_RE = re.compile(r"^pci([0-9a-f]{4}):([0-9a-f]{2})$")

#: Common configuration header (offsets 00h-0Fh): vendor ID, device ID, command, status,
#: revision ID, programming interface, sub-class, base class, cache line size, latency timer,
#: header type, BIST.
COMMON_HEADER = struct.Struct("<HHHHBBBBBBBB")
assert COMMON_HEADER.size == 16
CAPABILITIES_POINTER = 0x34
STATUS_CAP_LIST = 1 << 4
COMMAND_MEMORY = 1 << 1
COMMAND_MASTER = 1 << 2
#: A standard capability header: Capability ID, Next Capability Pointer.
CAP_HEADER = struct.Struct("<BB")
#: An extended capability header: ID (15:0), version (19:16), next offset (31:20).
EXT_CAP_HEADER = struct.Struct("<I")
EXT_CAP_START = 0x100

CAP_ID_PCIE = 0x10
EXT_CAP_ID_ACS = 0x000D
#: ACS Extended Capability: header, ACS Capability register, ACS Control register.
ACS_LAYOUT = struct.Struct("<IHH")
assert ACS_LAYOUT.size == 8

#: ACS bits, the same in the Capability (supported) and Control (enabled) registers.
ACS_BITS: tuple[tuple[str, int, str], ...] = (
    ("SV", 0, "Source Validation"),
    ("TB", 1, "Translation Blocking"),
    ("RR", 2, "P2P Request Redirect"),
    ("CR", 3, "P2P Completion Redirect"),
    ("UF", 4, "Upstream Forwarding"),
    ("EC", 5, "P2P Egress Control"),
    ("DT", 6, "Direct Translated P2P"),
)
#: The bits the kernel's P2PDMA code treats as "peer traffic is sent up to the root complex"
#: (``pci_bridge_has_acs_redir``: RR, CR or EC set).
ACS_REDIRECT_BITS = ("RR", "CR", "EC")


class PortType(IntEnum):
    """PCI Express Capabilities register, Device/Port Type (PCIe Base 3.1 §7.8.2)."""

    ENDPOINT = 0x0
    LEGACY_ENDPOINT = 0x1
    ROOT_PORT = 0x4
    UPSTREAM_PORT = 0x5
    DOWNSTREAM_PORT = 0x6
    PCIE_TO_PCI_BRIDGE = 0x7
    PCI_TO_PCIE_BRIDGE = 0x8
    RC_INTEGRATED_ENDPOINT = 0x9
    RC_EVENT_COLLECTOR = 0xA

    @property
    def label(self) -> str:
        """The port type in words (``downstream port``)."""
        return self.name.lower().replace("_", " ").replace("rc ", "root-complex ")


def acs_flags(value: int) -> list[str]:
    """The names of the ACS bits set in an ACS Capability or Control register value."""
    return [name for name, bit, _ in ACS_BITS if value & (1 << bit)]


@dataclass(frozen=True)
class AcsInfo:
    """A port's ACS Extended Capability: what it supports and what is enabled."""

    offset: int
    capability: int
    control: int

    @property
    def supported(self) -> list[str]:
        """ACS Capability bits (what the port can do)."""
        return acs_flags(self.capability)

    @property
    def enabled(self) -> list[str]:
        """ACS Control bits (what is on)."""
        return acs_flags(self.control)

    @property
    def redirects(self) -> bool:
        """True when peer traffic through this port is sent up to the root complex."""
        return any(flag in ACS_REDIRECT_BITS for flag in self.enabled)


class ConfigSpace:
    """A PCI function's configuration space (as many bytes as could be read)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def truncated(self) -> bool:
        """True when only the first 64 bytes were readable (not root)."""
        return len(self.data) <= 64

    @property
    def header(self) -> tuple[int, ...]:
        """The common header fields, in :data:`COMMON_HEADER` order."""
        return COMMON_HEADER.unpack_from(self.data, 0)

    @property
    def command(self) -> int:
        """The Command register (memory space, bus master, ...)."""
        return self.header[2]

    @property
    def header_type(self) -> int:
        """Header layout: 0 for endpoints, 1 for PCI-to-PCI bridges."""
        return self.header[10] & 0x7F

    def capabilities(self) -> dict[int, int]:
        """Standard capabilities: ID -> offset (first occurrence), walking the linked list."""
        caps: dict[int, int] = {}
        if len(self.data) <= CAPABILITIES_POINTER or not self.header[3] & STATUS_CAP_LIST:
            return caps
        offset = self.data[CAPABILITIES_POINTER] & 0xFC
        seen: set[int] = set()
        while offset and offset not in seen and offset + CAP_HEADER.size <= len(self.data):
            seen.add(offset)
            cap_id, nxt = CAP_HEADER.unpack_from(self.data, offset)
            caps.setdefault(cap_id, offset)
            offset = nxt & 0xFC
        return caps

    def ext_capabilities(self) -> dict[int, int]:
        """Extended capabilities (PCIe, offset 100h on): ID -> offset."""
        caps: dict[int, int] = {}
        offset = EXT_CAP_START
        seen: set[int] = set()
        while offset and offset not in seen and offset + EXT_CAP_HEADER.size <= len(self.data):
            seen.add(offset)
            (header,) = EXT_CAP_HEADER.unpack_from(self.data, offset)
            if header in (0, 0xFFFFFFFF):
                break
            caps.setdefault(header & 0xFFFF, offset)
            offset = (header >> 20) & 0xFFC
        return caps

    def port_type(self) -> PortType | None:
        """The PCI Express Device/Port Type, or None for a conventional PCI function."""
        offset = self.capabilities().get(CAP_ID_PCIE)
        if offset is None or offset + 4 > len(self.data):
            return None
        (flags,) = struct.unpack_from("<H", self.data, offset + 2)
        try:
            return PortType((flags >> 4) & 0xF)
        except ValueError:
            return None

    def acs(self) -> AcsInfo | None:
        offset = self.ext_capabilities().get(EXT_CAP_ID_ACS)
        if offset is None or offset + ACS_LAYOUT.size > len(self.data):
            return None
        _, capability, control = ACS_LAYOUT.unpack_from(self.data, offset)
        return AcsInfo(offset, capability, control)


@dataclass
class PciDevice:
    """One PCI function as sysfs describes it."""

    address: str
    #: The resolved sysfs path (``/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0``).
    sysfs_path: str
    vendor: int | None
    device: int | None
    class_code: int | None
    driver: str | None
    iommu_group: str | None
    config: ConfigSpace | None

    @property
    def ids(self) -> str:
        """``vvvv:dddd`` as lspci -n prints it."""
        return f"{self.vendor or 0:04x}:{self.device or 0:04x}"

    @property
    def port_type(self) -> PortType | None:
        return None if self.config is None else self.config.port_type()

    @property
    def acs(self) -> AcsInfo | None:
        return None if self.config is None else self.config.acs()

    @property
    def is_bridge(self) -> bool:
        """True for a PCI-to-PCI bridge (class 06:04): root, switch ports."""
        return self.class_code is not None and (self.class_code >> 8) == 0x0604

    @property
    def devfn(self) -> tuple[int, int]:
        """(device, function) of the address, for ordering on a bus."""
        dev, fn = self.address.rsplit(":", 1)[1].split(".")
        return int(dev, 16), int(fn)

    def describe(self) -> str:
        """``0000:01:00.0 [15b3:1017] downstream port`` for paths and messages."""
        kind = self.port_type
        return f"{self.address} [{self.ids}]" + (f" {kind.label}" if kind is not None else "")


@dataclass
class PciTopology:
    """All PCI functions of the system and the tree they form."""

    fs: SysRoot
    devices: dict[str, PciDevice] = field(default_factory=dict)

    @classmethod
    def scan(cls, fs: SysRoot) -> PciTopology:
        """Every function under ``/sys/bus/pci/devices``."""
        topo = cls(fs)
        for name in fs.listdir("/sys/bus/pci/devices"):
            if BDF_RE.match(name):
                dev = load_device(fs, name)
                if dev is not None:
                    topo.devices[name] = dev
        return topo

    def get(self, address: str) -> PciDevice | None:
        """The function at ``address`` (``DDDD:BB:DD.F``), if there is one."""
        return self.devices.get(address)

    def upstream(self, dev: PciDevice) -> PciDevice | None:
        """The bridge above ``dev`` (the kernel's ``pci_upstream_bridge``), None on a root bus."""
        parent = dev.sysfs_path.rsplit("/", 2)[-2]
        return self.devices.get(parent) if BDF_RE.match(parent) else None

    def chain(self, dev: PciDevice) -> list[PciDevice]:
        """``dev`` followed by each bridge above it, up to the one on the root bus."""
        out = [dev]
        seen = {dev.address}
        up = self.upstream(dev)
        while up is not None and up.address not in seen:
            out.append(up)
            seen.add(up.address)
            up = self.upstream(up)
        return out

    def host_bridge(self, dev: PciDevice) -> str | None:
        """The ``pciDDDD:BB`` host bridge (root complex) ``dev`` lives under."""
        for part in dev.sysfs_path.split("/"):
            if HOST_BRIDGE_RE.match(part):
                return part
        return None

    def root_bus_devices(self, host_bridge: str) -> list[PciDevice]:
        """The functions directly on a host bridge's root bus, in devfn order."""
        found = [d for d in self.devices.values() if d.sysfs_path.split("/")[-2] == host_bridge]
        return sorted(found, key=lambda d: d.devfn)

    def host_bridge_device(self, host_bridge: str) -> PciDevice | None:
        """The function the kernel's P2PDMA whitelist is checked against (``pci_host_bridge_dev``).

        The first function on the root bus, if it is at devfn 00.0 or is a PCIe root port;
        otherwise none (and the host bridge cannot be whitelisted).
        """
        devices = self.root_bus_devices(host_bridge)
        if not devices:
            return None
        first = devices[0]
        if first.devfn == (0, 0) or first.port_type is PortType.ROOT_PORT:
            return first
        return None

    def by_class(self, prefix: int, shift: int) -> list[PciDevice]:
        """Functions whose class code, shifted right by ``shift``, equals ``prefix``."""
        return sorted(
            (
                d
                for d in self.devices.values()
                if d.class_code is not None and d.class_code >> shift == prefix
            ),
            key=lambda d: d.address,
        )


def load_device(fs: SysRoot, address: str) -> PciDevice | None:
    """Read one function's identity and configuration space from sysfs."""
    link = f"/sys/bus/pci/devices/{address}"
    real = fs.realpath(link)
    if real is None:
        return None
    config_bytes = fs.read_bytes(f"{link}/config")
    return PciDevice(
        address=address,
        sysfs_path=real,
        vendor=fs.read_int(f"{link}/vendor", 16),
        device=fs.read_int(f"{link}/device", 16),
        class_code=fs.read_int(f"{link}/class", 16),
        driver=fs.link_name(f"{link}/driver"),
        iommu_group=fs.link_name(f"{link}/iommu_group"),
        config=ConfigSpace(config_bytes) if config_bytes else None,
    )
