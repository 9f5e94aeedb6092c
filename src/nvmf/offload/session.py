"""The per-queue state every fabric queue carries, whichever process serves it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nvmf.memory.staging import Staging, StagingPool, StagingShare

if TYPE_CHECKING:
    from nvmf.media.queue import MediaQueue
    from nvmf.offload.context import IoContext
    from nvmf.transport.base import FabricQueue, ListenPort


@dataclass(eq=False)
class QueueSession:
    """One fabric queue as the command pipeline sees it."""

    fabric: FabricQueue
    port: ListenPort
    #: The queue's staging buffers: its :class:`~nvmf.memory.staging.StagingShare` of its
    #: process's pool (a pool of its own by default, for tests).
    pool: Staging = field(default_factory=StagingPool)
    qid: int | None = None
    #: Connect SQSIZE (0's based).
    sqsize: int = 0
    sqhd: int = 0
    #: The host disabled SQ flow control (Connect CATTR bit 2): SQHD is reported as FFFFh.
    sqhd_disabled: bool = False
    #: What an I/O queue's commands run against; None on admin queues and before Connect.
    ioctx: IoContext | None = None
    #: Commands received on this queue (``nvmf status``, metrics): one increment per command,
    #: read by the control plane on request, never sent per I/O.
    commands: int = 0
    #: Payload may move in place to and from a memory medium (see ``QueueState.in_place``).
    in_place: bool = True
    #: This queue's shares of media's own pools (an SSD's DMA memory), by pool: see
    #: :meth:`share_of`.
    media_shares: dict[StagingPool, StagingShare] = field(default_factory=dict)

    def share_of(self, pool: StagingPool) -> StagingShare:
        """This queue's share of a medium's own pool (``MediaQueue.pool``), made the first time
        the queue stages a command there.  A medium's pool serves every queue of its process
        on that namespace, so it is shared out as the process's pool is: a host that stops
        reading, or sends no data, holds at most its share of it."""
        share = self.media_shares.get(pool)
        if share is None:
            share = self.media_shares[pool] = StagingShare(pool)
        return share

    def staging_for(self, queue: MediaQueue) -> Staging:
        """Where this queue stages a command on ``queue``: its share of the medium's own pool
        when the medium has one (:meth:`share_of`), else its share of its process's."""
        pool = queue.pool
        return self.pool if pool is None else self.share_of(pool)

    def consume_sqe(self) -> None:
        """Advance the SQ head for one fetched command (wraps at SQSIZE + 1 entries)."""
        if self.sqsize:
            self.sqhd = (self.sqhd + 1) % (self.sqsize + 1)

    @property
    def reported_sqhd(self) -> int:
        return 0xFFFF if self.sqhd_disabled else self.sqhd
