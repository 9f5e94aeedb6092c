"""What an I/O queue needs from the control plane, as one immutable snapshot (docs/data-plane.md).

The control plane builds an :class:`IoContext` when an I/O queue's Connect succeeds and replaces
it (never mutates it) when something the data path depends on changes: a namespace added,
removed or resized, Volatile Write Cache switched.  The data plane reads nothing else of the
control plane's state, so a worker process can serve the queue from this snapshot alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nvmf.media.base import Media
from nvmf.media.queue import MediaQueue


@dataclass(slots=True)
class NamespaceCounters:
    """Per-namespace I/O counters of one data-plane process (the hardware's per-NS counters)."""

    read_cmds: int = 0
    read_blocks: int = 0
    write_cmds: int = 0
    write_blocks: int = 0
    flush_cmds: int = 0
    #: Compare commands and the blocks they read (SMART counts them as reads).
    compare_cmds: int = 0
    compare_blocks: int = 0
    #: Write Zeroes and Dataset Management commands (SMART counts neither).
    other_cmds: int = 0
    errors: int = 0
    #: Read and Write payload bytes that went through a staging buffer, by where that buffer
    #: was: host memory or an SSD's Controller Memory Buffer (payload moved in place, straight
    #: into a RAM medium, is in neither).
    staged_dram_bytes: int = 0
    staged_cmb_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


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
