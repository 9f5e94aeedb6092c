"""RDMA devices (``/sys/class/infiniband``): driver, ports, link layer, GIDs, the PCI function.

A hardware RDMA NIC is a PCI function (``/sys/class/infiniband/DEV/device`` leads to it) whose
DMA engine can, topology allowing, write straight into another device's BAR such as an SSD's CMB.
A software device (Soft-RoCE ``rdma_rxe``, ``siw``) lives under ``/sys/devices/virtual``, rides on
an ordinary netdev (its ``parent`` attribute) and copies data with the CPU: there is no PCI
function to do peer-to-peer DMA, whatever the topology.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from nvmf.platform.pci import BDF_RE
from nvmf.platform.sysfs import SysRoot

CLASS_DIR = "/sys/class/infiniband"

#: Software RDMA drivers by the device-name prefix their ``rdma link add`` examples use.
SOFTWARE_DRIVERS: dict[str, str] = {"rxe": "rdma_rxe", "siw": "siw"}


@dataclass
class Gid:
    """One populated entry of a port's GID table."""

    index: int
    gid: str
    type: str | None
    netdev: str | None


@dataclass
class RdmaPort:
    """One port of an RDMA device: state, link layer and populated GIDs."""

    number: int
    state: str | None
    phys_state: str | None
    link_layer: str | None
    rate: str | None
    gids: list[Gid] = field(default_factory=list)


@dataclass
class RdmaDevice:
    """One RDMA device and whether it can take part in PCI peer-to-peer DMA."""

    name: str
    driver: str | None
    software: bool
    pci_address: str | None
    node_type: str | None
    node_guid: str | None
    fw_ver: str | None
    hca_type: str | None
    board_id: str | None
    parent_netdev: str | None
    ports: list[RdmaPort]
    p2p_capable: bool
    p2p_reason: str

    @property
    def active(self) -> bool:
        """True when some port is ACTIVE (``4: ACTIVE``)."""
        return any((p.state or "").endswith("ACTIVE") for p in self.ports)


def _gid_is_set(gid: str) -> bool:
    """False for the all-zero (unused) GID entries."""
    return bool(gid.replace(":", "").strip("0"))


def _ports(fs: SysRoot, base: str) -> list[RdmaPort]:
    """The device's ports with their populated GIDs."""
    ports: list[RdmaPort] = []
    for name in fs.listdir(f"{base}/ports"):
        if not name.isdigit():
            continue
        pdir = f"{base}/ports/{name}"
        gids: list[Gid] = []
        for index in sorted(int(i) for i in fs.listdir(f"{pdir}/gids") if i.isdigit()):
            value = fs.read_text(f"{pdir}/gids/{index}")
            if value is None or not _gid_is_set(value):
                continue
            gids.append(
                Gid(
                    index=index,
                    gid=value,
                    type=fs.read_text(f"{pdir}/gid_attrs/types/{index}"),
                    netdev=fs.read_text(f"{pdir}/gid_attrs/ndevs/{index}"),
                )
            )
        ports.append(
            RdmaPort(
                number=int(name),
                state=fs.read_text(f"{pdir}/state"),
                phys_state=fs.read_text(f"{pdir}/phys_state"),
                link_layer=fs.read_text(f"{pdir}/link_layer"),
                rate=fs.read_text(f"{pdir}/rate"),
                gids=gids,
            )
        )
    return sorted(ports, key=lambda p: p.number)


def _software_driver(name: str, parent: str | None, modules: list[str]) -> str | None:
    """The driver of a software RDMA device, from its name or the loaded modules."""
    for prefix, module in SOFTWARE_DRIVERS.items():
        if name.startswith(prefix):
            return module
    loaded = [m for m in SOFTWARE_DRIVERS.values() if m in modules]
    if parent is not None and len(loaded) == 1:
        return loaded[0]
    return None


def inspect_rdma(fs: SysRoot, modules: list[str]) -> list[RdmaDevice]:
    """Every device under ``/sys/class/infiniband``."""
    devices: list[RdmaDevice] = []
    for name in fs.listdir(CLASS_DIR):
        base = f"{CLASS_DIR}/{name}"
        real = fs.realpath(base) or ""
        parent = fs.read_text(f"{base}/parent")
        pci_address: str | None = None
        device_real = fs.realpath(f"{base}/device") if fs.exists(f"{base}/device") else None
        if device_real is not None:
            last = device_real.rsplit("/", 1)[-1]
            if BDF_RE.match(last):
                pci_address = last
        virtual = "/devices/virtual/" in real or pci_address is None
        if pci_address is not None:
            driver = fs.link_name(f"{base}/device/driver")
        else:
            driver = _software_driver(name, parent, modules)
        if virtual:
            kind = {"rdma_rxe": "Soft-RoCE (rxe)", "siw": "soft-iWARP (siw)"}.get(
                driver or "", "a software RDMA device"
            )
            on = f" on netdev {parent}" if parent else ""
            reason = (
                f"{kind}{on}: a software device that moves data with the CPU through the "
                "network stack; it has no PCI function, so it cannot do PCI peer-to-peer DMA"
            )
        else:
            reason = f"hardware RDMA device on PCI {pci_address}: peer-to-peer depends on topology"
        devices.append(
            RdmaDevice(
                name=name,
                driver=driver,
                software=virtual,
                pci_address=pci_address,
                node_type=fs.read_text(f"{base}/node_type"),
                node_guid=fs.read_text(f"{base}/node_guid"),
                fw_ver=fs.read_text(f"{base}/fw_ver"),
                hca_type=fs.read_text(f"{base}/hca_type"),
                board_id=fs.read_text(f"{base}/board_id"),
                parent_netdev=parent,
                ports=_ports(fs, base),
                p2p_capable=not virtual,
                p2p_reason=reason,
            )
        )
    return devices


#: What to do when rdma-core's Python binding is missing.
VERBS_HINT = (
    "install Debian's python3-pyverbs (rdma-core) and run scripts/setup, which makes it "
    "visible to the project's virtual environment"
)


def probe_verbs() -> str:
    """Whether rdma-core's ``pyverbs`` (verbs and RDMA CM, the passive side included) imports
    in this Python, as one line: the binding this project's RDMA transport is built on."""
    try:
        import pyverbs
        import pyverbs.cmid
    except ImportError as exc:
        return f"pyverbs: missing ({exc}); {VERBS_HINT}"
    from importlib import metadata

    try:
        version = metadata.version("pyverbs")
    except metadata.PackageNotFoundError:
        version = ""
    where = os.path.dirname(pyverbs.__file__)
    return f"pyverbs: available{' ' + version if version else ''} ({where})"


def probe_comp_vectors(names: list[str]) -> dict[str, int]:
    """Completion vectors per device from ``ibv_devinfo -v`` (live system only; {} if absent).

    sysfs does not show ``num_comp_vectors``, which caps the nvme-rdma host's queue count;
    rdma-core's ``ibv_devinfo`` prints it from the verbs context.
    """
    tool = shutil.which("ibv_devinfo")
    out: dict[str, int] = {}
    if tool is None:
        return out
    for name in names:
        try:
            proc = subprocess.run(
                [tool, "-v", "-d", name],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.search(r"num_comp_vectors:\s*(\d+)", proc.stdout)
        if match:
            out[name] = int(match.group(1))
    return out
