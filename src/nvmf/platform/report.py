"""The doctor's report: every finding in one structure, rendered as text for people or as JSON.

The text is meant to answer the questions without a forum: each section states what was found,
and every "no" carries the reason and, where one exists, the thing to change.  The JSON is the
same structure (``dataclasses.asdict``), for scripts and for tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from nvmf.platform.cpus import CpuInfo
from nvmf.platform.iommu import IommuInfo
from nvmf.platform.kconfig import KernelInfo
from nvmf.platform.modes import ModeVerdict
from nvmf.platform.nvme import NvmeController
from nvmf.platform.p2pdma import WHITELIST_SUMMARY, P2pPair
from nvmf.platform.queues import QueuePlan
from nvmf.platform.rdma import RdmaDevice
from nvmf.platform.target import ProcessPlacement, TargetDevice, TargetFacts

#: Modules worth naming in the report when loaded.
RELEVANT_MODULES = (
    "nvme",
    "nvme_core",
    "nvme_fabrics",
    "nvme_tcp",
    "nvme_rdma",
    "nvmet",
    "nvmet_tcp",
    "nvmet_rdma",
    "ib_core",
    "ib_uverbs",
    "rdma_cm",
    "rdma_ucm",
    "rdma_rxe",
    "siw",
    "mlx5_core",
    "mlx5_ib",
    "vfio",
    "vfio_pci",
    "vfio_iommu_type1",
)


@dataclass
class Report:
    """Everything the doctor found, as one structure (rendered by the functions below)."""

    root: str
    kernel: KernelInfo
    cpus: CpuInfo
    iommu: IommuInfo
    nvme: list[NvmeController]
    rdma: list[RdmaDevice]
    rdma_comp_vectors: dict[str, int]
    p2p: list[P2pPair]
    whitelist: str
    queues: QueuePlan
    modes: list[ModeVerdict]
    notes: list[str] = field(default_factory=list)
    #: This project's running target's answer (None: no target answered on the socket).
    target: TargetFacts | None = None


def _jsonable(value: Any) -> Any:
    """JSON for what ``dataclasses.asdict`` leaves as objects (enums, by name)."""
    if isinstance(value, Enum):
        return value.name
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_dict(report: Report) -> dict[str, Any]:
    """The report as plain data (enums by name)."""
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(report), default=_jsonable))
    return data


def render_json(report: Report) -> str:
    """The report as indented JSON."""
    return json.dumps(dataclasses.asdict(report), default=_jsonable, indent=2) + "\n"


def human_size(n: int) -> str:
    """Bytes in binary units: ``16 MiB``, ``4 KiB``, ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:g} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


