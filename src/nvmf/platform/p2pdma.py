"""Can an RDMA NIC and an NVMe SSD do PCI peer-to-peer DMA?  The kernel's own rule, explained.

This mirrors ``calc_map_type_and_dist`` in Linux drivers/pci/p2pdma.c (6.1), which decides how a
*client* (the NIC) may reach a *provider*'s memory (the SSD's CMB):

1. Walk up from the provider; for each bridge, see whether it is also above the client.  The
   first such bridge is the common upstream bridge.  Along both walks, note every port whose ACS
   control has P2P Request Redirect, Completion Redirect or Egress Control set
   (``pci_bridge_has_acs_redir``).
2. A common upstream bridge and no ACS redirect on the way: ``PCI_P2PDMA_MAP_BUS_ADDR``; the
   transfer turns around inside the shared switch (distance 4 for two devices on one switch).
3. No common upstream bridge (the devices hang off different root ports or the root bus), or
   ACS redirect on the way: the transfer goes through the root complex.  That is allowed only if
   the CPU is AMD Zen or newer (``cpu_supports_p2pdma``) or the host bridge is on
   ``pci_p2pdma_whitelist`` (for both devices' host bridges, and for some entries only when the
   two share one); otherwise ``PCI_P2PDMA_MAP_NOT_SUPPORTED``.

The host bridge checked is the first function on the root bus if it sits at devfn 00.0 or is a
root port (``pci_host_bridge_dev``).  The whitelist holds Intel parts only; generic Arm root
complexes (HiSilicon, Ampere, Cavium/Marvell ThunderX, NVIDIA Grace) are not on it, so on them only
a shared switch without ACS redirect gives peer-to-peer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from nvmf.platform.cpus import CpuInfo
from nvmf.platform.iommu import IommuInfo
from nvmf.platform.nvme import NvmeController
from nvmf.platform.pci import PciDevice, PciTopology, PortType
from nvmf.platform.rdma import RdmaDevice


class MapType(Enum):
    """``enum pci_p2pdma_map_type``, with what each means for the data path."""

    NOT_SUPPORTED = "not supported"
    BUS_ADDR = "direct (bus address): peer traffic turns around in the shared switch"
    THRU_HOST_BRIDGE = "through the host bridge (root complex)"


@dataclass(frozen=True)
class WhitelistEntry:
    """One ``pci_p2pdma_whitelist`` entry: vendor, device, and REQ_SAME_HOST_BRIDGE."""

    vendor: int
    device: int
    req_same_host_bridge: bool
    name: str


#: ``pci_p2pdma_whitelist`` as of Linux 6.1 (later kernels add Google SoCs and a few more Intel
#: devices; none of them a generic Arm root complex).
WHITELIST: tuple[WhitelistEntry, ...] = (
    WhitelistEntry(0x8086, 0x3C00, True, "Intel Xeon E5/Core i7 (Sandy Bridge-EP) host bridge"),
    WhitelistEntry(0x8086, 0x3C01, True, "Intel Xeon E5/Core i7 (Sandy Bridge-EP) host bridge"),
    WhitelistEntry(0x8086, 0x2F00, True, "Intel Xeon E7 v3/E5 v3/Core i7 (Haswell-EP) host bridge"),
    WhitelistEntry(0x8086, 0x2F01, True, "Intel Xeon E7 v3/E5 v3/Core i7 (Haswell-EP) host bridge"),
    WhitelistEntry(0x8086, 0x2030, False, "Intel Skylake-E root port A"),
    WhitelistEntry(0x8086, 0x2031, False, "Intel Skylake-E root port B"),
    WhitelistEntry(0x8086, 0x2032, False, "Intel Skylake-E root port C"),
    WhitelistEntry(0x8086, 0x2033, False, "Intel Skylake-E root port D"),
    WhitelistEntry(0x8086, 0x2020, False, "Intel Skylake-E host bridge"),
    WhitelistEntry(0x8086, 0x09A2, False, "Intel Ice Lake-SP host bridge"),
)

WHITELIST_SUMMARY = (
    "the kernel's P2PDMA host-bridge whitelist (Linux 6.1) holds only Intel devices: "
    "Xeon E5/Core i7 8086:3c00/3c01 and Xeon E5 v3 8086:2f00/2f01 (same host bridge only), "
    "Skylake-E 8086:2020/2030-2033 and Ice Lake-SP 8086:09a2; AMD CPUs of family 17h (Zen) or "
    "newer pass without an entry. No generic Arm root port is on it (HiSilicon 19e5, Ampere 1def, "
    "Cavium/Marvell 177d, NVIDIA 10de): on Arm servers only a shared PCIe switch without ACS "
    "redirect gives P2P"
)


def whitelist_entry(vendor: int | None, device: int | None) -> WhitelistEntry | None:
    """The whitelist entry for vendor:device, or None."""
    for entry in WHITELIST:
        if entry.vendor == vendor and entry.device == device:
            return entry
    return None


@dataclass
class HostBridgeCheck:
    """The whitelist lookup for one host bridge."""

    host_bridge: str
    device: str | None
    whitelisted: bool
    reason: str


@dataclass
class AcsPort:
    """One port on the path that has an ACS capability: supported and enabled bits."""

    address: str
    supported: list[str]
    enabled: list[str]
    redirects: bool


@dataclass
class P2pResult:
    """How the kernel would map peer-to-peer DMA from ``client`` into ``provider``'s memory."""

    provider: str
    client: str
    map_type: MapType
    distance: int
    #: Hops from the client up to the turning point and down to the provider, described.
    path: list[str]
    common_bridge: str | None
    shared_switch: bool
    host_bridges: list[str]
    same_host_bridge: bool
    acs_ports: list[AcsPort] = field(default_factory=list)
    acs_redirect: list[str] = field(default_factory=list)
    cpu_allows: bool = False
    host_bridge_checks: list[HostBridgeCheck] = field(default_factory=list)
    reason: str = ""
    hint: str | None = None


