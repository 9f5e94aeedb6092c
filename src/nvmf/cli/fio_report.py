"""``nvmf bench``'s output the way fio prints it, for people who read fio's.

* :func:`progress_line`: fio's status line (``Jobs: 1 (f=1): [r(1)][40.0%][r=…][r=… IOPS][eta
  00m:03s]``), with the elapsed time added.
* :func:`text_report`: fio's normal output: per direction ``IOPS=, BW=``, ``clat`` min/max/avg/
  stdev, the ``clat percentiles`` grid; the ``lat (usec)``/``lat (msec)`` distribution and the
  ``cpu`` line (``usr=, sys=, ctx=, majf=, minf=``).
* :func:`fio_json`: fio's ``--output-format=json`` layout (``jobs[0].read.clat_ns.percentile``,
  ``usr_cpu``, ``latency_us`` …) for one group-reported job, with what fio has no key for
  (queues, warnings, verify, IOPS over time) under ``"nvmf"``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from nvmf import __version__
from nvmf.host.bench import (
    BenchResult,
    BenchSpec,
    DirectionResult,
    LatencySummary,
    Progress,
)

#: fio's job name for the one (group-reported) job nvmf bench runs.
JOB_NAME = "nvmf-bench"


def format_size(n: int) -> str:
    """4096 -> '4KiB' (fio's style)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def si(x: float) -> str:
    """fio's short numbers: 31.5k, 1.23M."""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _mins(secs: float) -> str:
    whole = max(0, round(secs))
    return f"{whole // 60:02d}m:{whole % 60:02d}s"


def _rate(mb_s: float) -> str:
    mib = mb_s * 1e6 / (1 << 20)
    return f"{mib:.1f}MiB/s" if mib < 1024 else f"{mib / 1024:.2f}GiB/s"


def _mode(spec: BenchSpec) -> str:
    """fio's run-state letter per job: R/r sequential/random read, W/w write, m mixed."""
    return {"read": "R", "randread": "r", "write": "W", "randwrite": "w"}.get(spec.rw, "m")


def progress_line(p: Progress, spec: BenchSpec) -> str:
    """fio's status line for sample ``p``."""
    pct = 100 * min(1.0, p.elapsed / p.runtime) if p.runtime else 0.0
    bw, iops = [], []
    if spec.reads:
        bw.append(f"r={_rate(p.read_mb_s)}")
        iops.append(f"r={si(p.read_iops)}")
    if spec.writes:
        bw.append(f"w={_rate(p.write_mb_s)}")
        iops.append(f"w={si(p.write_iops)}")
    return (
        f"Jobs: {spec.numjobs} (f={spec.numjobs}): [{_mode(spec)}({spec.numjobs})][{pct:.1f}%]"
        f"[elapsed {_mins(p.elapsed)}][{','.join(bw)}][{','.join(iops)} IOPS]"
        f"[eta {_mins(p.eta)}]"
    )


# -- normal output ----------------------------------------------------------------------------


def _percentile_grid(lat: LatencySummary) -> list[str]:
    """fio's ``clat percentiles (usec)`` block: four ``NN.NNth=[value]`` per row."""
    cells = [f"{q:5.2f}th=[{round(v):5d}]" for q, v in lat.percentiles.items()]
    rows = [cells[i : i + 4] for i in range(0, len(cells), 4)]
    return [
        "     | " + ", ".join(row) + ("," if i < len(rows) - 1 else "")
        for i, row in enumerate(rows)
    ]


def _direction_lines(name: str, d: DirectionResult, elapsed: float) -> list[str]:
    lat = d.lat_us
    total = format_size(d.bytes) if d.bytes % 1024 == 0 else f"{d.bytes}B"
    lines = [
        f"  {name}: IOPS={si(d.iops)}, BW={d.mib_s:.1f}MiB/s ({d.mb_s:.1f}MB/s)"
        f"({total}/{round(elapsed * 1000)}msec), ios={d.ios}",
        f"    clat (usec): min={lat.min:.0f}, max={lat.max:.0f}, avg={lat.mean:.2f}, "
        f"stdev={lat.stdev:.2f}",
    ]
    if lat.percentiles:
        lines.append("    clat percentiles (usec):")
        lines += _percentile_grid(lat)
    return lines


def _distribution_lines(latency: dict[str, dict[str, float]]) -> list[str]:
    """fio's ``lat (nsec/usec/msec)`` lines: buckets holding at least 0.01% of the I/Os."""
    lines = []
    for unit, label in (("ns", "nsec"), ("us", "usec"), ("ms", "msec")):
        cells = [
            f"{bound}={pct:.2f}%" for bound, pct in latency.get(unit, {}).items() if pct >= 0.01
        ]
        if cells:
            lines.append(f"  lat ({label})   : {', '.join(cells)}")
    return lines


def text_report(result: BenchResult) -> str:
    """fio's normal output for one group-reported job."""
    s = result.spec
    size = "all" if s.size is None else format_size(s.size)
    lines = [
        f"{JOB_NAME}: (g=0): rw={s.rw}, bs={format_size(s.bs)}, iodepth={s.iodepth}, "
        f"numjobs={s.numjobs}, size={size}, nsid={s.nsid}"
        + (f", rwmixread={s.rwmixread}" if s.rw == "randrw" else ""),
        f"{JOB_NAME}: (groupid=0, jobs={s.numjobs}): err={0 if result.error is None else 1}: "
        f"runtime={result.elapsed:.2f}s, io_queues={result.io_queues}"
        + (" (interrupted)" if result.interrupted else ""),
    ]
    for name, d in (("read", result.read), ("write", result.write)):
        if d is not None:
            lines += _direction_lines(name, d, result.elapsed)
    lines += _distribution_lines(result.latency)
    if result.cpu is not None:
        c = result.cpu
        lines.append(
            f"  cpu          : usr={c.usr:.2f}%, sys={c.sys:.2f}%, ctx={c.ctx}, majf={c.majf}, "
            f"minf={c.minf}"
        )
    if result.verify is not None:
        v = result.verify
        lines.append(f"  verify: {v.checked} units checked, {v.mismatches} mismatches")
        lines += [f"    {e}" for e in v.examples]
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)


