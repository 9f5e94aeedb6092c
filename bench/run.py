"""The nvmf benchmark suite: one run, measurements side by side, ratios.

    .venv/bin/python bench/run.py [--runtime S] [--numjobs N] [--workers N] [--plot FILE.png]
                                  [--guest [tcp|rdma|cmb|all]] [--guest-media null|ram]
                                  [--guest-cpus shared|split] [--guest-native]
                                  [--guest-only] [--json]

(1) **target CPU per I/O**: ``nvmf serve`` (a RAM namespace) and the raw NVMe/TCP responder
    (:mod:`rawnvme`: the same PDUs and the same data moved to and from a namespace in memory,
    no NVMe semantics) each driven by this project's host in a
    client process of its own (:mod:`client`), the same workloads interleaved; the target's
    CPU time (utime + stime of the process and all its descendants, from ``/proc``) over the
    I/O phase divided by the I/Os completed, for both, and their ratio (issue 7's goal: nvmf at
    most 2x the raw responder at 4 KiB, 1.5x at 128 KiB);
(a) **raw TCP**: the loopback ceiling for Python on this machine, the same request/response
    traffic as NVMe/TCP with no NVMe in it (:mod:`rawtcp`), same block size and depth, against
    the nvmf IOPS of (1);
(2) **control plane share**: the CPU of the ``nvmf serve`` process itself against its worker
    processes' (with ``--workers N``, passed on to ``nvmf serve``);
(3) **scaling**: IOPS of 4 KiB random reads at QD32 with 1..N workers (N: ``--workers``, else
    the CPU count), as many client processes, one I/O queue each;
    (2) and (3) say so and are skipped while ``nvmf serve`` has no ``--workers`` option;
(c) with ``--guest``: inside one Linux 6.1 guest boot per fabric, the kernel target
    (nvmet-tcp, or with ``--guest rdma`` nvmet-rdma on Soft-RoCE, on null_blk) and ``nvmf
    serve`` (null media; with ``--guest-media ram``, brd against a ``ram`` namespace, media
    that store the data: :data:`GUEST_MEDIA`), each driven by the same two clients: ``nvmf
    bench`` (our host) and fio
    on the kernel host (``nvme connect -t tcp|rdma``, libaio, O_DIRECT), connected to both
    targets at once, each workload run on them in halves in the order A B B A.  Over NVMe/TCP
    the raw responder of (1) (:mod:`rawnvme`, a RAM namespace) is a third target (A B C C B
    A): what the least Python answering the same PDUs reaches on the same emulated machine,
    against which the kernel's lead can be read.  The guest runs under TCG emulation (QEMU's
    max CPU without ERMS, ``tests/vm/guest.py``): only its ratios mean anything.  Under fio it
    also prints each target's CPU per I/O (every guest CPU's busy time from ``/proc/stat``, and
    the target's own processes' from ``/proc/PID/stat``), the busiest guest CPU's load (one
    I/O queue's work piles up on its CPU), our target's own CPU per I/O against the raw
    responder's with the goal of (1) -- the same goal, measured by a client we did not write --
    and the guest's clocksource (the TSC: on the emulated HPET every clock read is an MMIO
    access, :data:`GUEST_CLOCKSOURCE`); with ``--guest-cpus split`` our target and the raw
    responder each run on a CPU of their own and their clients on the other
    (:data:`GUEST_CPUS`); with ``--guest-native`` (NVMe/TCP) a fourth target (A B C D D C B
    A), the raw responder with its I/O queues in C (``rawnvme.py --native``): what a target in
    user space reaches on this machine with no Python on its data path, beside the kernel
    target's threads, which switch no address space;
    ``--guest-only`` skips (1)-(3) and (a);
(e) **media engines**: a ``file`` namespace through the thread pool and through io_uring, the
    target's CPU per I/O of each and their ratio (:mod:`engines`; where io_uring cannot run,
    the reason);
(d) with ``--guest cmb``: an ``nvme_pci`` namespace on QEMU's CMB SSD in the guest, SQs and
    staging in DRAM against both in the CMB, beside the kernel's nvme driver (:mod:`placement`);
with ``--plot FILE.png``: IOPS against queue depth (4 KiB random reads, QD 1..64, for both
targets of (1)) and against workers (3), drawn with matplotlib (the ``dev`` extra).

Workloads: 4 KiB random read and write at QD32, 128 KiB sequential read and write at QD8, each
``--runtime`` seconds (3).  Each prints IOPS, MB/s (10^6 bytes), p50 and p99 latency in
microseconds, and the ratio of nvmf to the reference.  Absolute numbers on a small shared
machine swing by tens of percent from run to run; compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import engines  # noqa: E402
import placement  # noqa: E402
import procstat  # noqa: E402
import rawnvme  # noqa: E402
import rawtcp  # noqa: E402
from local import (  # noqa: E402
    SUBNQN,
    Clients,
    CpuRun,
    Workload,
    fio_side,
    interleaved,
    measure,
    nvmf_target,
    raw_target,
    serve_supports_workers,
    server,
    target_config,
)

from nvmf.host.bench import LatencySummary  # noqa: E402
from nvmf.host.runtime import run as run_async  # noqa: E402

WORKLOADS = [
    Workload("4k randread QD32", "randread", 4096, 32),
    Workload("4k randwrite QD32", "randwrite", 4096, 32),
    Workload("128k seqread QD8", "read", 131072, 8),
    Workload("128k seqwrite QD8", "write", 131072, 8),
]
#: Issue 7's goal: nvmf's CPU per I/O at most this many times the raw responder's, by block size.
CPU_GOAL = {4096: 2.0, 131072: 1.5}
#: The workload of the scaling table (3).
SCALING = Workload("4k randread QD32", "randread", 4096, 32)
#: Queue depths of the plot's sweep (4 KiB random reads); below the queues' 127 usable entries.
SWEEP_DEPTHS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Measurement:
    iops: float
    mb_s: float
    p50_us: float
    p99_us: float

    @classmethod
    def empty(cls) -> Measurement:
        return cls(0.0, 0.0, 0.0, 0.0)

    @classmethod
    def of(cls, run: CpuRun) -> Measurement | None:
        return None if run.error else cls(run.iops, run.mb_s, run.p50_us, run.p99_us)


# -- local: raw TCP, raw NVMe/TCP responder and nvmf on loopback --------------------------------


def measure_raw(w: Workload, runtime: float, jobs: int) -> Measurement:
    with server([sys.executable, str(HERE / "rawtcp.py"), "0"]) as srv:
        res = run_async(
            rawtcp.run_client(
                srv.port, write=w.write, bs=w.bs, depth=w.iodepth, jobs=jobs, runtime=runtime
            )
        )
    lat = LatencySummary.of(res.lat_ns)
    return Measurement(res.ios / res.elapsed, res.bytes / res.elapsed / 1e6, lat.p50, lat.p99)


@dataclass
class CpuComparison:
    """(1): every workload against both targets; the plot's queue-depth sweep when asked."""

    raw: list[CpuRun]
    nvmf: list[CpuRun]
    #: target name -> (queue depth, run) of the sweep
    sweep: dict[str, list[tuple[int, CpuRun]]]


