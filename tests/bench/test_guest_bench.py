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


@pytest.mark.parametrize("media", sorted(run.GUEST_MEDIA))
@pytest.mark.parametrize("trtype", ["tcp", "rdma"])
def test_the_guest_script_is_valid_bash(trtype: str, media: str) -> None:
    script = run.guest_script(5, 1, trtype, media)
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("media", "device", "kind"), [("null", "/dev/nullb0", "null"), ("ram", "/dev/ram0", "ram")]
)
def test_both_targets_serve_the_chosen_media_alike(media: str, device: str, kind: str) -> None:
    """The kernel target's namespace is the device the media's setup line made, set up before
    the namespace is enabled; ours is the matching medium; a storing device is as large as our
    namespace and written in full first, so that every read copies stored bytes."""
    lines = run.guest_script(5, 1, "tcp", media).splitlines()
    setup = lines.index(run.GUEST_MEDIA[media].kernel_setup)
    path = next(i for i, line in enumerate(lines) if "device_path" in line)
    enable = next(i for i, line in enumerate(lines) if "namespaces/1/enable" in line)
    assert setup < path < enable and f"echo {device} >" in lines[path]
    heredoc = next(i for i, line in enumerate(lines) if line.startswith("cat > /tmp/nvmf.json"))
    cfg = json.loads(lines[heredoc + 1])
    (medium,) = [ns["nvmf"] for sub in cfg["subsystems"] for ns in sub["namespaces"]]
    assert medium["kind"] == kind
    if media == "ram":
        size = run.GUEST_MEDIA[media].nvmf_size
        assert f"rd_size={size >> 10} " in lines[setup]
        assert f"count={size >> 20} " in lines[setup] and f"of={device} " in lines[setup]


@pytest.mark.parametrize(
    ("trtype", "native", "order"),
    [
        ("tcp", False, ["KERNEL", "NVMF", "RAW", "RAW", "NVMF", "KERNEL"]),
        ("tcp", True, ["KERNEL", "NVMF", "RAW", "NATIVE", "NATIVE", "RAW", "NVMF", "KERNEL"]),
        ("rdma", False, ["KERNEL", "NVMF", "NVMF", "KERNEL"]),
        ("rdma", True, ["KERNEL", "NVMF", "NVMF", "KERNEL"]),
    ],
)
def test_every_target_is_connected_before_any_fio_and_each_workload_runs_mirrored(
    trtype: str, native: bool, order: list[str]
) -> None:
    """On NVMe/TCP the raw responder is the third target (it speaks TCP only): A B C C B A;
    with ``--guest-native`` its C twin the fourth, A B C D D C B A; on RDMA A B B A.  Each
    target has its own NQN and its responder process is ended."""
    lines = run.guest_script(5, 1, trtype, native=native).splitlines()
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
    responders = [line for line in lines if "bench/rawnvme.py" in line]
    expected = [t for t in ("raw", "native") if t.upper() in order]
    assert len(responders) == len(expected)
    for line, target in zip(responders, expected, strict=True):
        flags = ["--native"] if target == "native" else []
        assert line.split()[2:][: 3 + len(flags)] == [
            *flags,
            str(run.GUEST_TARGETS[target]),
            str(run.GUEST_RAW_SIZE),
            run.GUEST_NQN[target],
        ]
        pid = f"{target.upper() if target == 'native' else 'RAW'}PID"
        started = lines.index(line)
        assert lines[started + 1] == f"{pid}=$!" and f"kill ${pid}" in lines


def _client_lines(lines: list[str], target: str) -> list[str]:
    """The lines of ``lines`` that run a client (``nvmf bench`` or fio) against ``target``."""
    port = f"-s {run.GUEST_TARGETS[target]} "
    return [
        line
        for line in lines
        if ("nvmf.cli.main bench" in line and port in line) or f"fio --name={target}_" in line
    ]


