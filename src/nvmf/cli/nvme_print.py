"""nvme-cli's output vocabulary: the strings and JSON key names ``nvme discover``, ``nvme id-ctrl``,
``nvme id-ns`` and ``nvme list`` print, so a script written for nvme-cli reads ours.

The value strings are libnvme's (``libnvme/src/nvme/fabrics.c``: ``nvmf_trtype_str``,
``nvmf_adrfam_str``, ``nvmf_subtype_str``, ``nvmf_treq_str``, ``nvmf_eflags_str``,
``nvmf_sectype_str``; a code with no string is ``"unrecognized"``), the key names and their order
nvme-cli's (``src/nvme-print-json.c``: ``json_discovery_log``, ``json_nvme_id_ctrl``,
``json_nvme_id_ns``, ``json_list_item_obj``; ``src/nvme-print-stdout.c``: the plain discovery
log and the ``nvme list`` table).  Identify fields this project does not decode (those newer than
its layouts) are left out rather than invented.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from nvmf.wire.identify import IdentifyController, IdentifyNamespace, PowerStateDescriptor
from nvmf.wire.logpage import (
    TREQ_SECURE_CHANNEL_MASK,
    AddressFamily,
    DiscoveryEntryFlags,
    DiscoveryLog,
    DiscoveryLogEntry,
    SubsystemType,
    TcpSecType,
    TransportType,
    Treq,
)

#: libnvme's answer for a code it has no string for.
UNRECOGNIZED = "unrecognized"

TRTYPE = {
    TransportType.RDMA: "rdma",
    TransportType.FC: "fc",
    TransportType.TCP: "tcp",
    TransportType.LOOP: "loop",
}
ADRFAM = {
    AddressFamily.PCI: "pci",
    AddressFamily.IPV4: "ipv4",
    AddressFamily.IPV6: "ipv6",
    AddressFamily.IB: "infiniband",
    AddressFamily.FC: "fibre-channel",
}
SUBTYPE = {
    SubsystemType.DISCOVERY: "discovery subsystem referral",
    SubsystemType.NVME: "nvme subsystem",
    SubsystemType.CURRENT_DISCOVERY: "current discovery subsystem",
}
SECURE_CHANNEL: dict[int, str] = {
    Treq.NOT_SPECIFIED: "not specified",
    Treq.REQUIRED: "required",
    Treq.NOT_REQUIRED: "not required",
}
SECTYPE = {TcpSecType.NONE: "none", TcpSecType.TLS12: "tls", TcpSecType.TLS13: "tls13"}
#: EFLAGS bit 2 (NCC, Base 2.1): no CDC connectivity; not in the wire layer's flags (yet).
EFLAGS_NCC = 1 << 2
#: EFLAGS names in libnvme's order of joining them.
EFLAGS = (
    (int(DiscoveryEntryFlags.EPCSD), "explicit discovery connections"),
    (int(DiscoveryEntryFlags.DUPRETINFO), "duplicate discovery information"),
    (EFLAGS_NCC, "no cdc connectivity"),
)


def _lookup(table: dict[Any, str], code: int) -> str:
    return table.get(code, UNRECOGNIZED)


def treq_str(treq: int) -> str:
    """``nvmf_treq_str``: the secure channel requirement, plus the SQ flow control bit."""
    known = TREQ_SECURE_CHANNEL_MASK | int(Treq.DISABLE_SQFLOW)  # int: ~ of a flag drops bits
    if int(treq) & ~known:
        return UNRECOGNIZED
    secure = SECURE_CHANNEL.get(treq & TREQ_SECURE_CHANNEL_MASK)
    if secure is None:
        return UNRECOGNIZED
    return secure + (", sq flow control disable supported" if treq & Treq.DISABLE_SQFLOW else "")


def eflags_str(eflags: int) -> str:
    """``nvmf_eflags_str``: ``none`` or the set flags' names joined by ``, ``."""
    known = 0
    for bit, _ in EFLAGS:
        known |= bit
    if int(eflags) & ~known:
        return UNRECOGNIZED
    names = [name for bit, name in EFLAGS if eflags & bit]
    return ", ".join(names) if names else "none"