class _Writer:
    """Collects report lines, with section headers and indentation."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        """Start a section with an underlined title."""
        if self.lines:
            self.lines.append("")
        self.lines.append(title)
        self.lines.append("-" * len(title))

    def __call__(self, text: str = "", indent: int = 0) -> None:
        self.lines.append("  " * indent + text if text else "")


def _kernel(w: _Writer, k: KernelInfo) -> None:
    """Kernel section."""
    w.section("Kernel")
    w(f"release: {k.release or 'unknown'}")
    if k.config_error:
        w(f"build configuration: {k.config_error}")
    else:
        w(f"build configuration: {k.config_source}")
    for opt in k.options:
        if opt.value is None:
            value = "unknown"
        elif opt.value == "m":
            loaded = {True: "loaded", False: "not loaded", None: "?"}[opt.module_loaded]
            value = f"m ({opt.module} {loaded})"
        else:
            value = opt.value
        w(f"{opt.name:<24} {value:<26} {opt.why}", 1)
    relevant = [m for m in RELEVANT_MODULES if m in k.modules_loaded]
    w(f"relevant modules loaded: {', '.join(relevant) if relevant else 'none'}")


def _cpus_iommu(w: _Writer, cpus: CpuInfo, iommu: IommuInfo) -> None:
    """CPUs and IOMMU section."""
    w.section("CPUs and IOMMU")
    who = cpus.vendor or "unknown vendor"
    if cpus.family is not None:
        who += f", family {cpus.family} (0x{cpus.family:x})"
    if cpus.model_name:
        who += f", {cpus.model_name}"
    w(f"online CPUs: {cpus.online or '?'} ({cpus.online_list or '?'}); {who}")
    if cpus.amd_zen_or_newer:
        w("AMD Zen or newer: the kernel allows P2P through this CPU's root complex", 1)
    w(iommu.summary())


def _nvme(w: _Writer, nvme: list[NvmeController]) -> None:
    """NVMe controllers section."""
    w.section("NVMe controllers")
    if not nvme:
        w("none: no PCI function of class 01:08:02 (NVM Express) on this machine")
        return
    for c in nvme:
        ident = c.model or "model unknown (not bound to the nvme driver)"
        bound = c.driver or "no driver"
        if c.name:
            bound += f", {c.name}"
        w(f"{c.address} [{c.ids}] {ident}: driver {bound}")
        if c.target is not None:
            _held(w, c.target, c.cmb.source)
        if c.nvme_version:
            w(f"NVMe {c.nvme_version}, up to {c.mqes} entries per queue (CAP.MQES)", 1)
        cmb = c.cmb
        if cmb.present is None:
            w(f"CMB: unknown — {cmb.error or 'the registers could not be read'}", 1)
        elif not cmb.present:
            w("CMB: none (CMBSZ is 0)" + (" " + "; ".join(cmb.notes) if cmb.notes else ""), 1)
        else:
            uses = ", ".join(cmb.uses) or "nothing"
            w(f"CMB: {human_size(cmb.size_bytes)} in BAR{cmb.bar} at offset {cmb.offset:#x}", 1)
            w(f"supports: {uses}", 2)
            missing = [
                u
                for u in (
                    "submission queues",
                    "completion queues",
                    "read data",
                    "write data",
                    "PRP/SGL lists",
                )
                if u not in cmb.uses
            ]
            if missing:
                w(f"does not support: {', '.join(missing)}", 2)
            if cmb.fields:
                w(_cmb_fields(cmb.fields), 2)
            regs = ", ".join(f"{k} {v}" for k, v in cmb.registers.items())
            w(f"from {cmb.source}: {regs}", 2)
            for note in cmb.notes:
                w(note, 2)
            if cmb.error:
                w(cmb.error, 2)
        sqes = {True: "Y", False: "N", None: "unknown (nvme module not loaded)"}[c.use_cmb_sqes]
        w(
            f"nvme driver: use_cmb_sqes={sqes}; uses the CMB: "
            f"{'yes' if c.driver_uses_cmb else 'no'} — {c.driver_cmb_reason}",
            1,
        )
        if c.p2pmem is not None:
            w(
                f"p2pmem: {human_size(c.p2pmem.size)}, {human_size(c.p2pmem.available)} free, "
                f"{'published' if c.p2pmem.published else 'not published'}",
                1,
            )
        else:
            w("p2pmem: none exposed (no p2pmem/ under the PCI device)", 1)
        if c.io_queues is not None:
            w(f"I/O queues created by the nvme driver: {c.io_queues}", 1)
        if c.iommu_group is not None:
            w(f"IOMMU group {c.iommu_group}", 1)
        if c.target is not None:
            _placements(w, c.target)


#: The CMBSZ fields the text report spells out, in register order (bits first).
_CMBSZ_SHOWN = ("SQS", "CQS", "LISTS", "RDS", "WDS", "SZU", "SZ")


def _cmb_fields(fields: dict[str, dict[str, int]]) -> str:
    """``CMBSZ SQS=1 CQS=0 ... SZ=16; CMBLOC BIR=2 OFST=0``."""
    sz = fields.get("CMBSZ", {})
    loc = fields.get("CMBLOC", {})
    text = "CMBSZ " + " ".join(f"{n}={sz[n]}" for n in _CMBSZ_SHOWN if n in sz)
    if sz.get("SZU") is not None:
        text += f" (SZU {human_size(4096 << (4 * sz['SZU']))} units)"
    if loc:
        text += f"; CMBLOC BIR={loc.get('BIR')} OFST={loc.get('OFST')}"
    return text


def _held(w: _Writer, d: TargetDevice, source: str) -> None:
    """The line saying this project's target owns the controller, and where facts come from."""
    w(
        f"owned by {source}: it serves namespace {d.nsid} of {d.subsystem}; the facts below "
        "come from the running target (the doctor does not touch a device in use)",
        1,
    )