@pytest.mark.parametrize("trtype", ["tcp", "rdma"])
def test_split_cpus_pin_the_python_targets_and_their_clients_and_leave_the_kernel_s_alone(
    trtype: str,
) -> None:
    """``--guest-cpus split``: ``nvmf serve`` and the raw responder start on the target CPU,
    every ``nvmf bench`` and fio run against them on the other; the kernel target's clients
    run exactly as under ``shared``, and ``shared`` pins nothing."""
    shared = run.guest_script(5, 1, trtype, "ram", "shared").splitlines()
    split = run.guest_script(5, 1, trtype, "ram", "split").splitlines()
    assert not any("taskset" in line or "--cpus_allowed" in line for line in shared)
    target_cpu = f"taskset -c {run.SPLIT_TARGET_CPU} "
    (serve,) = [line for line in split if "nvmf.cli.main serve" in line]
    assert serve.startswith(target_cpu)
    raw = [line for line in split if "bench/rawnvme.py" in line]
    assert all(line.startswith(target_cpu) for line in raw) and len(raw) == (trtype == "tcp")
    assert _client_lines(split, "kernel") == _client_lines(shared, "kernel") != []
    for target in run.guest_targets(trtype)[1:]:
        clients = _client_lines(split, target)
        bench = [line for line in clients if "nvmf.cli.main bench" in line]
        fio = [line for line in clients if "fio --name=" in line]
        assert len(bench) == len(fio) == 2 * len(run.WORKLOADS)
        assert all(line.startswith(f"taskset -c {run.SPLIT_CLIENT_CPU} ") for line in bench)
        assert all(f" --cpus_allowed={run.SPLIT_CLIENT_CPU} " in line for line in fio)
    with pytest.raises(ValueError, match="--guest-cpus: 'spread'"):
        run.guest_script(5, 1, trtype, "ram", "spread")