def compare_cpu(
    runtime: float, jobs: int, workers: int | None, sweep_runtime: float | None
) -> CpuComparison:
    """Both targets up side by side, one client process each; each workload runs in two halves
    of ``runtime`` on each, in the order raw, nvmf, nvmf, raw, so that a slow spell of this
    shared machine hits both alike."""
    out = CpuComparison([], [], {})
    with (
        raw_target() as raw,
        nvmf_target(workers) as nvmf,
        Clients(raw, queues=jobs) as raw_client,
        Clients(nvmf, queues=jobs) as nvmf_client,
    ):
        for w in WORKLOADS:
            raw_run, nvmf_run = interleaved(raw_client, nvmf_client, w, runtime, jobs)
            out.raw.append(raw_run)
            out.nvmf.append(nvmf_run)
        if sweep_runtime:
            for qd in SWEEP_DEPTHS:
                w = Workload(f"4k randread QD{qd}", "randread", 4096, qd)
                for target, client in ((raw, raw_client), (nvmf, nvmf_client)):
                    run = measure(client, w, sweep_runtime, jobs)
                    out.sweep.setdefault(target.name, []).append((qd, run))
    return out


def measure_scaling(most: int, runtime: float) -> list[tuple[int, CpuRun]]:
    """(3): ``nvmf serve --workers n`` for n in 1..``most``, n client processes, one queue each."""
    out = []
    for n in range(1, most + 1):
        with nvmf_target(n) as target, Clients(target, count=n, queues=1) as clients:
            out.append((n, measure(clients, SCALING, runtime, 1)))
    return out


# -- guest: kernel target vs nvmf target, two clients --------------------------------------------

GUEST_TARGETS = {"kernel": 4420, "nvmf": 4421, "raw": 4422, "native": 4423}
#: Each target's subsystem NQN in the guest: one each, so that the kernel host, connected to all
#: at once, sees distinct subsystems and not paths to one (native NVMe multipath merges those).
GUEST_NQN = {
    "kernel": SUBNQN + "-kernel",
    "nvmf": SUBNQN,
    "raw": SUBNQN + "-raw",
    "native": SUBNQN + "-native",
}
#: The raw responders' namespaces in the guest (RAM: they have no null medium); fio's jobs use
#: 256m.
GUEST_RAW_SIZE = 256 << 20


@dataclass(frozen=True)
class GuestMedia:
    """What the kernel target and ours serve in the guest (``--guest-media``): media that do
    the same with the data, so that the comparison is of the targets."""

    #: The shell line that makes the kernel target's block device.
    kernel_setup: str
    #: That device, and its driver: what the tables call it, the module unloaded at the end.
    kernel_device: str
    kernel_label: str
    #: Our namespace's medium and size.
    nvmf_kind: str
    nvmf_size: int


#: ``null``: neither stores anything; the kernel target sends its own pages by reference, a
#: process must copy them into the socket once (``sendfile`` from a memfd measured slower).
#: ``ram``: both store the data and move it with one copy each (brd to nvmet's pages; the
#: memfd to the socket).  brd is written in full first: a page it never stored reads as a
#: ``memset``, not a copy, and our ``ram`` namespace is allocated in full at start.
GUEST_MEDIA = {
    "null": GuestMedia(
        "modprobe null_blk nr_devices=1 gb=1 irqmode=0", "/dev/nullb0", "null_blk", "null", 1 << 30
    ),
    "ram": GuestMedia(
        "modprobe brd rd_nr=1 rd_size=524288 && "
        "dd if=/dev/zero of=/dev/ram0 bs=1M count=512 oflag=direct status=none",
        "/dev/ram0",
        "brd",
        "ram",
        512 << 20,
    ),
}


def guest_targets(trtype: str, native: bool = False) -> tuple[str, ...]:
    """The targets measured in the guest on ``trtype``: the kernel's, ours and, on NVMe/TCP,
    the raw responder (:mod:`rawnvme`, TCP only): the least Python answering the same
    exchange, a yardstick for what Python reaches on this emulated machine; with ``native``
    (``--guest-native``) also the raw responder with its I/O queues in C (``rawnvme.py
    --native``): what a target in user space reaches with no Python on its data path."""
    if trtype != "tcp":
        return ("kernel", "nvmf")
    return ("kernel", "nvmf", "raw", "native") if native else ("kernel", "nvmf", "raw")


def guest_order(trtype: str, native: bool = False) -> tuple[str, ...]:
    """The order in which each workload runs against the targets, in halves of ``--runtime``:
    A B C C B A (A B B A without the raw responder, A B C D D C B A with the native one), as in
    (1), so that a steady drift of the emulated machine's speed during a run hits every target
    alike."""
    targets = guest_targets(trtype, native)
    return targets + targets[::-1]


#: Where each fabric's targets listen in the guest: NVMe/TCP on loopback, NVMe/RDMA on
#: Soft-RoCE on a dummy netdev (pyverbs cannot bind a loopback address, docs/rdma.md).
GUEST_ADDR = {"tcp": "127.0.0.1", "rdma": "10.99.0.1"}
SOFT_ROCE = [
    "ip link set lo up",
    "ip link add nvmf0 type dummy && ip addr add 10.99.0.1/24 dev nvmf0 && ip link set nvmf0 up",
    "modprobe rdma_rxe && rdma link add rxe0 type rxe netdev nvmf0",
]


