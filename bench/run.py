"""The nvmf benchmark suite: one run, measurements side by side, ratios.

    .venv/bin/python bench/run.py [--runtime S] [--numjobs N] [--guest] [--json]

(a) **raw TCP**: the loopback ceiling for Python on this machine, the same request/response
    traffic as NVMe/TCP with no NVMe in it (:mod:`rawtcp`), same block size and depth;
(b) **nvmf**: ``nvmf serve`` (a RAM namespace) in a subprocess, driven by this project's host
    (:func:`nvmf.host.bench.run_bench`) from this process, on loopback;
(c) with ``--guest``: inside one Linux 6.1 guest boot, the kernel target (nvmet-tcp on null_blk)
    and ``nvmf serve`` (null media), each driven by the same two clients: ``nvmf bench`` (our
    host) and fio on the kernel host (``nvme connect``, libaio, O_DIRECT).  The guest runs under
    TCG emulation: only its ratios mean anything.

Workloads: 4 KiB random read and write at QD32, 128 KiB sequential read and write at QD8, each
``--runtime`` seconds (3).  Each prints IOPS, MB/s (10^6 bytes), p50 and p99 latency in
microseconds, and the ratio of nvmf to the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import rawtcp  # noqa: E402

from nvmf.host import connect  # noqa: E402
from nvmf.host.bench import BenchSpec, LatencySummary, run_bench  # noqa: E402
from nvmf.host.runtime import run as run_async  # noqa: E402

SUBNQN = "nqn.2024-01.io.nvmf:bench"
NS_BYTES = 256 << 20


@dataclass(frozen=True)
class Workload:
    name: str
    rw: str  # fio's --rw
    bs: int
    iodepth: int

    @property
    def write(self) -> bool:
        return "write" in self.rw


WORKLOADS = [
    Workload("4k randread QD32", "randread", 4096, 32),
    Workload("4k randwrite QD32", "randwrite", 4096, 32),
    Workload("128k seqread QD8", "read", 131072, 8),
    Workload("128k seqwrite QD8", "write", 131072, 8),
]


@dataclass
class Measurement:
    iops: float
    mb_s: float
    p50_us: float
    p99_us: float

    @classmethod
    def empty(cls) -> Measurement:
        return cls(0.0, 0.0, 0.0, 0.0)


# -- local: raw TCP and nvmf on loopback -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(argv: list[str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """A server subprocess, up once it printed a line containing ``ready``; stopped after."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if ready not in line:
            raise RuntimeError(f"{argv[2:4]} did not start: {line}{proc.stdout.read()}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_raw(w: Workload, runtime: float, jobs: int) -> Measurement:
    port = _free_port()
    with _process([sys.executable, str(HERE / "rawtcp.py"), str(port)], "listening"):
        res = run_async(
            rawtcp.run_client(
                port, write=w.write, bs=w.bs, depth=w.iodepth, jobs=jobs, runtime=runtime
            )
        )
    lat = LatencySummary.of(res.lat_ns)
    return Measurement(res.ios / res.elapsed, res.bytes / res.elapsed / 1e6, lat.p50, lat.p99)


def _target_config(port: int, kind: str, size: int) -> dict[str, Any]:
    return {
        "hosts": [],
        "ports": [
            {
                "portid": 1,
                "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                         "trsvcid": str(port), "treq": "not specified"},
                "subsystems": [SUBNQN],
            }
        ],
        "subsystems": [
            {
                "nqn": SUBNQN,
                "attr": {"allow_any_host": "1", "serial": "nvmfbench01", "model": "nvmf-bench"},
                "namespaces": [{"nsid": 1, "enable": 1, "nvmf": {"kind": kind, "size": size}}],
            }
        ],
    }  # fmt: skip


async def _nvmf_workloads(
    port: int, workloads: list[Workload], runtime: float, jobs: int
) -> list[Measurement]:
    out = []
    async with await connect("127.0.0.1", SUBNQN, trsvcid=port, nr_io_queues=jobs) as ctrl:
        for w in workloads:
            spec = BenchSpec(
                rw=w.rw, bs=w.bs, iodepth=w.iodepth, numjobs=jobs, runtime=runtime,
                size=NS_BYTES, seed=1,
            )  # fmt: skip
            result = await run_bench(ctrl, spec)
            if result.error:
                raise RuntimeError(f"{w.name}: {result.error}")
            d = result.write if w.write else result.read
            assert d is not None
            out.append(Measurement(d.iops, d.mb_s, d.lat_us.p50, d.lat_us.p99))
    return out


def measure_nvmf(workloads: list[Workload], runtime: float, jobs: int) -> list[Measurement]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "target.json"
        cfg.write_text(json.dumps(_target_config(port, "ram", NS_BYTES)))
        argv = [sys.executable, "-m", "nvmf.cli.main", "serve", "--config", str(cfg)]
        with _process(argv, "listening"):
            return run_async(_nvmf_workloads(port, workloads, runtime, jobs))


# -- guest: kernel target vs nvmf target, two clients --------------------------------------------

GUEST_TARGETS = {"kernel": 4420, "nvmf": 4421}


def guest_script(runtime: float, jobs: int) -> str:
    """One boot: both targets up, then every workload with both clients against both."""
    cfg = json.dumps(_target_config(GUEST_TARGETS["nvmf"], "null", 1 << 30))
    lines = [
        'exec 2>"$OUT/stderr.txt"',
        "set -x",
        f"NQN={SUBNQN}",
        "modprobe nvmet; modprobe nvmet-tcp; modprobe nvme-tcp",
        "modprobe null_blk nr_devices=1 gb=1 irqmode=0",
        "mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config",
        "S=/sys/kernel/config/nvmet/subsystems/$NQN",
        'mkdir "$S"; echo 1 > "$S/attr_allow_any_host"',
        'mkdir "$S/namespaces/1"; echo /dev/nullb0 > "$S/namespaces/1/device_path"',
        'echo 1 > "$S/namespaces/1/enable"',
        "P=/sys/kernel/config/nvmet/ports/1",
        'mkdir "$P"; echo tcp > "$P/addr_trtype"; echo ipv4 > "$P/addr_adrfam"',
        f'echo 127.0.0.1 > "$P/addr_traddr"; echo {GUEST_TARGETS["kernel"]} > "$P/addr_trsvcid"',
        'ln -s "$S" "$P/subsystems/$NQN"',
        f"cat > /tmp/nvmf.json <<'EOF'\n{cfg}\nEOF",
        '"$PY" -m nvmf.cli.main serve --config /tmp/nvmf.json > "$OUT/serve.log" 2>&1 &',
        "SERVE=$!",
        'for _ in $(seq 240); do grep -q listening "$OUT/serve.log" && break; sleep 0.5; done',
        'nproc > "$OUT/nproc.txt"',
        # the namespace's block device: nvmeXn1 whose controller or subsystem has our NQN
        # (a multipath head's device is the subsystem; its hidden nvmeXcYn1 paths are skipped)
        "find_dev() { for b in /sys/block/nvme*; do n=$(basename $b); "
        '[[ $n =~ ^nvme[0-9]+n1$ ]] && [ "$(cat $b/device/subsysnqn 2>/dev/null)" = "$NQN" ] '
        "&& echo $n; done | head -1; }",
    ]
    for target, port in GUEST_TARGETS.items():
        for i, w in enumerate(WORKLOADS):
            tag = f"{target}_host_{i}"
            lines.append(
                f'"$PY" -m nvmf.cli.main bench -a 127.0.0.1 -s {port} -n $NQN -i {jobs} '
                f"--numjobs {jobs} --rw {w.rw} --bs {w.bs} --iodepth {w.iodepth} "
                f'--runtime {runtime:g} --size 256m --json > "$OUT/{tag}.json" '
                f'2> "$OUT/{tag}.err"'
            )
        lines += [
            f"nvme connect -t tcp -a 127.0.0.1 -s {port} -n $NQN -i {jobs} "
            f'> "$OUT/{target}_connect.txt" 2>&1',
            "sleep 2",
            f'DEV=$(find_dev); echo "$DEV" > "$OUT/{target}_dev.txt"',
            f'(nvme list; ls -l /sys/block/) > "$OUT/{target}_list.txt" 2>&1',
        ]
        for i, w in enumerate(WORKLOADS):
            tag = f"{target}_fio_{i}"
            lines.append(
                f'[ -n "$DEV" ] && fio --name={tag} --filename=/dev/$DEV --ioengine=libaio '
                f"--direct=1 --rw={w.rw} --bs={w.bs} --iodepth={w.iodepth} --numjobs={jobs} "
                f"--group_reporting --size=256m --runtime={runtime:g} --time_based "
                f'--output-format=json > "$OUT/{tag}.json" 2> "$OUT/{tag}.err"'
            )
        lines.append(f'nvme disconnect -n $NQN > "$OUT/{target}_disconnect.txt" 2>&1')
    lines += ["kill $SERVE; wait $SERVE", 'echo done > "$OUT/done.txt"']
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
        text = path.read_text()
        data = json.loads(text[text.index("{") :])
    except (OSError, ValueError):
        return None
    job = data["jobs"][0]
    if job.get("error"):
        return None
    d = job["write" if w.write else "read"]
    pct = d["clat_ns"].get("percentile", {})
    return Measurement(
        d["iops"],
        d["bw_bytes"] / 1e6,
        pct.get("50.000000", 0) / 1000,
        pct.get("99.000000", 0) / 1000,
    )


def measure_guest(runtime: float, jobs: int) -> dict[str, list[Measurement | None]]:
    from tests.guest.harness import run_in_guest

    result = run_in_guest("bench-guest", guest_script(runtime, jobs), timeout=3000)
    out = result.out
    if not (out / "done.txt").exists():
        raise RuntimeError(
            f"guest bench did not finish (rc {result.returncode}): "
            f"{result.read('stderr.txt')[-2000:]}"
        )
    table: dict[str, list[Measurement | None]] = {}
    for target in GUEST_TARGETS:
        table[f"{target}/host"] = [
            _from_nvmf_json(out / f"{target}_host_{i}.json", w) for i, w in enumerate(WORKLOADS)
        ]
        table[f"{target}/fio"] = [
            _from_fio_json(out / f"{target}_fio_{i}.json", w) for i, w in enumerate(WORKLOADS)
        ]
    return table


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", type=float, default=3.0, help="seconds per measurement (3)")
    parser.add_argument("--numjobs", type=int, default=1, help="jobs / I/O queues (1)")
    parser.add_argument("--guest", action="store_true", help="also compare in the Linux guest")
    parser.add_argument("--json", action="store_true", help="JSON instead of tables")
    args = parser.parse_args()
    started = time.monotonic()
    raw = [measure_raw(w, args.runtime, args.numjobs) for w in WORKLOADS]
    nvmf = measure_nvmf(WORKLOADS, args.runtime, args.numjobs)
    guest = measure_guest(args.runtime, args.numjobs) if args.guest else None
    if args.json:
        report: dict[str, Any] = {
            "runtime": args.runtime,
            "numjobs": args.numjobs,
            "workloads": [asdict(w) for w in WORKLOADS],
            "raw_tcp": [asdict(m) for m in raw],
            "nvmf": [asdict(m) for m in nvmf],
        }
        if guest is not None:
            report["guest"] = {k: [m and asdict(m) for m in v] for k, v in guest.items()}
        print(json.dumps(report, indent=2))
        return 0
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(
        f"nvmf bench suite: {args.runtime:g} s per measurement, {args.numjobs} job(s), "
        f"{os.cpu_count()} CPUs, {loop}; ratio = right IOPS / left IOPS"
    )
    print_table(
        "(a) raw loopback TCP ceiling vs (b) nvmf host -> nvmf target (RAM namespace)",
        "raw TCP, no NVMe",
        "nvmf host -> nvmf serve",
        [(w.name, a, b) for w, a, b in zip(WORKLOADS, raw, nvmf, strict=True)],
    )
    if guest is not None:
        for client in ("host", "fio"):
            who = "nvmf bench (our host)" if client == "host" else "fio on the kernel host"
            print_table(
                f"(c) guest, Linux 6.1 under TCG, client: {who}; kernel nvmet-tcp (null_blk) "
                "vs nvmf serve (null)",
                "kernel target",
                "nvmf target",
                [
                    (w.name, a, b)
                    for w, a, b in zip(
                        WORKLOADS, guest[f"kernel/{client}"], guest[f"nvmf/{client}"], strict=True
                    )
                ],
            )
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
