"""NVMe controllers on PCI: identity, the CMB as the controller reports it, and the driver's view.

Controllers are found by PCI class 01:08:02 (mass storage, NVM, NVMe I/O controller), so one bound
to ``vfio-pci`` or to no driver is found as well as one the kernel's ``nvme`` driver runs.

What the Linux nvme driver does with a CMB (drivers/nvme/host/pci.c, ``nvme_map_cmb``): it sets
CMBMSC.CRE if CAP.CMBS, reads CMBLOC/CMBSZ, and hands the CMB to ``pci_p2pdma_add_resource``.
Without ``CONFIG_PCI_P2PDMA`` that call fails ("failed to register the CMB") and the driver uses
the CMB for nothing.  When it succeeds the CMB shows as ``p2pmem`` under the PCI device; I/O
submission queues go there if ``use_cmb_sqes`` is set and CMBSZ.SQS is 1, and the memory is
published for other drivers (nvmet's p2pmem) only if CMBSZ has both WDS and RDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nvmf.pci.registers import CMB_USES, CMBLOC, CMBSZ, size_unit
from nvmf.platform.kconfig import KernelInfo
from nvmf.platform.nvme_regs import (
    CmbRegisters,
    MmapWindow,
    open_error_reason,
    read_cmb_registers,
)
from nvmf.platform.pci import PciDevice, PciTopology
from nvmf.platform.sysfs import SysRoot
from nvmf.platform.target import TargetDevice, TargetFacts

NVME_CLASS = 0x010802


@dataclass
class CmbReport:
    """The Controller Memory Buffer as the controller reports it."""

    #: Where the values came from: "BAR0", "nvme driver sysfs", or "" when nowhere.
    source: str
    #: True/False once CMBSZ was read; None when it could not be read.
    present: bool | None
    size_bytes: int = 0
    bar: int | None = None
    offset: int = 0
    uses: list[str] = field(default_factory=list)
    #: CMBSZ and CMBLOC field by field, spec names (``{"CMBSZ": {"SQS": 1, ...}, ...}``).
    fields: dict[str, dict[str, int]] = field(default_factory=dict)
    cap_cmbs: bool | None = None
    #: NVMe version (VS) and queue size limit (CAP.MQES + 1), when BAR0 could be read.
    nvme_version: str | None = None
    mqes: int | None = None
    registers: dict[str, str] = field(default_factory=dict)
    enabled_cre: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class P2pMem:
    """``/sys/bus/pci/devices/BDF/p2pmem``: memory the device registered for peer-to-peer DMA."""

    size: int
    available: int
    published: bool


@dataclass
class NvmeController:
    """One NVMe controller and what the system does with it."""

    address: str
    ids: str
    driver: str | None
    name: str | None
    model: str | None
    serial: str | None
    firmware: str | None
    state: str | None
    nvme_version: str | None
    mqes: int | None
    #: I/O queues the nvme driver created (``queue_count`` less the admin queue); None if unbound.
    io_queues: int | None
    cmb: CmbReport
    use_cmb_sqes: bool | None
    p2pmem: P2pMem | None
    driver_uses_cmb: bool
    driver_cmb_reason: str
    driver_sqes_in_cmb: bool
    iommu_group: str | None
    numa_node: int | None
    #: When this project's running target owns the controller: what it reports (the CMB above
    #: then comes from it too).
    target: TargetDevice | None = None


def _cmb_from_registers(regs: CmbRegisters) -> CmbReport:
    """The CMB report from registers read out of BAR0."""
    report = CmbReport(
        source="BAR0",
        present=regs.cmb_size > 0 if regs.responding else None,
        cap_cmbs=regs.cmbs,
        nvme_version=regs.version if regs.responding else None,
        mqes=regs.mqes if regs.responding else None,
        registers={
            "CAP": f"0x{regs.cap:016x}",
            "VS": f"0x{regs.vs:08x}",
            "CMBLOC": f"0x{regs.cmbloc:08x}",
            "CMBSZ": f"0x{regs.cmbsz:08x}",
            "CMBMSC": f"0x{regs.cmbmsc:016x}",
            "CMBSTS": f"0x{regs.cmbsts:08x}",
        },
        enabled_cre=regs.enabled_cre,
        notes=list(regs.notes),
    )
    if report.present:
        report.size_bytes = regs.cmb_size
        report.bar = regs.cmb_bar
        report.offset = regs.cmb_offset
        report.uses = regs.cmb_uses
        report.fields = cmb_fields(regs.cmbloc, regs.cmbsz)
    return report


def cmb_fields(cmbloc: int, cmbsz: int) -> dict[str, dict[str, int]]:
    """CMBSZ and CMBLOC decoded field by field, with the spec's names."""
    return {"CMBSZ": CMBSZ.decode(cmbsz), "CMBLOC": CMBLOC.decode(cmbloc)}


