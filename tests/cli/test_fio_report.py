"""The pieces of ``nvmf bench``'s fio-like report, on fixed inputs."""

from __future__ import annotations

import array
import statistics

import pytest

from nvmf.cli.fio_report import progress_line, text_report
from nvmf.host.bench import (
    BenchResult,
    BenchSpec,
    CpuUsage,
    DirectionResult,
    LatencySummary,
    Progress,
    latency_distribution,
    queue_warnings,
)

#: Latencies in ns: 1.5 us, 3 us, 90 us, 90 us, 1.2 ms, 2.5 s.
SAMPLES_NS = [1_500, 3_000, 90_000, 90_000, 1_200_000, 2_500_000_000]


def test_latency_distribution_uses_fios_buckets() -> None:
    dist = latency_distribution(array.array("q", SAMPLES_NS))
    share = 100 / len(SAMPLES_NS)
    assert dist["us"]["2"] == pytest.approx(share)  # 1.5 us: (1 us, 2 us]
    assert dist["us"]["4"] == pytest.approx(share)
    assert dist["us"]["100"] == pytest.approx(2 * share)
    assert dist["ms"]["2"] == pytest.approx(share)  # 1.2 ms: (1 ms, 2 ms]
    assert dist["ms"][">=2000"] == pytest.approx(share)
    assert sum(v for unit in dist.values() for v in unit.values()) == pytest.approx(100)
    assert list(dist["ns"]) == ["2", "4", "10", "20", "50", "100", "250", "500", "750", "1000"]


def test_latency_summary_has_stdev_and_fio_percentiles() -> None:
    lat = LatencySummary.of(array.array("q", SAMPLES_NS))
    assert lat.stdev == pytest.approx(statistics.stdev(SAMPLES_NS) / 1000)
    assert lat.n == len(SAMPLES_NS)
    assert lat.percentiles[50.0] == 90 and lat.percentiles[99.99] == 2_500_000
    assert list(lat.percentiles)[:3] == [1.0, 5.0, 10.0]
    assert LatencySummary.of(array.array("q", [7000])).stdev == 0


@pytest.mark.parametrize(
    ("numjobs", "iodepth", "queues", "depth", "expected"),
    [
        (1, 32, 1, 127, []),
        (2, 64, 2, 63, ["--iodepth 64 puts 64 commands on an I/O queue that holds 63"]),
        (3, 8, 2, 127, ["3 jobs on 2 I/O queues"]),
        (4, 40, 2, 63, ["4 jobs on 2 I/O queues", "--iodepth 40 puts 80 commands"]),
    ],
)
def test_queue_warnings(
    numjobs: int, iodepth: int, queues: int, depth: int, expected: list[str]
) -> None:
    spec = BenchSpec(numjobs=numjobs, iodepth=iodepth)
    notes = queue_warnings(spec, queues, depth)
    assert len(notes) == len(expected)
    for note, start in zip(notes, expected, strict=True):
        assert note.startswith(start), note


def test_progress_line_has_elapsed_rates_and_eta() -> None:
    spec = BenchSpec(rw="randrw", numjobs=2, runtime=10)
    p = Progress(elapsed=4.0, read_iops=31_500, read_mb_s=129.0, write_iops=800, write_mb_s=3.3,
                 runtime=10)  # fmt: skip
    assert progress_line(p, spec) == (
        "Jobs: 2 (f=2): [m(2)][40.0%][elapsed 00m:04s][r=123.0MiB/s,w=3.1MiB/s]"
        "[r=31.5k,w=800 IOPS][eta 00m:06s]"
    )


def test_text_report_says_interrupted_and_prints_cpu() -> None:
    lat = LatencySummary.of(array.array("q", SAMPLES_NS))
    read = DirectionResult(ios=6, bytes=6 * 4096, iops=3.0, mb_s=0.01, mib_s=0.01, lat_us=lat)
    result = BenchResult(
        spec=BenchSpec(rw="randread"),
        elapsed=2.0,
        block_size=512,
        read=read,
        write=None,
        verify=None,
        interrupted=True,
        cpu=CpuUsage(usr=12.5, sys=3.25, ctx=40, majf=0, minf=7),
        latency=latency_distribution(array.array("q", SAMPLES_NS)),
        io_queues=1,
    )
    text = text_report(result)
    assert "(interrupted)" in text
    assert "  cpu          : usr=12.50%, sys=3.25%, ctx=40, majf=0, minf=7" in text
    assert "  lat (msec)   : 2=16.67%, >=2000=16.67%" in text