# -- JSON -------------------------------------------------------------------------------------


def _lat_ns(lat: LatencySummary, *, percentiles: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "min": round(lat.min * 1000),
        "max": round(lat.max * 1000),
        "mean": lat.mean * 1000,
        "stddev": lat.stdev * 1000,
        "N": lat.n,
    }
    if percentiles:
        out["percentile"] = {f"{q:f}": round(v * 1000) for q, v in lat.percentiles.items()}
    return out


def _series(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "dev": 0.0, "samples": 0}
    return {
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "dev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "samples": len(values),
    }


def _direction_json(
    d: DirectionResult | None, elapsed: float, iops: list[float], mb_s: list[float]
) -> dict[str, Any]:
    """fio's per-direction object; all zero for a direction the workload does not do."""
    empty = LatencySummary(0, 0, 0, 0, 0, 0, 0)
    lat = d.lat_us if d is not None else empty
    bw_kib = [m * 1e6 / 1024 for m in mb_s]
    bw, io = _series(bw_kib), _series(iops)
    return {
        "io_bytes": d.bytes if d else 0,
        "io_kbytes": (d.bytes if d else 0) // 1024,
        "bw_bytes": round(d.bytes / max(elapsed, 1e-9)) if d else 0,
        "bw": round(d.bytes / max(elapsed, 1e-9) / 1024) if d else 0,
        "iops": d.iops if d else 0.0,
        "runtime": round(elapsed * 1000) if d else 0,
        "total_ios": d.ios if d else 0,
        "short_ios": 0,
        "drop_ios": 0,
        "slat_ns": _lat_ns(empty, percentiles=False),
        "clat_ns": _lat_ns(lat, percentiles=True),
        "lat_ns": _lat_ns(lat, percentiles=False),
        "bw_min": round(bw["min"]),
        "bw_max": round(bw["max"]),
        "bw_mean": bw["mean"],
        "bw_dev": bw["dev"],
        "bw_samples": bw["samples"],
        "iops_min": round(io["min"]),
        "iops_max": round(io["max"]),
        "iops_mean": io["mean"],
        "iops_stddev": io["dev"],
        "iops_samples": io["samples"],
    }


def fio_json(result: BenchResult, target: dict[str, Any]) -> dict[str, Any]:
    """fio's JSON output (``--output-format=json``) of the run; ``target`` (traddr, trsvcid,
    nqn) goes into the job options."""
    s = result.spec
    now = time.time()
    options = {
        "rw": s.rw,
        "bs": str(s.bs),
        "iodepth": str(s.iodepth),
        "numjobs": str(s.numjobs),
        "runtime": f"{s.runtime:g}",
        "time_based": "1",
        "offset": str(s.offset),
        **({"size": str(s.size)} if s.size is not None else {}),
        **({"rwmixread": str(s.rwmixread)} if s.rw == "randrw" else {}),
        **({"verify": "crc32c"} if s.verify else {}),
        **({"randseed": str(s.seed)} if s.seed is not None else {}),
        "nsid": str(s.nsid),
        **{k: str(v) for k, v in target.items()},
    }
    samples = result.samples
    job: dict[str, Any] = {
        "jobname": JOB_NAME,
        "groupid": 0,
        "error": 0 if result.error is None else 1,
        "eta": 0,
        "elapsed": round(result.elapsed),
        "job options": options,
        "read": _direction_json(
            result.read,
            result.elapsed,
            [p.read_iops for p in samples],
            [p.read_mb_s for p in samples],
        ),
        "write": _direction_json(
            result.write,
            result.elapsed,
            [p.write_iops for p in samples],
            [p.write_mb_s for p in samples],
        ),
        "job_runtime": round(result.elapsed * 1000),
    }
    if result.cpu is not None:
        c = result.cpu
        job.update(usr_cpu=c.usr, sys_cpu=c.sys, ctx=c.ctx, majf=c.majf, minf=c.minf)
    for unit in ("ns", "us", "ms"):
        job[f"latency_{unit}"] = result.latency.get(unit, {})
    return {
        "fio version": f"nvmf-{__version__}",
        "timestamp": int(now),
        "timestamp_ms": int(now * 1000),
        "time": time.ctime(now),
        "global options": {},
        "jobs": [job],
        "nvmf": {
            "io_queues": result.io_queues,
            "queue_depth": result.queue_depth,
            "interrupted": result.interrupted,
            "warnings": result.warnings,
            "error": result.error,
            "verify": None
            if result.verify is None
            else {
                "checked": result.verify.checked,
                "mismatches": result.verify.mismatches,
                "examples": result.verify.examples,
            },
            "iops_over_time": [
                {"elapsed": p.elapsed, "read_iops": p.read_iops, "write_iops": p.write_iops}
                for p in samples
            ],
        },
    }