#: ``--guest-cpus``: where (c) runs the Python targets and their clients on the guest's two CPUs.
#: ``shared``: where the scheduler puts them, the same fio job for every target.  ``split``:
#: our target (one worker) and the raw responder on :data:`SPLIT_TARGET_CPU`, fio and ``nvmf
#: bench`` against them on :data:`SPLIT_CLIENT_CPU`, beside the kernel host's ``io_work`` for
#: I/O queue 1 (which the 6.1 host puts on CPU 0): the two machines of a deployment, as far as
#: loopback allows.  The kernel target runs as in ``shared`` either way: its work runs where the
#: host's packets arrive, so it cannot have a CPU of its own on loopback, and pinning fio beside
#: the host's ``io_work`` costs it 45-76 % of its IOPS (measured on 2026-12-03, issue 7's
#: note), so each target is measured at its own best placement.
GUEST_CPUS = ("shared", "split")
SPLIT_TARGETS = ("nvmf", "raw", "native")
SPLIT_TARGET_CPU = 1
SPLIT_CLIENT_CPU = 0


def _split(target: str, cpus: str) -> bool:
    """Whether ``target`` and its clients run on CPUs of their own under ``--guest-cpus cpus``."""
    if cpus not in GUEST_CPUS:
        raise ValueError(f"--guest-cpus: {cpus!r} is not one of {', '.join(GUEST_CPUS)}")
    return cpus == "split" and target in SPLIT_TARGETS


def _taskset(target: str, cpus: str, cpu: int) -> str:
    """The prefix of a guest shell line that starts ``target``'s own process (``cpu``
    :data:`SPLIT_TARGET_CPU`) or one of its clients (:data:`SPLIT_CLIENT_CPU`)."""
    return f"taskset -c {cpu} " if _split(target, cpus) else ""


def _until_listening(log: str) -> str:
    """The guest shell line that waits (up to 2 minutes) until ``$OUT/log`` says listening."""
    return f'for _ in $(seq 240); do grep -q listening "$OUT/{log}" && break; sleep 0.5; done'


#: The guest shell function that snapshots CPU time into ``$OUT/$1``: the ``cpu`` lines of
#: ``/proc/stat`` (all guest CPUs together, then each), then ``/proc/PID/stat`` of each PID in
#: ``$2``.
GUEST_SNAP = (
    "snap() { { grep '^cpu' /proc/stat; "
    'for p in $2; do cat "/proc/$p/stat" 2>/dev/null; done; } > "$OUT/$1"; }'
)
#: Each target's processes as the guest shell names them when a run starts: ``nvmf serve`` and
#: its workers, the raw responder; none for the kernel target, whose CPU is the kernel's own.
GUEST_PIDS = {
    "kernel": "",
    "nvmf": "$SERVE $(pgrep -P $SERVE)",
    "raw": "$RAWPID",
    "native": "$NATIVEPID",
}
#: The guest shell line that records the CPUs each Python target's process may run on
#: (``PID LIST`` per line), for the guest test of ``--guest-cpus split``.
GUEST_AFFINITY = (
    'for p in $SERVE $(pgrep -P $SERVE) ${RAWPID:-} ${NATIVEPID:-}; do echo "$p $(awk '
    '\'/^Cpus_allowed_list/ {print $2}\' /proc/$p/status)"; done > "$OUT/affinity.txt"'
)
#: The guest shell function that prints the namespace's block device: ``nvmeXn1`` whose
#: controller or subsystem has NQN ``$1`` (a multipath head's device is the subsystem; its hidden
#: ``nvmeXcYn1`` paths are skipped).
GUEST_FIND_DEV = (
    "find_dev() { for b in /sys/block/nvme*; do n=$(basename $b); "
    '[[ $n =~ ^nvme[0-9]+n1$ ]] && [ "$(cat $b/device/subsysnqn 2>/dev/null)" = "$1" ] '
    "&& echo $n; done | head -1; }"
)
#: Where the guest's clock comes from: the TSC, as the guest boots with ``tsc=reliable``
#: (``tests/vm/guest.py``, ``BOOT_APPEND``).  Without it the 6.1 kernel marked the TSC unstable
#: under TCG and every clock read was an emulated HPET access, dearer for fio and the kernel's
#: network stack than for a target in Python.
GUEST_CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"


def _responder(target: str, cpus: str) -> list[str]:
    """The guest shell lines that start raw responder ``target`` (``raw``, or ``native``: its
    I/O queues in C) and wait until it listens; its PID in ``$RAWPID`` or ``$NATIVEPID``."""
    flag = " --native" if target == "native" else ""
    return [
        f'{_taskset(target, cpus, SPLIT_TARGET_CPU)}"$PY" "$REPO/bench/rawnvme.py"{flag} '
        f"{GUEST_TARGETS[target]} {GUEST_RAW_SIZE} "
        f'{GUEST_NQN[target]} > "$OUT/{target}.log" 2>&1 &',
        f"{GUEST_PIDS[target][1:]}=$!",
        _until_listening(f"{target}.log"),
    ]


