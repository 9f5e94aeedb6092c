"""HostQueue protocol behaviour against the fake controller over a socketpair (no TCP, no target).

Each test builds a queue on one end of a socketpair and a :class:`FakeController` connection on
the other, then checks what crossed the wire: which data went in-capsule and which waited for an
R2T, how H2CData was split, digests, the SUCCESS flag, TermReqs both ways, and how a status
becomes an :class:`NvmeError`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from nvmf.host import commands as c
from nvmf.host.errors import NvmeError, TransportError
from nvmf.host.queue import Completion, HostQueue
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import SGL_INCAPSULE, SGL_TCP_TRANSPORT
from nvmf.wire.status import SC, Status, error
from tests.host.fake import BLOCK, FakeConfig, FakeController

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _queue(
    fake: FakeController,
    *,
    depth: int = 16,
    incapsule: int = 8192,
    hdgst: bool = False,
    ddgst: bool = False,
    io_timeout: float | None = None,
) -> HostQueue:
    sock = await fake.pair()
    q = HostQueue(sock, qid=1, depth=depth, incapsule_size=incapsule, io_timeout=io_timeout)
    await q.start(hdgst=hdgst, ddgst=ddgst)
    fake.queues[-1].qid = 1  # as if Connect had run: commands are I/O commands
    return q


async def _write(q: HostQueue, slba: int, data: bytes) -> None:
    await q.submit(c.rw(IoOpcode.WRITE, 1, slba, len(data) // BLOCK), data_out=data)


async def _read(q: HostQueue, slba: int, nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    await q.submit(c.rw(IoOpcode.READ, 1, slba, nbytes // BLOCK), data_in=buf)
    return buf


def with_fake(
    config: FakeConfig | None = None, **queue_args: Any
) -> Callable[[Callable[[FakeController, HostQueue], Awaitable[None]]], None]:
    """Run ``body(fake, queue)`` in a fresh loop with a connected queue."""

    def runner(body: Callable[[FakeController, HostQueue], Awaitable[None]]) -> None:
        async def main() -> None:
            fake = FakeController(config)
            q = await _queue(fake, **queue_args)
            try:
                await body(fake, q)
            finally:
                q.close()
                await fake.close()

        run(main())

    return runner


# -- data placement choices ------------------------------------------------------------------------


def test_write_that_fits_goes_in_capsule_and_larger_waits_for_r2t() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        small, large = os.urandom(4096), os.urandom(8192)
        await _write(q, 0, small)
        await _write(q, 64, large)
        first, second = fake.commands(IoOpcode.WRITE)
        assert first.incapsule == 4096 and first.sqe.sgl.type_byte == SGL_INCAPSULE
        assert first.sqe.sgl.length == 4096 and first.sqe.sgl.address == 0
        assert second.incapsule is None and second.sqe.sgl.type_byte == SGL_TCP_TRANSPORT
        assert second.sqe.sgl.length == 8192
        assert fake.r2ts == [(second.sqe.cid, 0, 8192)]
        assert fake.data[:4096] == small and fake.data[64 * BLOCK : 64 * BLOCK + 8192] == large
        assert await _read(q, 64, 8192) == large

    with_fake(FakeConfig(incapsule=4096), incapsule=4096)(body)


def test_every_command_uses_sgl_psdt_and_null_sgl_without_data() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        await q.submit(c.flush(1))
        (flush,) = fake.commands(IoOpcode.FLUSH)
        assert flush.sqe.flags & 0xC0 == 0x40
        assert flush.sqe.sgl.type_byte == SGL_TCP_TRANSPORT and flush.sqe.sgl.length == 0
        assert flush.incapsule is None

    with_fake()(body)


def test_h2c_data_split_by_maxh2cdata_with_last_flag_per_r2t() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        data = os.urandom(64 * 1024)
        await _write(q, 0, data)
        (cmd,) = fake.commands(IoOpcode.WRITE)
        cid = cmd.sqe.cid
        # four R2Ts of 16 KiB, each answered by four 4 KiB H2CData PDUs, LAST on the fourth
        assert fake.r2ts == [(cid, off, 16384) for off in range(0, 65536, 16384)]
        assert [(o, n) for _, o, n, _ in fake.h2c] == [(o, 4096) for o in range(0, 65536, 4096)]
        assert [last for *_, last in fake.h2c] == [i % 4 == 3 for i in range(16)]
        assert fake.data[: len(data)] == data

    with_fake(FakeConfig(maxh2cdata=4096, r2t_chunk=16384, incapsule=0), incapsule=0)(body)


def test_read_data_in_several_c2h_pdus_lands_in_the_callers_buffer() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        data = os.urandom(256 * 1024)
        fake.data[: len(data)] = data
        buf = bytearray(len(data) + 100)
        view = memoryview(buf)[50 : 50 + len(data)]
        await q.submit(c.rw(IoOpcode.READ, 1, 0, len(data) // BLOCK), data_in=view)
        assert buf[50 : 50 + len(data)] == data
        assert buf[:50] == bytes(50) and buf[-50:] == bytes(50)

    with_fake(FakeConfig(c2h_chunk=20000))(body)


# -- digests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hdgst", "ddgst"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_digests_negotiated_and_data_intact(hdgst: bool, ddgst: bool) -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        assert q.digests == (hdgst, ddgst)
        assert fake.queues[0].conn.hdgst == hdgst and fake.queues[0].conn.ddgst == ddgst
        for size in (512, 4096, 65536):
            data = os.urandom(size)
            await _write(q, 8, data)
            assert await _read(q, 8, size) == data

    with_fake(FakeConfig(incapsule=4096), hdgst=hdgst, ddgst=ddgst, incapsule=4096)(body)


def test_controller_enabling_an_unrequested_digest_is_refused() -> None:
    async def main() -> None:
        fake = FakeController(FakeConfig(force_hdgst=True))
        sock = await fake.pair()
        q = HostQueue(sock, qid=0, depth=4)
        with pytest.raises(TransportError, match="enabled the header digest"):
            await q.start(hdgst=False, ddgst=False)
        assert not q.is_open
        await fake.close()

    run(main())


def test_controller_refusing_a_requested_digest_is_refused() -> None:
    async def main() -> None:
        fake = FakeController(FakeConfig(allow_ddgst=False))
        sock = await fake.pair()
        q = HostQueue(sock, qid=0, depth=4)
        with pytest.raises(TransportError, match="disabled the data digest"):
            await q.start(hdgst=False, ddgst=True)
        await fake.close()

    run(main())


def test_data_digest_error_fails_only_that_command() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        fake.data[:4096] = b"x" * 4096
        fake.config.corrupt_next_read_digest = True
        with pytest.raises(NvmeError) as info:
            await _read(q, 0, 4096)
        assert info.value.code == SC.DATA_XFER_ERROR
        assert q.is_open
        assert await _read(q, 0, 4096) == b"x" * 4096

    with_fake(ddgst=True)(body)


@pytest.mark.parametrize("c2h_chunk", [0, 1536], ids=["one-pdu", "three-pdus"])
def test_data_digest_error_on_success_c2h_fails_that_command_at_once(c2h_chunk: int) -> None:
    """The corrupted PDU carries SUCCESS, so no CapsuleResp follows: the command must fail
    when its digest does (as Linux's nvme_tcp_recv_ddgst ends the request), not wait for an
    I/O timeout.  Its CID comes back, the queue stays open."""

    async def body(fake: FakeController, q: HostQueue) -> None:
        fake.data[:4096] = b"y" * 4096
        fake.config.corrupt_next_read_digest = True
        start = asyncio.get_running_loop().time()
        with pytest.raises(NvmeError) as info:
            await asyncio.wait_for(_read(q, 0, 4096), 5)
        assert asyncio.get_running_loop().time() - start < 2
        assert info.value.code == SC.DATA_XFER_ERROR
        assert q.is_open and q.outstanding == 0
        assert await _read(q, 0, 4096) == b"y" * 4096

    config = FakeConfig(success_flag=True, c2h_chunk=c2h_chunk)
    with_fake(config, ddgst=True, depth=2, io_timeout=15.0)(body)


# -- read data that does not add up --------------------------------------------------------------


@pytest.mark.parametrize("mangle", ["gap", "reverse", "repeat"])
def test_c2h_data_out_of_order_is_a_protocol_error(mangle: str) -> None:
    """Read data must come in order, each byte once (SPDK's host checks DATAO the same way,
    and this project's target checks H2CData so).  Before, any PDU inside the buffer was
    taken: with the first PDU missing, or sent twice over other data, the read succeeded
    with stale or wrong bytes."""

    async def body(fake: FakeController, q: HostQueue) -> None:
        fake.data[:4096] = os.urandom(4096)
        with pytest.raises(TransportError, match="expected offset"):
            await _read(q, 0, 4096)
        await asyncio.sleep(0.05)
        (term,) = fake.term_from_host
        assert term.fes == 0x04  # Data Transfer Out of Range
        assert term.fei == 12  # the DATAO field of the C2HData PDU

    with_fake(FakeConfig(c2h_chunk=1024, c2h_mangle=mangle))(body)


@pytest.mark.parametrize("success_flag", [False, True], ids=["capsule-resp", "success-flag"])
@pytest.mark.parametrize("mangle", ["none", "short"])
def test_a_read_completed_without_all_its_data_fails_that_read(
    mangle: str, success_flag: bool
) -> None:
    """A Read brings exactly its blocks: a success that comes with fewer (or none) would hand
    the caller a buffer of stale bytes as good data, which is what happened before.  It fails
    with Data Transfer Error, as a data digest mismatch does; the queue goes on."""

    async def body(fake: FakeController, q: HostQueue) -> None:
        data = os.urandom(4096)
        fake.data[:4096] = data
        with pytest.raises(NvmeError) as info:
            await asyncio.wait_for(_read(q, 0, 4096), 5)
        assert info.value.code == SC.DATA_XFER_ERROR
        assert q.is_open and q.outstanding == 0
        fake.config.c2h_mangle = ""
        assert await _read(q, 0, 4096) == data

    config = FakeConfig(c2h_chunk=1024, c2h_mangle=mangle, success_flag=success_flag)
    with_fake(config)(body)


# -- completions ---------------------------------------------------------------------------------


def test_c2h_success_flag_completes_without_capsule_resp() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        data = os.urandom(8192)
        fake.data[: len(data)] = data
        # more reads than CIDs: each must be freed by its SUCCESS C2HData alone
        for _ in range(3):
            results = await asyncio.gather(*(_read(q, 0, 8192) for _ in range(10)))
            assert all(r == data for r in results)
        assert q.outstanding == 0

    with_fake(FakeConfig(success_flag=True, c2h_chunk=3000), depth=4)(body)


def test_status_becomes_nvme_error_with_code_and_dnr() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        with pytest.raises(NvmeError) as info:
            await _read(q, 0, 512)
        err = info.value
        assert err.code == SC.LBA_RANGE and err.status.dnr
        assert err.raw == (1 << 14) | 0x080
        assert "LBA_RANGE" in str(err) and "sc=0x80" in str(err)
        assert q.is_open
        comp = await q.submit(c.rw(IoOpcode.READ, 1, 0, 1), data_in=bytearray(512), check=False)
        assert not comp.ok and comp.status.code == SC.LBA_RANGE

    with_fake(FakeConfig(fail_io={IoOpcode.READ: error(SC.LBA_RANGE)}))(body)


def test_unknown_status_code_keeps_its_raw_value() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        with pytest.raises(NvmeError) as info:
            await q.submit(c.flush(1))
        assert info.value.raw & 0x7FF == 0x1C3
        assert "sct=0x1 sc=0xc3" in str(info.value)
        assert info.value.status.encode() == info.value.raw  # the decoded value keeps it too
        comp = await q.submit(c.flush(1), check=False)
        assert comp.status.encode() == comp.status_field == 0x1C3

    class Odd(Status):
        def encode(self) -> int:
            return 0x1C3

    with_fake(FakeConfig(fail_io={IoOpcode.FLUSH: Odd(SC.INTERNAL)}))(body)


def test_more_commands_than_cids_wait_for_free_ones() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        datas = [os.urandom(1024) for _ in range(40)]
        await asyncio.gather(*(_write(q, i * 2, d) for i, d in enumerate(datas)))
        backs = await asyncio.gather(*(_read(q, i * 2, 1024) for i in range(40)))
        assert backs == datas
        cids = {s.sqe.cid for s in fake.seen}
        assert cids <= set(range(4))
        assert q.outstanding == 0

    with_fake(depth=4)(body)


# -- fatal errors ----------------------------------------------------------------------------------


def test_term_req_from_controller_fails_outstanding_and_later_commands() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        reads = [asyncio.ensure_future(_read(q, 0, 512)) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(TransportError, match="C2HTermReq fes 0x1"):
            await q.submit(c.flush(1))
        for r in reads:
            with pytest.raises(TransportError):
                await r
        assert not q.is_open
        with pytest.raises(TransportError):
            await _read(q, 0, 512)

    with_fake(FakeConfig(drop_io={IoOpcode.READ}, term_on_io=IoOpcode.FLUSH))(body)


def test_controller_protocol_error_gets_h2c_term_req() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        with pytest.raises(TransportError, match="unknown cccid"):
            await _read(q, 0, 512)
        await asyncio.sleep(0.05)
        (term,) = fake.term_from_host
        assert term.fes == 0x01  # Invalid PDU Header Field
        assert term.fei == 8  # the CCCID field of the C2HData PDU

    with_fake(FakeConfig(bogus_cccid_on_read=True))(body)


def test_command_timeout_fails_the_queue() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        with pytest.raises(TransportError, match="timed out"):
            await _read(q, 0, 512)
        assert not q.is_open

    with_fake(FakeConfig(drop_io={IoOpcode.READ}), io_timeout=0.3)(body)


def test_controller_closing_the_connection_fails_commands() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        pending = asyncio.ensure_future(_read(q, 0, 512))
        await asyncio.sleep(0.05)
        fake.queues[0].writer.close()
        with pytest.raises(TransportError, match="closed the connection"):
            await pending

    with_fake(FakeConfig(drop_io={IoOpcode.READ}))(body)


def test_read_buffer_must_be_writable() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        with pytest.raises(TypeError, match="writable"):
            await q.submit(c.rw(IoOpcode.READ, 1, 0, 1), data_in=memoryview(bytes(512)))
        await q.submit(c.flush(1))  # the queue is still usable
        assert len(q.cids.free) == q.depth  # and no CID leaked

    with_fake(depth=2)(body)


def test_cancelled_submitters_do_not_leak_cids() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        # two unanswered reads hold both CIDs; three flushes wait for one
        held = [asyncio.ensure_future(_read(q, 0, 512)) for _ in range(2)]
        waiting = [asyncio.ensure_future(q.submit(c.flush(1))) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert q.outstanding == 2 and len(q.cids.waiters) == 3
        # CID 0 completes and is handed to the first waiter, which is cancelled before it runs
        cmd = q.cids.entries[0]
        assert cmd is not None
        q._complete(cmd, Completion(0, 0, 0, 1, 0, 0))
        waiting[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]
        # the CID went on to the next waiters, whose flushes complete
        await asyncio.gather(waiting[1], waiting[2])
        assert held[0].done() and not held[1].done()
        assert list(q.cids.free) == [0] and q.outstanding == 1 and not q.cids.waiters

    with_fake(FakeConfig(drop_io={IoOpcode.READ}), depth=2)(body)


def test_r2t_for_data_sent_in_capsule_is_a_protocol_error() -> None:
    async def body(fake: FakeController, q: HostQueue) -> None:
        with pytest.raises(TransportError, match="R2T 0\\+4096"):
            await _write(q, 0, bytes(4096))
        await asyncio.sleep(0.05)
        (term,) = fake.term_from_host
        assert term.fes == 0x04  # Data Transfer Out of Range
        assert not fake.h2c  # nothing was sent twice

    with_fake(FakeConfig(r2t_on_incapsule=True))(body)
