"""What a running ``nvmf serve`` says about the SSDs it owns, as the doctor reports it.

An SSD served by an ``nvme_pci`` namespace is bound to vfio-pci and its VFIO group is open in
the target: the doctor can neither open it nor (with ``CONFIG_IO_STRICT_DEVMEM``) map its BAR0,
and must not write its CMBMSC while the target uses the CMB.  So ``nvmf doctor`` asks the
target over its control socket (op ``pci_devices``; the CLI does the asking, this layer only
reads the answer) and reports the registers and placements the target gives, saying they come
from the running target.  The answer's shape is :func:`nvmf.control.status.device_reports`
with each device's :mod:`nvmf.media.nvme_pci_report` facts; :func:`parse_devices` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nvmf.platform.pci import BDF_RE


class TargetAnswerError(ValueError):
    """The target's answer is not the shape this doctor knows (another version of nvmf?)."""


@dataclass
class Place:
    """Where one piece of a queue pair is: ``dram`` or ``cmb``, the SSD's address, why."""

    placement: str
    address: int
    reason: str


@dataclass
class ProcessPlacement:
    """One target process's SSD queue pair and staging memory."""

    process: str
    worker: int | None
    qid: int
    depth: int
    sq: Place
    cq: Place
    #: PRP list pages: ``dram`` always, ``cmb`` too when CMBSZ.LISTS lets data in the CMB
    #: have its lists there.
    prp_lists: dict[str, Place]
    staging: Place
    staging_bytes: int


@dataclass
class TargetDevice:
    """An SSD the running target owns, as it reports it."""

    bdf: str
    subsystem: str
    nsid: int
    model: str
    serial: str
    firmware: str
    #: CAP, VS, CMBLOC, CMBSZ, CMBMSC, CMBSTS as the target read them.
    registers: dict[str, int]
    #: CMBLOC and CMBSZ field by field (spec names).
    fields: dict[str, dict[str, int]]
    #: The CMB's address for the SSD (CMBMSC.CBA, what PRPs to CMB memory hold) and the bytes
    #: of it the target allocated; None when the target enabled no CMB.
    cmb_address: int | None
    cmb_in_use: int
    sq_placement: str
    staging_placement: str
    processes: list[ProcessPlacement] = field(default_factory=list)


@dataclass
class TargetFacts:
    """The running target's answer: who answered, and the devices it holds."""

    socket: str
    pid: int | None
    devices: list[TargetDevice] = field(default_factory=list)
    #: Why the target could not say (it refused the request, or answered in another shape).
    error: str | None = None

    def holding(self, bdf: str) -> TargetDevice | None:
        """The device at ``bdf`` if the target owns it."""
        return next((d for d in self.devices if d.bdf == bdf), None)


def _get(data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict) or key not in data or not isinstance(data[key], kind):
        raise TargetAnswerError(f"{where}: no {key!r} of the expected type")
    return data[key]


def _place(data: Any, where: str) -> Place:
    return Place(
        placement=_get(data, "placement", str, where),
        address=_get(data, "address", int, where),
        reason=_get(data, "reason", str, where),
    )


def _process(data: Any, where: str) -> ProcessPlacement:
    worker = data.get("worker") if isinstance(data, dict) else None
    lists = _get(data, "prp_lists", dict, where)
    staging = _get(data, "staging", dict, where)
    return ProcessPlacement(
        process=_get(data, "process", str, where),
        worker=worker if isinstance(worker, int) else None,
        qid=_get(data, "qid", int, where),
        depth=_get(data, "depth", int, where),
        sq=_place(_get(data, "sq", dict, where), f"{where}.sq"),
        cq=_place(_get(data, "cq", dict, where), f"{where}.cq"),
        prp_lists={k: _place(v, f"{where}.prp_lists.{k}") for k, v in lists.items()},
        staging=_place(staging, f"{where}.staging"),
        staging_bytes=_get(staging, "bytes", int, f"{where}.staging"),
    )


def _device(data: Any, where: str) -> TargetDevice:
    bdf = _get(data, "bdf", str, where)
    if not BDF_RE.match(bdf):
        raise TargetAnswerError(f"{where}: {bdf!r} is not a PCI address")
    registers = {
        name: int(value, 16) for name, value in _get(data, "registers", dict, where).items()
    }
    cmb = data.get("cmb")
    configured = _get(data, "configured", dict, where)
    return TargetDevice(
        bdf=bdf,
        subsystem=_get(data, "subsystem", str, where),
        nsid=_get(data, "nsid", int, where),
        model=str(data.get("model", "")),
        serial=str(data.get("serial", "")),
        firmware=str(data.get("firmware", "")),
        registers=registers,
        fields={
            "CMBLOC": dict(_get(data, "CMBLOC", dict, where)),
            "CMBSZ": dict(_get(data, "CMBSZ", dict, where)),
        },
        cmb_address=_get(cmb, "address", int, f"{where}.cmb") if cmb else None,
        cmb_in_use=_get(cmb, "in_use", int, f"{where}.cmb") if cmb else 0,
        sq_placement=_get(configured, "sq_placement", str, f"{where}.configured"),
        staging_placement=_get(configured, "staging_placement", str, f"{where}.configured"),
        processes=[
            _process(p, f"{where}.processes[{i}]")
            for i, p in enumerate(_get(data, "processes", list, where))
        ],
    )


def parse_devices(answer: Any, socket: str) -> TargetFacts:
    """The target's ``pci_devices`` answer as :class:`TargetFacts`; an answer of another shape
    becomes facts with no device and the reason in ``error`` (the doctor then reads what it
    can itself, and says why)."""
    try:
        pid = _get(answer, "pid", int, "answer")
        devices = [
            _device(d, f"devices[{i}]")
            for i, d in enumerate(_get(answer, "devices", list, "answer"))
        ]
    except (TargetAnswerError, ValueError, TypeError, AttributeError) as exc:
        return TargetFacts(socket, None, [], error=f"the target's answer was not understood: {exc}")
    return TargetFacts(socket, pid, devices)


__all__ = [
    "Place",
    "ProcessPlacement",
    "TargetAnswerError",
    "TargetDevice",
    "TargetFacts",
    "parse_devices",
]
