"""The userspace NVMe driver (``nvmf.pci``) against QEMU 7.2's NVMe controller with a 16 MiB CMB.

One boot (``run_in_guest(..., cmb_mb=16)``: Linux 6.1 under TCG, the controller behind an
emulated Intel IOMMU) runs tests/guest/nvme_pci_driver.py with the controller bound to vfio-pci:

- Identify Controller / Namespace (serial ``cmb0001``, 1 GiB of 512-byte blocks);
- for SQ placement dram|cmb x staging placement dram|cmb: write a pattern of 4 KiB (PRP1 only),
  128 KiB (a PRP list) and 8 KiB at 512 bytes into a page (unaligned PRP1 + list), read each
  back and compare; Flush; a FUA write read back;
- kill -9 of a process in the middle of its writes, then the device opens again;
- the controller handed back to the kernel's nvme driver, and ``dd`` from /dev/nvme0n1 reads
  exactly what the driver wrote.

The independent witness that the CMB was used is QEMU's own trace (``pci_nvme_create_sq`` gives
each SQ's address, ``pci_nvme_map_addr_cmb`` fires when the controller takes command data from
its CMB, ``pci_nvme_map_addr`` when it takes it from host memory through the IOMMU).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    from tests.guest.harness import TRACE_FILE, GuestResult, run_in_guest
except ModuleNotFoundError:  # pytest started as a script: the repository is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.guest.harness import TRACE_FILE, GuestResult, run_in_guest

COMBOS = ("dram-dram", "dram-cmb", "cmb-dram", "cmb-cmb")
CASES = ("4k", "128k", "unaligned")
TRACE = ("pci_nvme_map_addr*", "pci_nvme_create_sq", "pci_nvme_identify")

#: Shell: ``$BDF`` is the NVMe controller (class 010802), taken from the kernel's nvme driver
#: and bound to vfio-pci (tests/guest/test_nvme_pci_target_guest.py uses it too).
TO_VFIO = """
BDF=$(basename $(dirname $(grep -l 0x010802 /sys/bus/pci/devices/*/class)))
echo $BDF > /sys/bus/pci/drivers/nvme/unbind
modprobe vfio-pci
echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override
echo $BDF > /sys/bus/pci/drivers/vfio-pci/bind
"""
#: Shell: ``$BDF`` back to the kernel's nvme driver, until /dev/nvme0n1 is there.
TO_KERNEL = """
echo $BDF > /sys/bus/pci/drivers/vfio-pci/unbind
echo > /sys/bus/pci/devices/$BDF/driver_override
echo $BDF > /sys/bus/pci/drivers_probe
for i in $(seq 60); do [ -b /dev/nvme0n1 ] && break; sleep 1; done
"""

SCRIPT = (
    """
exec 2>$OUT/stderr.txt
export PYTHONPATH=$REPO/src:$REPO
$PY -c "import nvmf; print(nvmf.__file__)" > $OUT/nvmf_path.txt
"""
    + TO_VFIO
    + """
readlink /sys/bus/pci/devices/$BDF/driver > $OUT/driver_vfio.txt
timeout 900 $PY tests/guest/nvme_pci_driver.py run $OUT
echo "driver rc=$?" >> $OUT/results.txt
"""
    + TO_KERNEL
    + """
readlink /sys/bus/pci/devices/$BDF/driver > $OUT/driver_back.txt
$PY tests/guest/nvme_pci_driver.py verify-block /dev/nvme0n1 $OUT
echo done > $OUT/done.txt
"""
)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    result = run_in_guest("nvme-pci", SCRIPT, cmb_mb=16, trace=TRACE)
    result.finished()
    (result.out / "seconds.txt").write_text(f"{result.seconds:.0f}\n")
    return result


def _rc(guest: GuestResult, name: str) -> str:
    results = guest.results()
    assert f"{name} rc" in results, (
        f"no result for {name}; stderr: {guest.read('stderr.txt')[-3000:]}"
    )
    return results[f"{name} rc"]


@pytest.mark.guest
def test_guest_ran_this_worktree_with_vfio(guest: GuestResult) -> None:
    assert guest.read("nvmf_path.txt").strip() == str(
        Path(__file__).resolve().parents[2] / "src" / "nvmf" / "__init__.py"
    )
    assert guest.read("driver_vfio.txt").strip().endswith("/vfio-pci")
    assert _rc(guest, "driver") == "0"
    assert "Traceback" not in guest.read("stderr.txt")


@pytest.mark.guest
def test_identify(guest: GuestResult) -> None:
    results = guest.results()
    assert _rc(guest, "identify") == "0"
    assert results["serial"] == "cmb0001"
    assert _rc(guest, "namespace") == "0"
    assert int(results["ns_bytes"]) == 1 << 30
    assert int(results["lba_size"]) == 512
    assert int(results["cmb_size"]) == 16 << 20


@pytest.mark.guest
def test_cq_in_cmb_is_refused_naming_cqs(guest: GuestResult) -> None:
    assert _rc(guest, "cq_in_cmb_refused") == "0"


@pytest.mark.guest
@pytest.mark.parametrize("combo", COMBOS)
def test_write_read_flush_fua(guest: GuestResult, combo: str) -> None:
    for case in CASES:
        assert _rc(guest, f"io {combo} {case}") == "0", case
    assert _rc(guest, f"flush {combo}") == "0"
    assert _rc(guest, f"fua {combo}") == "0"


@pytest.mark.guest
def test_reopen_after_kill_9(guest: GuestResult) -> None:
    assert _rc(guest, "close") == "0"
    assert _rc(guest, "child_running") == "0"
    assert _rc(guest, "child_killed") == "0"
    assert _rc(guest, "reopen_after_kill") == "0"


@pytest.mark.guest
def test_kernel_nvme_reads_what_we_wrote(guest: GuestResult) -> None:
    assert guest.read("driver_back.txt").strip().endswith("/nvme")
    results = guest.results()
    assert int(results["kernel_ranges"]) == len(COMBOS) * (len(CASES) + 1) + 1
    assert _rc(guest, "kernel_reads_our_writes") == "0"


@dataclass
class Segment:
    """The trace between one of our Create I/O SQ commands and the next Create I/O SQ or
    Identify (the next controller open: its Identify data is admin traffic in host memory, not
    I/O data)."""

    name: str
    sq_address: int
    #: (event, address) of every data mapping the controller made.
    maps: list[tuple[str, int]] = field(default_factory=list)

    def cmb_maps(self) -> list[int]:
        """Data the controller took from its CMB (QEMU's nvme_map_addr_cmb)."""
        return [a for kind, a in self.maps if kind == "pci_nvme_map_addr_cmb"]

    def dram_maps(self, cba: int, cmb_end: int) -> list[int]:
        """Data mapped outside the CMB: host memory through the IOMMU.  QEMU traces
        pci_nvme_map_addr for every mapping, CMB or not, so CMB addresses are left out."""
        return [
            a for kind, a in self.maps if kind == "pci_nvme_map_addr" and not cba <= a < cmb_end
        ]


#: QEMU trace lines: a Create I/O SQ with its address; the controller mapping a data address,
#: from its CMB (``_cmb``) or from host memory (QEMU traces ``pci_nvme_map_addr`` for both);
#: an Identify (admin data of the next open).
CREATE_SQ = re.compile(r"pci_nvme_create_sq\b.*addr=(0x[0-9a-f]+)")
MAP_ADDR = re.compile(r"(pci_nvme_map_addr(?:_cmb)?) addr (0x[0-9a-f]+)")
IDENTIFY = re.compile(r"pci_nvme_identify\b")


def cut_trace(trace: str, expected: list[tuple[str, int]]) -> list[Segment]:
    """Cut QEMU's ``trace`` into the segments of our Create I/O SQs: ``expected`` are their
    names and SQ addresses in the order they were sent.  A segment ends at the next Create I/O
    SQ (ours or anyone's) or Identify; mappings outside every segment are nobody's here."""
    found: list[Segment] = []
    current: Segment | None = None
    for line in trace.splitlines():
        create = CREATE_SQ.search(line)
        if create:
            address = int(create.group(1), 16)
            current = None
            if len(found) < len(expected) and expected[len(found)][1] == address:
                current = Segment(expected[len(found)][0], address)
                found.append(current)
            continue
        if IDENTIFY.search(line):
            current = None  # admin data of the next open, until its Create I/O SQ
            continue
        mapped = MAP_ADDR.search(line)
        if mapped and current is not None:
            current.maps.append((mapped.group(1), int(mapped.group(2), 16)))
    assert [(s.name, s.sq_address) for s in found] == expected, "our SQs are not all in the trace"
    return found


def segments(guest: GuestResult) -> list[Segment]:
    """Our driver's segments, in the order it opened the controller."""
    results = guest.results()
    order = [*COMBOS, "kill-child", "reopen"]
    expected = [(name, int(results[f"sq_iova {name}"], 16)) for name in order]
    return cut_trace(guest.read(TRACE_FILE), expected)


@pytest.mark.guest
def test_qemu_trace_shows_the_cmb_used_only_where_placed(guest: GuestResult) -> None:
    results = guest.results()
    cba = int(results["cba"], 16)
    cmb_end = cba + int(results["cmb_size"])
    by_name = {s.name: s for s in segments(guest)}
    counts = {}
    for combo in COMBOS:
        seg = by_name[combo]
        sq_placement, staging = combo.split("-")
        # The SQ's address the controller was given is in the CMB exactly when placed there.
        assert (cba <= seg.sq_address < cmb_end) == (sq_placement == "cmb"), combo
        staging_iova = int(results[f"staging_iova {combo}"], 16)
        cmb_maps, dram_maps = seg.cmb_maps(), seg.dram_maps(cba, cmb_end)
        if staging == "cmb":
            assert cmb_maps, f"{combo}: no data taken from the CMB"
            assert not dram_maps, f"{combo}: data taken from host memory"
            assert all(staging_iova <= a < staging_iova + (256 << 10) for a in cmb_maps)
        else:
            assert not cmb_maps, f"{combo}: CMB data accesses with DRAM staging"
            assert dram_maps, f"{combo}: no data taken from host memory"
            assert all(staging_iova <= a < staging_iova + (256 << 10) for a in dram_maps)
        counts[combo] = (len(cmb_maps), len(dram_maps))
    # Same I/O in every combination: as many page mappings, from the CMB or from DRAM.
    assert counts["dram-cmb"] == counts["cmb-cmb"] == (counts["dram-dram"][1], 0)
    assert counts["dram-dram"] == counts["cmb-dram"]
    (guest.out / "trace_counts.txt").write_text(
        "".join(f"{c} map_addr_cmb={n} map_addr={m}\n" for c, (n, m) in counts.items())
    )