def _cmb_from_target(device: TargetDevice, target: TargetFacts) -> CmbReport:
    """The CMB report from the registers the running target read (it owns the device)."""
    r = device.registers
    regs = CmbRegisters(
        cap=r.get("CAP", 0),
        vs=r.get("VS", 0),
        cmbloc=r.get("CMBLOC", 0),
        cmbsz=r.get("CMBSZ", 0),
        cmbmsc=r.get("CMBMSC", 0),
        cmbsts=r.get("CMBSTS", 0),
    )
    report = _cmb_from_registers(regs)
    report.source = f"the running target (pid {target.pid}, control socket {target.socket})"
    return report


def _cmb_from_driver_sysfs(fs: SysRoot, ctrl: str) -> CmbReport | None:
    """The nvme driver's ``cmbloc``/``cmbsz`` attributes (shown only when it mapped a CMB)."""
    cmbloc = fs.read_int(f"{ctrl}/cmbloc", 0)
    cmbsz = fs.read_int(f"{ctrl}/cmbsz", 0)
    if cmbloc is None or cmbsz is None:
        return None
    sz = CMBSZ.decode(cmbsz)
    return CmbReport(
        source="nvme driver sysfs",
        present=sz["SZ"] > 0,
        size_bytes=sz["SZ"] * size_unit(sz["SZU"]),
        bar=CMBLOC.field("BIR").get(cmbloc),
        offset=CMBLOC.field("OFST").get(cmbloc) * size_unit(sz["SZU"]),
        uses=[label for name, label in CMB_USES if CMBSZ.field(name).get(cmbsz)],
        fields=cmb_fields(cmbloc, cmbsz),
        registers={"CMBLOC": f"0x{cmbloc:08x}", "CMBSZ": f"0x{cmbsz:08x}"},
    )


def read_cmb(fs: SysRoot, dev: PciDevice, ctrl: str | None, allow_writes: bool) -> CmbReport:
    """Read the CMB registers from BAR0, falling back to the nvme driver's sysfs attributes."""
    path = str(fs.host_path(f"/sys/bus/pci/devices/{dev.address}/resource0"))
    writable = fs.live and allow_writes
    error: str | None = None
    window: MmapWindow | None = None
    try:
        try:
            window = MmapWindow(path, writable=writable)
        except PermissionError:
            if not writable:
                raise
            window = MmapWindow(path, writable=False)
    except OSError as exc:
        error = open_error_reason(exc, dev.driver)
    if window is not None:
        try:
            return _cmb_from_registers(read_cmb_registers(window, allow_enable=allow_writes))
        finally:
            window.close()
    fallback = _cmb_from_driver_sysfs(fs, ctrl) if ctrl else None
    if fallback is not None:
        fallback.error = error
        fallback.notes.append("BAR0 unreadable; values from the nvme driver's sysfs attributes")
        return fallback
    return CmbReport(source="", present=None, error=error)


