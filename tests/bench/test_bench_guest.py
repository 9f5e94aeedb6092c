"""Section (c) of the bench suite run for real, in the Linux 6.1 guest, on ``--guest-media ram``.

The unit tests (``test_guest_bench.py``) read the script; this runs it, briefly (a second per
run), in the boot the other 6.1 guest tests share: brd made and written, the kernel target,
ours and the raw responder up, the kernel host connected to all three, every workload with both
clients against each.  Every target must come out with a figure for every workload and client,
its guest CPU per I/O and its busiest CPU's load; and the script must leave the boot as it
found it (no kernel target, no brd), for the parts that run after it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import run

from tests.guest.harness import shared_boot

#: After the bench script: what it left behind, for the last test.
LEFT = """
ls /sys/kernel/config/nvmet/subsystems /sys/kernel/config/nvmet/ports > "$OUT/left.txt" 2>&1
lsmod | awk '$1 == "brd"' > "$OUT/brd.txt"
"""

#: One part of the boot for each ``--guest-cpus``.
BENCH_RAM = {
    cpus: shared_boot(
        f"bench-guest-ram-{cpus}",
        run.guest_script(2, 1, "tcp", "ram", cpus) + LEFT,
    )
    for cpus in run.GUEST_CPUS
}


@pytest.fixture(scope="module", params=run.GUEST_CPUS)
def cpus(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def out(cpus: str) -> Path:
    return BENCH_RAM[cpus]().finished().out


@pytest.mark.guest
def test_every_target_has_a_figure_for_every_workload_and_client(out: Path) -> None:
    table = run.read_guest(out, "tcp")
    assert set(table) == {f"{t}/{c}" for t in run.guest_targets("tcp") for c in ("host", "fio")}
    for key, figures in table.items():
        assert len(figures) == len(run.WORKLOADS)
        for w, m in zip(run.WORKLOADS, figures, strict=True):
            assert m is not None and m.iops > 0 and m.mb_s > 0, (key, w.name, m)


@pytest.mark.guest
def test_every_target_has_its_guest_cpu_per_io(out: Path) -> None:
    cpu = run.read_guest_cpu(out, "tcp")
    for target, figures in cpu.items():
        for w, c in zip(run.WORKLOADS, figures, strict=True):
            assert c is not None and c.guest_us > 0, (target, w.name, c)
            assert 0 < c.busiest_pct <= 100, (target, w.name, c)
            if target == "kernel":  # its CPU is the kernel's: no process of its own
                assert c.target_us is None
            else:
                assert c.target_us is not None and 0 < c.target_us < c.guest_us


@pytest.mark.guest
def test_the_guest_reads_time_from_the_tsc(out: Path) -> None:
    """The boot's ``tsc=reliable`` took: no emulated HPET access for each clock read."""
    assert (out / "clocksource.txt").read_text().strip() == "tsc"


@pytest.mark.guest
def test_the_script_takes_down_the_kernel_target_and_brd(out: Path) -> None:
    left = (out / "left.txt").read_text()
    assert left.split() == [
        "/sys/kernel/config/nvmet/ports:",
        "/sys/kernel/config/nvmet/subsystems:",
    ], left
    assert (out / "brd.txt").read_text() == ""


@pytest.mark.guest
def test_split_cpus_keep_each_python_target_on_its_own_cpu(out: Path, cpus: str) -> None:
    """Under ``split`` every process of ``nvmf serve`` (the control plane and its one worker)
    and the raw responder may run on the target CPU only; under ``shared`` the control plane
    may run on every CPU and each worker on one of its own."""
    rows = [line.split() for line in (out / "affinity.txt").read_text().splitlines()]
    allowed = [cpu for _, cpu in rows]  # nvmf serve, its workers, the raw responder
    if cpus == "split":
        assert allowed == [str(run.SPLIT_TARGET_CPU)] * 3
    else:  # the guest's two CPUs: a worker on each
        assert allowed == ["0-1", "0", "1", "0-1"]
