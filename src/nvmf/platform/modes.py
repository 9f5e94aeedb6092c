"""One verdict per way of running a target on this machine, each with its reasons.

The modes are the questions users ask before they start: can it be an NVMe/TCP target, an
NVMe/RDMA target, run this project's software offload, keep staging buffers in an SSD's CMB, put
the SSD's submission queues in its CMB, and serve file and block namespaces through io_uring
rather than a thread pool (what ``io_engine auto`` will pick).  Each verdict is "yes", "partly"
(works, but not in the way that needs the hardware) or "no", and says which facts decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nvmf.media import uring_support
from nvmf.platform.cpus import CpuInfo
from nvmf.platform.iommu import IommuInfo
from nvmf.platform.kconfig import KernelInfo
from nvmf.platform.nvme import NvmeController
from nvmf.platform.p2pdma import P2pPair
from nvmf.platform.rdma import RdmaDevice


@dataclass
class ModeVerdict:
    """The verdict for one mode, its one-line summary and the facts behind it."""

    mode: str
    #: "yes", "partly" or "no".
    status: str
    summary: str
    details: list[str] = field(default_factory=list)


def _option_text(kernel: KernelInfo, name: str) -> str:
    """An option's value as a sentence fragment, with its module's load state."""
    opt = kernel.option(name)
    if opt is None or opt.value is None:
        return f"{name}: unknown (kernel configuration unreadable)"
    if opt.value == "m":
        loaded = {True: "loaded", False: "not loaded", None: "load state unknown"}
        return f"{name}=m (module {opt.module}, {loaded[opt.module_loaded]})"
    return f"{name}={opt.value}" if opt.value != "not set" else f"{name} is not set"


def tcp_target(kernel: KernelInfo) -> ModeVerdict:
    """NVMe/TCP target: ours needs only sockets; the kernel's needs CONFIG_NVME_TARGET_TCP."""
    linux = kernel.enabled("CONFIG_NVME_TARGET_TCP")
    details = [
        "this project's target needs only TCP sockets: available",
        "Linux kernel target: " + _option_text(kernel, "CONFIG_NVME_TARGET_TCP"),
    ]
    summary = "yes: this project's target over TCP" + (
        ", and the kernel's nvmet-tcp too" if linux else ""
    )
    return ModeVerdict("NVMe/TCP target", "yes", summary, details)


def rdma_target(
    kernel: KernelInfo, rdma: list[RdmaDevice], verbs: str | None = None
) -> ModeVerdict:
    """NVMe/RDMA target: needs an RDMA device with an ACTIVE port; software RDMA is 'partly'.
    ``verbs``: what :func:`nvmf.platform.rdma.probe_verbs` found (live systems only)."""
    details = ["Linux kernel target: " + _option_text(kernel, "CONFIG_NVME_TARGET_RDMA")]
    if verbs is not None:
        details.append("this project: " + verbs)
    if not rdma:
        return ModeVerdict(
            "NVMe/RDMA target",
            "no",
            "no: there is no RDMA device (no /sys/class/infiniband entries); add a NIC or "
            "Soft-RoCE (modprobe rdma_rxe; rdma link add rxe0 type rxe netdev ETH)",
            details,
        )
    active = [d for d in rdma if d.active]
    for dev in rdma:
        state = "active" if dev.active else "no active port"
        kind = "software" if dev.software else f"PCI {dev.pci_address}"
        details.append(f"{dev.name}: {dev.driver or 'unknown driver'}, {kind}, {state}")
    if not active:
        return ModeVerdict(
            "NVMe/RDMA target", "no", "no: no RDMA device has an ACTIVE port", details
        )
    if all(d.software for d in active):
        return ModeVerdict(
            "NVMe/RDMA target",
            "partly",
            "partly: works over software RDMA ("
            + ", ".join(d.name for d in active)
            + "), which speaks the protocol but moves every byte with the CPU",
            details,
        )
    return ModeVerdict(
        "NVMe/RDMA target",
        "yes",
        "yes: hardware RDMA " + ", ".join(d.name for d in active if not d.software),
        details,
    )


