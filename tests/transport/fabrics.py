"""One host-side interface over every transport, and a target serving a port of each.

The transport contract suite talks to the target through :class:`HostQueue` only: open a
queue, send a command with data out or room for data in, close, see the target close.  Each
transport in :data:`nvmf.transport.base.REGISTRY` needs an adapter here (:data:`ADAPTERS`); a
transport without one fails the suite instead of being skipped, so a new fabric cannot join the
registry untested.

The target runs on its own event loop in a background thread (as ``tests/target`` does), so a
blocking NVMe/TCP socket host and the loop transport's host end look the same to a test.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from nvmf.control.model import Namespace, NamespaceMedia, Port, Subsystem, TargetConfig
from nvmf.control.service import TargetService
from nvmf.transport.base import QueueState
from nvmf.transport.loop import LoopHostQueue, LoopTransport
from nvmf.wire.fabrics import CC, ConnectCommand, ConnectData, Prop, PropertyCommand
from nvmf.wire.opcodes import FabricsType
from nvmf.wire.sqe import Cqe, SglDescriptor, Sqe
from nvmf.wire.status import Status
from tests.target.rawhost import RawHost
from tests.transport.rdma_host import RdmaHostQueue

T = TypeVar("T")

SUBNQN = "nqn.2024-01.io.nvmf:contract"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:5a1d0000-0000-4000-8000-0000000000c0"
HOSTID = b"\xc0" * 16
#: In-capsule data the port accepts: commands up to this size may carry their data.
INLINE = 8192
#: How long a target may take to start (Python processes start in seconds under emulation).
START_TIMEOUT_S = 180.0
#: Seconds a TCP host queue waits for the target before a test fails (the loop and RDMA
#: adapters have theirs).
COMMAND_TIMEOUT_S = 30.0
CC_ENABLE = CC.EN | (6 << CC.IOSQES_SHIFT) | (4 << CC.IOCQES_SHIFT)


class CountingService(TargetService):
    """A target service that records every ``queue_closed`` call (the owner side of the
    transport contract: once per queue)."""

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        self.closed_states: list[QueueState] = []

    def queue_closed(self, state: QueueState) -> None:
        self.closed_states.append(state)
        super().queue_closed(state)

    def times_closed(self, state: QueueState) -> int:
        return sum(1 for s in self.closed_states if s is state)


@dataclass
class RunningTarget:
    service: CountingService
    loop: asyncio.AbstractEventLoop
    port: Port
    trtype: str
    _thread: threading.Thread = field(repr=False, default_factory=threading.Thread)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the target's event loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, func: Callable[[], T], timeout: float = 10.0) -> T:
        """Call ``func`` on the target's event loop thread; its result."""

        async def wrapped() -> T:
            return func()

        return self.run(wrapped(), timeout)


def make_port(trtype: str, rdma_service: str = "4420") -> Port:
    """A port of ``trtype`` exporting :data:`SUBNQN` (an ephemeral TCP port; a loop port as
    nvmetcli writes one, with no address; NVMe/RDMA on ``rdma_service``)."""
    if trtype == "loop":
        return Port(
            portid=1,
            trtype="loop",
            adrfam="",
            traddr="",
            trsvcid="",
            inline_data_size=INLINE,
            subsystems=[SUBNQN],
        )
    if trtype == "rdma":  # RDMA CM listens on the device's own address, on a fixed service
        return Port(
            portid=1,
            trtype="rdma",
            traddr=RDMA_ADDR,
            trsvcid=rdma_service,
            inline_data_size=INLINE,
            subsystems=[SUBNQN],
        )
    return Port(portid=1, trtype=trtype, trsvcid="0", inline_data_size=INLINE, subsystems=[SUBNQN])


def make_config(
    trtype: str, workers: int, rdma_service: str = "4420", idle_timeout_ms: int = 30_000
) -> TargetConfig:
    sub = Subsystem(
        nqn=SUBNQN,
        namespaces=[
            Namespace(nsid=1, media=NamespaceMedia(kind="ram", size=16 << 20)),
            Namespace(nsid=2, media=NamespaceMedia(kind="ram", size=8 << 20, block_size=4096)),
        ],
    )
    cfg = TargetConfig(subsystems=[sub], ports=[make_port(trtype, rdma_service)])
    cfg.nvmf.max_io_queues = 4
    cfg.nvmf.offload_workers = workers
    cfg.nvmf.idle_timeout_ms = idle_timeout_ms
    return cfg


