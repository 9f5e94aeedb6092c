"""A queue as the control plane sees it: the data plane's per-queue state plus its controller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nvmf.control.model import Port
from nvmf.offload.session import QueueSession

if TYPE_CHECKING:
    from nvmf.control.auth import QueueAuth
    from nvmf.control.controller import Controller


@dataclass(eq=False)
class ControlSession(QueueSession):
    """A fabric queue served by the control plane (admin queues; I/O queues until handed off,
    or for good with ``--workers 0``)."""

    ctrl: Controller | None = None
    #: The Connect just succeeded and the queue goes to a worker with its completion.
    handover: bool = False
    #: Set when the queue was handed to a worker: the index of that worker.
    worker: int | None = None
    #: The queue's DH-HMAC-CHAP transaction when its host must authenticate (else None).
    auth: QueueAuth | None = None
    #: An I/O queue that goes to a worker once its authentication finished.
    handover_after_auth: bool = False
    #: An I/O queue that lives in a worker from its Connect (NVMe/RDMA) and must authenticate:
    #: the worker forwards every command on it here until this process tells it the
    #: authentication succeeded (``("authenticated", ctrl_key, qid)``).
    worker_gated: bool = False

    @property
    def model_port(self) -> Port:
        """The configured port this queue was reached on."""
        assert isinstance(self.port, Port)
        return self.port