def _driver_cmb_use(
    driver: str | None,
    cmb: CmbReport,
    p2pmem: P2pMem | None,
    kernel: KernelInfo,
    use_cmb_sqes: bool | None,
) -> tuple[bool, str, bool]:
    """Whether the kernel nvme driver uses the CMB (and for SQes), and why (not)."""
    if driver != "nvme":
        owner = f"bound to {driver}" if driver else "bound to no driver"
        return False, f"{owner}: the kernel nvme driver does not manage this controller", False
    if cmb.present is False:
        return False, "the controller reports no CMB", False
    p2pdma = kernel.enabled("CONFIG_PCI_P2PDMA")
    if p2pmem is None or p2pmem.size == 0:
        if p2pdma is False:
            why = (
                "the kernel lacks CONFIG_PCI_P2PDMA, so nvme_map_cmb cannot register the CMB "
                "(pci_p2pdma_add_resource fails: 'failed to register the CMB'); the driver puts "
                "neither queues nor data there, whatever use_cmb_sqes says"
            )
        else:
            why = "the CMB is not registered as p2pmem (no p2pmem/ under the PCI device)"
        return False, why, False
    sqes = bool(use_cmb_sqes) and "submission queues" in cmb.uses
    if sqes:
        why = "CMB registered as p2pmem; I/O submission queues are allocated in it (use_cmb_sqes=Y)"
    elif not use_cmb_sqes:
        why = "CMB registered as p2pmem, but use_cmb_sqes=N keeps the SQes in host memory"
    else:
        why = "CMB registered as p2pmem, but CMBSZ.SQS is 0 so SQes stay in host memory"
    return True, why, sqes


def _identity(
    fs: SysRoot, ctrl: str | None, held: TargetDevice | None
) -> tuple[str | None, str | None, str | None]:
    """Model, serial and firmware revision: from the nvme driver's sysfs, or from the running
    target's Identify Controller when it owns the device (vfio-pci shows none of them)."""
    if ctrl:
        return (
            fs.read_text(f"{ctrl}/model"),
            fs.read_text(f"{ctrl}/serial"),
            fs.read_text(f"{ctrl}/firmware_rev"),
        )
    if held is not None:
        return held.model or None, held.serial or None, held.firmware or None
    return None, None, None


def inspect_nvme(
    fs: SysRoot,
    topo: PciTopology,
    kernel: KernelInfo,
    allow_writes: bool = True,
    target: TargetFacts | None = None,
) -> list[NvmeController]:
    """Every NVMe controller on PCI, with its CMB and what the nvme driver makes of it.

    A controller ``target`` (this project's running target) owns is not touched: its CMB and
    identity come from the target's answer, and the target's placements come with them."""
    param = fs.read_text("/sys/module/nvme/parameters/use_cmb_sqes")
    use_cmb_sqes = None if param is None else param.upper() in ("Y", "1")
    out: list[NvmeController] = []
    for dev in topo.by_class(NVME_CLASS, 0):
        base = f"/sys/bus/pci/devices/{dev.address}"
        names = [n for n in fs.listdir(f"{base}/nvme") if n.startswith("nvme")]
        name = names[0] if names else None
        ctrl = f"{base}/nvme/{name}" if name else None
        held = target.holding(dev.address) if target is not None else None
        if held is not None and target is not None:
            cmb = _cmb_from_target(held, target)
        else:
            cmb = read_cmb(fs, dev, ctrl, allow_writes)
        p2pmem = None
        size = fs.read_int(f"{base}/p2pmem/size", 10)
        if size is not None:
            p2pmem = P2pMem(
                size=size,
                available=fs.read_int(f"{base}/p2pmem/available", 10) or 0,
                published=fs.read_text(f"{base}/p2pmem/published") == "1",
            )
        uses, reason, sqes = _driver_cmb_use(dev.driver, cmb, p2pmem, kernel, use_cmb_sqes)
        queue_count = fs.read_int(f"{ctrl}/queue_count", 10) if ctrl else None
        model, serial, firmware = _identity(fs, ctrl, held)
        out.append(
            NvmeController(
                address=dev.address,
                ids=dev.ids,
                driver=dev.driver,
                name=name,
                model=model,
                serial=serial,
                firmware=firmware,
                state=fs.read_text(f"{ctrl}/state") if ctrl else None,
                nvme_version=cmb.nvme_version,
                mqes=cmb.mqes,
                io_queues=None if queue_count is None else max(queue_count - 1, 0),
                cmb=cmb,
                use_cmb_sqes=use_cmb_sqes,
                p2pmem=p2pmem,
                driver_uses_cmb=uses,
                driver_cmb_reason=reason,
                driver_sqes_in_cmb=sqes,
                iommu_group=dev.iommu_group,
                numa_node=fs.read_int(f"{base}/numa_node", 10),
                target=held,
            )
        )
    return out