def guest_script(
    runtime: float,
    jobs: int,
    trtype: str = "tcp",
    media: str = "null",
    cpus: str = "shared",
    native: bool = False,
) -> str:
    """One boot: the targets of :func:`guest_targets` up on ``trtype`` and on ``media``
    (:data:`GUEST_MEDIA`); the kernel host connected to all of them at once; then every
    workload with both clients (the same ``nvmf bench``, the same fio job) against them in the
    order :func:`guest_order`, each run half of ``runtime``, on the CPUs ``cpus`` gives them
    (:data:`GUEST_CPUS`)."""
    addr = GUEST_ADDR[trtype]
    targets = guest_targets(trtype, native)
    order = guest_order(trtype, native)
    medium = GUEST_MEDIA[media]
    cfg = target_config(GUEST_TARGETS["nvmf"], medium.nvmf_kind, medium.nvmf_size, trtype, addr)
    half = runtime / 2
    lines = [
        'exec 2>"$OUT/stderr.txt"',
        "set -x",
        *(SOFT_ROCE if trtype == "rdma" else []),
        f"modprobe nvmet; modprobe nvmet-{trtype}; modprobe nvme-{trtype}",
        medium.kernel_setup,
        "mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config",
        f"S=/sys/kernel/config/nvmet/subsystems/{GUEST_NQN['kernel']}",
        'mkdir "$S"; echo 1 > "$S/attr_allow_any_host"',
        f'mkdir "$S/namespaces/1"; echo {medium.kernel_device} > "$S/namespaces/1/device_path"',
        'echo 1 > "$S/namespaces/1/enable"',
        "P=/sys/kernel/config/nvmet/ports/1",
        f'mkdir "$P"; echo {trtype} > "$P/addr_trtype"; echo ipv4 > "$P/addr_adrfam"',
        f'echo {addr} > "$P/addr_traddr"; echo {GUEST_TARGETS["kernel"]} > "$P/addr_trsvcid"',
        'ln -s "$S" "$P/subsystems/"',
        f"cat > /tmp/nvmf.json <<'EOF'\n{json.dumps(cfg)}\nEOF",
        f'{_taskset("nvmf", cpus, SPLIT_TARGET_CPU)}"$PY" -m nvmf.cli.main serve '
        '--config /tmp/nvmf.json > "$OUT/serve.log" 2>&1 &',
        "SERVE=$!",
        _until_listening("serve.log"),
        *(line for t in ("raw", "native") if t in targets for line in _responder(t, cpus)),
        GUEST_AFFINITY,
        'nproc > "$OUT/nproc.txt"',
        f'cat {GUEST_CLOCKSOURCE} > "$OUT/clocksource.txt"',
        GUEST_SNAP,
        GUEST_FIND_DEV,
    ]
    for i, w in enumerate(WORKLOADS):
        for k, target in enumerate(order):
            tag = f"{target}_host_{i}_{k}"
            lines.append(
                f'{_taskset(target, cpus, SPLIT_CLIENT_CPU)}"$PY" -m nvmf.cli.main bench '
                f"-t {trtype} -a {addr} "
                f"-s {GUEST_TARGETS[target]} -n {GUEST_NQN[target]} "
                f"-i {jobs} --numjobs {jobs} --rw {w.rw} --bs {w.bs} --iodepth {w.iodepth} "
                f'--runtime {half:g} --size 256m --json > "$OUT/{tag}.json" '
                f'2> "$OUT/{tag}.err"'
            )
    for target in targets:
        lines += [
            f"nvme connect -t {trtype} -a {addr} -s {GUEST_TARGETS[target]} "
            f"-n {GUEST_NQN[target]} -i {jobs} "
            f'> "$OUT/{target}_connect.txt" 2>&1',
        ]
    lines += ["sleep 2", '(nvme list; ls -l /sys/block/) > "$OUT/list.txt" 2>&1']
    for target in targets:
        var = target.upper()
        lines.append(
            f'{var}=$(find_dev {GUEST_NQN[target]}); echo "${var}" > "$OUT/{target}_dev.txt"'
        )
    for i, w in enumerate(WORKLOADS):
        for k, target in enumerate(order):
            tag = f"{target}_fio_{i}_{k}"
            dev = "$" + target.upper()
            pids = GUEST_PIDS[target]
            pin = f" --cpus_allowed={SPLIT_CLIENT_CPU}" if _split(target, cpus) else ""
            lines += [
                f'snap {tag}.cpu0 "{pids}"',
                f'[ -n "{dev}" ] && fio --name={tag} --filename=/dev/{dev} --ioengine=libaio '
                f"--direct=1 --rw={w.rw} --bs={w.bs} --iodepth={w.iodepth} --numjobs={jobs} "
                f"--group_reporting --size=256m --runtime={half:g} --time_based{pin} "
                f'--output-format=json > "$OUT/{tag}.json" 2> "$OUT/{tag}.err"',
                f'snap {tag}.cpu1 "{pids}"',
            ]
    for target in targets:
        lines.append(
            f'nvme disconnect -n {GUEST_NQN[target]} > "$OUT/{target}_disconnect.txt" 2>&1'
        )
    lines += [f"kill {GUEST_PIDS[t]}" for t in ("raw", "native") if t in targets]
    lines += [
        "kill $SERVE; wait $SERVE",
        # the kernel target and its device go too: a boot may run other scripts after this one
        f'rm -f "$P/subsystems/{GUEST_NQN["kernel"]}"; rmdir "$P" "$S/namespaces/1" "$S"',
        f"rmmod {medium.kernel_label}",
        'echo done > "$OUT/done.txt"',
    ]
    return "\n".join(lines)


def _from_nvmf_json(path: Path, w: Workload) -> Measurement | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    d = data["write" if w.write else "read"]
    if not d:
        return None
    return Measurement(d["iops"], d["mb_s"], d["lat_us"]["p50"], d["lat_us"]["p99"])


def _from_fio_json(path: Path, w: Workload) -> Measurement | None:
    try:
        d = fio_side(path.read_text(), w.write)
    except OSError:
        return None
    if d is None:
        return None
    pct = d["clat_ns"].get("percentile", {})
    return Measurement(
        d["iops"],
        d["bw_bytes"] / 1e6,
        pct.get("50.000000", 0) / 1000,
        pct.get("99.000000", 0) / 1000,
    )


def combine_halves(halves: list[Measurement | None]) -> Measurement | None:
    """A target's runs of one workload (equal lengths) as one: IOPS and bandwidth averaged,
    latency percentiles averaged (an approximation); None if any run failed, so that a ratio
    is never taken over half a measurement."""
    if not halves or any(m is None for m in halves):
        return None
    ok = [m for m in halves if m is not None]
    n = len(ok)
    return Measurement(
        sum(m.iops for m in ok) / n,
        sum(m.mb_s for m in ok) / n,
        sum(m.p50_us for m in ok) / n,
        sum(m.p99_us for m in ok) / n,
    )


def _halves(target: str, trtype: str, native: bool = False) -> list[int]:
    """The positions in :func:`guest_order` at which ``target`` runs each workload."""
    return [k for k, t in enumerate(guest_order(trtype, native)) if t == target]


