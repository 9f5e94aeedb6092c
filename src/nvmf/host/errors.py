"""What the host library raises.

Two kinds of failure, kept apart the way the Linux host keeps them (``nvme_complete_rq`` sees an
NVMe status; the transport's error recovery sees a broken queue):

* :class:`NvmeError`: the controller completed a command with a non-zero status.  It carries the
  decoded :class:`~nvmf.wire.status.Status` and the raw 15-bit status field (so a code this
  project has no name for is not lost), plus the command's name for the message.
* :class:`TransportError`: the queue itself failed (connection refused or reset, a TermReq from
  the controller, a protocol violation by the controller, a command timeout).  Every command
  outstanding on that queue fails with it; the queue is closed.
"""

from __future__ import annotations

from nvmf.wire.fabrics import CONNECT_DATA_OFF_SUBSYSNQN, invalid_parameter_result
from nvmf.wire.status import SC, Status


class HostError(Exception):
    """Base of the host library's errors."""


class NvmeError(HostError):
    """A command completed with a non-zero NVMe status."""

    def __init__(
        self,
        status: Status,
        *,
        command: str = "command",
        raw: int | None = None,
        result: int = 0,
    ):
        self.status = status
        self.command = command
        #: The completion's DW0 (for a failed Connect: IPO and IATTR of the invalid parameter).
        self.result = result
        #: The 15-bit status field as received (SC 7:0, SCT 10:8, CRD 12:11, M 13, DNR 14).
        self.raw = status.encode() if raw is None else raw
        sct, sc = (self.raw >> 8) & 0x7, self.raw & 0xFF
        name = status.code.name if (int(status.code) & 0x7FF) == (self.raw & 0x7FF) else "UNKNOWN"
        dnr = " dnr" if self.raw & (1 << 14) else ""
        super().__init__(f"{command}: {name} (sct={sct:#x} sc={sc:#04x}{dnr})")

    @property
    def code(self) -> SC:
        return self.status.code

    @property
    def unknown_subsystem(self) -> bool:
        """A Connect refused because of its SUBNQN: Connect Invalid Parameters with IATTR set
        (the parameter is in the Connect data) and IPO at the SUBNQN field."""
        subnqn = invalid_parameter_result(CONNECT_DATA_OFF_SUBSYSNQN, in_data=True)
        return self.code == SC.CONNECT_INVALID_PARAM and self.result & 0x1FFFF == subnqn


class TransportError(HostError, ConnectionError):
    """The queue (one NVMe/TCP connection) failed; outstanding commands fail with this."""
