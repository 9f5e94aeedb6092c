"""How many I/O queues ``nvme connect`` ends up with, decided the way the code decides it.

The Linux host (drivers/nvme/host/fabrics.c, tcp.c, rdma.c):

* asks for one I/O queue per online CPU, or ``min(N, online CPUs)`` with ``nvme connect -i N``;
  ``-W`` write queues and ``-P`` poll queues are added, each also capped at the online CPUs;
* over RDMA, the read and default (write) queues are further capped at the RDMA device's
  completion vectors (``ibdev->num_comp_vectors``);
* sends Set Features / Number of Queues with that count (0's based) and uses
  ``min(asked, granted)`` (``nvme_set_queue_count``).

The target grants its maximum: the Linux target answers ``attr_qid_max`` of the subsystem
(configfs; ``NVMET_NR_QUEUES`` = 128 by default); this project's target answers its own
``max_io_queues`` (one per core of the target machine unless configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: ``NVMET_NR_QUEUES``: the Linux target's default (and maximum) ``attr_qid_max``.
LINUX_TARGET_DEFAULT_QID_MAX = 128

#: Host core counts the what-if table always shows.
WHAT_IF_CPUS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class HostAsk:
    """What a Linux host with ``cpus`` online CPUs asks for."""

    transport: str
    cpus: int
    nr_io_queues: int | None
    nr_write_queues: int
    nr_poll_queues: int
    comp_vectors: int | None
    read_or_default: int
    write: int
    poll: int
    #: What goes into Set Features / Number of Queues: read/default + write + poll queues.
    total: int


def host_asks(
    cpus: int,
    *,
    transport: str = "tcp",
    nr_io_queues: int | None = None,
    nr_write_queues: int = 0,
    nr_poll_queues: int = 0,
    comp_vectors: int | None = None,
) -> HostAsk:
    """The I/O queue count a Linux host sends in Set Features / Number of Queues."""
    io = cpus if nr_io_queues is None else min(nr_io_queues, cpus)
    write = min(nr_write_queues, cpus)
    poll = min(nr_poll_queues, cpus)
    if transport == "rdma" and comp_vectors:
        io = min(io, comp_vectors)
        write = min(write, comp_vectors)
    return HostAsk(
        transport,
        cpus,
        nr_io_queues,
        nr_write_queues,
        nr_poll_queues,
        comp_vectors,
        io,
        write,
        poll,
        io + write + poll,
    )


def negotiate(asked: int, granted: int) -> int:
    """``nvme_set_queue_count``: the host uses the smaller of what it asked and was granted."""
    return max(0, min(asked, granted))


@dataclass
class WhatIf:
    """One row of the what-if table: a host of ``host_cpus`` cores."""

    host_cpus: int
    asked: int
    linux_target: int
    ours: int


@dataclass
class QueuePlan:
    """The queue arithmetic for this machine and for hosts of other sizes."""

    this_machine_cpus: int | None
    host: HostAsk
    host_rdma: HostAsk | None
    linux_target_qid_max: int
    linux_target_source: str
    ours_max: int
    ours_source: str
    linux_result: int
    ours_result: int
    rdma_linux_result: int | None
    what_if: list[WhatIf] = field(default_factory=list)


def plan_queues(
    *,
    this_machine_cpus: int | None,
    host_cpus: int | None = None,
    nr_io_queues: int | None = None,
    nr_write_queues: int = 0,
    nr_poll_queues: int = 0,
    linux_qid_max: dict[str, int] | None = None,
    ours_max: int | None = None,
    ours_source: str = "",
    rdma_comp_vectors: int | None = None,
) -> QueuePlan:
    """Work out asked/granted/used for a host of ``host_cpus`` cores (default: this machine)."""
    cpus = host_cpus or this_machine_cpus or 1
    host = host_asks(
        cpus,
        nr_io_queues=nr_io_queues,
        nr_write_queues=nr_write_queues,
        nr_poll_queues=nr_poll_queues,
    )
    host_rdma = None
    if rdma_comp_vectors:
        host_rdma = host_asks(
            cpus,
            transport="rdma",
            nr_io_queues=nr_io_queues,
            nr_write_queues=nr_write_queues,
            nr_poll_queues=nr_poll_queues,
            comp_vectors=rdma_comp_vectors,
        )
    if linux_qid_max:
        linux_max = min(linux_qid_max.values())
        source = "attr_qid_max of " + ", ".join(
            f"{k}={v}" for k, v in sorted(linux_qid_max.items())
        )
    else:
        linux_max = LINUX_TARGET_DEFAULT_QID_MAX
        source = "default attr_qid_max (NVMET_NR_QUEUES); no subsystem configured in configfs"
    if ours_max is None:
        ours_max = this_machine_cpus or 1
        ours_source = ours_source or "one per core of this machine (max_io_queues default)"
    table = []
    for n in sorted({*WHAT_IF_CPUS, cpus}):
        ask = host_asks(
            n,
            nr_io_queues=nr_io_queues,
            nr_write_queues=nr_write_queues,
            nr_poll_queues=nr_poll_queues,
        ).total
        table.append(WhatIf(n, ask, negotiate(ask, linux_max), negotiate(ask, ours_max)))
    return QueuePlan(
        this_machine_cpus=this_machine_cpus,
        host=host,
        host_rdma=host_rdma,
        linux_target_qid_max=linux_max,
        linux_target_source=source,
        ours_max=ours_max,
        ours_source=ours_source,
        linux_result=negotiate(host.total, linux_max),
        ours_result=negotiate(host.total, ours_max),
        rdma_linux_result=None if host_rdma is None else negotiate(host_rdma.total, linux_max),
        what_if=table,
    )