def _where(placement: str, address: int) -> str:
    return f"in {placement.upper()} at {address:#x}"


def _process(w: _Writer, p: ProcessPlacement) -> None:
    """One target process's queue pair and staging memory, each with where and why."""
    w(
        f"{p.process}: SQ {p.qid} ({p.depth} entries) {_where(p.sq.placement, p.sq.address)} "
        f"({p.sq.reason}); staging {human_size(p.staging_bytes)} "
        f"{_where(p.staging.placement, p.staging.address)} ({p.staging.reason})",
        2,
    )
    lists = ", ".join(_where(k, v.address) for k, v in p.prp_lists.items())
    w(f"CQ {_where(p.cq.placement, p.cq.address)} ({p.cq.reason}); PRP lists {lists}", 3)


def _placements(w: _Writer, d: TargetDevice) -> None:
    """Where the running target put each process's SQ and staging memory, and why."""
    cmb = (
        f"CMB at {d.cmb_address:#x}, {human_size(d.cmb_in_use)} of it allocated"
        if d.cmb_address is not None
        else "no CMB enabled"
    )
    w(
        f"target placements (configured: SQ {d.sq_placement}, staging {d.staging_placement}; "
        f"{cmb}):",
        1,
    )
    for p in d.processes:
        _process(w, p)


def _rdma(w: _Writer, rdma: list[RdmaDevice], comp_vectors: dict[str, int]) -> None:
    """RDMA devices section."""
    w.section("RDMA devices")
    if not rdma:
        w(
            "none: /sys/class/infiniband has no devices (no RDMA NIC driver loaded, and no "
            "Soft-RoCE: modprobe rdma_rxe && rdma link add rxe0 type rxe netdev ETH)"
        )
        return
    for d in rdma:
        where = f"PCI {d.pci_address}" if d.pci_address else "no PCI device (software)"
        parent = f", on netdev {d.parent_netdev}" if d.parent_netdev else ""
        w(f"{d.name}: driver {d.driver or 'unknown'}, {where}{parent}")
        extra = [
            f"node type {d.node_type}" if d.node_type else "",
            f"fw {d.fw_ver}" if d.fw_ver else "",
            f"{comp_vectors[d.name]} completion vectors" if d.name in comp_vectors else "",
        ]
        extra = [e for e in extra if e]
        if extra:
            w(", ".join(extra), 1)
        for p in d.ports:
            w(
                f"port {p.number}: {p.state or '?'}, {p.phys_state or '?'}, link layer "
                f"{p.link_layer or '?'}, {p.rate or '?'}",
                1,
            )
            for g in p.gids:
                w(f"GID {g.index}: {g.gid} {g.type or ''} ({g.netdev or '-'})", 2)
        w(
            ("P2P: possible, topology permitting — " if d.p2p_capable else "P2P: no — ")
            + d.p2p_reason,
            1,
        )


