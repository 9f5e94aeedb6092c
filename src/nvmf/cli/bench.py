"""``nvmf bench``: a fio-like benchmark over NVMe/TCP with this project's host.

Thin: the options become a :class:`~nvmf.host.bench.BenchSpec`, :func:`~nvmf.host.bench.run_bench`
runs it on a controller connected with one I/O queue per job (``-i`` asks for more), and the
result is printed fio style or as JSON.  Runs longer than 2 s print a progress line every second
on stderr.  Exit status: 0, 1 when an I/O failed or verification found a mismatch, 2 for a bad
argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nvmf.cli.host import (
    add_connect_options,
    connect_options,
    int_range,
    nonneg_float,
    one_line_errors,
    parse_size,
    run_host_command,
)
from nvmf.host import connect_with
from nvmf.host.bench import RW_MODES, BenchSpec, format_progress, format_result, run_bench


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="fio-like I/O benchmark over NVMe/TCP",
        description="Measure IOPS, bandwidth and latency percentiles of a namespace with this "
        "project's host: NUMJOBS I/O queues, IODEPTH commands in flight on each.",
    )
    one_line_errors(p)
    add_connect_options(p)
    w = p.add_argument_group("workload (fio options)")
    w.add_argument("--rw", choices=RW_MODES, default="randread", help="pattern (randread)")
    w.add_argument("--bs", type=parse_size, default=4096, help="block size: 4k, 128k ... (4k)")
    w.add_argument("--iodepth", type=int_range(1, 65535), default=32, help="per job (32)")
    w.add_argument(
        "--numjobs", type=int_range(1, 1024), default=1, help="jobs, one I/O queue each (1)"
    )
    w.add_argument("--runtime", type=nonneg_float, default=5.0, help="seconds (5)")
    w.add_argument("--size", type=parse_size, help="bytes of the range (default: namespace)")
    w.add_argument("--offset", type=parse_size, default=0, help="start of the range (0)")
    w.add_argument(
        "--rwmixread",
        type=int_range(0, 100),
        default=50,
        help="randrw: %% of the I/Os that are reads (50)",
    )
    w.add_argument("--nsid", type=int_range(1, 0xFFFFFFFE), default=1, help="namespace (1)")
    w.add_argument("--verify", action="store_true", help="write a checked pattern, verify it")
    w.add_argument("--seed", type=int_range(0, (1 << 31) - 1), help="random seed")
    w.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=run)


def _progress_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _bench(args: argparse.Namespace) -> int:
    spec = BenchSpec(
        rw=args.rw,
        bs=args.bs,
        iodepth=args.iodepth,
        numjobs=args.numjobs,
        runtime=args.runtime,
        size=args.size,
        offset=args.offset,
        nsid=args.nsid,
        verify=args.verify,
        rwmixread=args.rwmixread,
        seed=args.seed,
    )
    spec.validate()
    opts = connect_options(args, nr_io_queues=args.numjobs)
    async with await connect_with(opts) as ctrl:
        show = args.runtime > 2
        result = await run_bench(
            ctrl,
            spec,
            progress=(lambda p: _progress_line(format_progress(p))) if show else None,
            note=lambda text: _progress_line(f"nvmf bench: {text}"),
        )
    if args.json:
        out = result.to_json()
        out["target"] = {"traddr": args.traddr, "trsvcid": args.trsvcid, "nqn": args.nqn}
        out["io_queues"] = len(ctrl.io_queues)
        print(json.dumps(out, indent=2))
    else:
        print(format_result(result))
    failed = result.error is not None or (result.verify is not None and result.verify.mismatches)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.runtime <= 0:
        print("nvmf bench: --runtime: must be positive", file=sys.stderr)
        return 2
    return run_host_command("bench", _bench(args))