def read_guest(
    out: Path, trtype: str = "tcp", native: bool = False
) -> dict[str, list[Measurement | None]]:
    """The guest run's result files in ``out``, per target and client, each workload's halves
    (:func:`guest_order`) combined."""
    table: dict[str, list[Measurement | None]] = {}
    for target in guest_targets(trtype, native):
        runs = _halves(target, trtype, native)
        for client, parse in (("host", _from_nvmf_json), ("fio", _from_fio_json)):
            table[f"{target}/{client}"] = [
                combine_halves([parse(out / f"{target}_{client}_{i}_{k}.json", w) for k in runs])
                for i, w in enumerate(WORKLOADS)
            ]
    return table


@dataclass(frozen=True)
class GuestCpu:
    """CPU time per I/O of a target's fio runs in the guest, in microseconds: the busy time of
    every guest CPU (fio, the kernel host, the target, softirqs), and of the target's own
    processes (None for the kernel target, which has none); and how busy the busiest guest CPU
    was, in percent of the runs' time: with one I/O queue the kernel host's ``io_work``, its
    softirqs and a target all run on the queue's CPU, which saturates while the other idles."""

    guest_us: float
    target_us: float | None
    busiest_pct: float = float("nan")


@dataclass(frozen=True)
class Snapshot:
    """A ``snap`` file: busy and total seconds of each guest CPU (busy: all but idle and
    iowait), and CPU seconds by PID (:func:`procstat.parse_stat`).  USER_HZ is the guest's as
    the host's."""

    #: ``cpu0``, ``cpu1``, ... -> (busy, total) seconds since boot.
    cpus: dict[str, tuple[float, float]]
    by_pid: dict[int, float]

    @property
    def busy(self) -> float:
        """Busy seconds of every guest CPU together."""
        return sum(busy for busy, _ in self.cpus.values())


def _snapshot(path: Path) -> Snapshot:
    cpus: dict[str, tuple[float, float]] = {}
    by_pid: dict[int, float] = {}
    for line in path.read_text().splitlines():
        if line.startswith("cpu"):
            name, *fields = line.split()
            if name == "cpu":
                continue  # the sum of the cpuN lines
            ticks = [int(x) for x in fields]
            total = sum(ticks)
            cpus[name] = ((total - ticks[3] - ticks[4]) * procstat.TICK, total * procstat.TICK)
        else:
            by_pid[int(line.split(maxsplit=1)[0])] = procstat.parse_stat(line)[2]
    return Snapshot(cpus, by_pid)


def _guest_cpu(out: Path, tags: list[str], w: Workload, own: bool) -> GuestCpu | None:
    """The runs ``tags`` of one target and workload as one :class:`GuestCpu` (None if a run
    left no snapshot or no I/O count)."""
    busy = target = 0.0
    ios = 0
    #: each guest CPU's busy and total seconds over the runs
    cpus: dict[str, list[float]] = {}
    try:
        for tag in tags:
            side = fio_side((out / f"{tag}.json").read_text(), w.write)
            if side is None:
                return None
            s0, s1 = _snapshot(out / f"{tag}.cpu0"), _snapshot(out / f"{tag}.cpu1")
            busy += s1.busy - s0.busy
            target += sum(
                s1.by_pid[pid] - s0.by_pid[pid] for pid in s0.by_pid.keys() & s1.by_pid.keys()
            )
            for name in s0.cpus.keys() & s1.cpus.keys():
                acc = cpus.setdefault(name, [0.0, 0.0])
                acc[0] += s1.cpus[name][0] - s0.cpus[name][0]
                acc[1] += s1.cpus[name][1] - s0.cpus[name][1]
            ios += side["total_ios"]
    except (OSError, ValueError, IndexError, KeyError):
        return None
    if not ios:
        return None
    per_io = 1e6 / ios
    shares = [100 * b / t for b, t in cpus.values() if t > 0]
    return GuestCpu(
        busy * per_io, target * per_io if own else None, max(shares, default=float("nan"))
    )


def read_guest_cpu(
    out: Path, trtype: str = "tcp", native: bool = False
) -> dict[str, list[GuestCpu | None]]:
    """CPU per I/O of each target's fio runs (:func:`guest_order`'s halves together)."""
    return {
        target: [
            _guest_cpu(
                out,
                [f"{target}_fio_{i}_{k}" for k in _halves(target, trtype, native)],
                w,
                own=bool(GUEST_PIDS[target]),
            )
            for i, w in enumerate(WORKLOADS)
        ]
        for target in guest_targets(trtype, native)
    }


@dataclass
class GuestRun:
    """What one guest boot of (c) measured on one fabric."""

    #: ``target/client`` -> each workload's :class:`Measurement` (:func:`read_guest`).
    table: dict[str, list[Measurement | None]]
    #: target -> each workload's CPU per I/O under fio (:func:`read_guest_cpu`).
    cpu: dict[str, list[GuestCpu | None]]
    #: The guest kernel's clocksource (``tsc``, ``hpet``, ...): see :data:`GUEST_CLOCKSOURCE`.
    clocksource: str
    #: What the targets served: a key of :data:`GUEST_MEDIA`.
    media: str = "null"
    #: Where the Python targets and their clients ran: one of :data:`GUEST_CPUS`.
    cpus: str = "shared"

    @property
    def native(self) -> bool:
        """Whether the raw responder with its I/O queues in C was a target (``--guest-native``):
        :attr:`cpu` has a row for each target measured."""
        return "native" in self.cpu


def measure_guest(
    runtime: float,
    jobs: int,
    trtype: str = "tcp",
    media: str = "null",
    cpus: str = "shared",
    native: bool = False,
) -> GuestRun:
    from tests.guest.harness import run_in_guest

    script = guest_script(runtime, jobs, trtype, media, cpus, native)
    result = run_in_guest(f"bench-guest-{trtype}-{media}-{cpus}", script, timeout=3000)
    out = result.out
    if not (out / "done.txt").exists():
        raise RuntimeError(
            f"guest bench did not finish (rc {result.returncode}): "
            f"{result.read('stderr.txt')[-2000:]}"
        )
    return GuestRun(
        read_guest(out, trtype, native),
        read_guest_cpu(out, trtype, native),
        result.read("clocksource.txt").strip() or "unknown",
        media,
        cpus,
    )


