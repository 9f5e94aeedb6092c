"""Section (c) of the bench suite (``bench/run.py``): the guest script connects the kernel host
to every target before it measures (on NVMe/TCP the raw responder too), runs each workload
against them in mirrored order (A B C C B A, or A B B A), and the halves are read back into one
figure per target (a failed half fails the figure)."""

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


@pytest.mark.parametrize(
    ("trtype", "order"),
    [
        ("tcp", ["KERNEL", "NVMF", "RAW", "RAW", "NVMF", "KERNEL"]),
        ("rdma", ["KERNEL", "NVMF", "NVMF", "KERNEL"]),
    ],
)
def test_every_target_is_connected_before_any_fio_and_each_workload_runs_mirrored(
    trtype: str, order: list[str]
) -> None:
    """On NVMe/TCP the raw responder is the third target (it speaks TCP only): A B C C B A;
    on RDMA A B B A.  Each target has its own NQN and its responder process is ended."""
    lines = run.guest_script(5, 1, trtype).splitlines()
    connects = [i for i, line in enumerate(lines) if line.startswith("nvme connect")]
    fios = [i for i, line in enumerate(lines) if "fio --name=" in line]
    n = len(order)
    assert len(connects) == n // 2 and max(connects) < min(fios)
    nqns = {re.search(r"-n (\S+)", lines[i]).group(1) for i in connects}  # type: ignore[union-attr]
    assert len(nqns) == n // 2  # distinct subsystems, not paths to one
    assert len(fios) == n * len(run.WORKLOADS)
    for i in range(len(run.WORKLOADS)):
        block = [lines[j] for j in fios[n * i : n * i + n]]
        devices = [re.search(r"--filename=/dev/\$(\w+)", b).group(1) for b in block]  # type: ignore[union-attr]
        assert devices == order
        assert all("--runtime=2.5 " in b for b in block)
        assert all(f"--bs={run.WORKLOADS[i].bs} " in b for b in block)
    raw = [line for line in lines if "bench/rawnvme.py" in line]
    if "RAW" in order:
        assert len(raw) == 1 and raw[0].split()[2:5] == [
            str(run.GUEST_TARGETS["raw"]),
            str(run.GUEST_RAW_SIZE),
            run.GUEST_NQN["raw"],
        ]
        started = lines.index(raw[0])
        assert lines[started + 1] == "RAWPID=$!" and "kill $RAWPID" in lines
    else:
        assert raw == []


def _fio(path: Path, iops: float, write: bool = False) -> None:
    side = {"iops": iops, "bw_bytes": iops * 4096, "clat_ns": {"percentile": {}}}
    empty = {"iops": 0, "bw_bytes": 0, "clat_ns": {}}
    job = {"write": side, "read": empty} if write else {"read": side, "write": empty}
    path.write_text("fio: a warning first\n" + json.dumps({"jobs": [job]}))


def test_each_target_s_halves_are_averaged_and_a_missing_half_fails_the_figure(
    tmp_path: Path,
) -> None:
    # tcp's order: kernel nvmf raw raw nvmf kernel (halves 0..5)
    for i, w in enumerate(run.WORKLOADS):
        for k, target in enumerate(run.guest_order("tcp")):
            if (i, k) == (1, 4):
                continue  # one half of nvmf's second workload never wrote its result
            iops = {"kernel": 100.0 + 200 * (k == 5), "nvmf": 50.0 + 10 * k, "raw": 7.0 * k}
            _fio(tmp_path / f"{target}_fio_{i}_{k}.json", iops[target], w.write)
    table = run.read_guest(tmp_path, "tcp")
    assert [m.iops if m else None for m in table["kernel/fio"]] == [200.0] * len(run.WORKLOADS)
    assert [m.iops if m else None for m in table["nvmf/fio"]] == [75.0, None, 75.0, 75.0]
    assert [m.iops if m else None for m in table["raw/fio"]] == [17.5] * len(run.WORKLOADS)
    assert all(m is None for m in table["nvmf/host"])  # no nvmf bench output at all
    assert "raw/fio" not in run.read_guest(tmp_path, "rdma")  # NVMe/TCP only