@contextmanager
def running_target(
    trtype: str, workers: int, rdma_service: str = "4420", idle_timeout_ms: int = 30_000
) -> Iterator[RunningTarget]:
    """A :class:`CountingService` with one ``trtype`` port, its event loop in a thread (a
    second one at once needs its own ``rdma_service``: NVMe/RDMA's port is fixed)."""
    loop = asyncio.new_event_loop()
    service = CountingService(make_config(trtype, workers, rdma_service, idle_timeout_ms))
    started = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(service.start())
        except BaseException as exc:
            failed.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(START_TIMEOUT_S)  # workers start slowly in the emulated guest
    if failed:
        raise failed[0]
    target = RunningTarget(service, loop, service.ports[0], trtype, thread)
    try:
        yield target
    finally:
        target.run(service.stop(), 30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class HostQueue(Protocol):
    """One host queue on some fabric, driven synchronously."""

    def command(
        self,
        sqe: Sqe,
        data_out: bytes | None = None,
        data_in: int = 0,
        *,
        incapsule: bool = False,
        keep_sgl: bool = False,
    ) -> tuple[Cqe, bytes]:
        """Send ``sqe`` (its SGL written for the data, unless ``keep_sgl``) with ``data_out``
        (in the capsule with ``incapsule``) or room for ``data_in`` bytes; the completion and
        the data that came back.  ``ConnectionError`` when the queue is closed."""
        ...

    def close(self) -> None:
        """Hang up."""
        ...

    def wait_closed(self, timeout: float) -> bool:
        """True once the target has ended this queue (within ``timeout`` seconds)."""
        ...


class TcpHostQueue:
    """:class:`HostQueue` on :class:`~tests.target.rawhost.RawHost`."""

    def __init__(self, target: RunningTarget, qid: int = 0) -> None:
        addr = target.service.transports["tcp"].bound_address(target.port)
        self.raw = RawHost(addr)
        self.raw.initialize()
        self.raw.sock.settimeout(COMMAND_TIMEOUT_S)  # a command left hanging fails the test

    def command(
        self,
        sqe: Sqe,
        data_out: bytes | None = None,
        data_in: int = 0,
        *,
        incapsule: bool = False,
        keep_sgl: bool = False,
    ) -> tuple[Cqe, bytes]:
        if not keep_sgl and not (data_out and incapsule):
            sqe.sgl = SglDescriptor.tcp_transport(len(data_out) if data_out else data_in)
        return self.raw.command_data(sqe, data_out, incapsule=incapsule, keep_sgl=keep_sgl)

    def close(self) -> None:
        self.raw.close()

    def wait_closed(self, timeout: float) -> bool:
        return self.raw.is_closed(timeout)


class LoopAdapter:
    """:class:`HostQueue` on the loop transport's host end (run on the target's loop)."""

    def __init__(self, target: RunningTarget, qid: int = 0) -> None:
        self.target = target
        transport = target.service.transports["loop"]
        assert isinstance(transport, LoopTransport)
        self.host: LoopHostQueue = target.call(lambda: transport.connect(target.port))

    def command(
        self,
        sqe: Sqe,
        data_out: bytes | None = None,
        data_in: int = 0,
        *,
        incapsule: bool = False,
        keep_sgl: bool = False,
    ) -> tuple[Cqe, bytes]:
        raw = sqe.encode()
        done = self.target.run(
            self.host.command(
                raw,
                data_out=data_out,
                data_in=data_in,
                incapsule=incapsule,
                fill_sgl=not keep_sgl,
            )
        )
        return Cqe.decode(done.cqe), bytes(done.data)

    def close(self) -> None:
        self.target.call(self.host.close)

    def wait_closed(self, timeout: float) -> bool:
        async def wait() -> bool:
            try:
                await asyncio.wait_for(self.host.wait_closed(), timeout)
            except TimeoutError:
                return False
            return True

        return self.target.run(wait(), timeout + 5)


#: trtype -> how a test opens a host queue (for queue ID ``qid``: NVMe/RDMA names it in its
#: connect request) on a running target of that type.
ADAPTERS: dict[str, Callable[[RunningTarget, int], HostQueue]] = {
    "tcp": TcpHostQueue,
    "loop": LoopAdapter,
    "rdma": RdmaHostQueue.of,
}
#: The address of an RDMA device's interface to run the NVMe/RDMA cases on (the guest sets it:
#: tests/guest/test_rdma_target_guest.py); without one they do not run here.
RDMA_ADDR = os.environ.get("NVMF_TEST_RDMA_ADDR", "")


def runnable_here(trtype: str) -> bool:
    """Whether this machine can serve ``trtype`` (NVMe/RDMA needs an RDMA device)."""
    return trtype != "rdma" or bool(RDMA_ADDR)


class Host:
    """Fabrics commands on any :class:`HostQueue` (what RawHost does for NVMe/TCP alone)."""

    def __init__(self, target: RunningTarget) -> None:
        self.target = target
        self.cid = 0

    def open(self, qid: int = 0) -> HostQueue:
        return ADAPTERS[self.target.trtype](self.target, qid)

    def next_cid(self) -> int:
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    def connect(
        self, q: HostQueue, *, qid: int = 0, cntlid: int = 0xFFFF, subnqn: str = SUBNQN
    ) -> Cqe:
        data = ConnectData(HOSTID, cntlid, subnqn, HOSTNQN).encode()
        cmd = ConnectCommand(cid=self.next_cid(), qid=qid, sqsize=31)
        cqe, _ = q.command(Sqe.decode(cmd.encode()), data, incapsule=True)
        return cqe

    def prop_set(self, q: HostQueue, offset: int, value: int) -> Cqe:
        cmd = PropertyCommand(self.next_cid(), FabricsType.PROPERTY_SET, 0, offset, value)
        return q.command(Sqe.decode(cmd.encode()))[0]

    def prop_get(self, q: HostQueue, offset: int) -> Cqe:
        cmd = PropertyCommand(self.next_cid(), FabricsType.PROPERTY_GET, 0, offset)
        return q.command(Sqe.decode(cmd.encode()))[0]

    def admin(self) -> tuple[HostQueue, int]:
        """A connected, enabled admin queue and its controller's cntlid."""
        q = self.open()
        cqe = self.connect(q)
        assert status(cqe).ok, status(cqe)
        assert status(self.prop_set(q, Prop.CC, CC_ENABLE)).ok
        return q, cqe.dw0 & 0xFFFF

    def io_queue(self, cntlid: int, qid: int = 1) -> HostQueue:
        q = self.open(qid)
        cqe = self.connect(q, qid=qid, cntlid=cntlid)
        assert status(cqe).ok, status(cqe)
        return q


def status(cqe: Cqe) -> Status:
    return cqe.decoded_status()
