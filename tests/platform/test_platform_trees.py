"""``nvmf doctor`` over recorded trees (tests/data/sysfs, described in its README.md).

The two ``qemu-nvme-*`` trees were recorded in the guest; the topology trees were derived from
``qemu-nvme-vfio`` by tests/platform/make_trees.py.  Each test states what the kernel's P2PDMA
rule (drivers/pci/p2pdma.c) and the nvme driver would conclude on such a machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nvmf.cli.main import main
from nvmf.media import uring_support
from nvmf.platform import modes
from nvmf.platform.doctor import DoctorOptions, diagnose
from nvmf.platform.kconfig import KernelInfo
from nvmf.platform.modes import IO_URING_MODE
from nvmf.platform.p2pdma import MapType, P2pPair
from nvmf.platform.report import Report, render_json, render_text, to_dict

MIB = 1 << 20
SYSFS = Path(__file__).resolve().parents[1] / "data" / "sysfs"


def doctor(tree: str, **kwargs: object) -> Report:
    return diagnose(DoctorOptions(root=SYSFS / tree, **kwargs))  # type: ignore[arg-type]


def nic_pair(report: Report) -> P2pPair:
    (pair,) = [p for p in report.p2p if p.rdma_device == "mlx5_0"]
    return pair


def test_recorded_guest_bound_to_nvme() -> None:
    report = doctor("qemu-nvme-bound")
    assert report.kernel.release == "6.1.0-56-amd64"
    assert report.kernel.enabled("CONFIG_PCI_P2PDMA") is False
    (ctrl,) = report.nvme
    assert (ctrl.address, ctrl.driver, ctrl.name) == ("0000:00:0a.0", "nvme", "nvme0")
    assert ctrl.model == "QEMU NVMe Ctrl" and ctrl.io_queues == 2
    assert ctrl.cmb.present is None  # BAR0 was not recordable: the driver owns it
    assert not ctrl.driver_uses_cmb and "CONFIG_PCI_P2PDMA" in ctrl.driver_cmb_reason
    (rxe,) = report.rdma
    assert rxe.name == "rxe0" and rxe.software and not rxe.p2p_capable
    assert rxe.driver == "rdma_rxe" and rxe.parent_netdev == "lo"
    assert report.iommu.enabled and report.iommu.group_type(ctrl.iommu_group) == "identity"


def test_recorded_guest_vfio_cmb_from_bar0() -> None:
    report = doctor("qemu-nvme-vfio")
    (ctrl,) = report.nvme
    assert ctrl.driver == "vfio-pci" and ctrl.nvme_version == "1.4" and ctrl.mqes == 2048
    cmb = ctrl.cmb
    assert cmb.source == "BAR0" and cmb.present and cmb.size_bytes == 16 * MIB
    assert (cmb.bar, cmb.offset) == (2, 0)
    assert cmb.uses == ["submission queues", "read data", "write data", "PRP/SGL lists"]
    assert not cmb.enabled_cre  # a recording is never written to
    (pair,) = report.p2p
    assert not pair.possible and pair.topology is None
    modes = {m.mode: m.status for m in report.modes}
    assert modes["SQs in CMB"] == "partly" and modes["staging buffers in CMB"] == "partly"
    assert modes["NVMe/RDMA target"] == "partly"


def test_switch_shared_by_nic_and_ssd() -> None:
    report = doctor("switch-shared")
    pair = nic_pair(report)
    t = pair.topology
    assert t is not None
    assert t.map_type is MapType.BUS_ADDR and t.distance == 4
    assert t.shared_switch and t.common_bridge is not None
    assert t.common_bridge.startswith("0000:01:00.0 [10b5:8747] upstream port")
    assert t.acs_redirect == [] and t.host_bridge_checks == []  # whitelist not consulted
    assert [p.address for p in t.acs_ports] == ["0000:02:10.0", "0000:02:08.0"]
    assert all(p.enabled == ["SV"] and not p.redirects for p in t.acs_ports)
    assert pair.possible and pair.verdict.startswith("yes: direct")
    (ctrl,) = report.nvme
    assert ctrl.driver_uses_cmb and ctrl.driver_sqes_in_cmb
    assert ctrl.p2pmem is not None and ctrl.p2pmem.published
    modes = {m.mode: m.status for m in report.modes}
    assert modes["staging buffers in CMB"] == "yes" and modes["SQs in CMB"] == "yes"
    assert modes["NVMe/RDMA target"] == "yes"


def test_acs_redirect_on_the_switch() -> None:
    report = doctor("acs-redirect")
    pair = nic_pair(report)
    t = pair.topology
    assert t is not None and t.shared_switch
    assert t.map_type is MapType.NOT_SUPPORTED
    assert t.acs_redirect == ["0000:02:10.0", "0000:02:08.0"]
    assert t.hint == "pci=disable_acs_redir=0000:02:10.0;0000:02:08.0"
    (check,) = t.host_bridge_checks
    assert not check.whitelisted and "8086:29c0" in check.reason
    assert not pair.possible and "ACS redirect is on" in pair.verdict
    assert pair.iommu is not None and "DMA" in pair.iommu
    assert {p.address: p.enabled for p in t.acs_ports}["0000:02:08.0"] == ["SV", "RR", "CR", "UF"]


def test_whitelisted_intel_host_bridge() -> None:
    report = doctor("whitelisted-host-bridge")
    pair = nic_pair(report)
    t = pair.topology
    assert t is not None
    assert t.map_type is MapType.THRU_HOST_BRIDGE and not t.shared_switch
    assert t.common_bridge is None and t.same_host_bridge
    (check,) = t.host_bridge_checks
    assert check.whitelisted and "8086:2020" in check.reason
    assert pair.possible and "whitelisted" in pair.verdict
    assert t.path[2] == "host bridge pci0000:00 (root complex)"


def test_arm_root_complex_is_not_whitelisted() -> None:
    report = doctor("arm-root-complex")
    assert report.cpus.vendor is not None and "HiSilicon" in report.cpus.vendor
    assert not report.cpus.amd_zen_or_newer
    pair = nic_pair(report)
    t = pair.topology
    assert t is not None and t.map_type is MapType.NOT_SUPPORTED
    (check,) = t.host_bridge_checks
    assert not check.whitelisted and "19e5:a120" in check.reason
    assert t.hint is None  # no switch to keep the traffic in
    assert not pair.possible
    assert "no generic arm root port" in report.whitelist.lower()
    modes = {m.mode: m.status for m in report.modes}
    assert modes["staging buffers in CMB"] == "partly"  # CPU copies via vfio-pci only


def test_amd_zen_cpu_passes_without_whitelist(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(SYSFS / "arm-root-complex", root, symlinks=True)
    (root / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\n"
    )
    pair = nic_pair(diagnose(DoctorOptions(root=root)))
    assert pair.topology is not None
    assert pair.topology.map_type is MapType.THRU_HOST_BRIDGE and pair.possible
    assert "AMD Zen" in pair.topology.reason


def test_nothing_found_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--root", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "none: no PCI function of class 01:08:02 (NVM Express) on this machine" in text
    assert "none: /sys/class/infiniband has no devices" in text
    assert "nothing to pair: no RDMA device and no NVMe controller" in text
    assert "build configuration: neither /proc/config.gz" in text


def test_json_round_trips_and_matches_the_text(capsys: pytest.CaptureFixture[str]) -> None:
    tree = str(SYSFS / "switch-shared")
    assert main(["doctor", "--json", "--root", tree, "--host-cpus", "256"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["p2p"][0]["topology"]["map_type"] == "BUS_ADDR"
    assert data["queues"]["host"]["total"] == 256 and data["queues"]["linux_result"] == 128
    report = doctor("switch-shared", host_cpus=256)
    assert to_dict(report) == json.loads(render_json(report))
    text = render_text(report)
    assert "CMB: 16 MiB in BAR2 at offset 0x0" in text
    assert "256 cores: asks 256 -> 128 /   2" in text


def test_bar0_file_is_never_written(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(SYSFS / "qemu-nvme-vfio", root, symlinks=True)
    bar = root / "sys/devices/pci0000:00/0000:00:0a.0/resource0"
    data = bytearray(bar.read_bytes())
    data[0x3C:0x40] = bytes(4)  # CMBSZ 0 ...
    data[0x50:0x54] = bytes(4)  # ... with CRE clear, as after a reset
    bar.write_bytes(bytes(data))
    (ctrl,) = diagnose(DoctorOptions(root=root)).nvme
    assert bar.read_bytes() == bytes(data)
    assert ctrl.cmb.present is False and any("CRE is 0" in n for n in ctrl.cmb.notes)


def test_io_uring_verdict_follows_the_recorded_kernel() -> None:
    """The guests' 6.1: no, with the binding's floor named; the thread pool serves."""
    (verdict,) = [m for m in doctor("qemu-nvme-vfio").modes if m.mode == IO_URING_MODE]
    assert verdict.status == "no"
    assert verdict.summary == (
        "no: Linux 6.1: the liburing binding needs 6.14 or later; file and block namespaces "
        "use the thread pool (io_engine auto)"
    )


def test_io_uring_verdict_of_a_newer_recorded_kernel_depends_on_the_binding_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = KernelInfo(release="6.18.1-amd64", cmdline=None, config_source=None, config_error=None)
    found = modes.io_uring_media(kernel, live=False)
    assert found.status == "yes" and "a ring's setup was not tried" in found.details[-1]
    monkeypatch.setattr(uring_support.importlib.util, "find_spec", lambda name: None)
    missing = modes.io_uring_media(kernel, live=False)
    assert missing.status == "no" and "pip install 'nvmf[uring]'" in missing.summary
    unknown = KernelInfo(release=None, cmdline=None, config_source=None, config_error=None)
    assert modes.io_uring_media(unknown, live=False).status == "no"


def test_io_uring_verdict_of_this_machine_is_what_the_target_will_do() -> None:
    """Live: the same check the media queues make, so the doctor and the target agree."""
    (verdict,) = [m for m in diagnose(DoctorOptions()).modes if m.mode == IO_URING_MODE]
    assert verdict.status == ("yes" if uring_support.problem() is None else "no")