def test_the_affinity_line_records_each_target_process_s_cpus(tmp_path: Path) -> None:
    """The guest's affinity line run by bash here, with a ``SERVE`` whose child is pinned and
    no ``RAWPID`` (NVMe/RDMA's boot has none): one ``PID CPUS`` line per process."""
    script = (
        f"set -u\nOUT={tmp_path}\ntaskset -c 0 sleep 30 &\nSERVE=$$\n"
        # taskset has pinned itself once it is sleep
        'until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done\n'
        f"{run.GUEST_AFFINITY}\n"
        "kill %1\necho $$ $!"
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    shell, child = proc.stdout.split()
    mine = Path("/proc/self/status").read_text().split("Cpus_allowed_list:")[1].split()[0]
    assert (tmp_path / "affinity.txt").read_text().splitlines() == [
        f"{shell} {mine}",
        f"{child} 0",
    ]


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


def test_each_fio_run_is_bracketed_by_cpu_snapshots_of_its_target_s_processes() -> None:
    lines = run.guest_script(5, 1, "tcp").splitlines()
    assert run.GUEST_SNAP in lines
    assert any(run.GUEST_CLOCKSOURCE in line for line in lines)
    for i, line in enumerate(lines):
        if "fio --name=" not in line:
            continue
        tag = re.search(r"--name=(\S+)", line).group(1)  # type: ignore[union-attr]
        pids = run.GUEST_PIDS[tag.split("_")[0]]
        assert lines[i - 1] == f'snap {tag}.cpu0 "{pids}"'
        assert lines[i + 1] == f'snap {tag}.cpu1 "{pids}"'
    assert run.GUEST_PIDS["kernel"] == ""  # the kernel target's CPU is no process's


def test_the_snapshot_shell_function_records_what_the_parser_reads(tmp_path: Path) -> None:
    """The guest's ``snap`` run by bash here: every CPU's line and this shell's own stat line."""
    script = f'OUT={tmp_path}\n{run.GUEST_SNAP}\nsnap s "$$ 999999999"\necho $$'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    snap = run._snapshot(tmp_path / "s")
    online = Path("/proc/stat").read_text().count("\ncpu")  # the cpuN lines, not the sum
    assert sorted(snap.cpus) == sorted(f"cpu{i}" for i in range(online))
    assert all(0 < busy < total for busy, total in snap.cpus.values())
    assert snap.busy == pytest.approx(sum(busy for busy, _ in snap.cpus.values()))
    assert list(snap.by_pid) == [int(proc.stdout)]  # a PID that is gone is left out


def _snap(path: Path, busy: int, idle: int, procs: dict[int, int], *, cpu1: int = 0) -> None:
    """A ``snap`` file of a two-CPU guest: ``busy`` ticks as user time, ``cpu1`` of them on
    cpu1 and the rest on cpu0, ``idle`` split over idle and iowait of each CPU, and each PID's
    ticks split over utime and stime (comm with a space and a parenthesis)."""
    lines = [f"cpu  {busy} 0 0 {2 * idle} {2 * idle} 0 0 0 0 0"]
    lines += [f"cpu0 {busy - cpu1} 0 0 {idle} {idle} 0 0 0 0 0"]
    lines += [f"cpu1 0 {cpu1} 0 {idle} {idle} 0 0 0 0 0"]
    lines += [
        f"{pid} (py (x) y) S 1 {' '.join(['0'] * 9)} {t - t // 2} {t // 2} 0 0 20 0"
        for pid, t in procs.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def test_guest_cpu_per_io_adds_a_target_s_halves_and_counts_only_its_lasting_processes(
    tmp_path: Path,
) -> None:
    for i, w in enumerate(run.WORKLOADS):
        for k, target in enumerate(run.guest_order("tcp")):
            tag = f"{target}_fio_{i}_{k}"
            side = {"iops": 1.0, "total_ios": 1000 * (k + 1)}
            empty = {"iops": 0, "total_ios": 0}
            job = {"write": side, "read": empty} if w.write else {"read": side, "write": empty}
            (tmp_path / f"{tag}.json").write_text(json.dumps({"jobs": [job]}))
            if (target, i) == ("raw", 2):
                continue  # no snapshots: that figure is unknown
            own = {"kernel": {}, "nvmf": {10: 100, 11: 50}, "raw": {20: 7}}[target]
            _snap(tmp_path / f"{tag}.cpu0", 1000, 5000, own, cpu1=400)
            # a worker (12) that started during the run has no baseline and is not counted
            later = {pid: t + 10 * (k + 1) for pid, t in own.items()} | (
                {12: 500} if target == "nvmf" else {}
            )
            # the run: 20 (k + 1) busy ticks, 5 (k + 1) of them on cpu1; 4000 idle per CPU
            _snap(
                tmp_path / f"{tag}.cpu1",
                1000 + 20 * (k + 1),
                7000,
                later,
                cpu1=400 + 5 * (k + 1),
            )
    cpu = run.read_guest_cpu(tmp_path, "tcp")
    per_io = 1e6 * run.procstat.TICK  # one tick per I/O, in microseconds
    # each half: 20 (k + 1) busy ticks over 1000 (k + 1) I/Os
    kernel = cpu["kernel"][0]
    assert kernel is not None and kernel.target_us is None
    assert kernel.guest_us == pytest.approx(per_io * (20 + 120) / (1000 + 6000))
    # the busiest CPU over both halves: cpu0, with 15 (k + 1) of each half's busy ticks
    assert kernel.busiest_pct == pytest.approx(100 * (15 + 90) / (15 + 90 + 2 * 4000))
    nvmf = cpu["nvmf"][3]
    assert nvmf is not None
    assert nvmf.target_us == pytest.approx(per_io * 2 * (20 + 50) / (2000 + 5000))
    raw = cpu["raw"]
    assert raw[2] is None and raw[0] is not None
    assert raw[0].target_us == pytest.approx(per_io * (30 + 40) / (3000 + 4000))


def test_the_cpu_table_judges_our_own_cpu_against_the_raw_responder_s(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 7's CPU goal as an independent client (fio) measures it: nvmf's own CPU per I/O
    over the raw responder's, against the goal of the workload's block size."""
    own = {"nvmf": [150.0, 400.0, 300.0, 800.0], "raw": [100.0, 100.0, 300.0, None]}
    cpu = {
        "kernel": [run.GuestCpu(100.0, None, 91.0)] * len(run.WORKLOADS),
        **{t: [run.GuestCpu(900.0, us, 50.0) if us else None for us in v] for t, v in own.items()},
    }
    run.print_guest_cpu("tcp", run.GuestRun({}, cpu, "tsc", "ram"))
    rows = {
        line.split("|")[0].strip(): [cell.split() for cell in line.split("|")[1:]]
        for line in capsys.readouterr().out.splitlines()
        if "|" in line
    }
    assert [rows[w.name][-1] for w in run.WORKLOADS] == [
        ["1.50", "<=2", "met"],
        ["4.00", "<=2", "NOT", "met"],
        ["1.00", "<=1.5", "met"],
        ["-"],  # no figure for the raw responder
    ]
    first = rows[run.WORKLOADS[0].name]
    assert first[0] == ["100", "91%"]  # the kernel target: no processes of its own
    assert first[1] == ["900", "(", "150)", "50%"]


def test_with_the_native_responder_the_guest_report_sets_it_beside_the_kernel_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--guest-native``: its own table, kernel target against the C loop, whose ratio reads
    beside nvmf's; the order names four targets."""
    n = len(run.WORKLOADS)
    table = {
        f"{t}/{c}": [run.Measurement(iops, iops / 10, 50.0, 90.0)] * n
        for t, iops in (("kernel", 1000.0), ("nvmf", 600.0), ("raw", 500.0), ("native", 700.0))
        for c in ("host", "fio")
    }
    cpu = {t: [None] * n for t in ("kernel", "nvmf", "raw", "native")}
    run.print_guest({"tcp": run.GuestRun(table, cpu, "tsc", "ram", "shared")})
    out = capsys.readouterr().out
    assert "runs in the order A B C D D C B A" in out
    native = out.split("bench/rawnvme.py --native")[1:]
    assert len(native) == 2  # one table per client
    rows = [line for line in native[0].splitlines() if line.startswith(run.WORKLOADS[0].name)]
    assert rows[0].split("|")[-1].strip() == "0.70"  # native / kernel
