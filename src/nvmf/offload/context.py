"""What an I/O queue needs from the control plane, as one immutable snapshot (docs/data-plane.md).

The control plane builds an :class:`IoContext` when an I/O queue's Connect succeeds and replaces
it (never mutates it) when something the data path depends on changes: a namespace added,
removed or resized, Volatile Write Cache switched.  The data plane reads nothing else of the
control plane's state, so a worker process can serve the queue from this snapshot alone.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nvmf.media.base import Media
from nvmf.media.queue import MediaQueue


class NamespaceCounters(ctypes.Structure):
    """Per-namespace I/O counters of one data-plane process (the hardware's per-NS counters).

    A C structure, so that it can live in memory the control plane shares with a worker
    (:class:`~nvmf.offload.tally.CounterTable`): what a worker counted outlives it, and SMART's
    counts never go down.  Fields read and add like attributes (``c.read_cmds += 1``), with no
    Python call; made without a buffer (``NamespaceCounters()``) it has memory of its own."""

    _fields_ = [
        ("read_cmds", ctypes.c_uint64),
        ("read_blocks", ctypes.c_uint64),
        ("write_cmds", ctypes.c_uint64),
        ("write_blocks", ctypes.c_uint64),
        ("flush_cmds", ctypes.c_uint64),
        # Compare commands and the blocks they read (SMART counts them as reads).
        ("compare_cmds", ctypes.c_uint64),
        ("compare_blocks", ctypes.c_uint64),
        # Write Zeroes and Dataset Management commands (SMART counts neither).
        ("other_cmds", ctypes.c_uint64),
        # I/O commands that completed with an error.
        ("errors", ctypes.c_uint64),
        # Read and Write payload bytes that went through a staging buffer, by where that buffer
        # was: host memory or an SSD's Controller Memory Buffer (payload moved in place,
        # straight into a RAM medium, is in neither).
        ("staged_dram_bytes", ctypes.c_uint64),
        ("staged_cmb_bytes", ctypes.c_uint64),
    ]

    #: The field names, in order.
    NAMES = tuple(spec[0] for spec in _fields_)

    if TYPE_CHECKING:  # what ctypes makes of _fields_, for the type checker
        read_cmds: int
        read_blocks: int
        write_cmds: int
        write_blocks: int
        flush_cmds: int
        compare_cmds: int
        compare_blocks: int
        other_cmds: int
        errors: int
        staged_dram_bytes: int
        staged_cmb_bytes: int

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.NAMES}


@dataclass(frozen=True, slots=True)
class NamespaceIo:
    """One namespace as the I/O path sees it: geometry, the medium, this process's queue on
    it, its counters."""

    nsid: int
    #: Namespace size in logical blocks (Identify Namespace NSZE).
    nsze: int
    block_size: int
    media: Media
    queue: MediaQueue
    counters: NamespaceCounters = field(default_factory=NamespaceCounters)


@dataclass(frozen=True, slots=True)
class IoContext:
    """The immutable snapshot an I/O queue is attached with."""

    #: Controller ID, and the subsystem it belongs to (for logs and counters).
    cntlid: int
    subnqn: str
    #: The most bytes one command may move (MDTS).
    max_transfer: int
    #: Volatile Write Cache enabled (Set Features 06h): when off, every write is FUA.
    wce: bool
    namespaces: Mapping[int, NamespaceIo]


#: A namespace's identity across processes: (subsystem NQN, NSID).
MediaKey = tuple[str, int]


def counters_as_data(counters: Mapping[MediaKey, NamespaceCounters]) -> dict[str, dict[str, int]]:
    """Per-namespace counters as plain data keyed ``"NQN/NSID"`` (a worker's snapshot, the
    control plane's share of ``nvmf status``, what SMART sums)."""
    return {f"{nqn}/{nsid}": c.as_dict() for (nqn, nsid), c in counters.items()}


@dataclass(frozen=True, slots=True)
class IoContextSpec:
    """An :class:`IoContext` as it crosses to a worker: namespaces named by their media key,
    which the worker resolves to the media it opened from the control plane's handles."""

    cntlid: int
    subnqn: str
    max_transfer: int
    wce: bool
    #: (NSID, NSZE, block size) of every namespace.
    namespaces: tuple[tuple[int, int, int], ...]

    def resolve(
        self,
        media: Mapping[MediaKey, tuple[Media, MediaQueue]],
        counters: Mapping[MediaKey, NamespaceCounters],
    ) -> IoContext:
        """The context, with this process's media, queues and counters; a namespace whose
        media this process lacks is left out (its commands get Invalid Namespace)."""
        namespaces = {}
        for nsid, nsze, bs in self.namespaces:
            key = (self.subnqn, nsid)
            if key in media:
                medium, queue = media[key]
                namespaces[nsid] = NamespaceIo(nsid, nsze, bs, medium, queue, counters[key])
        return IoContext(self.cntlid, self.subnqn, self.max_transfer, self.wce, namespaces)