def _acs_redirects(dev: PciDevice) -> bool:
    """``pci_bridge_has_acs_redir``: RR, CR or EC enabled on this function."""
    acs = dev.acs
    return acs is not None and acs.redirects


def check_host_bridge(topo: PciTopology, host_bridge: str, same: bool) -> HostBridgeCheck:
    """``__host_bridge_whitelist`` for one host bridge."""
    root = topo.host_bridge_device(host_bridge)
    if root is None:
        return HostBridgeCheck(
            host_bridge,
            None,
            False,
            f"{host_bridge}: no function at devfn 00.0 and no root port first on the root bus, "
            "so there is nothing to look up in the whitelist",
        )
    entry = whitelist_entry(root.vendor, root.device)
    if entry is None:
        return HostBridgeCheck(
            host_bridge,
            root.describe(),
            False,
            f"host bridge {root.describe()} is not in the P2PDMA whitelist",
        )
    if entry.req_same_host_bridge and not same:
        return HostBridgeCheck(
            host_bridge,
            root.describe(),
            False,
            f"{entry.name} ({root.ids}) is whitelisted only when both devices share it",
        )
    return HostBridgeCheck(
        host_bridge, root.describe(), True, f"{entry.name} ({root.ids}) is whitelisted"
    )


def calc_map_type(
    topo: PciTopology, provider: PciDevice, client: PciDevice, cpu: CpuInfo
) -> P2pResult:
    """Decide the mapping type and distance as ``calc_map_type_and_dist`` does."""
    a_chain = topo.chain(provider)
    b_chain = topo.chain(client)
    b_index = {d.address: i for i, d in enumerate(b_chain)}
    acs_redirect: list[str] = []
    common: PciDevice | None = None
    dist_a = dist_b = 0
    for dist_a, a in enumerate(a_chain):  # noqa: B007 - dist_a is used after the loop
        if _acs_redirects(a):
            acs_redirect.append(a.address)
        if a.address in b_index:
            common = a
            dist_b = b_index[a.address]
            break
    if common is None:
        # No common upstream bridge: the kernel goes straight to the host-bridge check; the
        # provider-side redirects it noted change nothing (traffic crosses the root complex
        # anyway), so they are shown as ACS settings only.
        dist_a, dist_b = len(a_chain), len(b_chain)
        on_path = a_chain + b_chain
        acs_redirect = []
    else:
        for bb in b_chain[:dist_b]:
            if _acs_redirects(bb):
                acs_redirect.append(bb.address)
        on_path = a_chain[: dist_a + 1] + b_chain[:dist_b]

    hb_a, hb_b = topo.host_bridge(provider), topo.host_bridge(client)
    host_bridges = sorted({h for h in (hb_a, hb_b) if h})
    same_hb = hb_a is not None and hb_a == hb_b
    shared_switch = common is not None and common.port_type in (
        PortType.UPSTREAM_PORT,
        PortType.DOWNSTREAM_PORT,
    )
    # The path, from the NIC up to the turning point and down to the SSD.
    if common is not None:
        up = [d.describe() for d in b_chain[: dist_b + 1]]
        down = [d.describe() for d in reversed(a_chain[:dist_a])]
    else:
        turn = " + ".join(host_bridges) or "?"
        up = [d.describe() for d in b_chain] + [f"host bridge {turn} (root complex)"]
        down = [d.describe() for d in reversed(a_chain)]
    acs_ports = [
        AcsPort(d.address, acs.supported, acs.enabled, acs.redirects)
        for d in on_path
        if (acs := d.acs) is not None
    ]
    result = P2pResult(
        provider=provider.address,
        client=client.address,
        map_type=MapType.THRU_HOST_BRIDGE,
        distance=dist_a + dist_b,
        path=up + down,
        common_bridge=common.describe() if common is not None else None,
        shared_switch=shared_switch,
        host_bridges=host_bridges,
        same_host_bridge=same_hb,
        acs_ports=acs_ports,
        acs_redirect=acs_redirect,
        cpu_allows=cpu.amd_zen_or_newer,
    )
    if common is not None and not acs_redirect:
        result.map_type = MapType.BUS_ADDR
        where = "the PCIe switch" if shared_switch else "the bridge"
        result.reason = (
            f"both sit below {where} {common.describe()} and no port on the path redirects "
            "peer traffic (ACS): transfers turn around there without touching the root complex"
        )
        return result
    if acs_redirect:
        result.hint = "pci=disable_acs_redir=" + ";".join(acs_redirect)
        first = (
            f"ACS redirect is on at {', '.join(acs_redirect)}, so peer traffic is sent up "
            "to the root complex"
        )
    elif not host_bridges or len(host_bridges) == 1:
        first = "they share no PCIe switch or bridge: the path goes through the root complex"
    else:
        first = "they sit under different host bridges: the path crosses the root complex"
    if result.cpu_allows:
        result.reason = f"{first}; the CPU is AMD Zen or newer, which the kernel trusts for P2P"
        return result
    if hb_a is None or hb_b is None:
        checks = []
    elif same_hb:
        checks = [check_host_bridge(topo, hb_a, True)]
    else:
        checks = [check_host_bridge(topo, hb_a, False), check_host_bridge(topo, hb_b, False)]
    result.host_bridge_checks = checks
    if checks and all(c.whitelisted for c in checks):
        result.reason = f"{first}; " + "; ".join(c.reason for c in checks)
        return result
    result.map_type = MapType.NOT_SUPPORTED
    failed = [c.reason for c in checks if not c.whitelisted] or ["no host bridge found"]
    result.reason = f"{first}, and " + "; ".join(failed)
    return result


