"""``nvmf doctor`` beside a running target that owns the SSD: the facts come from the target.

The target's answer here is the real one (:func:`nvmf.control.status.device_reports` over the
``nvme_pci`` medium's ``device_report``, with the stand-in controller of
tests/media/test_nvme_pci_report.py), served on a real control socket by the handlers
``nvmf serve`` registers; the machine is the recorded guest tree ``qemu-nvme-vfio`` (QEMU's CMB
controller bound to vfio-pci), where the stand-in's address is put.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nvmf.cli.doctor import ask_target
from nvmf.cli.main import main
from nvmf.cli.serve import Watch
from nvmf.control.rpc import ControlServer
from nvmf.control.status import device_reports
from nvmf.platform.doctor import DoctorOptions, diagnose
from nvmf.platform.report import render_text, to_dict
from nvmf.platform.target import TargetFacts, parse_devices
from tests.media.test_nvme_pci_report import CBA, QEMU_CMBSZ_16, fake_media

SYSFS = Path(__file__).resolve().parents[1] / "data" / "sysfs"
#: The controller's address in the recorded guest tree.
TREE_BDF = "0000:00:0a.0"
NQN = "nqn.2024-01.io.nvmf:ssd"


def _service(bdf: str = TREE_BDF) -> Any:
    media = fake_media("cmb", workers=2)
    media.bdf = bdf
    ns = SimpleNamespace(media=media)
    service = SimpleNamespace(subsystems={NQN: SimpleNamespace(namespaces={1: ns})})

    async def devices() -> dict[str, Any]:
        return device_reports(service)  # type: ignore[arg-type]

    service.devices = devices
    return service


class _Target:
    """The control socket of ``nvmf serve`` (its own handlers), on a loop in a thread."""

    def __init__(self, path: str, handlers: dict[str, Any]) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, handlers)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[_Target]:
    t = _Target(str(tmp_path / "control.sock"), Watch(_service(), None).handlers())
    try:
        yield t
    finally:
        t.close()


def test_the_target_answers_pci_devices_and_the_doctor_understands_it(target: _Target) -> None:
    facts = ask_target(target.path)
    assert facts is not None and facts.error is None and facts.socket == target.path
    (device,) = facts.devices
    assert (device.bdf, device.subsystem, device.nsid) == (TREE_BDF, NQN, 1)
    assert device.registers["CMBSZ"] == QEMU_CMBSZ_16
    assert device.fields["CMBSZ"]["RDS"] == 1 and device.fields["CMBLOC"]["BIR"] == 2
    assert (device.cmb_address, device.sq_placement) == (CBA, "cmb")
    assert [p.process for p in device.processes] == [
        "control plane",
        "offload worker 0",
        "offload worker 1",
    ]
    assert device.processes[1].sq.placement == "cmb"
    assert "CMBSZ.SQS set" in device.processes[1].sq.reason


def test_no_target_means_the_doctor_reads_devices_itself(tmp_path: Path) -> None:
    assert ask_target(str(tmp_path / "nobody.sock")) is None


def test_a_target_without_the_op_is_named_not_trusted(tmp_path: Path) -> None:
    async def status(request: dict[str, Any]) -> dict[str, Any]:
        return {}

    old = _Target(str(tmp_path / "old.sock"), {"status": status})
    try:
        facts = ask_target(old.path)
    finally:
        old.close()
    assert facts is not None and facts.devices == []
    assert facts.error is not None and "unknown op 'pci_devices'" in facts.error


def test_an_answer_of_another_shape_is_reported_not_raised() -> None:
    facts = parse_devices({"pid": 7, "devices": [{"bdf": "nope"}]}, "/run/x.sock")
    assert facts.devices == [] and facts.error is not None
    assert "not understood" in facts.error


def _held_report() -> tuple[TargetFacts, Any]:
    answer = json.loads(json.dumps(device_reports(_service())))
    facts = parse_devices(answer, "/run/nvmf/control.sock")
    report = diagnose(DoctorOptions(root=SYSFS / "qemu-nvme-vfio", target=facts))
    return facts, report


def test_a_held_controller_is_reported_from_the_target() -> None:
    facts, report = _held_report()
    (ctrl,) = report.nvme
    assert ctrl.address == TREE_BDF and ctrl.target is not None
    assert ctrl.model == "QEMU NVMe Ctrl" and ctrl.serial == "cmb0001"
    cmb = ctrl.cmb
    assert cmb.source.startswith(f"the running target (pid {facts.pid}")
    assert cmb.present and cmb.size_bytes == 16 << 20 and (cmb.bar, cmb.offset) == (2, 0)
    assert cmb.uses == ["submission queues", "read data", "write data", "PRP/SGL lists"]
    assert cmb.fields["CMBSZ"] == {
        "SQS": 1,
        "CQS": 0,
        "LISTS": 1,
        "RDS": 1,
        "WDS": 1,
        "SZU": 2,
        "SZ": 16,
    }
    assert not cmb.enabled_cre  # nothing was written: the doctor never touched the device
    assert any("comes from the running target" in n for n in report.notes)
    data = to_dict(report)
    assert data["target"]["pid"] == facts.pid
    assert data["nvme"][0]["target"]["processes"][0]["sq"]["placement"] == "cmb"


def test_the_text_says_who_owns_the_device_and_each_processs_placement() -> None:
    facts, report = _held_report()
    text = render_text(report)
    assert f"owned by the running target (pid {facts.pid}" in text
    assert f"namespace 1 of {NQN}" in text
    assert "CMBSZ SQS=1 CQS=0 LISTS=1 RDS=1 WDS=1 SZU=2 SZ=16 (SZU 1 MiB units)" in text
    assert "CMBLOC BIR=2 OFST=0" in text
    assert "target placements (configured: SQ cmb, staging cmb; CMB at 0xfe000000" in text
    for who in ("control plane", "offload worker 0", "offload worker 1"):
        assert f"{who}: SQ " in text
    assert "in CMB at 0xfe003000 (configured cmb, CMBSZ.SQS set)" in text  # worker 1's SQ
    assert "(configured cmb, CMBSZ.RDS set and CMBSZ.WDS set)" in text


def test_the_cli_asks_the_target_on_its_control_socket(
    target: _Target, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--json", "--control-socket", target.path]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"]["socket"] == target.path
    assert data["target"]["devices"][0]["bdf"] == TREE_BDF
    # This machine lists no such controller in sysfs: said, not hidden.
    if not any(c["address"] == TREE_BDF for c in data["nvme"]):
        assert any("which sysfs does not list" in n for n in data["notes"])