def discovery_entry_json(e: DiscoveryLogEntry) -> dict[str, Any]:
    """One record of ``nvme discover -o json``."""
    out: dict[str, Any] = {
        "trtype": _lookup(TRTYPE, e.trtype),
        "adrfam": _lookup(ADRFAM, e.adrfam),
        "subtype": _lookup(SUBTYPE, e.subtype),
        "treq": treq_str(e.treq),
        "portid": e.portid,
        "trsvcid": e.trsvcid,
        "subnqn": e.subnqn,
        "traddr": e.traddr,
        "eflags": eflags_str(e.eflags),
    }
    if e.trtype == TransportType.TCP:
        out["sectype"] = _lookup(SECTYPE, e.tsas[0])
    return out


def discovery_json(log: DiscoveryLog) -> dict[str, Any]:
    """``nvme discover -o json``: ``genctr`` and the ``records``."""
    return {"genctr": log.genctr, "records": [discovery_entry_json(e) for e in log.entries]}


def discovery_text(log: DiscoveryLog) -> str:
    """``nvme discover``'s plain layout (a blank line first, as nvme-cli prints it)."""
    lines = ["", f"Discovery Log Number of Records {log.numrec}, Generation counter {log.genctr}"]
    for i, e in enumerate(log.entries):
        d = discovery_entry_json(e)
        if not e.traddr:
            d["adrfam"] = ""  # nvme-cli prints no family for an entry without an address
        lines.append(f"=====Discovery Log Entry {i}======")
        lines += [f"{key + ':':9}{value}" for key, value in d.items()]
    return "\n".join(lines)


# -- identify -------------------------------------------------------------------------------------

#: Our field name -> nvme-cli's key, where they differ (Base 2.0 renamed NVSCC to ICSVSCC).
_ID_CTRL_KEYS = {"nvscc": "icsvscc"}


def _psd_json(p: PowerStateDescriptor) -> dict[str, int]:
    """One ``psds`` element of ``nvme id-ctrl -o json`` (the fields this project decodes)."""
    return {
        "max_power": p.mp,
        "max_power_scale": p.flags & 0x1,
        "non-operational_state": (p.flags >> 1) & 0x1,
        "entry_lat": p.enlat,
        "exit_lat": p.exlat,
        "read_tput": p.rrt,
        "read_lat": p.rrl,
        "write_tput": p.rwt,
        "write_lat": p.rwl,
        "idle_power": p.idlp,
        "idle_scale": (p.ips >> 6) & 0x3,
        "active_power": p.actp,
        "active_power_work": p.apw_aps & 0x7,
        "active_scale": (p.apw_aps >> 6) & 0x3,
    }


def id_ctrl_json(idc: IdentifyController) -> dict[str, Any]:
    """``nvme id-ctrl -o json``: numbers as numbers, ``sn``/``mn``/``fr``/``subnqn`` as strings,
    ``fguid`` as a UUID string, ``subnqn`` only when set, the power states under ``psds``."""
    out: dict[str, Any] = {}
    for name, value in asdict(idc).items():
        if name == "psd":
            continue
        if name == "fguid":
            value = str(uuid.UUID(bytes=bytes(value)))
        if name == "subnqn" and not value:
            continue
        out[_ID_CTRL_KEYS.get(name, name)] = value
    out["psds"] = [_psd_json(p) for p in idc.psd[: idc.npss + 1]]
    return out


def lbaf_in_use(flbas: int) -> int:
    """The LBA format in use: FLBAS bits 3:0, and bits 6:5 as bits 5:4 (Base 2.0)."""
    return (flbas & 0xF) | (((flbas >> 5) & 0x3) << 4)


_ID_NS_PERF_OPT = ("npwg", "npwa", "npdg", "npda", "nows")


