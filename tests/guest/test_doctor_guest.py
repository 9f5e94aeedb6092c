"""``nvmf doctor`` in the Linux 6.1 guest with QEMU's CMB controller and Soft-RoCE.

One boot (tests/platform/guest_capture.py) runs the doctor while the kernel's nvme driver owns the
controller, then with the controller handed to vfio-pci and its CMBMSC cleared as after a reset,
so the doctor has to enable CMBMSC.CRE to read the CMB; then ``--verify-cmb`` has the SSD read a
pattern the kernel's driver wrote into DRAM and into its CMB (QEMU's trace the witness), and
the doctor runs beside our target serving the controller, reporting what the target says.  The
checks compare the reports with what the guest was built with: ``tests.vm.guest --cmb-nvme 16``
(QEMU 7.2's nvme device: CMB in BAR2, SZU=1 MiB, SZ=16, SQS/LISTS/RDS/WDS and no CQS), two CPUs,
Debian's 6.1 kernel without CONFIG_PCI_P2PDMA, and ``rdma link add rxe0 type rxe netdev lo``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.guest.harness import TRACE_FILE
    from tests.platform import guest_capture
except ModuleNotFoundError:  # pytest started as a script: the repository is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.guest.harness import TRACE_FILE
    from tests.platform import guest_capture

MIB = 1 << 20
#: CMBSZ as QEMU builds it for cmb_size_mb=16: SZ=16, SZU=2 (MiB), WDS RDS LISTS SQS.
QEMU_CMBSZ_16 = (16 << 12) | (2 << 8) | 0b11101


@pytest.fixture(scope="module")
def guest() -> guest_capture.GuestResult:
    return guest_capture.doctor().finished()


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
        "io_uring media queues": "no",  # 6.1: older than the liburing binding's 6.14
    }
    # rdma-core's binding loads in the project's own Python, next to the Soft-RoCE device.
    (rdma,) = [m for m in _json(guest, "vfio.json")["modes"] if m["mode"] == "NVMe/RDMA target"]
    assert any(d.startswith("this project: pyverbs: available") for d in rdma["details"]), rdma


def _rc(guest: guest_capture.GuestResult, name: str) -> str:
    results = guest.results()
    assert f"{name} rc" in results, f"no result for {name}: {results}"
    return results[f"{name} rc"]


@pytest.mark.guest
def test_the_guest_ran_this_worktree(guest: guest_capture.GuestResult) -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "nvmf" / "__init__.py"
    assert guest.read("nvmf_path.txt").strip() == str(src)


#: CMBSZ of QEMU 7.2's 16 MiB CMB, field by field.
QEMU_CMBSZ_FIELDS = {"SQS": 1, "CQS": 0, "LISTS": 1, "RDS": 1, "WDS": 1, "SZU": 2, "SZ": 16}


@pytest.mark.guest
def test_verify_cmb_finds_the_pattern_the_kernel_wrote_in_both(
    guest: guest_capture.GuestResult,
) -> None:
    assert _rc(guest, "pattern write") == "0"
    assert _rc(guest, "verify json") == "0", guest.read("stderr.txt")[-2000:]
    v = _json(guest, "verify.json")
    assert v["ok"] is True and v["match"] is True
    assert v["bdf"] == guest.read("bdf.txt").strip()
    assert (v["slba"], v["lba_size"], v["bytes"]) == (guest_capture.PATTERN_LBA, 512, MIB)
    assert v["written"] is False  # read only: nothing written to the SSD
    # Real data, not zeroes: both copies are the very pattern dd wrote through the kernel.
    pattern = guest.read("pattern.sha256").strip()
    assert v["sha256_dram"] == v["sha256_cmb"] == pattern and not v["all_zero"]
    assert v["mismatched_bytes"] == 0 and v["poison_left"] == 0
    assert v["cmb"]["CMBSZ"] == QEMU_CMBSZ_FIELDS and v["cmb"]["bar"] == 2
    assert v["cmb_prp_lists"] == "cmb"  # CMBSZ.LISTS: the CMB read's PRP lists in the CMB
    t = {x["what"]: x for x in v["transfers"]}
    assert set(t) == {"read into DRAM", "read into the CMB", "CPU read of the CMB through BAR2"}
    assert (
        t["read into DRAM"]["placement"] == "dram" and t["read into the CMB"]["placement"] == "cmb"
    )
    for x in t.values():
        assert x["bytes"] == MIB and x["seconds"] > 0 and x["mb_per_s"] > 0
    assert any("controller disabled" in r for r in v["released"])
    (guest.out / "verify_figures.txt").write_text(
        "".join(f"{x['what']}: {x['bytes']} bytes in {x['seconds']:.4f} s = "
                f"{x['mb_per_s']:.1f} MB/s\n" for x in v["transfers"])
    )  # fmt: skip


@pytest.mark.guest
def test_verify_cmb_text_gives_the_verdict_and_both_bandwidths(
    guest: guest_capture.GuestResult,
) -> None:
    assert _rc(guest, "verify text") == "0"
    text = guest.read("verify.txt")
    assert "MATCH: the SSD put the same bytes in its CMB as in DRAM" in text
    assert "read only (nothing written to the SSD)" in text
    assert "CMBSZ 0x1021d: SQS=1 CQS=0 LISTS=1 RDS=1 WDS=1 SZU=2 SZ=16" in text
    for what in ("read into DRAM", "read into the CMB"):
        assert re.search(rf"{what}: +1048576 bytes in [0-9.]+ s = [0-9.]+ MB/s", text), text
    assert f"sha256 {guest.read('pattern.sha256').strip()[:16]}" in text


#: QEMU's trace: a Create I/O SQ and its address; a data mapping (``_cmb`` when in the CMB).
CREATE_SQ = re.compile(r"pci_nvme_create_sq\b.*addr=(0x[0-9a-f]+)")
MAP_ADDR = re.compile(r"(pci_nvme_map_addr(?:_cmb)?) addr (0x[0-9a-f]+) len (\d+)")


@pytest.mark.guest
def test_qemu_trace_shows_the_cmb_read_landed_in_the_cmb(
    guest: guest_capture.GuestResult,
) -> None:
    """From the verification's Create I/O SQ to the next one: QEMU mapped the CMB read's
    destination in its CMB (``pci_nvme_map_addr_cmb``), the DRAM read's in host memory, 1 MiB
    each."""
    v = _json(guest, "verify.json")
    t = {x["what"]: x for x in v["transfers"]}
    dram, cmb = t["read into DRAM"], t["read into the CMB"]
    cba, size = v["cmb"]["address"], v["cmb"]["size"]
    assert cba <= cmb["address"] < cba + size and not cba <= dram["address"] < cba + size
    segment: list[tuple[str, int, int]] | None = None
    for line in guest.read(TRACE_FILE).splitlines():
        create = CREATE_SQ.search(line)
        if create:
            if segment is not None:
                break  # the next run's queue
            if int(create.group(1), 16) == v["queue"]["sq_address"]:
                segment = []
            continue
        mapped = MAP_ADDR.search(line)
        if mapped and segment is not None:
            segment.append((mapped.group(1), int(mapped.group(2), 16), int(mapped.group(3))))
    assert segment is not None, "the verification's Create I/O SQ is not in the trace"

    def landed(event: str, start: int) -> int:
        return sum(n for kind, a, n in segment if kind == event and start <= a < start + MIB)

    assert landed("pci_nvme_map_addr_cmb", cmb["address"]) == MIB
    assert landed("pci_nvme_map_addr", dram["address"]) == MIB
    assert landed("pci_nvme_map_addr_cmb", dram["address"]) == 0


@pytest.mark.guest
def test_doctor_beside_our_target_reports_the_targets_facts(
    guest: guest_capture.GuestResult,
) -> None:
    assert _rc(guest, "target start") == "0", guest.read("target.log")[-3000:]
    assert _rc(guest, "held json") == "0"
    assert _rc(guest, "target stop") == "0"
    assert "Traceback" not in guest.read("target.log")
    report = _json(guest, "held.json")
    pid = int(guest.read("target.pid"))
    assert report["target"]["pid"] == pid and report["target"]["error"] is None
    assert report["target"]["socket"] == "/run/nvmf/control.sock"  # the default, as nvmf status
    assert any("comes from the running target" in n for n in report["notes"])
    (ctrl,) = report["nvme"]
    assert ctrl["driver"] == "vfio-pci" and ctrl["model"] == "QEMU NVMe Ctrl"
    cmb = ctrl["cmb"]
    assert cmb["source"].startswith(f"the running target (pid {pid}")
    assert cmb["present"] is True and cmb["size_bytes"] == guest_capture.CMB_MB * MIB
    assert (cmb["bar"], cmb["offset"]) == (2, 0) and cmb["fields"]["CMBSZ"] == QEMU_CMBSZ_FIELDS
    assert int(cmb["registers"]["CMBSZ"], 16) == QEMU_CMBSZ_16
    assert cmb["enabled_cre"] is False  # the doctor wrote nothing to a device in use
    held = ctrl["target"]
    assert (held["subsystem"], held["nsid"]) == (guest_capture.SSD_NQN, 1)
    cba = held["cmb_address"]
    assert [p["process"] for p in held["processes"]] == [
        "control plane",
        "offload worker 0",
        "offload worker 1",
    ]
    for p in held["processes"]:
        assert (
            p["sq"]["placement"] == "cmb" and p["sq"]["reason"] == "configured cmb, CMBSZ.SQS set"
        )
        assert cba <= p["sq"]["address"] < cba + guest_capture.CMB_MB * MIB
        assert p["staging"]["placement"] == "cmb" and p["staging_bytes"] == 4 * MIB
        assert "CMBSZ.RDS set and CMBSZ.WDS set" in p["staging"]["reason"]
        assert p["cq"]["placement"] == "dram" and "CMBSZ.CQS clear" in p["cq"]["reason"]
        assert set(p["prp_lists"]) == {"dram", "cmb"}


@pytest.mark.guest
def test_verify_cmb_refuses_a_device_our_target_owns(guest: guest_capture.GuestResult) -> None:
    assert _rc(guest, "verify held") == "2"
    text = guest.read("verify_held.txt")
    assert "this project's target (pid" in text and "stop it to verify" in text
