"""The loop transport on its own: how it drives its owner, its SGL rules, where data lands.

The contract suite (``test_transport_contract.py``) runs it under the real target; these tests
use a small owner that records what it is told, so each rule is seen in isolation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from nvmf.control.model import Port
from nvmf.offload.session import QueueSession
from nvmf.protocol.request import Request
from nvmf.transport.base import FabricQueue, ListenPort, QueueState, get_transport
from nvmf.transport.loop import (
    LoopClosedError,
    LoopExportError,
    LoopHostQueue,
    LoopQueue,
    LoopTransport,
)
from nvmf.wire.sqe import PSDT_PRP, Cqe, SglDescriptor, Sqe, encode_cqe
from nvmf.wire.status import SC, SUCCESS, Status

PORT = Port(portid=7, trtype="loop", adrfam="", traddr="", trsvcid="", inline_data_size=4096)


@dataclass
class Owner:
    """A QueueOwner that records its calls and runs each command through ``serve``."""

    serve: Callable[[LoopQueue, Request], Awaitable[Status]] | None = None
    opened: list[tuple[FabricQueue, ListenPort]] = field(default_factory=list)
    submitted: list[Request] = field(default_factory=list)
    closed: list[QueueState] = field(default_factory=list)
    store: dict[int, bytes] = field(default_factory=dict)

    def open_queue(self, fabric: FabricQueue, port: ListenPort) -> QueueState:
        self.opened.append((fabric, port))
        return QueueSession(fabric=fabric, port=port, qid=3)

    def submit(self, state: QueueState, req: Request) -> None:
        self.submitted.append(req)
        fabric = self.opened[-1][0]
        assert isinstance(fabric, LoopQueue)
        if self.serve is not None:
            asyncio.get_running_loop().create_task(self._run(fabric, req))

    async def _run(self, fabric: LoopQueue, req: Request) -> None:
        assert self.serve is not None
        status = await self.serve(fabric, req)
        req.status = status
        fabric.complete(req, encode_cqe(status, cid=req.cid, sqid=3, sqhd=0))

    def complete(self, state: QueueState, req: Request, status: Status) -> None:
        raise AssertionError("the loop transport has no per-command transport failures")

    def queue_closed(self, state: QueueState) -> None:
        self.closed.append(state)


async def echo(fabric: LoopQueue, req: Request) -> Status:
    """Opcode 1 stores the command's data under its cdw10, opcode 2 returns it; 0 moves none."""
    status = fabric.map_sgl(req)
    if not status.ok:
        return status
    if req.sqe.opcode == 1:
        if not req.incapsule:
            req.data = memoryview(bytearray(req.sgl_length))
            fetched: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
            fabric.fetch_data(req, lambda _req, status: fetched.set_result(status))
            assert not fetched.done()  # the callback never runs inside fetch_data
            status = await fetched
            if not status.ok:
                return status
        assert req.data is not None
        owner = fabric.owner
        assert isinstance(owner, Owner)
        owner.store[req.sqe.cdw10] = bytes(req.data)
    elif req.sqe.opcode == 2:
        owner = fabric.owner
        assert isinstance(owner, Owner)
        data = owner.store[req.sqe.cdw10]
        req.data = memoryview(bytearray(data))
        req.c2h_length = len(data)
    return SUCCESS


async def pair(owner: Owner) -> tuple[LoopTransport, LoopHostQueue]:
    transport = LoopTransport()
    await transport.add_port(PORT, owner)
    return transport, transport.connect(PORT)


def sqe(opcode: int, cid: int, key: int = 0) -> bytes:
    return Sqe(opcode=opcode, cid=cid, cdw10=key).encode()


def status(cqe: bytes) -> Status:
    return Cqe.decode(cqe).decoded_status()


def test_registered_as_loop() -> None:
    transport = get_transport("loop")
    assert isinstance(transport, LoopTransport)
    assert transport.trtype == "loop"
    assert transport.caps.exportable is False


