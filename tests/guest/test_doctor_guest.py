"""``nvmf doctor`` in the Linux 6.1 guest with QEMU's CMB controller and Soft-RoCE.

One boot (tests/platform/guest_capture.py) runs the doctor while the kernel's nvme driver owns the
controller, then with the controller handed to vfio-pci and its CMBMSC cleared as after a reset,
so the doctor has to enable CMBMSC.CRE to read the CMB.  The checks compare the reports with what
the guest was built with: ``tests.vm.guest --cmb-nvme 16`` (QEMU 7.2's nvme device: CMB in BAR2,
SZU=1 MiB, SZ=16, SQS/LISTS/RDS/WDS and no CQS), two CPUs, Debian's 6.1 kernel without
CONFIG_PCI_P2PDMA, and ``rdma link add rxe0 type rxe netdev lo``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.platform import guest_capture
except ModuleNotFoundError:  # pytest started as a script: the repository is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.platform import guest_capture

MIB = 1 << 20
#: CMBSZ as QEMU builds it for cmb_size_mb=16: SZ=16, SZU=2 (MiB), WDS RDS LISTS SQS.
QEMU_CMBSZ_16 = (16 << 12) | (2 << 8) | 0b11101


@pytest.fixture(scope="module")
def guest() -> guest_capture.GuestResult:
    result = guest_capture.doctor()
    assert (result.out / "done.txt").exists(), (
        f"guest script did not finish (rc {result.returncode}):\n{result.console[-3000:]}\n"
        f"stderr: {result.read('stderr.txt')[-2000:]}"
    )
    return result


def _json(guest: guest_capture.GuestResult, name: str) -> dict[str, Any]:
    text = guest.read(name)
    assert text, f"{name} is empty; stderr: {guest.read('stderr.txt')[-2000:]}"
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.guest
def test_no_traceback_and_exit_zero(guest: guest_capture.GuestResult) -> None:
    assert guest.read("bound.rc").strip() == "0"
    assert guest.read("vfio.rc").strip() == "0"
    assert "Traceback" not in guest.read("stderr.txt")


@pytest.mark.guest
def test_kernel_lacks_p2pdma(guest: guest_capture.GuestResult) -> None:
    report = _json(guest, "vfio.json")
    kernel = report["kernel"]
    assert kernel["release"].startswith("6.1.")
    assert kernel["config_source"].startswith("/boot/config-6.1.")
    options = {o["name"]: o for o in kernel["options"]}
    assert options["CONFIG_PCI_P2PDMA"]["value"] == "not set"
    assert options["CONFIG_RDMA_RXE"]["value"] == "m"
    assert options["CONFIG_RDMA_RXE"]["module_loaded"] is True
    assert options["CONFIG_NVME_TARGET_RDMA"]["value"] == "m"
    assert "CONFIG_PCI_P2PDMA        not set" in guest.read("vfio.txt")


@pytest.mark.guest
def test_cmb_found_with_qemu_size_and_capabilities(guest: guest_capture.GuestResult) -> None:
    report = _json(guest, "vfio.json")
    (ctrl,) = report["nvme"]
    assert ctrl["address"] == guest.read("bdf.txt").strip()
    assert ctrl["ids"] == "1b36:0010" and ctrl["driver"] == "vfio-pci"
    cmb = ctrl["cmb"]
    assert cmb["source"] == "BAR0" and cmb["present"] is True
    assert cmb["size_bytes"] == guest_capture.CMB_MB * MIB
    assert (cmb["bar"], cmb["offset"]) == (2, 0)
    assert cmb["uses"] == ["submission queues", "read data", "write data", "PRP/SGL lists"]
    assert int(cmb["registers"]["CMBSZ"], 16) == QEMU_CMBSZ_16
    assert cmb["cap_cmbs"] is True and ctrl["nvme_version"] == "1.4"
    # CMBMSC had been cleared, so the doctor had to enable CRE, and it put it back.
    assert cmb["enabled_cre"] is True
    assert "CMBMSC=0x00000000" in guest.read("regs_cleared.txt")
    after = guest.read("regs_after.txt")
    assert "CMBMSC=0x00000000" in after and "CMBSZ=0x00000000" in after
    text = guest.read("vfio.txt")
    assert "CMB: 16 MiB in BAR2 at offset 0x0" in text
    assert "supports: submission queues, read data, write data, PRP/SGL lists" in text
    assert "does not support: completion queues" in text


@pytest.mark.guest
def test_read_only_run_explains_the_zero_cmbsz(guest: guest_capture.GuestResult) -> None:
    (ctrl,) = _json(guest, "vfio_ro.json")["nvme"]
    assert ctrl["cmb"]["present"] is False and ctrl["cmb"]["enabled_cre"] is False
    assert any("CMBMSC.CRE is 0" in note for note in ctrl["cmb"]["notes"])


@pytest.mark.guest
def test_nvme_driver_cannot_use_the_cmb(guest: guest_capture.GuestResult) -> None:
    (ctrl,) = _json(guest, "bound.json")["nvme"]
    assert ctrl["driver"] == "nvme" and ctrl["name"] == "nvme0"
    assert ctrl["model"] == "QEMU NVMe Ctrl"
    assert ctrl["use_cmb_sqes"] is True
    assert ctrl["driver_uses_cmb"] is False and ctrl["driver_sqes_in_cmb"] is False
    assert "CONFIG_PCI_P2PDMA" in ctrl["driver_cmb_reason"]
    assert ctrl["p2pmem"] is None
    assert ctrl["io_queues"] == guest_capture.GUEST_CPUS  # one per CPU, as nvme-pci does
    # The nvme driver owns BAR0 and Debian's kernel has CONFIG_IO_STRICT_DEVMEM.
    assert ctrl["cmb"]["present"] is None
    assert "IO_STRICT_DEVMEM" in ctrl["cmb"]["error"]


@pytest.mark.guest
def test_rxe0_found_and_cannot_do_p2p(guest: guest_capture.GuestResult) -> None:
    report = _json(guest, "vfio.json")
    (dev,) = report["rdma"]
    assert dev["name"] == "rxe0" and dev["driver"] == "rdma_rxe"
    assert dev["software"] is True and dev["pci_address"] is None
    assert dev["parent_netdev"] == "lo" and dev["p2p_capable"] is False
    (port,) = dev["ports"]
    assert port["link_layer"] == "Ethernet" and port["state"].endswith("ACTIVE")
    assert any(g["gid"].endswith("ffff:7f00:0001") for g in port["gids"])  # 127.0.0.1
    assert report["rdma_comp_vectors"] == {"rxe0": guest_capture.GUEST_CPUS}
    (pair,) = report["p2p"]
    assert pair["possible"] is False
    assert any("cannot do PCI peer-to-peer" in b for b in pair["blockers"])
    assert any("CONFIG_PCI_P2PDMA" in b for b in pair["blockers"])
    text = guest.read("vfio.txt")
    assert "rxe0: driver rdma_rxe, no PCI device (software), on netdev lo" in text


@pytest.mark.guest
def test_queue_plan_in_the_guest(guest: guest_capture.GuestResult) -> None:
    cpus = int(guest.read("nproc.txt"))
    assert cpus == guest_capture.GUEST_CPUS
    plan = _json(guest, "vfio.json")["queues"]
    assert plan["this_machine_cpus"] == cpus
    assert plan["host"]["total"] == cpus
    assert plan["linux_target_qid_max"] == 128
    assert plan["linux_result"] == cpus and plan["ours_result"] == cpus
    assert plan["rdma_linux_result"] == cpus
    whatif = guest.read("whatif.txt")
    assert "a Linux host asks for: 8 (-i 8, capped at 96 CPUs)" in whatif
    assert "nvme connect creates 8 I/O queues against the Linux target, 4 against" in whatif


@pytest.mark.guest
def test_mode_verdicts(guest: guest_capture.GuestResult) -> None:
    modes = {m["mode"]: m["status"] for m in _json(guest, "vfio.json")["modes"]}
    assert modes == {
        "NVMe/TCP target": "yes",
        "NVMe/RDMA target": "partly",  # Soft-RoCE only
        "software offload (this project)": "yes",
        "staging buffers in CMB": "partly",  # CPU copies through vfio-pci; no NIC P2P
        "SQs in CMB": "partly",  # our vfio driver can; the kernel's cannot
    }
    # rdma-core's binding loads in the project's own Python, next to the Soft-RoCE device.
    (rdma,) = [m for m in _json(guest, "vfio.json")["modes"] if m["mode"] == "NVMe/RDMA target"]
    assert any(d.startswith("this project: pyverbs: available") for d in rdma["details"]), rdma
