"""Section (c) of the bench suite run for real, in the Linux 6.1 guest, on ``--guest-media ram``.

The unit tests (``test_guest_bench.py``) read the script; this runs it, briefly (a second per
run), in the boot the other 6.1 guest tests share: brd made and written, the kernel target,
ours and the raw responder up (under ``shared`` also the native one, ``--guest-native``), the
kernel host connected to all of them, every workload with both clients against each.  Every
target must come out with a figure for every workload and client, its guest CPU per I/O and its
busiest CPU's load; and the script must leave the boot as it found it (no kernel target, no
brd), for the parts that run after it.  Another part checks the native responder's data with
fio ``--verify`` from the kernel host.
"""

from __future__ import annotations

from pathlib import Path

import local
import pytest
import rawnvme
import run

from tests.guest.harness import shared_boot

# Built here, before any boot: the guest runs the responder's C loop as this machine built it.
rawnvme.native_library()

#: After the bench script: what it left behind, for the last test.
LEFT = """
ls /sys/kernel/config/nvmet/subsystems /sys/kernel/config/nvmet/ports > "$OUT/left.txt" 2>&1
lsmod | awk '$1 == "brd"' > "$OUT/brd.txt"
"""

#: Whether each ``--guest-cpus`` part also runs the native responder (``--guest-native``).
NATIVE = {"shared": True, "split": False}

#: One part of the boot for each ``--guest-cpus``.
BENCH_RAM = {
    cpus: shared_boot(
        f"bench-guest-ram-{cpus}",
        run.guest_script(2, 1, "tcp", "ram", cpus, NATIVE[cpus]) + LEFT,
    )
    for cpus in run.GUEST_CPUS
}

VERIFY_NQN = rawnvme.SUBNQN + "-verify"
#: The kernel host against the native responder on two I/O queues: fio writes, then reads back
#: and checks, 4 KiB blocks (in the capsule) and 128 KiB blocks (on R2T), two jobs each on a
#: region of its own.
NATIVE_VERIFY = shared_boot(
    "bench-native-verify",
    f"""
modprobe nvme-tcp
"$PY" "$REPO/bench/rawnvme.py" --native 4430 {64 << 20} {VERIFY_NQN} > "$OUT/native.log" 2>&1 &
PID=$!
{run._until_listening("native.log")}
nvme connect -t tcp -a 127.0.0.1 -s 4430 -n {VERIFY_NQN} -i 2 > "$OUT/connect.txt" 2>&1
sleep 1
{run.GUEST_FIND_DEV}
DEV=$(find_dev {VERIFY_NQN})
for bs in 4k 128k; do
  fio --name=verify-$bs --filename=/dev/$DEV --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=$bs --iodepth=16 --numjobs=2 --group_reporting --size=16m --offset_increment=16m \
    --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output-format=json \\
    > "$OUT/verify-$bs.json" 2> "$OUT/verify-$bs.err"
  echo $? > "$OUT/verify-$bs.rc"
done
nvme disconnect -n {VERIFY_NQN} > "$OUT/disconnect.txt" 2>&1
kill $PID; wait $PID || true
echo done > "$OUT/done.txt"
""",
)


@pytest.fixture(scope="module", params=run.GUEST_CPUS)
def cpus(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def out(cpus: str) -> Path:
    return BENCH_RAM[cpus]().finished().out


@pytest.mark.guest
def test_every_target_has_a_figure_for_every_workload_and_client(out: Path, cpus: str) -> None:
    table = run.read_guest(out, "tcp", NATIVE[cpus])
    targets = run.guest_targets("tcp", NATIVE[cpus])
    assert set(table) == {f"{t}/{c}" for t in targets for c in ("host", "fio")}
    for key, figures in table.items():
        assert len(figures) == len(run.WORKLOADS)
        for w, m in zip(run.WORKLOADS, figures, strict=True):
            assert m is not None and m.iops > 0 and m.mb_s > 0, (key, w.name, m)


@pytest.mark.guest
def test_every_target_has_its_guest_cpu_per_io(out: Path, cpus: str) -> None:
    cpu = run.read_guest_cpu(out, "tcp", NATIVE[cpus])
    assert ("native" in cpu) == NATIVE[cpus]
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
    may run on every CPU and each worker on one of its own, the raw responders anywhere."""
    rows = [line.split() for line in (out / "affinity.txt").read_text().splitlines()]
    allowed = [cpu for _, cpu in rows]  # nvmf serve, its workers, the raw responder(s)
    if cpus == "split":
        assert allowed == [str(run.SPLIT_TARGET_CPU)] * 3
    else:  # the guest's two CPUs: a worker on each
        assert allowed == ["0-1", "0", "1", "0-1", "0-1"]


@pytest.mark.guest
@pytest.mark.parametrize("bs", ["4k", "128k"])
def test_the_native_responder_keeps_the_kernel_host_s_data(bs: str) -> None:
    """fio ``--verify`` read back every block it wrote through the C loop, on both queues."""
    out = NATIVE_VERIFY().finished().out
    assert (out / f"verify-{bs}.rc").read_text().strip() == "0", out / f"verify-{bs}.err"
    result = (out / f"verify-{bs}.json").read_text()  # the two jobs, reported as one group
    written, checked = local.fio_side(result, True), local.fio_side(result, False)
    assert written is not None and checked is not None, result  # None: fio's job failed
    assert written["io_bytes"] == checked["io_bytes"] == 2 * (16 << 20), (written, checked)