@dataclass
class P2pPair:
    """The verdict for one RDMA device and one NVMe controller."""

    rdma_device: str
    nic_pci: str | None
    nvme: str
    possible: bool
    verdict: str
    blockers: list[str] = field(default_factory=list)
    topology: P2pResult | None = None
    iommu: str | None = None


def assess_pair(
    topo: PciTopology,
    cpu: CpuInfo,
    rdma: RdmaDevice,
    ctrl: NvmeController,
    *,
    p2pdma_config: bool | None,
    iommu: IommuInfo,
) -> P2pPair:
    """Everything that must hold for ``rdma`` to DMA into ``ctrl``'s CMB, and what does not."""
    pair = P2pPair(rdma.name, rdma.pci_address, ctrl.address, False, "")
    if not rdma.p2p_capable or rdma.pci_address is None:
        pair.blockers.append(rdma.p2p_reason)
    else:
        nic = topo.get(rdma.pci_address)
        ssd = topo.get(ctrl.address)
        if nic is not None and ssd is not None:
            result = calc_map_type(topo, ssd, nic, cpu)
            pair.topology = result
            if result.map_type is MapType.NOT_SUPPORTED:
                pair.blockers.append(f"PCI topology: {result.reason}")
            groups = {iommu.group_type(nic.iommu_group), iommu.group_type(ssd.iommu_group)}
            translated = sorted(g for g in groups if g and g.startswith("DMA"))
            if translated:
                pair.iommu = (
                    f"the IOMMU translates DMA for these devices ({', '.join(translated)}): "
                    "the kernel then enables ACS redirect on ports that have it, so peer "
                    "traffic goes up to the root complex to be translated"
                )
    if p2pdma_config is False:
        pair.blockers.append(
            "the kernel lacks CONFIG_PCI_P2PDMA: no driver can register or hand out p2pmem"
        )
    elif p2pdma_config is None:
        pair.blockers.append("unknown whether the kernel has CONFIG_PCI_P2PDMA (config unreadable)")
    if ctrl.cmb.present is False:
        pair.blockers.append(f"{ctrl.address} reports no CMB")
    elif ctrl.cmb.present and not {"read data", "write data"} <= set(ctrl.cmb.uses):
        pair.blockers.append(
            "the CMB does not accept both read and write data (CMBSZ.RDS/WDS), so the nvme "
            "driver would not publish it as p2pmem"
        )
    pair.possible = not pair.blockers
    if pair.possible and pair.topology is not None:
        pair.verdict = f"yes: {pair.topology.map_type.value}; {pair.topology.reason}"
    else:
        pair.verdict = "no: " + "; ".join(pair.blockers)
    return pair
