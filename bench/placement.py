"""(d) ``--guest cmb``: the two placements of an ``nvme_pci`` namespace, side by side, in one boot.

Inside a Linux 6.1 guest whose QEMU NVMe controller has a 16 MiB Controller Memory Buffer
(behind an emulated IOMMU), the same fio jobs run three times:

- ``kernel``: on the kernel's own nvme driver (``/dev/nvme0n1``), the reference;
- ``dram``: through ``nvmf serve --workers 2`` (the controller bound to vfio-pci, the namespace
  ``nvme_pci`` with SQs and staging in DRAM), from the kernel's NVMe/TCP host on loopback;
- ``cmb``: the same with SQs and staging in the CMB.

For each target run ``nvmf status`` gives the bytes staged in DRAM and in the CMB, which is the
record of what crossed which memory.  QEMU emulates every access to the CMB (a BAR: each load
and store of the target's staging copies traps), and the guest runs under TCG, so the ratios
say what the placement costs in this emulation, not what it costs on a real SSD.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from local import fio_side  # noqa: E402  (bench/ is on sys.path: run.py's sibling)

NQN = "nqn.2024-01.io.nvmf:bench-pci"
RUNS = ("kernel", "dram", "cmb")
CMB_MB = 16


@dataclass(frozen=True)
class Job:
    """One fio job of the comparison."""

    name: str
    rw: str
    bs: str
    iodepth: int

    @property
    def write(self) -> bool:
        return "write" in self.rw


JOBS = (
    Job("4k randread QD8", "randread", "4k", 8),
    Job("4k randwrite QD8", "randwrite", "4k", 8),
    Job("128k read QD4", "read", "128k", 4),
    Job("128k write QD4", "write", "128k", 4),
)


def target_config(placement: str) -> dict[str, Any]:
    """nvmetcli JSON: one TCP port on loopback, the SSD (``@BDF@``) as namespace 1."""
    from tests.guest.ssd_config import ssd_config

    return ssd_config(NQN, placement, serial="benchpci0001")


def _fio(run: str, dev: str, runtime: float) -> list[str]:
    return [
        f"fio --name={run}-{i} --filename={dev} --ioengine=libaio --direct=1 --rw={j.rw} "
        f"--bs={j.bs} --iodepth={j.iodepth} --numjobs=2 --group_reporting --size=64m "
        f"--runtime={runtime:g} --time_based --output-format=json "
        f'--output="$OUT/{run}-{i}.json" 2> "$OUT/{run}-{i}.err"'
        for i, j in enumerate(JOBS)
    ]


def script(runtime: float) -> str:
    """The guest's shell script (tests/guest/test_nvme_pci_guest.py's helpers move the
    controller between the kernel's nvme driver and vfio-pci)."""
    from tests.guest.test_nvme_pci_guest import TO_VFIO

    lines = [
        'exec 2>"$OUT/stderr.txt"',
        "export PYTHONPATH=$REPO/src:$REPO",
        "modprobe nvme-tcp; ip link set lo up",
        "for i in $(seq 60); do [ -b /dev/nvme0n1 ] && break; sleep 1; done",
        *_fio("kernel", "/dev/nvme0n1", runtime),
        TO_VFIO,
        "mkdir -p /tmp/b",
    ]
    for placement in RUNS[1:]:
        cfg = json.dumps(target_config(placement))
        lines += [
            f"cat > /tmp/b/{placement}.tmpl <<'EOF'\n{cfg}\nEOF",
            f'sed "s/@BDF@/$BDF/" /tmp/b/{placement}.tmpl > /tmp/b/{placement}.json',
            f'"$PY" -m nvmf.cli.main serve --workers 2 --config /tmp/b/{placement}.json '
            f'--control-socket /tmp/b/sock > "$OUT/serve-{placement}.log" 2>&1 &',
            "SERVE=$!",
            "for _ in $(seq 900); do grep -q 'nvmf: listening' \"$OUT/serve-"
            f'{placement}.log" && break; sleep 0.2; done',
            f"nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {NQN} -i 2 > /dev/null",
            "for i in $(seq 100); do DEV=$(ls /dev | grep -E '^nvme[0-9]+n1$' | head -1); "
            '[ -n "$DEV" ] && break; sleep 0.2; done',
            *_fio(placement, "/dev/$DEV", runtime),
            f'"$PY" -m nvmf.cli.main status -o json --control-socket /tmp/b/sock '
            f'> "$OUT/status-{placement}.json"',
            f"nvme disconnect -n {NQN} > /dev/null",
            "kill $SERVE; wait $SERVE",
        ]
    lines.append('echo done > "$OUT/done.txt"')
    return "\n".join(lines)


