"""(e) the two media queues of a ``file`` namespace side by side: the thread pool and io_uring.

``nvmf serve`` twice, each with a file namespace of the same size, one with ``io_engine
threads`` and one with ``io_engine io_uring``, driven by the same client workloads in the order
threads, io_uring, io_uring, threads (a drift of the machine's speed cancels out), the target's
CPU per I/O of each and their ratio.  This is the measurement that makes ``auto`` choose
io_uring where the kernel allows it (:mod:`nvmf.media.uring`).  The file is in the page cache
(a temporary directory): the figure is the cost of the hand-off to the kernel, not of a disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from local import Clients, CpuRun, Workload, interleaved, nvmf_target

from nvmf.media import uring_support


@dataclass
class EngineComparison:
    """Per workload, the thread pool's run and io_uring's; or why io_uring could not run."""

    workloads: list[Workload]
    threads: list[CpuRun]
    io_uring: list[CpuRun]
    skipped: str | None = None


def compare(
    workloads: list[Workload], runtime: float, jobs: int, workers: int | None
) -> EngineComparison:
    """Both targets up side by side, one client process each, A B B A per workload."""
    why = uring_support.problem()
    if why is not None:
        return EngineComparison(workloads, [], [], skipped=why)
    out = EngineComparison(workloads, [], [])
    with (
        nvmf_target(workers, "file", "threads") as threads,
        nvmf_target(workers, "file", "io_uring") as ring,
        Clients(threads, queues=jobs) as threads_client,
        Clients(ring, queues=jobs) as ring_client,
    ):
        for w in workloads:
            threads_run, ring_run = interleaved(threads_client, ring_client, w, runtime, jobs)
            out.threads.append(threads_run)
            out.io_uring.append(ring_run)
    return out


def report(cmp: EngineComparison, nvmf_name: str) -> str:
    """The table of (e): IOPS and CPU per I/O of both engines, and io_uring's ratio."""
    lines = [
        f"\n(e) file namespace (page cache), {nvmf_name}: io_engine threads vs io_uring, "
        "target CPU per I/O"
    ]
    if cmp.skipped:
        lines.append(f"  skipped: {cmp.skipped}")
        return "\n".join(lines)
    lines.append(f"{'workload':20} | {'threads IOPS':>12} {'us/IO':>7} | "
                 f"{'io_uring IOPS':>13} {'us/IO':>7} | {'ratio':>6}")  # fmt: skip
    lines.append("-" * 78)
    for w, a, b in zip(cmp.workloads, cmp.threads, cmp.io_uring, strict=True):
        if a.error or b.error:
            lines.append(f"{w.name:20} | failed: {a.error or b.error}")
            continue
        ratio = b.us_per_io / a.us_per_io if a.ios and b.ios else float("nan")
        lines.append(
            f"{w.name:20} | {a.iops:12.0f} {a.us_per_io:7.1f} | "
            f"{b.iops:13.0f} {b.us_per_io:7.1f} | {ratio:6.2f}"
        )
    lines.append("  (ratio: io_uring us/IO / threads us/IO; below 1: io_uring costs less)")
    return "\n".join(lines)