def _p2p(w: _Writer, report: Report) -> None:
    """Peer-to-peer section."""
    w.section("Peer-to-peer: RDMA NIC -> NVMe CMB")
    w(report.whitelist)
    if not report.p2p:
        missing = []
        if not report.rdma:
            missing.append("no RDMA device")
        if not report.nvme:
            missing.append("no NVMe controller")
        w(f"nothing to pair: {' and '.join(missing)}")
        return
    for pair in report.p2p:
        w(f"{pair.rdma_device} -> {pair.nvme}: {pair.verdict}")
        t = pair.topology
        if t is not None:
            w(f"path: {' -> '.join(t.path)}", 1)
            w(
                f"mapping: {t.map_type.value}, distance {t.distance}; shared switch: "
                f"{'yes' if t.shared_switch else 'no'}; host bridges: {', '.join(t.host_bridges)}",
                1,
            )
            for hb in t.host_bridge_checks:
                w(f"whitelist: {hb.reason}", 1)
            for port in t.acs_ports:
                w(
                    f"ACS at {port.address}: supports {' '.join(port.supported) or '-'}, "
                    f"enabled {' '.join(port.enabled) or '-'}"
                    + (" (redirects peer traffic upstream)" if port.redirects else ""),
                    1,
                )
            if not t.acs_ports:
                w("ACS: no port on the path has an ACS capability", 1)
            if t.hint:
                w(f"to keep the traffic in the switch, boot with {t.hint}", 1)
        if pair.iommu:
            w(pair.iommu, 1)


def _queues(w: _Writer, q: QueuePlan) -> None:
    """Queue plan section."""
    w.section("Queue plan")
    h = q.host
    asked = f"{h.read_or_default}"
    if h.nr_io_queues is not None:
        asked += f" (-i {h.nr_io_queues}, capped at {h.cpus} CPUs)"
    else:
        asked += f" (one per online CPU of a {h.cpus}-CPU host)"
    if h.write or h.poll:
        asked += f" + {h.write} write + {h.poll} poll = {h.total}"
    w(f"this machine has {q.this_machine_cpus or '?'} online CPUs")
    w(f"a Linux host asks for: {asked}")
    w(f"the Linux target grants {q.linux_target_qid_max} ({q.linux_target_source})")
    w(f"this project's target grants {q.ours_max} ({q.ours_source})")
    w(
        f"-> nvme connect creates {q.linux_result} I/O queues against the Linux target, "
        f"{q.ours_result} against this project's"
    )
    if q.host_rdma is not None and q.rdma_linux_result is not None:
        w(
            f"over RDMA the host also caps read/write queues at {q.host_rdma.comp_vectors} "
            f"completion vectors: asks {q.host_rdma.total}, gets {q.rdma_linux_result} from the "
            "Linux target"
        )
    w("what a host with N cores would get (asked -> Linux target / this project's target):")
    for row in q.what_if:
        w(
            f"{row.host_cpus:>4} cores: asks {row.asked:>3} -> "
            f"{row.linux_target:>3} / {row.ours:>3}",
            1,
        )


def _modes(w: _Writer, modes: list[ModeVerdict]) -> None:
    """Verdicts section."""
    w.section("Verdicts")
    for m in modes:
        w(f"{m.mode}: {m.summary}")
        for d in m.details:
            w(f"- {d}", 1)


def render_text(report: Report) -> str:
    """The report for people: sections, one finding per line, reasons spelled out."""
    w = _Writer()
    w(
        "nvmf doctor: what this machine can do for NVMe over Fabrics"
        + (f" (recorded tree {report.root})" if report.root != "/" else "")
    )
    for note in report.notes:
        w(note)
    _kernel(w, report.kernel)
    _cpus_iommu(w, report.cpus, report.iommu)
    _nvme(w, report.nvme)
    _rdma(w, report.rdma, report.rdma_comp_vectors)
    _p2p(w, report)
    _queues(w, report.queues)
    _modes(w, report.modes)
    return "\n".join(w.lines) + "\n"


__all__ = ["WHITELIST_SUMMARY", "Report", "human_size", "render_json", "render_text", "to_dict"]