def software_offload(
    kernel: KernelInfo, cpus: CpuInfo, iommu: IommuInfo, nvme: list[NvmeController]
) -> ModeVerdict:
    """This project's offload data plane: always possible; NVMe media needs vfio-pci + IOMMU."""
    details = [
        f"{cpus.online or '?'} online CPUs: up to that many offload workers, one per core",
        "staging buffers in target DRAM: always available",
        "media RAM, file and block device: always available",
    ]
    vfio = kernel.enabled("CONFIG_VFIO_PCI")
    if not nvme:
        details.append("no NVMe controller: the NVMe-via-VFIO media has nothing to drive")
    else:
        ready = vfio and iommu.enabled
        for ctrl in nvme:
            if ctrl.target is not None:
                how = (
                    f"bound to vfio-pci and in use by this project's target: namespace "
                    f"{ctrl.target.nsid} of {ctrl.target.subsystem}"
                )
            elif ctrl.driver == "vfio-pci":
                how = "bound to vfio-pci: ready for the userspace driver"
            elif ready:
                how = f"bound to {ctrl.driver or 'no driver'}: bind it to vfio-pci to use it"
            else:
                missing = [
                    what
                    for what, ok in (("CONFIG_VFIO_PCI", vfio), ("an active IOMMU", iommu.enabled))
                    if not ok
                ]
                how = "cannot be handed to the userspace driver: missing " + " and ".join(missing)
            details.append(f"NVMe {ctrl.address}: {how}")
    return ModeVerdict(
        "software offload (this project)",
        "yes",
        "yes: the offload data plane runs on any NIC and cores; staging in DRAM",
        details,
    )


def _target_use(nvme: list[NvmeController], piece: str) -> list[str]:
    """What this project's running target puts in each CMB it owns now (``sq``, ``staging``)."""
    out = []
    for c in nvme:
        if c.target is None or not c.target.processes:
            continue
        places = [getattr(p, piece).placement for p in c.target.processes]
        inside = places.count("cmb")
        word = "SQs" if piece == "sq" else "staging buffers"
        out.append(
            f"{c.address}: this project's running target has the {word} of {inside} of its "
            f"{len(places)} processes in the CMB"
        )
    return out


def staging_in_cmb(
    kernel: KernelInfo, iommu: IommuInfo, nvme: list[NvmeController], pairs: list[P2pPair]
) -> ModeVerdict:
    """Staging buffers in a CMB: by NIC P2P DMA (yes), by CPU copies via vfio-pci (partly)."""
    data_cmbs = [
        c for c in nvme if c.cmb.present and {"read data", "write data"} <= set(c.cmb.uses)
    ]
    details: list[str] = []
    if not nvme:
        return ModeVerdict(
            "staging buffers in CMB", "no", "no: there is no NVMe controller", details
        )
    unknown = [c for c in nvme if c.cmb.present is None]
    for c in nvme:
        if c.cmb.present is None:
            details.append(f"{c.address}: CMB unknown ({c.cmb.error or 'registers unreadable'})")
        elif not c.cmb.present:
            details.append(f"{c.address}: no CMB")
        else:
            details.append(f"{c.address}: CMB holds {', '.join(c.cmb.uses) or 'nothing'}")
    if not data_cmbs:
        status = "no"
        summary = (
            "no: no controller's CMB is known to accept read and write data"
            if unknown
            else "no: no controller has a CMB that accepts read and write data"
        )
        return ModeVerdict("staging buffers in CMB", status, summary, details)
    details.extend(_target_use(nvme, "staging"))
    direct = [p for p in pairs if p.possible]
    for p in pairs:
        details.append(f"NIC {p.rdma_device} -> {p.nvme}: {p.verdict}")
    if direct:
        return ModeVerdict(
            "staging buffers in CMB",
            "yes",
            "yes: a NIC can DMA payload straight into the CMB ("
            + ", ".join(f"{p.rdma_device}->{p.nvme}" for p in direct)
            + ")",
            details,
        )
    vfio_ok = bool(kernel.enabled("CONFIG_VFIO_PCI")) and iommu.enabled
    if vfio_ok:
        details.append(
            "this project's userspace driver can map the CMB through vfio-pci and have the CPU "
            "copy payload into it; the SSD then reads it from its own memory (no P2P needed)"
        )
        why = "no NIC can DMA into the CMB" if pairs else "there is no RDMA NIC to pair with"
        return ModeVerdict(
            "staging buffers in CMB",
            "partly",
            f"partly: {why}, but the CPU can stage payload in the CMB through vfio-pci",
            details,
        )
    return ModeVerdict(
        "staging buffers in CMB",
        "no",
        "no: no NIC can DMA into the CMB, and vfio-pci with an IOMMU is not available",
        details,
    )


