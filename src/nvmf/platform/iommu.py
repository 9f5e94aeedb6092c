"""The IOMMU: whether one is active, how it treats DMA, and what that means for peer-to-peer.

An IOMMU (``/sys/class/iommu/*``: ``dmar*`` for Intel VT-d, ``ivhd*`` for AMD-Vi, ``smmu*`` on
Arm) translates device DMA per IOMMU group; ``/sys/kernel/iommu_groups/N/type`` says how:
``identity`` (passthrough, ``iommu=pt``) or ``DMA``/``DMA-FQ`` (translated).  When an IOMMU is
on, the kernel enables ACS P2P Request/Completion Redirect on ports that support it
(``pci_enable_acs``), so peer traffic under a switch is sent up to the root complex to be checked
there; that is what turns a "shared switch" into a "through the host bridge" path.  VFIO needs an
IOMMU (Debian's kernels have no VFIO no-IOMMU mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nvmf.platform.kconfig import KernelInfo
from nvmf.platform.sysfs import SysRoot


@dataclass
class IommuInfo:
    """The IOMMU units, the command line that set them up, and each group's domain type."""

    units: list[str]
    enabled: bool
    #: IOMMU-related kernel command-line parameters as given (``intel_iommu=on``, ``iommu=pt``).
    cmdline: list[str] = field(default_factory=list)
    #: Group number -> domain type (``identity``, ``DMA``, ``DMA-FQ``, ``blocked``, ``unmanaged``).
    group_types: dict[str, str] = field(default_factory=dict)

    def group_type(self, group: str | None) -> str | None:
        """The domain type of an IOMMU group (None when unknown)."""
        return None if group is None else self.group_types.get(group)

    def summary(self) -> str:
        """One line for the report."""
        if not self.enabled:
            return "no IOMMU active (no /sys/class/iommu entries): DMA uses physical addresses"
        types = sorted(set(self.group_types.values()))
        how = ", ".join(types) if types else "unknown domain types"
        params = f"; command line: {' '.join(self.cmdline)}" if self.cmdline else ""
        return f"IOMMU active ({', '.join(self.units)}), groups: {how}{params}"


IOMMU_PARAMS = ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict")


def inspect_iommu(fs: SysRoot, kernel: KernelInfo) -> IommuInfo:
    """Read the IOMMU units, the groups' domain types and the IOMMU command-line options."""
    units = fs.listdir("/sys/class/iommu")
    groups = {
        g: fs.read_text(f"/sys/kernel/iommu_groups/{g}/type") or ""
        for g in fs.listdir("/sys/kernel/iommu_groups")
    }
    params = [
        f"{key}={value}" for key in IOMMU_PARAMS if (value := kernel.cmdline_param(key)) is not None
    ]
    return IommuInfo(
        units=units,
        enabled=bool(units),
        cmdline=params,
        group_types={g: t for g, t in groups.items() if t},
    )
