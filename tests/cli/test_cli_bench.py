"""``nvmf bench`` behaves like fio for people who know fio: the status line, Ctrl-C, the report
(percentiles, distribution, stdev, CPU), warnings about queues, ``--output`` and ``--plot``.

Each run is short (1-2 s) against the session's target; the target grants at most 2 I/O
queues, which the warning test relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nvmf.host import connect
from nvmf.host.bench import BenchResult, BenchSpec, run_bench
from tests.cli.tools import REPO, SUBNQN, Target, cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(target: Target, *args: str) -> list[str]:
    return ["bench", *target.conn(), "-n", SUBNQN, "--size", "4m", *args]


def _fio_job(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    data = json.loads(path.read_text())
    return data, data["jobs"][0]


def test_normal_report_reads_like_fio(target: Target) -> None:
    out = cli(*_bench(target, "--runtime", "1", "--iodepth", "4"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "  read: IOPS=" in text and "BW=" in text
    assert "    clat (usec): min=" in text and ", stdev=" in text
    assert "    clat percentiles (usec):" in text
    assert " 1.00th=[" in text and "99.99th=[" in text
    assert "  lat (usec)   : " in text or "  lat (msec)   : " in text
    assert "  cpu          : usr=" in text and ", sys=" in text and ", ctx=" in text
    # eta auto and stderr not a terminal: no status line, nothing else either
    assert out.stderr == ""


def test_output_file_is_fio_json(target: Target, tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    out = cli(*_bench(target, "--runtime", "1.5", "--iodepth", "4", "--output", str(report)))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    data, job = _fio_job(report)
    assert data["jobs"] == [job] and job["jobname"] == "nvmf-bench" and job["error"] == 0
    read = job["read"]
    assert read["total_ios"] > 100 and read["io_bytes"] == read["total_ios"] * 4096
    clat = read["clat_ns"]
    pct = [clat["percentile"][k] for k in ("1.000000", "50.000000", "99.000000", "99.990000")]
    assert clat["min"] <= pct[0] <= pct[1] <= pct[2] <= pct[3] <= clat["max"]
    assert clat["N"] == read["total_ios"] and clat["stddev"] > 0
    assert read["iops_samples"] >= 1 and read["iops_min"] <= read["iops_max"]
    assert job["write"]["total_ios"] == 0
    assert job["usr_cpu"] + job["sys_cpu"] > 0 and job["ctx"] >= 0
    buckets = [v for unit in ("ns", "us", "ms") for v in job[f"latency_{unit}"].values()]
    assert sum(buckets) == pytest.approx(100)
    assert job["job options"]["rw"] == "randread" and job["job options"]["nqn"] == SUBNQN
    assert data["nvmf"]["io_queues"] == 1 and data["nvmf"]["interrupted"] is False


def test_output_format_json_on_stdout(target: Target) -> None:
    out = cli(*_bench(target, "--runtime", "1", "--rw", "randwrite", "-o", "json"))
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)["jobs"][0]
    assert job["write"]["total_ios"] > 0 and job["read"]["total_ios"] == 0


def test_warns_when_iodepth_exceeds_the_queue_and_jobs_share_queues(target: Target) -> None:
    out = cli(*_bench(target, "--runtime", "1", "--numjobs", "3", "--iodepth", "20", "-Q", "16",
                      "-o", "json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    warnings = [ln for ln in out.stderr.splitlines() if ln.startswith("nvmf bench: warning: ")]
    assert len(warnings) == 2, out.stderr
    assert "3 jobs on 2 I/O queues" in warnings[0]
    assert "--iodepth 20 puts 40 commands on an I/O queue that holds 15" in warnings[1]
    assert json.loads(out.stdout)["nvmf"]["warnings"] == [
        w.removeprefix("nvmf bench: warning: ") for w in warnings
    ]


def test_no_warning_when_the_queues_fit(target: Target) -> None:
    out = cli(*_bench(target, "--runtime", "1", "--numjobs", "2", "--iodepth", "8"))
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr


def test_status_line_is_rewritten_in_place_on_a_terminal(target: Target) -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nvmf.cli.main", *_bench(target, "--runtime", "2.5")],
            stdout=subprocess.PIPE,
            stderr=terminal,
            cwd=REPO,
        )
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(controller)
    assert proc.returncode == 0, seen
    text = seen.decode()
    assert text.count("\rJobs: 1 (f=1): [r(1)][") >= 2, text
    assert "[eta 00m:0" in text and "[elapsed 00m:0" in text and " IOPS]" in text
    assert "\n" not in text.replace("\r\n", "\n").strip("\r\n ")  # one line, never scrolled
    assert b"read: IOPS=" in stdout


def test_eta_always_prints_one_status_line_per_second_on_a_pipe(target: Target) -> None:
    out = cli(*_bench(target, "--runtime", "2.5", "--eta", "always"))
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("Jobs: 1 (f=1): [r(1)][")]
    assert len(lines) >= 2 and "\r" not in out.stderr
    assert "[eta 00m:0" in lines[0] and "IOPS]" in lines[0]


def test_sigint_prints_the_summary_so_far(target: Target) -> None:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmf.cli.main",
         *_bench(target, "--runtime", "120", "--eta", "always", "-o", "json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first status line: I/O is running
    assert first.startswith("Jobs:"), first
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - start < 60
    assert "nvmf bench: terminating on signal 2" in stderr and "Traceback" not in stderr
    data = json.loads(stdout)
    assert data["nvmf"]["interrupted"] is True
    assert data["jobs"][0]["read"]["total_ios"] > 0


def test_plot_writes_a_png(target: Target, tmp_path: Path) -> None:
    png = tmp_path / "run.png"
    out = cli(*_bench(target, "--runtime", "1.5", "--rw", "randrw", "--plot", str(png)))
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_plot_needs_a_png_name(target: Target, tmp_path: Path) -> None:
    out = cli(*_bench(target, "--plot", str(tmp_path / "run.jpg")))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"nvmf bench: --plot: {str(tmp_path / 'run.jpg')!r} is not a .png file name"
    ]


def test_stop_during_prefill_ends_the_run_with_nothing_measured(target: Target) -> None:
    """Ctrl-C while --verify prefills: no timed phase, no false mismatch, marked interrupted."""
    spec = BenchSpec(rw="randread", verify=True, size=4 << 20, runtime=60, iodepth=4)

    async def main() -> BenchResult:
        ctrl = await connect("127.0.0.1", SUBNQN, trsvcid=target.v4, nr_io_queues=1)
        async with ctrl:
            stop = asyncio.Event()
            stop.set()
            return await run_bench(ctrl, spec, stop=stop)

    result = asyncio.run(asyncio.wait_for(main(), 60))
    assert result.interrupted and result.elapsed < 5
    assert result.read is not None and result.read.ios == 0
    assert result.verify is not None and result.verify.mismatches == 0
