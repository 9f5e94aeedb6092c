"""What an ``nvme_pci`` namespace tells ``nvmf doctor`` while the target owns the SSD
(:mod:`nvmf.media.nvme_pci_report`, the control socket's ``pci_devices``), without a device:
the medium's own ``device_report`` over a stand-in controller whose registers are QEMU 7.2's
(16 MiB CMB in BAR2: CMBSZ SQS, LISTS, RDS, WDS, no CQS) and queue pairs of tests/pci.

The same answer from a real target on QEMU's controller: tests/guest/test_doctor_guest.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from nvmf.control.status import device_reports
from nvmf.media.base import DeviceReport
from nvmf.media.nvme_pci import NvmePciMedia, placement_reason
from nvmf.media.nvme_pci_report import process_facts, register_facts
from nvmf.memory.source import Region
from nvmf.pci.cmb import CmbInfo
from nvmf.pci.queue import QueueMemory, QueuePair
from tests.pci.test_queue import make_pair

BDF = "0000:00:04.0"
CBA = 0xFE00_0000
#: CMBSZ as QEMU 7.2 builds it for cmb_size_mb=16: SZ=16, SZU=2 (MiB), WDS RDS LISTS SQS.
QEMU_CMBSZ_16 = (16 << 12) | (2 << 8) | 0b11101
#: CMBLOC: the CMB in BAR2 at offset 0.
QEMU_CMBLOC = 2
QEMU_REGISTERS = {
    "CAP": (1 << 57) | (1 << 37) | (0xF << 24) | (1 << 16) | 0x7FF,
    "VS": 0x10400,
    "CMBLOC": QEMU_CMBLOC,
    "CMBSZ": QEMU_CMBSZ_16,
    "CMBMSC": CBA | 0b11,  # CBA, CMSE, CRE
    "CMBSTS": 0,
}


@dataclass
class _Space:
    in_use: int = 0


@dataclass
class _Cmb:
    address: int = CBA
    space: _Space = field(default_factory=lambda: _Space(9 << 20))


class _Ctrl:
    """What :meth:`NvmePciMedia.device_report` reads of an :class:`NvmeController`."""

    bdf = BDF
    identify = SimpleNamespace(mn="QEMU NVMe Ctrl  ", sn="cmb0001 ", fr="7.2.0   ")

    def __init__(self) -> None:
        self.cmb_info = CmbInfo(QEMU_CMBLOC, QEMU_CMBSZ_16)
        self.cmb = _Cmb()

    def read_registers(self) -> dict[str, int]:
        return dict(QEMU_REGISTERS)


def _pair(qid: int, placement: str) -> QueuePair:
    pair, _ = make_pair(8, cmb_lists=True)
    sq = QueueMemory("cmb", 0, 8 * 64, CBA + qid * 0x1000) if placement == "cmb" else None
    pair.layout = dataclasses.replace(pair.layout, qid=qid, **({"sq": sq} if sq else {}))
    pair.qid = qid
    return pair


def _region(placement: str, iova: int) -> Region:
    return Region(memoryview(bytearray(4096)), placement, iova=iova)


def fake_media(placement: str = "cmb", workers: int = 2) -> NvmePciMedia:
    """An :class:`NvmePciMedia` as it is once opened and shared with ``workers`` workers, with
    the stand-in controller: no device, the real ``device_report``."""
    media = NvmePciMedia.__new__(NvmePciMedia)
    ctrl = _Ctrl()
    media.ctrl = ctrl  # type: ignore[assignment]
    media.bdf = BDF
    media.size = 1 << 30
    media.block_size = 512
    media.sq_placement = media.staging_placement = placement
    media.sq_reason = placement_reason(ctrl, placement, ("sq",))  # type: ignore[arg-type]
    media.staging_reason = placement_reason(ctrl, placement, ("read", "write"))  # type: ignore[arg-type]
    base = CBA if placement == "cmb" else 0x10_0000_0000
    media._queue = SimpleNamespace(pair=_pair(1, placement))  # type: ignore[assignment]
    media._pool = SimpleNamespace(region=_region(placement, base + 0x10_0000))  # type: ignore[assignment]
    media._workers = {
        w: (_pair(2 + w, placement), _region(placement, base + (w + 2) * 0x40_0000))
        for w in range(workers)
    }
    return media


def test_registers_go_out_raw_and_decoded_with_spec_names() -> None:
    facts = register_facts(QEMU_REGISTERS)
    assert facts["registers"]["CMBSZ"] == "0x1021d" and facts["registers"]["CMBLOC"] == "0x2"
    assert facts["CMBSZ"] == {
        "SQS": 1,
        "CQS": 0,
        "LISTS": 1,
        "RDS": 1,
        "WDS": 1,
        "SZU": 2,
        "SZ": 16,
    }
    assert facts["CMBLOC"]["BIR"] == 2 and facts["CMBLOC"]["OFST"] == 0


def test_a_process_says_where_each_piece_is_and_why() -> None:
    info = CmbInfo(QEMU_CMBLOC, QEMU_CMBSZ_16)
    facts = process_facts(
        "offload worker 1",
        1,
        _pair(3, "cmb"),
        _region("cmb", CBA + 0x80_0000),
        sq_reason="configured cmb, CMBSZ.SQS set",
        staging_reason="configured cmb, CMBSZ.RDS set and CMBSZ.WDS set",
        cmb=info,
    )
    assert facts["process"] == "offload worker 1" and facts["worker"] == 1
    assert (facts["qid"], facts["depth"]) == (3, 8)
    assert facts["sq"] == {
        "placement": "cmb",
        "address": CBA + 0x3000,
        "reason": "configured cmb, CMBSZ.SQS set",
    }
    assert facts["cq"]["placement"] == "dram" and "CMBSZ.CQS clear" in facts["cq"]["reason"]
    assert set(facts["prp_lists"]) == {"dram", "cmb"}
    assert "CMBSZ.LISTS set" in facts["prp_lists"]["cmb"]["reason"]
    assert facts["staging"]["placement"] == "cmb" and facts["staging"]["bytes"] == 4096
    assert facts["staging"]["address"] == CBA + 0x80_0000


def test_the_medium_reports_every_process_it_made_a_pair_for() -> None:
    media = fake_media("cmb", workers=2)
    assert isinstance(media, DeviceReport)
    report = media.device_report()
    json.dumps(report)  # JSON-ready
    assert report["bdf"] == BDF and report["kind"] == "nvme_pci"
    assert (report["model"], report["serial"], report["firmware"]) == (
        "QEMU NVMe Ctrl",
        "cmb0001",
        "7.2.0",
    )
    assert report["CMBSZ"]["RDS"] == 1 and report["CMBSZ"]["CQS"] == 0
    assert report["cmb"] == {
        "size": 16 << 20,
        "bar": 2,
        "offset": 0,
        "address": CBA,
        "in_use": 9 << 20,
        "allows": {"sq": True, "cq": False, "lists": True, "read": True, "write": True},
    }
    assert report["configured"] == {"sq_placement": "cmb", "staging_placement": "cmb"}
    who = [(p["process"], p["worker"], p["qid"]) for p in report["processes"]]
    assert who == [
        ("control plane", None, 1),
        ("offload worker 0", 0, 2),
        ("offload worker 1", 1, 3),
    ]
    assert all(p["sq"]["placement"] == "cmb" for p in report["processes"])
    assert all("CMBSZ.SQS set" in p["sq"]["reason"] for p in report["processes"])
    assert all("CMBSZ.RDS set" in p["staging"]["reason"] for p in report["processes"])


def test_dram_placement_says_it_was_configured() -> None:
    report = fake_media("dram", workers=1).device_report()
    for p in report["processes"]:
        assert (p["sq"]["placement"], p["sq"]["reason"]) == ("dram", "configured dram")
        assert p["staging"]["placement"] == "dram"


@dataclass
class _Ram:
    kind: str = "ram"


def test_the_control_plane_answers_for_nvme_pci_namespaces_only() -> None:
    nqn = "nqn.2024-01.io.nvmf:ssd"
    service: Any = SimpleNamespace(
        subsystems={
            nqn: SimpleNamespace(
                namespaces={
                    2: SimpleNamespace(media=_Ram()),
                    1: SimpleNamespace(media=fake_media("cmb", workers=1)),
                }
            )
        }
    )
    answer = device_reports(service)
    assert isinstance(answer["pid"], int)
    (device,) = answer["devices"]
    assert (device["subsystem"], device["nsid"], device["bdf"]) == (nqn, 1, BDF)
    assert len(device["processes"]) == 2