# -- report ------------------------------------------------------------------------------------


def _cell(m: Measurement | None) -> str:
    if m is None:
        return f"{'(failed)':>30}"
    return f"{m.iops:8.0f} {m.mb_s:8.1f} {m.p50_us:6.0f} {m.p99_us:6.0f}"


def _ratio(a: Measurement | None, b: Measurement | None) -> str:
    if a is None or b is None or not b.iops:
        return "     -"
    return f"{a.iops / b.iops:6.2f}"


def print_table(
    title: str,
    left: str,
    right: str,
    rows: list[tuple[str, Measurement | None, Measurement | None]],
) -> None:
    print(f"\n{title}")
    head = f"{'IOPS':>8} {'MB/s':>8} {'p50us':>6} {'p99us':>6}"
    print(f"{'':20} | {left:^30} | {right:^30} |")
    print(f"{'workload':20} | {head} | {head} | {'ratio':>6}")
    print("-" * 100)
    for name, a, b in rows:
        print(f"{name:20} | {_cell(a)} | {_cell(b)} | {_ratio(b, a)}")


def _us(x: float) -> str:
    return f"{x:7.1f}" if math.isfinite(x) else f"{'-':>7}"


def print_cpu(cmp: CpuComparison, nvmf_name: str) -> None:
    """(1): IOPS, target CPU load and CPU per I/O of both targets, the ratio against the goal."""
    print(
        "\n(1) target CPU per I/O: raw NVMe/TCP responder vs nvmf serve (RAM namespace), both "
        "driven by our host in its own process; CPU = utime+stime of the target process and "
        "all its children, over the I/O phase"
    )
    head = f"{'IOPS':>8} {'CPUs':>5} {'us/IO':>7} {'host':>5}"
    print(f"{'':20} | {'raw responder':^28} | {nvmf_name:^28} |")
    print(f"{'workload':20} | {head} | {head} | {'ratio':>6} {'goal':>5}")
    print("-" * 104)
    for w, a, b in zip(WORKLOADS, cmp.raw, cmp.nvmf, strict=True):
        cells = []
        for r in (a, b):
            if r.error:
                cells.append(f"{'(failed)':>28}")
            else:
                cells.append(
                    f"{r.iops:8.0f} {r.cpu_load:5.2f} {_us(r.us_per_io)} {r.client_load:5.2f}"
                )
        ratio = b.us_per_io / a.us_per_io if a.ios and b.ios else float("nan")
        verdict = _verdict(ratio, w) if math.isfinite(ratio) else ""
        print(f"{w.name:20} | {cells[0]} | {cells[1]} | {ratio:6.2f} {verdict}")
    for w, a, b in zip(WORKLOADS, cmp.raw, cmp.nvmf, strict=True):
        for name, r in (("raw responder", a), (nvmf_name, b)):
            if r.error:
                print(f"  {w.name}, {name}: {r.error}")
    print(
        "  (CPUs: the target's CPU seconds per second of run; host: the client process's; "
        "ratio: nvmf us/IO / raw us/IO)"
    )


def print_control_share(cmp: CpuComparison, workers: int | None, supported: bool) -> None:
    """(2): the ``nvmf serve`` process's own CPU against its descendants'."""
    print("\n(2) control plane share of the target's CPU (nvmf serve process vs its children)")
    if not supported:
        print(
            "  nvmf serve has no --workers option yet (its --help does not mention it): the "
            "target is one process, control and data plane together; nothing to split"
        )
        return
    print(f"{'workload':20} | {'parent s':>8} {'children s':>10} | {'control plane':>13}")
    print("-" * 60)
    for w, r in zip(WORKLOADS, cmp.nvmf, strict=True):
        share = r.cpu_parent / r.cpu * 100 if r.cpu else float("nan")
        print(f"{w.name:20} | {r.cpu_parent:8.2f} {r.cpu_children:10.2f} | {share:12.1f}%")
    if not any(r.cpu_children for r in cmp.nvmf):
        how = f"--workers {workers}" if workers is not None else "no --workers"
        print(f"  (nvmf serve with {how} used no CPU in child processes)")


def print_scaling(scaling: list[tuple[int, CpuRun]] | None, most: int) -> None:
    """(3): IOPS with 1..N workers, speed-up against one."""
    print(
        f"\n(3) scaling: {SCALING.name}, nvmf serve --workers n, n client processes with one "
        "I/O queue each"
    )
    if scaling is None:
        print(f"  nvmf serve has no --workers option yet: skipped (would run 1..{most} workers)")
        return
    print(f"{'workers':>7} | {'IOPS':>8} {'speed-up':>8} | {'CPUs':>5} {'us/IO':>7}")
    print("-" * 46)
    base = scaling[0][1].iops if scaling and scaling[0][1].iops else float("nan")
    for n, r in scaling:
        if r.error:
            print(f"{n:7} | (failed: {r.error})")
            continue
        print(f"{n:7} | {r.iops:8.0f} {r.iops / base:8.2f} | {r.cpu_load:5.2f} {_us(r.us_per_io)}")