def test_owner_sees_one_open_a_submit_per_command_and_one_close() -> None:
    async def run() -> None:
        owner = Owner(serve=echo)
        _, host = await pair(owner)
        assert len(owner.opened) == 1 and owner.opened[0][1] is PORT
        for cid in (1, 2, 3):
            done = await host.command(sqe(0, cid))
            assert Cqe.decode(done.cqe).cid == cid and status(done.cqe).ok
        assert [r.cid for r in owner.submitted] == [1, 2, 3]
        assert all(r.qid == 3 for r in owner.submitted)  # the owner's qid, once it has one
        host.close()
        host.close()
        assert len(owner.closed) == 1
        assert await host.wait_closed() == "host closed the connection"

    asyncio.run(run())


def test_data_lands_in_host_memory_by_view() -> None:
    """H2C data is read from the host's memory at fetch time; C2H data is written into the
    memory the host gave, and the completion's data is a view of it (no extra copy)."""

    async def run() -> None:
        owner = Owner(serve=echo)
        _, host = await pair(owner)
        out = bytearray(b"a" * 8192)
        assert status((await host.command(sqe(1, 1, key=5), data_out=memoryview(out))).cqe).ok
        assert owner.store[5] == bytes(out)
        small = b"in the capsule"
        done = await host.command(sqe(1, 2, key=6), data_out=small, incapsule=True)
        assert status(done.cqe).ok and owner.store[6] == small
        assert owner.submitted[-1].incapsule
        into = memoryview(bytearray(8192))
        done = await host.command(sqe(2, 3, key=5), data_in=into)
        assert status(done.cqe).ok
        assert done.data.obj is into.obj  # the host's own buffer
        assert bytes(into) == bytes(out)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("prp", SC.INVALID_FIELD),
        ("keyed", SC.SGL_INVALID_TYPE),
        ("incapsule-offset", SC.SGL_INVALID_OFFSET),
        ("incapsule-too-long", SC.SGL_INVALID_OFFSET),
        ("incapsule-no-data", SC.SGL_INVALID_DATA),
        ("past-host-memory", SC.SGL_INVALID_DATA),
    ],
)
def test_sgl_rules(change: str, code: SC) -> None:
    async def run() -> None:
        owner = Owner(serve=echo)
        _, host = await pair(owner)
        cmd = Sqe(opcode=2, cid=9)
        data_out: bytes | None = None
        data_in = 0
        if change == "prp":
            cmd.sgl = SglDescriptor.tcp_transport(0)
            cmd.flags = PSDT_PRP
        elif change == "keyed":
            cmd.sgl = SglDescriptor.keyed(0x1000, 512, 1)
        elif change == "incapsule-offset":
            cmd.opcode = 1
            cmd.sgl = SglDescriptor.incapsule(4, offset=16)
            data_out = b"abcd"
        elif change == "incapsule-too-long":
            cmd.opcode = 1
            data_out = bytes(PORT.inline_data_size + 512)
            cmd.sgl = SglDescriptor.incapsule(len(data_out))
        elif change == "incapsule-no-data":
            cmd.sgl = SglDescriptor.incapsule(512)
        else:
            cmd.sgl = SglDescriptor.tcp_transport(8192)
            data_in = 4096
        done = await host.command(
            cmd.encode(),
            data_out=data_out,
            data_in=data_in,
            incapsule=data_out is not None,
            fill_sgl=False,
        )
        st = status(done.cqe)
        assert st.code == code and st.dnr, st
        assert bytes(done.data) == b""

    asyncio.run(run())


def test_fill_sgl_writes_psdt_and_the_descriptor() -> None:
    async def run() -> None:
        owner = Owner()
        _, host = await pair(owner)
        raw = Sqe(opcode=1, cid=1, flags=PSDT_PRP).encode()
        host.submit(raw, data_out=bytes(100))
        host.submit(Sqe(opcode=1, cid=2).encode(), data_out=bytes(50), incapsule=True)
        host.submit(Sqe(opcode=2, cid=3).encode(), data_in=300)
        fetched, inline, read = (r.sqe for r in owner.submitted)
        assert fetched.psdt == 0x40 and fetched.sgl == SglDescriptor.tcp_transport(100)
        assert inline.sgl == SglDescriptor.incapsule(50)
        assert read.sgl == SglDescriptor.tcp_transport(300)
        host.close()

    asyncio.run(run())