@dataclass(frozen=True)
class Result:
    """One job on one run: fio's figures."""

    iops: float
    mb_s: float
    p50_us: float


def parse_fio(text: str, write: bool) -> Result | None:
    """fio's JSON (``None`` if the job failed or left no JSON)."""
    d = fio_side(text, write)
    if d is None:
        return None
    p50 = d["clat_ns"].get("percentile", {}).get("50.000000", 0) / 1000
    return Result(d["iops"], d["bw_bytes"] / 1e6, p50)


def staged(status: dict[str, Any]) -> tuple[int, int]:
    """(bytes staged in DRAM, bytes staged in the CMB), summed over the control plane and every
    worker, from ``nvmf status -o json``."""
    dram = cmb = 0
    planes = [status["control_plane"], *status.get("workers", [])]
    for plane in planes:
        for counters in plane.get("namespaces", {}).values():
            dram += counters.get("staged_dram_bytes", 0)
            cmb += counters.get("staged_cmb_bytes", 0)
    return dram, cmb


def measure(runtime: float) -> dict[str, Any]:
    """Boot the guest, run :func:`script`, read what it left."""
    from tests.guest.harness import run_in_guest

    result = run_in_guest("bench-guest-cmb", script(runtime), cmb_mb=CMB_MB, timeout=3000)
    out = result.out
    if not (out / "done.txt").exists():
        raise RuntimeError(
            f"guest placement bench did not finish (rc {result.returncode}): "
            f"{result.read('stderr.txt')[-2000:]}"
        )
    table: dict[str, list[Result | None]] = {}
    for run in RUNS:
        table[run] = [
            parse_fio(result.read(f"{run}-{i}.json"), j.write)
            if result.read(f"{run}-{i}.json")
            else None
            for i, j in enumerate(JOBS)
        ]
    crossed: dict[str, tuple[int, int]] = {}
    for run in RUNS[1:]:
        text = result.read(f"status-{run}.json")
        crossed[run] = staged(json.loads(text)) if text else (0, 0)
    return {"table": table, "staged": crossed}


def _cell(r: Result | None) -> str:
    return f"{'(failed)':>24}" if r is None else f"{r.iops:8.0f} {r.mb_s:8.1f} {r.p50_us:6.0f}"


def _ratio(a: Result | None, b: Result | None) -> str:
    return "     -" if a is None or b is None or not b.iops else f"{a.iops / b.iops:6.2f}"


def report(measured: dict[str, Any]) -> str:
    """The comparison as text: each run's figures, cmb against dram and dram against the
    kernel driver, and the bytes each target run staged in DRAM and in the CMB."""
    table = measured["table"]
    head = f"{'IOPS':>8} {'MB/s':>8} {'p50us':>6}"
    lines = [
        "\n(d) guest, Linux 6.1 under TCG, QEMU NVMe with a 16 MiB CMB: the kernel's nvme driver, "
        "and nvmf serve --workers 2 (nvme_pci, kernel NVMe/TCP host) with SQs and staging in "
        "DRAM and in the CMB",
        f"{'job':18} | {'kernel nvme':^24} | {'nvmf dram':^24} | {'nvmf cmb':^24} | "
        f"{'cmb/dram':>8} | {'dram/kern':>9}",
        f"{'':18} | {head} | {head} | {head} |",
        "-" * 120,
    ]
    for i, job in enumerate(JOBS):
        k, d, c = (table[run][i] for run in RUNS)
        lines.append(
            f"{job.name:18} | {_cell(k)} | {_cell(d)} | {_cell(c)} | {_ratio(c, d):>8} | "
            f"{_ratio(d, k):>9}"
        )
    for run, (dram, cmb) in measured["staged"].items():
        lines.append(f"nvmf {run}: staged {dram} bytes in DRAM, {cmb} bytes in the CMB")
    return "\n".join(lines)


def as_json(measured: dict[str, Any]) -> dict[str, Any]:
    """The comparison for ``--json``."""
    return {
        "jobs": [j.name for j in JOBS],
        "runs": {
            run: [None if r is None else vars(r) for r in results]
            for run, results in measured["table"].items()
        },
        "staged": {
            run: {"dram_bytes": d, "cmb_bytes": c} for run, (d, c) in measured["staged"].items()
        },
    }
