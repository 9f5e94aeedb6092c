"""The benchmark's PNG: IOPS against queue depth per target, and against workers.

matplotlib (the ``dev`` extra) is imported here only, when ``--plot`` asks for a picture, and
with the non-interactive Agg backend: no display is needed.
"""

from __future__ import annotations

from typing import Any


def draw(
    path: str,
    sweep: dict[str, list[tuple[int, float]]],
    scaling: list[tuple[int, float]] | None,
    subtitle: str,
) -> None:
    """Write ``path``: left, IOPS vs queue depth (one line per target of ``sweep``); right,
    IOPS vs workers from ``scaling``, or a note that the target has no workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax: Any = left
    for name, points in sweep.items():
        depths = [qd for qd, _ in points]
        ax.plot(depths, [iops / 1000 for _, iops in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    depths_all = sorted({qd for points in sweep.values() for qd, _ in points})
    ax.set_xticks(depths_all, [str(d) for d in depths_all])
    ax.set_xlabel("queue depth (one I/O queue)")
    ax.set_ylabel("kIOPS")
    ax.set_title("IOPS vs queue depth")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax = right
    if scaling:
        workers = [n for n, _ in scaling]
        ax.plot(workers, [iops / 1000 for _, iops in scaling], marker="o", label="nvmf serve")
        ax.set_xticks(workers, [str(n) for n in workers])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    else:
        ax.text(
            0.5,
            0.5,
            "nvmf serve has no --workers option yet:\nno scaling measured",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("workers (as many client processes, QD32 each)")
    ax.set_ylabel("kIOPS")
    ax.set_title("IOPS vs workers")
    fig.suptitle(subtitle)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
