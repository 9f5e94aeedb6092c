"""``nvmf bench --plot FILE.png``: the run in one picture.

Left, the latency histogram (log-spaced bins in microseconds, one series per direction, the
p50/p99 marked); right, IOPS over time from the one-second samples.  matplotlib (the ``plot`` and
``dev`` extras) is imported here only, with the non-interactive Agg backend, as ``bench/plot.py``
does: no display is needed.
"""

from __future__ import annotations

import math
from typing import Any

from nvmf.host.bench import BenchResult

#: Histogram bins per decade of latency.
BINS_PER_DECADE = 20


def available() -> str | None:
    """``None`` when a plot can be drawn, else why not (for the option's error)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'nvmf[plot]')"
    return None


def _bins(lo_us: float, hi_us: float) -> list[float]:
    lo = math.floor(math.log10(max(lo_us, 0.1)) * BINS_PER_DECADE)
    hi = math.ceil(math.log10(max(hi_us, lo_us * 1.01, 0.2)) * BINS_PER_DECADE)
    return [10 ** (i / BINS_PER_DECADE) for i in range(lo, max(hi, lo + 1) + 1)]


def draw(path: str, result: BenchResult, title: str) -> None:
    """Write the PNG ``path`` for ``result``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax: Any = left
    series = {name: [x / 1000 for x in lat] for name, lat in result.lat_ns.items() if lat}
    if series:
        lo = min(min(v) for v in series.values())
        hi = max(max(v) for v in series.values())
        bins = _bins(lo, hi)
        for name, values in series.items():
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=name)
        for d in (result.read, result.write):
            if d is not None and d.ios:
                ax.axvline(d.lat_us.p50, linestyle="--", linewidth=0.8, color="grey")
                ax.axvline(d.lat_us.p99, linestyle=":", linewidth=0.8, color="grey")
        ax.set_xscale("log")
        ax.legend(title="dashed p50, dotted p99")
    else:
        ax.text(0.5, 0.5, "no I/O completed", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (µs)")
    ax.set_ylabel("I/Os")
    ax.set_title("latency histogram")
    ax.grid(True, alpha=0.3)

    ax = right
    t = [p.elapsed for p in result.samples]
    if result.read is not None:
        ax.plot(t, [p.read_iops / 1000 for p in result.samples], marker="o", label="read")
    if result.write is not None:
        ax.plot(t, [p.write_iops / 1000 for p in result.samples], marker="o", label="write")
    ax.set_xlabel("elapsed (s)")
    ax.set_ylabel("kIOPS")
    ax.set_title("IOPS over time (1 s samples)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
