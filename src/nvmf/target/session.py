"""The core's per-queue state, whatever the fabric: the queue a Connect bound to a controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nvmf.offload.staging import StagingPool

if TYPE_CHECKING:
    from nvmf.target.controller import Controller
    from nvmf.target.model import Port
    from nvmf.transport.base import FabricQueue


@dataclass(eq=False)
class QueueSession:
    """One fabric queue as the command handlers see it."""

    fabric: FabricQueue
    port: Port
    pool: StagingPool = field(default_factory=StagingPool)
    qid: int | None = None
    ctrl: Controller | None = None
    #: Connect SQSIZE (0's based).
    sqsize: int = 0
    sqhd: int = 0
    #: The host disabled SQ flow control (Connect CATTR bit 2): SQHD is reported as FFFFh.
    sqhd_disabled: bool = False

    def consume_sqe(self) -> None:
        """Advance the SQ head for one fetched command (wraps at SQSIZE + 1 entries)."""
        if self.sqsize:
            self.sqhd = (self.sqhd + 1) % (self.sqsize + 1)

    @property
    def reported_sqhd(self) -> int:
        return 0xFFFF if self.sqhd_disabled else self.sqhd
