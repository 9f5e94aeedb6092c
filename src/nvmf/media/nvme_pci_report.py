"""What an ``nvme_pci`` namespace tells ``nvmf doctor`` about its SSD while the target owns it.

While the target runs, the SSD is bound to vfio-pci and its VFIO group is open in the target:
nothing else can open it, and with ``CONFIG_IO_STRICT_DEVMEM`` nothing else can even map BAR0
through sysfs.  The target then answers for it (control socket op ``pci_devices``, see
:mod:`nvmf.control.status`), with what only it knows:

- the controller's registers as they read now (CAP, VS, CMBLOC, CMBSZ, CMBMSC, CMBSTS), raw and
  CMBLOC/CMBSZ decoded field by field (spec names: CMBSZ.SQS, CQS, LISTS, RDS, WDS, SZU, SZ;
  CMBLOC.BIR, OFST), with the CMB's size, BAR, offset and the address the SSD knows it by (CBA);
- for each process of the target (the control plane, each offload worker): its queue pair
  (qid, depth), where the SQ, CQ, PRP lists and staging memory are (``dram`` or ``cmb``, and
  the address the SSD uses) and why (the configured placement and the CMBSZ bit that allows it).

Everything is plain data, JSON-ready; these functions only read.
"""

from __future__ import annotations

from typing import Any

from nvmf.memory.source import Region
from nvmf.pci.cmb import CmbInfo
from nvmf.pci.queue import QueuePair
from nvmf.pci.registers import CMBLOC, CMBSZ


def register_facts(registers: dict[str, int]) -> dict[str, Any]:
    """``registers`` (by spec name) as hex strings, and CMBLOC/CMBSZ decoded field by field."""
    return {
        "registers": {name: f"{value:#x}" for name, value in registers.items()},
        "CMBLOC": CMBLOC.decode(registers.get("CMBLOC", 0)),
        "CMBSZ": CMBSZ.decode(registers.get("CMBSZ", 0)),
    }


def cmb_facts(info: CmbInfo | None, address: int | None, in_use: int) -> dict[str, Any] | None:
    """The CMB the driver enabled: size, BAR (CMBLOC.BIR), offset in it, CBA, bytes allocated;
    None when the controller has none (CAP.CMBS clear or CMBSZ.SZ 0)."""
    if info is None or address is None:
        return None
    return {
        "size": info.size,
        "bar": info.bar,
        "offset": info.offset,
        "address": address,
        "in_use": in_use,
        "allows": {use: info.allows(use) for use in ("sq", "cq", "lists", "read", "write")},
    }


def _place(placement: str, address: int | None, reason: str, **extra: Any) -> dict[str, Any]:
    return {"placement": placement, "address": address or 0, "reason": reason, **extra}


def process_facts(
    who: str,
    worker: int | None,
    pair: QueuePair,
    staging: Region,
    *,
    sq_reason: str,
    staging_reason: str,
    cmb: CmbInfo | None,
) -> dict[str, Any]:
    """One process's queue pair and staging memory: where each piece is, at which address the
    SSD knows it, and why it is there."""
    layout = pair.layout
    cqs = "CMBSZ.CQS set" if cmb is not None and cmb.allows("cq") else "CMBSZ.CQS clear"
    lists: dict[str, Any] = {"dram": _place("dram", layout.prp_lists.iova, "data in DRAM")}
    if layout.prp_lists_cmb is not None:
        lists["cmb"] = _place("cmb", layout.prp_lists_cmb.iova, "data in the CMB, CMBSZ.LISTS set")
    return {
        "process": who,
        "worker": worker,
        "qid": pair.qid,
        "depth": layout.depth,
        "sq": _place(layout.sq.placement, layout.sq.iova, sq_reason),
        "cq": _place(layout.cq.placement, layout.cq.iova, f"this target keeps CQs in DRAM; {cqs}"),
        "prp_lists": lists,
        "staging": _place(staging.placement, staging.iova, staging_reason, bytes=staging.size),
    }


__all__ = ["cmb_facts", "process_facts", "register_facts"]
