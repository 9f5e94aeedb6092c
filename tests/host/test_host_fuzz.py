"""Mutated controller PDU streams against :class:`HostQueue` (what tests/target/test_fuzz.py
does to the target, done to the host): whatever a controller sends, every command ends, with
its data, an :class:`NvmeError` or a :class:`TransportError`, and nothing else escapes.  A Read
reported good holds the controller's data, unless the payload itself was changed on a queue
without data digests, which no host can see.  This is how a host accepting out-of-order,
repeated and missing C2HData was found (see test_host_queue.py)."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import pytest

from nvmf.host import commands as c
from nvmf.host.errors import HostError
from nvmf.host.queue import HostQueue
from nvmf.protocol import tcp as p
from nvmf.wire import tcp as w
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import encode_cqe
from nvmf.wire.status import SC, SUCCESS, error
from tests.target.test_fuzz import _flat, _mutate, _whole_pdus

READ_DATA = bytes(range(256)) * 16


async def _recv_pdus(sock: socket.socket, count: int) -> list[bytes]:
    """Up to ``count`` whole PDUs from the host (fewer if it stops sending for a second)."""
    loop = asyncio.get_running_loop()
    buf = b""
    try:
        while len(_whole_pdus(buf)[0]) < count:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 1)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        pass
    return [pdu for _, pdu in _whole_pdus(buf)[0][:count]]


def _reorder(rnd: random.Random, pdus: list[bytes]) -> list[bytes]:
    """Now and then a whole PDU lost or two PDUs swapped: the controller's mistakes that
    byte mutations do not make (a Read answered without its data, data out of order)."""
    pdus = list(pdus)
    kind = rnd.randrange(4)
    if kind == 0 and len(pdus) > 1:
        del pdus[rnd.randrange(len(pdus))]
    elif kind == 1 and len(pdus) > 1:
        i, j = rnd.sample(range(len(pdus)), 2)
        pdus[i], pdus[j] = pdus[j], pdus[i]
    return pdus


async def _trial(rnd: random.Random, mutate: bool) -> list[str]:
    """One queue, a Read, an R2T Write and a Flush, answered by a (mutated) controller; how
    each command ended."""
    loop = asyncio.get_running_loop()
    host, ctrl_sock = socket.socketpair()
    host.setblocking(False)
    ctrl_sock.setblocking(False)
    hdgst, ddgst = rnd.random() < 0.5, rnd.random() < 0.5
    q = HostQueue(host, qid=1, depth=16, incapsule_size=8192, io_timeout=0.5)
    try:
        start = asyncio.ensure_future(q.start(hdgst=hdgst, ddgst=ddgst))
        await _recv_pdus(ctrl_sock, 1)
        await loop.sock_sendall(ctrl_sock, w.icresp(hdgst=hdgst, ddgst=ddgst, maxh2cdata=1 << 17))
        await start
        read_buf = bytearray(len(READ_DATA))
        subs = [
            asyncio.ensure_future(q.submit(c.rw(IoOpcode.READ, 1, 0, 8), data_in=read_buf)),
            asyncio.ensure_future(q.submit(c.rw(IoOpcode.WRITE, 1, 0, 32), data_out=bytes(16384))),
            asyncio.ensure_future(q.submit(c.flush(1))),
        ]
        cids = [int.from_bytes(pdu[10:12], "little") for pdu in await _recv_pdus(ctrl_sock, 3)]
        rd, wr, fl = cids
        ctrl = p.TcpConnection(p.Role.CONTROLLER, None)  # type: ignore[arg-type]
        ctrl.hdgst, ctrl.ddgst = hdgst, ddgst
        _ttag, r2t = ctrl.open_transfer(wr, memoryview(bytearray(16384)))
        stream = [
            _flat(ctrl.c2h_data(rd, 0, memoryview(READ_DATA), last=True)),
            ctrl.capsule_resp(encode_cqe(SUCCESS, cid=rd, sqid=1, sqhd=0)),
            r2t,
            ctrl.capsule_resp(encode_cqe(error(SC.INVALID_FIELD), cid=fl, sqid=1, sqhd=0)),
            ctrl.capsule_resp(encode_cqe(SUCCESS, cid=wr, sqid=1, sqhd=0)),
        ]
        mutated = _reorder(rnd, _mutate(rnd, stream)) if mutate else stream
        sent = b"".join(mutated)
        try:
            await loop.sock_sendall(ctrl_sock, b"".join(mutated[:-1]))
            await _recv_pdus(ctrl_sock, 1)  # the Write's H2CData, if the host sends it
            await loop.sock_sendall(ctrl_sock, mutated[-1])
        except OSError:
            pass  # the host may have closed the connection already
        done, _ = await asyncio.wait(subs, timeout=3)
        ended = []
        for sub in subs:
            assert sub in done, ("a command never ended", sent.hex())
            exc = sub.exception()
            assert exc is None or isinstance(exc, HostError), (exc, sent.hex())
            ended.append(type(exc).__name__ if exc else "ok")
        if ended[0] == "ok" and read_buf != READ_DATA:
            assert not ddgst and READ_DATA not in sent, sent.hex()
            ended[0] = "payload changed"
        return ended
    finally:
        q.close()
        host.close()
        ctrl_sock.close()


@pytest.mark.parametrize("seed", range(2))
def test_mutated_controller_streams(seed: int) -> None:
    async def main() -> list[list[str]]:
        odd: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: odd.append(ctx))
        rnd = random.Random(seed)
        results = [await _trial(rnd, mutate=trial > 0) for trial in range(30)]
        await asyncio.sleep(0)
        assert not odd, odd
        return results

    results = asyncio.run(main())
    assert results[0] == ["ok", "ok", "NvmeError"]  # the stream as sent: the Flush's error
    assert len({tuple(r) for r in results}) > 3  # the mutations reached every command