def print_guest(guest: dict[str, GuestRun]) -> None:
    """(c): per fabric and client, the kernel target against ours, side by side; on NVMe/TCP
    also against the raw responder, what the least Python reaches in the same boot; then the
    CPU each target's fio runs cost the guest per I/O."""
    for fabric, run in guest.items():
        table = run.table
        kernel = f"nvmet-{fabric}"
        medium = GUEST_MEDIA[run.media]
        targets = guest_targets(fabric, run.native)
        order = " ".join("ABCD"[targets.index(t)] for t in guest_order(fabric, run.native))
        for client in ("host", "fio"):
            who = "nvmf bench (our host)" if client == "host" else "fio on the kernel host"
            where = (
                f"(c) guest, Linux 6.1 under TCG (QEMU max CPU without ERMS), NVMe/"
                f"{fabric.upper()}, client: {who}, runs in the order {order}, "
                f"{_cpus_label(run.cpus)}"
            )
            rows = zip(WORKLOADS, table[f"kernel/{client}"], table[f"nvmf/{client}"], strict=True)
            print_table(
                f"{where}; kernel {kernel} ({medium.kernel_label}) vs nvmf serve "
                f"({medium.nvmf_kind})",
                "kernel target",
                "nvmf target",
                [(w.name, a, b) for w, a, b in rows],
            )
            if f"raw/{client}" not in table:
                continue
            rows = zip(WORKLOADS, table[f"raw/{client}"], table[f"nvmf/{client}"], strict=True)
            print_table(
                f"{where}; the raw responder (bench/rawnvme.py, RAM) vs nvmf serve "
                f"({medium.nvmf_kind}): "
                "ratio above 1, ours does better than the least Python answering the same "
                "PDUs",
                "raw responder",
                "nvmf target",
                [(w.name, a, b) for w, a, b in rows],
            )
            if f"native/{client}" not in table:
                continue
            rows = zip(WORKLOADS, table[f"kernel/{client}"], table[f"native/{client}"], strict=True)
            print_table(
                f"{where}; kernel {kernel} ({medium.kernel_label}) vs the raw responder with its "
                "I/O queues in C (bench/rawnvme.py --native, RAM): what a target in user space "
                "reaches with no Python on its data path, to read beside nvmf's ratio above",
                "kernel target",
                "native responder",
                [(w.name, a, b) for w, a, b in rows],
            )
        print_guest_cpu(fabric, run)


def _cpus_label(cpus: str) -> str:
    """What ``--guest-cpus cpus`` did, for the tables' titles."""
    if cpus == "split":
        return (
            f"our target and the raw responder on CPU {SPLIT_TARGET_CPU}, their clients on CPU "
            f"{SPLIT_CLIENT_CPU}, the kernel's where the scheduler puts them"
        )
    return "every target and client where the scheduler puts them"


def print_guest_cpu(fabric: str, run: GuestRun) -> None:
    """The guest CPU per I/O of each target under fio, with the target's own share and the
    busiest CPU's load; then, with the raw responder in the boot, issue 7's CPU goal (1) as an
    independent client measures it: our target's own CPU per I/O against the raw responder's."""
    targets = list(run.cpu)
    raw = "raw" in run.cpu and "nvmf" in run.cpu
    print(
        f"\n(c) guest CPU per I/O under fio, NVMe/{fabric.upper()}, clocksource "
        f"{run.clocksource}, {_cpus_label(run.cpus)}: every guest CPU's busy time (fio, "
        "kernel host, target), in parentheses the target's own processes, microseconds; "
        "then the busiest guest CPU's load"
        + ("; ratio: nvmf's own us/IO / the raw responder's" if raw else "")
    )
    width = 21
    print(
        f"{'workload':20} | "
        + " | ".join(f"{t:^{width}}" for t in targets)
        + (f" | {'ratio':>6} {'goal':>5}" if raw else "")
    )
    print("-" * (22 + (width + 3) * len(targets) + (18 if raw else 0)))
    for i, w in enumerate(WORKLOADS):
        cells = []
        for t in targets:
            c = run.cpu[t][i]
            if c is None:
                cells.append(f"{'-':^{width}}")
                continue
            own = f"({c.target_us:5.0f})" if c.target_us is not None else " " * 7
            cells.append(f"{c.guest_us:7.0f} {own} {c.busiest_pct:4.0f}%")
        line = f"{w.name:20} | " + " | ".join(cells)
        if raw:
            line += f" | {_own_ratio(run.cpu['nvmf'][i], run.cpu['raw'][i], w)}"
        print(line)


def _own_ratio(nvmf: GuestCpu | None, raw: GuestCpu | None, w: Workload) -> str:
    """nvmf's own CPU per I/O over the raw responder's, and the verdict against CPU_GOAL."""
    if nvmf is None or raw is None or not nvmf.target_us or not raw.target_us:
        return f"{'-':>6}"
    ratio = nvmf.target_us / raw.target_us
    return f"{ratio:6.2f} {_verdict(ratio, w)}".rstrip()


def _verdict(ratio: float, w: Workload) -> str:
    """``ratio`` (nvmf's CPU per I/O over the raw responder's) against :data:`CPU_GOAL` for
    ``w``'s block size: ``<=GOAL met`` or ``<=GOAL NOT met``, empty without a goal."""
    goal = CPU_GOAL.get(w.bs)
    if goal is None:
        return ""
    return f"<={goal:g} " + ("met" if ratio <= goal else "NOT met")


def _run_json(r: CpuRun) -> dict[str, Any]:
    out = asdict(r)
    out["us_per_io"] = r.us_per_io if r.ios else None
    out["cpu_load"] = r.cpu_load
    return out


def _guest_json(guest: dict[str, GuestRun]) -> dict[str, Any]:
    return {
        fabric: {
            **{k: [m and asdict(m) for m in v] for k, v in run.table.items()},
            "cpu": {t: [c and asdict(c) for c in v] for t, v in run.cpu.items()},
            "clocksource": run.clocksource,
            "media": run.media,
            "cpus": run.cpus,
            "native": run.native,
        }
        for fabric, run in guest.items()
    }


