"""The control plane's handler context; plans and statuses come from :mod:`nvmf.offload.plan`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nvmf.offload.plan import (
    INVALID_CDW10,
    INVALID_NS,
    INVALID_OPCODE,
    SGL_LENGTH_MISMATCH,
    Execute,
    Parsed,
    Plan,
    c2h,
    h2c,
    no_data,
    send_bytes,
)
from nvmf.protocol.request import Request

if TYPE_CHECKING:
    from nvmf.control.service import TargetService
    from nvmf.control.session import ControlSession


@dataclass(slots=True)
class Context:
    """What a control-plane handler may look at: the service, the queue, the request."""

    service: TargetService
    session: ControlSession
    req: Request


__all__ = [
    "INVALID_CDW10",
    "INVALID_NS",
    "INVALID_OPCODE",
    "SGL_LENGTH_MISMATCH",
    "Context",
    "Execute",
    "Parsed",
    "Plan",
    "c2h",
    "h2c",
    "no_data",
    "send_bytes",
]