def test_a_cid_in_flight_cannot_be_reused() -> None:
    async def run() -> None:
        owner = Owner()  # completes nothing
        _, host = await pair(owner)
        host.submit(sqe(0, 4))
        with pytest.raises(ValueError, match="in flight"):
            host.submit(sqe(0, 4))
        host.close()

    asyncio.run(run())


def test_closing_fails_the_commands_in_flight_and_later_ones() -> None:
    async def run() -> None:
        owner = Owner()
        transport, host = await pair(owner)
        waiting = host.submit(sqe(0, 1))
        await transport.remove_port(PORT)
        with pytest.raises(LoopClosedError, match="port removed"):
            await waiting
        with pytest.raises(ConnectionError):
            await host.command(sqe(0, 2))
        assert len(owner.closed) == 1
        with pytest.raises(ConnectionRefusedError):
            transport.connect(PORT)

    asyncio.run(run())


def test_late_completion_after_close_is_dropped() -> None:
    """A command that finishes after its queue closed releases its buffer and sends nothing."""

    async def run() -> None:
        owner = Owner()
        _, host = await pair(owner)
        pending = host.submit(sqe(0, 1))
        fabric = host.target
        req = owner.submitted[-1]
        released: list[bool] = []

        class Staging:
            def release(self) -> None:
                released.append(True)

        req.staging = Staging()  # type: ignore[assignment]
        fabric.close("test")
        fabric.complete(req, encode_cqe(SUCCESS, cid=1, sqid=3, sqhd=0))
        assert released == [True]
        assert isinstance(pending.exception(), LoopClosedError)

    asyncio.run(run())


def test_c2h_into_read_only_host_memory_ends_the_queue() -> None:
    async def run() -> None:
        owner = Owner(serve=echo)
        owner.store[1] = b"x" * 512
        _, host = await pair(owner)
        cmd = Sqe(opcode=2, cid=1, cdw10=1)
        cmd.sgl = SglDescriptor.tcp_transport(512)
        with pytest.raises(LoopClosedError, match="cannot take it"):
            await host.command(cmd.encode(), data_out=bytes(512), fill_sgl=False)
        assert host.closed and len(owner.closed) == 1

    asyncio.run(run())


def test_not_exportable() -> None:
    async def run() -> None:
        owner = Owner(serve=echo)
        transport, host = await pair(owner)
        with pytest.raises(LoopExportError):
            await host.target.export_state()
        assert not host.closed
        assert status((await host.command(sqe(0, 1))).cqe).ok
        with pytest.raises(LoopExportError):
            transport.import_queue(object(), PORT, owner)  # type: ignore[arg-type]

    asyncio.run(run())


def test_addresses_of_a_port_without_one() -> None:
    async def run() -> None:
        owner = Owner()
        transport, host = await pair(owner)
        assert host.target.local_address() == ("loop", "7")
        assert transport.bound_address(PORT) == ("loop", 7)
        named = Port(portid=8, trtype="loop", traddr="here", trsvcid="4420")
        await transport.add_port(named, owner)
        assert transport.connect(named).target.local_address() == ("here", "4420")
        with pytest.raises(OSError, match="added already"):
            await transport.add_port(named, owner)

    asyncio.run(run())


def test_send_cqe_completes_the_waiting_command() -> None:
    async def run() -> None:
        owner = Owner()
        _, host = await pair(owner)
        waiting = host.submit(sqe(0, 11))
        host.target.send_cqe(encode_cqe(Status(SC.INTERNAL), cid=11, sqid=3, sqhd=0))
        done = await waiting
        assert status(done.cqe).code == SC.INTERNAL

    asyncio.run(run())
