"""An offload worker run in the test's own process, without a control plane or a fabric: what
the worker sends the control plane is recorded, and a queue is placed in it the way an NVMe/RDMA
I/O queue is (its Connect answered with a :class:`Handover`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from nvmf.offload.context import IoContextSpec
from nvmf.offload.worker import CtrlKey, Handover, Worker, WorkerSession
from nvmf.protocol.request import Request
from nvmf.transport.base import PortInfo
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import Sqe


class FakeFabric:
    """Just enough of a FabricQueue for a placed queue's answer."""

    def __init__(self) -> None:
        self.cqes: list[bytes] = []

    def complete(self, req: Request, cqe: bytes) -> None:
        self.cqes.append(cqe)

    def close(self, reason: str) -> None:
        pass


def read_sqe(cid: int = 9) -> bytes:
    """A Read of namespace 1, as the host would send it."""
    return Sqe(opcode=IoOpcode.READ, cid=cid, nsid=1).encode()


def with_worker(check: Callable[[Worker, list[tuple[Any, ...]]], None]) -> None:
    """Run ``check`` with a worker (in a running loop) and what it sends the control plane."""

    async def main() -> None:
        a, b = socket.socketpair()
        try:
            wk = Worker(a, 0, 1 << 20)
            sent: list[tuple[Any, ...]] = []
            wk.channel.send = sent.append  # type: ignore[method-assign]
            check(wk, sent)
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def placed_queue(
    wk: Worker,
    ctrl_key: CtrlKey,
    context: IoContextSpec,
    *,
    authenticating: bool = False,
    placed_key: int = 5,
) -> WorkerSession:
    """A queue (qid 1 of ``ctrl_key``) placed in ``wk`` whose Connect just got the control
    plane's answer."""
    session = WorkerSession(
        fabric=cast(Any, FakeFabric()), port=cast(Any, None), placed_key=placed_key
    )
    wk.pending[placed_key] = session
    handover = Handover(
        ctrl_key=ctrl_key,
        qid=1,
        sqsize=31,
        sqhd=0,
        sqhd_disabled=False,
        port=cast(PortInfo, None),
        state={},
        connect_cqe=b"\0" * 16,
        context=context,
        authenticating=authenticating,
    )
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[bytes, Handover | None]] = loop.create_future()
    fut.set_result((b"\0" * 16, handover))
    wk._placed_answer(session, Request(read_sqe()), fut)
    return session