def id_ns_json(ns: IdentifyNamespace) -> dict[str, Any]:
    """``nvme id-ns -o json``: the NPWG..NOWS group only when NSFEAT says it is valid (NPDG
    only with OPTPERF bit 4), ``nguid``/``eui64`` as hex strings, the formats under ``lbafs``."""
    out: dict[str, Any] = {}
    in_use = lbaf_in_use(ns.flbas)
    for name, value in asdict(ns).items():
        if name in _ID_NS_PERF_OPT and (
            not ns.nsfeat & 0x30 or (name == "npdg" and not ns.nsfeat & 0x10)
        ):
            continue
        if name == "lbaf":
            continue
        out[name] = bytes(value).hex() if isinstance(value, bytes) else value
    out["lbafs"] = [
        {"lbaf": i, "ms": f.ms, "ds": f.lbads, "rp": f.rp, "in_use": int(i == in_use)}
        for i, f in enumerate(ns.lbaf[: ns.nlbaf + 1])
    ]
    return out


# -- nvme list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListItem:
    """One namespace row of ``nvme list``: where it is and what Identify said of it."""

    transport: str
    #: The controller's address as the Linux host's sysfs gives it: ``traddr=…,trsvcid=…``.
    address: str
    subnqn: str
    cntlid: int
    nsid: int
    sn: str
    mn: str
    fr: str
    nuse: int
    nsze: int
    block_size: int
    ms: int


def _si(value: float) -> tuple[float, str]:
    """nvme-cli's ``suffix_si_get``: the value scaled by powers of 1000, and its prefix."""
    for prefix, magnitude in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= magnitude:
            return value / magnitude, prefix
    return value, ""


def _binary(value: int) -> tuple[int, str]:
    """nvme-cli's ``suffix_binary_get``: rounded to the nearest power-of-1024 unit."""
    for shift, prefix in ((50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")):
        if value >= 1 << shift:
            return (value + (1 << (shift - 1))) >> shift, prefix
    return value, ""


def list_usage(item: ListItem) -> str:
    """The Usage column: ``"%6.2f %2sB / %6.2f %2sB"`` of used and total bytes (SI units)."""
    used, u = _si(item.nuse * item.block_size)
    size, s = _si(item.nsze * item.block_size)
    return f"{used:6.2f} {u:>2}B / {size:6.2f} {s:>2}B"


def list_format(item: ListItem) -> str:
    """The Format column: ``"%3.0f %2sB + %2d B"`` of the LBA size and metadata bytes."""
    lba, prefix = _binary(item.block_size)
    return f"{lba:3d} {prefix:>2}B + {item.ms:2d} B"


#: ``nvme list``'s columns and widths, with Node/Generic (device files this host does not make)
#: replaced by where the namespace is: the subsystem NQN and the controller's address.
LIST_COLUMNS = (
    ("Subsystem", 40),
    ("Address", 32),
    ("SN", 20),
    ("Model", 40),
    ("Namespace", 10),
    ("Usage", 26),
    ("Format", 16),
    ("FW Rev", 8),
)


def list_text(items: list[ListItem]) -> str:
    """The ``nvme list`` table: headers, dashes, one row per namespace."""
    rows = [[name for name, _ in LIST_COLUMNS], ["-" * width for _, width in LIST_COLUMNS]]
    for it in items:
        rows.append(
            [
                it.subnqn,
                it.address,
                it.sn,
                it.mn,
                f"{it.nsid:#x}",
                list_usage(it),
                list_format(it),
                it.fr,
            ]
        )
    widths = [max(w, *(len(r[i]) for r in rows)) for i, (_, w) in enumerate(LIST_COLUMNS)]
    return "\n".join(
        " ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def list_json(items: list[ListItem]) -> dict[str, Any]:
    """``nvme list -o json``: ``Devices``, one object per namespace with nvme-cli's keys;
    ``DevicePath``/``GenericPath`` (device files) replaced by ``SubsystemNQN``, ``Transport``,
    ``Address`` and ``Cntlid`` (the names and string values ``nvme list -v -o json`` uses)."""
    return {
        "Devices": [
            {
                "NameSpace": it.nsid,
                "SubsystemNQN": it.subnqn,
                "Transport": it.transport,
                "Address": it.address,
                "Cntlid": str(it.cntlid),
                "Firmware": it.fr,
                "ModelNumber": it.mn,
                "SerialNumber": it.sn,
                "UsedBytes": it.nuse * it.block_size,
                "MaximumLBA": it.nsze,
                "PhysicalSize": it.nsze * it.block_size,
                "SectorSize": it.block_size,
            }
            for it in items
        ]
    }