def _placement_json(placements: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if placements is None else placement.as_json(placements)


def _check_plot_deps() -> str | None:
    """Why ``--plot`` cannot work (matplotlib missing), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            "--plot needs matplotlib, which is in the dev extra: scripts/setup dev "
            "(or .venv/bin/pip install matplotlib)"
        )
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", type=float, default=3.0, help="seconds per measurement (3)")
    parser.add_argument("--numjobs", type=int, default=1, help="jobs / I/O queues (1)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="pass --workers N to nvmf serve in (1)/(2); scale 1..N in (3) (default: CPU count)",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="draw IOPS vs queue depth and workers")
    parser.add_argument(
        "--sweep-runtime", type=float, default=1.0, help="seconds per queue depth of --plot (1)"
    )
    parser.add_argument(
        "--guest",
        nargs="?",
        const="tcp",
        choices=["tcp", "rdma", "cmb", "all"],
        help="also compare in the Linux guest, over NVMe/TCP (the default), NVMe/RDMA on "
        "Soft-RoCE, the CMB placements of an nvme_pci namespace (cmb), or all three",
    )
    parser.add_argument(
        "--guest-media",
        choices=sorted(GUEST_MEDIA),
        help="what the guest's targets serve: null_blk vs null (the default), or brd vs ram, "
        "media that store the data (with --guest)",
    )
    parser.add_argument(
        "--guest-only", action="store_true", help="only the guest comparison (with --guest)"
    )
    parser.add_argument(
        "--guest-cpus",
        choices=GUEST_CPUS,
        help="where the guest runs our target and the raw responder: where the scheduler puts "
        f"them (shared, the default), or on CPU {SPLIT_TARGET_CPU} with their clients on CPU "
        f"{SPLIT_CLIENT_CPU} (split); the kernel target runs as the scheduler places it either "
        "way (with --guest tcp or rdma)",
    )
    parser.add_argument(
        "--guest-native",
        action="store_true",
        help="also measure, over NVMe/TCP in the guest, the raw responder with its I/O queues "
        "in C (bench/rawnvme.py --native, built with the system's C compiler)",
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of tables")
    args = parser.parse_args()
    if args.workers is not None and args.workers < 1:
        parser.error("--workers: at least 1")
    if args.plot and (why := _check_plot_deps()):
        print(f"bench: {why}", file=sys.stderr)
        return 2
    started = time.monotonic()
    supported = serve_supports_workers()
    workers = args.workers if supported else None
    most = args.workers or os.cpu_count() or 1
    if args.guest_only and not args.guest:
        parser.error("--guest-only needs --guest")
    if args.guest_media and not args.guest:
        parser.error("--guest-media needs --guest")
    if args.guest_cpus and not args.guest:
        parser.error("--guest-cpus needs --guest")
    if args.guest_native and args.guest not in ("tcp", "all"):
        parser.error("--guest-native needs --guest tcp (or all): the raw responder is NVMe/TCP")
    if args.guest_native:
        try:
            rawnvme.native_library()  # built here, before the boot: the guest runs it as is
        except rawnvme.NativeUnavailable as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
    chosen = (
        [] if not args.guest else ["tcp", "rdma", "cmb"] if args.guest == "all" else [args.guest]
    )
    fabrics = [f for f in chosen if f != "cmb"]
    media = args.guest_media or "null"
    cpus = args.guest_cpus or "shared"
    guest = {
        f: measure_guest(args.runtime, args.numjobs, f, media, cpus, args.guest_native)
        for f in fabrics
    }
    placements = placement.measure(args.runtime) if "cmb" in chosen else None
    if args.guest_only:
        if args.json:
            print(
                json.dumps(
                    {"guest": _guest_json(guest), "placement": _placement_json(placements)},
                    indent=2,
                )
            )
            return 0
        print_guest(guest)
        if placements is not None:
            print(placement.report(placements))
        print(f"\n({time.monotonic() - started:.0f} s)")
        return 0
    raw = [measure_raw(w, args.runtime, args.numjobs) for w in WORKLOADS]
    cmp = compare_cpu(
        args.runtime, args.numjobs, workers, args.sweep_runtime if args.plot else None
    )
    nvmf = [Measurement.of(r) for r in cmp.nvmf]
    scaling = measure_scaling(most, args.runtime) if supported else None
    engine_cmp = engines.compare(WORKLOADS, args.runtime, args.numjobs, workers)
    nvmf_name = "nvmf serve" + (f" --workers {workers}" if workers is not None else "")
    if args.plot:
        import plot

        plot.draw(
            args.plot,
            {name: [(qd, r.iops) for qd, r in runs] for name, runs in cmp.sweep.items()},
            None if scaling is None else [(n, r.iops) for n, r in scaling],
            f"4 KiB random reads, {os.cpu_count()} CPUs, {args.numjobs} queue(s) per client",
        )
    if args.json:
        report: dict[str, Any] = {
            "runtime": args.runtime,
            "numjobs": args.numjobs,
            "workers": workers,
            "serve_has_workers": supported,
            "workloads": [asdict(w) for w in WORKLOADS],
            "raw_tcp": [asdict(m) for m in raw],
            "nvmf": [m and asdict(m) for m in nvmf],
            "cpu": {
                "raw_responder": [_run_json(r) for r in cmp.raw],
                "nvmf": [_run_json(r) for r in cmp.nvmf],
                "ratio": [
                    b.us_per_io / a.us_per_io if a.ios and b.ios else None
                    for a, b in zip(cmp.raw, cmp.nvmf, strict=True)
                ],
            },
            "scaling": None
            if scaling is None
            else [{"workers": n, **_run_json(r)} for n, r in scaling],
            "sweep": {
                name: [{"iodepth": qd, **_run_json(r)} for qd, r in runs]
                for name, runs in cmp.sweep.items()
            },
        }
        report["engines"] = {
            "skipped": engine_cmp.skipped,
            "threads": [_run_json(r) for r in engine_cmp.threads],
            "io_uring": [_run_json(r) for r in engine_cmp.io_uring],
        }
        if guest:
            report["guest"] = _guest_json(guest)
        if placements is not None:
            report["placement"] = _placement_json(placements)
        print(json.dumps(report, indent=2))
        return 0
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(
        f"nvmf bench suite: {args.runtime:g} s per measurement, {args.numjobs} job(s), "
        f"{os.cpu_count()} CPUs, {loop}; absolute numbers swing run to run: compare ratios"
    )
    if args.workers is not None and not supported:
        print(
            f"note: --workers {args.workers} not passed on: nvmf serve has no --workers option "
            "yet (its --help does not mention it)"
        )
    print_cpu(cmp, nvmf_name)
    print_table(
        "(a) raw loopback TCP ceiling vs nvmf host -> nvmf target (RAM namespace); "
        "ratio = right IOPS / left IOPS",
        "raw TCP, no NVMe",
        f"nvmf host -> {nvmf_name}"[:30],
        [(w.name, a, b) for w, a, b in zip(WORKLOADS, raw, nvmf, strict=True)],
    )
    print_control_share(cmp, workers, supported)
    print_scaling(scaling, most)
    print(engines.report(engine_cmp, nvmf_name))
    print_guest(guest)
    if placements is not None:
        print(placement.report(placements))
    if args.plot:
        print(f"\nplot: {args.plot}")
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