def sqs_in_cmb(kernel: KernelInfo, iommu: IommuInfo, nvme: list[NvmeController]) -> ModeVerdict:
    """SQs in a CMB: by the kernel nvme driver (yes) or by our vfio-pci driver (partly)."""
    details: list[str] = []
    kernel_yes = [c for c in nvme if c.driver_sqes_in_cmb]
    sqs = [c for c in nvme if c.cmb.present and "submission queues" in c.cmb.uses]
    for c in nvme:
        details.append(f"{c.address} (kernel nvme driver): {c.driver_cmb_reason}")
    details.extend(_target_use(nvme, "sq"))
    if not nvme:
        return ModeVerdict("SQs in CMB", "no", "no: there is no NVMe controller", details)
    if kernel_yes:
        return ModeVerdict(
            "SQs in CMB",
            "yes",
            "yes: the nvme driver puts its I/O SQs in the CMB of "
            + ", ".join(c.address for c in kernel_yes),
            details,
        )
    if not sqs:
        known = all(c.cmb.present is not None for c in nvme)
        summary = (
            "no: no controller's CMB accepts submission queues (CMBSZ.SQS)"
            if known
            else "no: no controller is known to accept SQs in its CMB (CMB registers unreadable)"
        )
        return ModeVerdict("SQs in CMB", "no", summary, details)
    vfio_ok = bool(kernel.enabled("CONFIG_VFIO_PCI")) and iommu.enabled
    if vfio_ok:
        details.append(
            "this project's userspace driver (vfio-pci) can create its SQs in the CMB of "
            + ", ".join(c.address for c in sqs)
        )
        return ModeVerdict(
            "SQs in CMB",
            "partly",
            "partly: the kernel nvme driver will not, but this project's vfio-pci driver can",
            details,
        )
    return ModeVerdict(
        "SQs in CMB",
        "no",
        "no: the kernel nvme driver will not, and vfio-pci with an IOMMU is not available",
        details,
    )


IO_URING_MODE = "io_uring media queues"


def io_uring_media(kernel: KernelInfo, live: bool) -> ModeVerdict:
    """File and block namespaces through an io_uring ring per process (``io_engine auto``
    takes it where it can run; :mod:`nvmf.media.uring_support`).  The kernel's release decides
    first (the ``liburing`` binding needs 6.14); on the live system the binding is loaded and a
    ring set up, as the target will; for a recorded tree only the binding's presence here."""
    fallback = "file and block namespaces use the thread pool (io_engine auto)"
    release = kernel.release
    if not release:
        return ModeVerdict(
            IO_URING_MODE, "no", f"no: the kernel release is unknown; {fallback}", []
        )
    details = [f"kernel {release}; the liburing binding needs "
               f"{uring_support.MIN_KERNEL[0]}.{uring_support.MIN_KERNEL[1]} or later"]  # fmt: skip
    why = uring_support.kernel_problem(uring_support.kernel_release(release))
    if why is None and live:
        why = uring_support.problem()
    elif why is None:
        why = uring_support.package_problem()
        if why is None:
            details.append("recorded tree: a ring's setup was not tried")
    if why is not None:
        return ModeVerdict(IO_URING_MODE, "no", f"no: {why}; {fallback}", details)
    return ModeVerdict(
        IO_URING_MODE,
        "yes",
        "yes: file and block namespaces (io_engine auto) use an io_uring ring per process",
        details,
    )
