"""``nvmf bench``: a fio-like benchmark over NVMe/TCP with this project's host.

Thin: the options become a :class:`~nvmf.host.bench.BenchSpec`, :func:`~nvmf.host.bench.run_bench`
runs it on a controller connected with one I/O queue per job (``-i`` asks for more), and
:mod:`nvmf.cli.fio_report` prints the result the way fio does.  What works as in fio:

* the status line (``--eta auto``: on a terminal only, rewritten in place with a carriage
  return; ``always``: also when stderr is a file or pipe, one line per second; ``never``);
* Ctrl-C (SIGINT) stops the run, prints ``terminating on signal 2`` and the summary of what
  ran, and exits 0 as fio does; a second Ctrl-C ends it at once;
* ``-o/--output-format normal|json`` and ``--output FILE`` (the report goes to FILE instead of
  stdout; a FILE ending in ``.json`` with no ``-o`` gets JSON, fio's layout);
* ``--plot FILE.png``: latency histogram and IOPS over time;
* a warning when ``--iodepth`` is more than an I/O queue holds or jobs share queues.

``--json`` prints this project's compact summary instead (what ``bench/run.py`` reads).
Exit status: 0, 1 when an I/O failed or verification found a mismatch, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any, TextIO

from nvmf.cli import bench_plot
from nvmf.cli.arguments import int_range, parse_size
from nvmf.cli.fio_report import fio_json, progress_line, text_report
from nvmf.cli.host import (
    OUTPUT_FORMATS,
    add_connect_options,
    connect_options,
    connect_or_hint,
    nonneg_float,
    one_line_errors,
    run_host_command,
)
from nvmf.host.bench import RW_MODES, BenchResult, BenchSpec, Progress, run_bench

ETA_MODES = ("auto", "always", "never")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="fio-like I/O benchmark over NVMe/TCP",
        description="Measure IOPS, bandwidth and latency (percentiles, histogram) of a "
        "namespace with this project's host: NUMJOBS I/O queues, IODEPTH commands in flight on "
        "each. Ctrl-C stops the run and prints what was measured.",
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
    o = p.add_argument_group("output (fio options)")
    o.add_argument(
        "-o",
        "--output-format",
        choices=OUTPUT_FORMATS,
        default=None,
        help="normal (fio's text) or json (fio's JSON layout); default normal, or json for "
        "an --output FILE ending in .json",
    )
    o.add_argument("--output", metavar="FILE", help="write the report to FILE, not stdout")
    o.add_argument(
        "--eta",
        choices=ETA_MODES,
        default="auto",
        help="status line on stderr: auto (on a terminal, in place), always, never (auto)",
    )
    o.add_argument(
        "--plot", metavar="FILE.png", help="draw the latency histogram and IOPS over time"
    )
    o.add_argument(
        "--json",
        action="store_true",
        help="print this project's compact JSON summary (what bench/run.py reads)",
    )
    p.set_defaults(func=run)


class StatusLine:
    """fio's status line on stderr: rewritten in place on a terminal, else one per line."""

    def __init__(self, stream: TextIO, mode: str) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.enabled = mode == "always" or (mode == "auto" and self.tty)
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message line that must not be overwritten by (or run into) the status line."""
        self.clear()
        print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _spec(args: argparse.Namespace) -> BenchSpec:
    return BenchSpec(
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


def _output_format(args: argparse.Namespace) -> str:
    if args.output_format is not None:
        return str(args.output_format)
    if args.output and args.output.lower().endswith(".json"):
        return "json"
    return "normal"


def _report(args: argparse.Namespace, result: BenchResult) -> str:
    target = {"traddr": args.traddr, "trsvcid": args.trsvcid, "nqn": args.nqn}
    if args.json:
        out = result.to_json()
        out["target"] = target
        out["io_queues"] = result.io_queues
        return json.dumps(out, indent=2)
    if _output_format(args) == "json":
        return json.dumps(fio_json(result, target), indent=2)
    return text_report(result)


async def _bench(args: argparse.Namespace) -> int:
    spec = _spec(args)
    spec.validate()
    status = StatusLine(sys.stderr, args.eta)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        status.note(f"nvmf bench: terminating on signal {int(signal.SIGINT)}")
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C ends the command at once

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        opts = connect_options(args, nr_io_queues=args.numjobs)
        async with await connect_or_hint(opts) as ctrl:

            def progress(p: Progress) -> None:
                status.show(progress_line(p, spec))

            result = await run_bench(
                ctrl,
                spec,
                progress=progress,
                note=lambda text: status.note(f"nvmf bench: {text}"),
                stop=stop,
            )
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        status.clear()
    report = _report(args, result)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(report + "\n")
    else:
        print(report)
    if args.plot:
        title = f"nvmf bench {spec.rw} bs={spec.bs} iodepth={spec.iodepth} numjobs={spec.numjobs}"
        bench_plot.draw(args.plot, result, title)
    failed = result.error is not None or (result.verify is not None and result.verify.mismatches)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.runtime <= 0:
        print("nvmf bench: --runtime: must be positive", file=sys.stderr)
        return 2
    if args.plot:
        why = bench_plot.available()
        if why is not None:
            print(f"nvmf bench: --plot: {why}", file=sys.stderr)
            return 2
        if not args.plot.lower().endswith(".png"):
            print(f"nvmf bench: --plot: {args.plot!r} is not a .png file name", file=sys.stderr)
            return 2
    if args.json and (args.output_format is not None or args.output):
        print("nvmf bench: --json: not with -o/--output (fio's JSON is -o json)", file=sys.stderr)
        return 2
    return run_host_command("bench", _bench(args))
