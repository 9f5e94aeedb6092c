"""Section (c) of the bench suite (``bench/run.py``): the guest script connects the kernel host
to both targets before it measures, runs each workload against them in the order A B B A, and the
halves are read back into one figure per target (a failed half fails the figure)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import run


@pytest.mark.parametrize("trtype", ["tcp", "rdma"])
def test_the_guest_script_is_valid_bash(trtype: str) -> None:
    script = run.guest_script(5, 1, trtype)
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_both_targets_are_connected_before_any_fio_and_each_workload_runs_a_b_b_a() -> None:
    lines = run.guest_script(5, 1).splitlines()
    connects = [i for i, line in enumerate(lines) if line.startswith("nvme connect")]
    fios = [i for i, line in enumerate(lines) if "fio --name=" in line]
    assert len(connects) == 2 and max(connects) < min(fios)
    nqns = {re.search(r"-n (\S+)", lines[i]).group(1) for i in connects}  # type: ignore[union-attr]
    assert len(nqns) == 2  # two subsystems, not two paths to one
    assert len(fios) == 4 * len(run.WORKLOADS)
    for i in range(len(run.WORKLOADS)):
        block = [lines[j] for j in fios[4 * i : 4 * i + 4]]
        devices = [re.search(r"--filename=/dev/\$(\w+)", b).group(1) for b in block]  # type: ignore[union-attr]
        assert devices == ["KERNEL", "NVMF", "NVMF", "KERNEL"]
        assert all("--runtime=2.5 " in b for b in block)
        assert all(f"--bs={run.WORKLOADS[i].bs} " in b for b in block)


def _fio(path: Path, iops: float, write: bool = False) -> None:
    side = {"iops": iops, "bw_bytes": iops * 4096, "clat_ns": {"percentile": {}}}
    empty = {"iops": 0, "bw_bytes": 0, "clat_ns": {}}
    job = {"write": side, "read": empty} if write else {"read": side, "write": empty}
    path.write_text("fio: a warning first\n" + json.dumps({"jobs": [job]}))


def test_each_target_s_halves_are_averaged_and_a_missing_half_fails_the_figure(
    tmp_path: Path,
) -> None:
    for i, w in enumerate(run.WORKLOADS):
        for k, target in enumerate(run.GUEST_ORDER):
            if (i, k) == (1, 2):
                continue  # one half of nvmf's second workload never wrote its result
            iops = {"kernel": 100.0 + 200 * (k == 3), "nvmf": 50.0 + 10 * k}[target]
            _fio(tmp_path / f"{target}_fio_{i}_{k}.json", iops, w.write)
    table = run.read_guest(tmp_path)
    kernel = table["kernel/fio"]
    nvmf = table["nvmf/fio"]
    assert [m.iops if m else None for m in kernel] == [200.0] * len(run.WORKLOADS)
    assert [m.iops if m else None for m in nvmf] == [65.0, None, 65.0, 65.0]
    assert all(m is None for m in table["nvmf/host"])  # no nvmf bench output at all
