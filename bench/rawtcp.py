"""The raw loopback TCP ceiling: the same request/response traffic as NVMe/TCP, minus NVMe.

A client keeps ``depth`` requests in flight on one connection per job; each request is a 72-byte
"capsule" (the size of an NVMe/TCP CapsuleCmd PDU), answered by a 24-byte "response" (a
CapsuleResp's size).  A read request is answered by the response header followed by ``bs`` bytes
of payload; a write request carries ``bs`` bytes after it.  Both ends are Python on the same event
loop machinery as the nvmf host and target (uvloop when installed, asyncio protocols, payload
received into preallocated buffers), so the gap between this and nvmf is what NVMe (command
parsing, SGLs, R2T/H2CData, the target's request pipeline) costs, not what Python or loopback TCP
costs.

Run the server with ``python bench/rawtcp.py PORT`` (prints ``listening PORT`` once bound).
"""

from __future__ import annotations

import array
import asyncio
import random
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

#: kind (1 read, 2 write), pad, tag, length; padded to a CapsuleCmd's 72 bytes.
REQUEST = struct.Struct("<BxHI64x")
assert REQUEST.size == 72
#: tag, pad, status; padded to a CapsuleResp's 24 bytes.
RESPONSE = struct.Struct("<HHI16x")
assert RESPONSE.size == 24
KIND_READ = 1
KIND_WRITE = 2


class _Server(asyncio.BufferedProtocol):
    """Answers requests: headers into a small buffer, write payload into one staging buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.hdr = bytearray(REQUEST.size)
        self.hdr_view = memoryview(self.hdr)
        self.filled = 0
        self.payload = memoryview(bytearray(0))
        self.pending: tuple[int, int] | None = None  # (tag, length) of a write's payload
        self.read_data = memoryview(bytes(0))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.pending is not None:
            return self.payload[self.filled :]
        return self.hdr_view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        transport = self.transport
        assert transport is not None
        if self.pending is not None:
            if self.filled == len(self.payload):
                tag, _ = self.pending
                self.pending = None
                self.filled = 0
                transport.write(RESPONSE.pack(tag, 0, 0))
            return
        if self.filled < REQUEST.size:
            return
        self.filled = 0
        kind, tag, length = REQUEST.unpack(self.hdr)
        if kind == KIND_READ:
            if len(self.read_data) != length:
                self.read_data = memoryview(bytes(length))
            transport.writelines([RESPONSE.pack(tag, 0, 0), self.read_data])
        else:
            if len(self.payload) != length:
                self.payload = memoryview(bytearray(length))
            self.pending = (tag, length)


class _Client(asyncio.BufferedProtocol):
    """Sends requests, receives responses and read payload straight into the caller's buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.hdr = bytearray(RESPONSE.size)
        self.hdr_view = memoryview(self.hdr)
        self.filled = 0
        self.waiting: dict[int, tuple[asyncio.Future[None], memoryview | None]] = {}
        self.order: deque[int] = deque()
        self.data_for: memoryview | None = None
        self.data_tag = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.data_for is not None:
            return self.data_for[self.filled :]
        return self.hdr_view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if self.data_for is not None:
            if self.filled == len(self.data_for):
                self.data_for = None
                self.filled = 0
                fut, _ = self.waiting.pop(self.data_tag)
                fut.set_result(None)
            return
        if self.filled < RESPONSE.size:
            return
        self.filled = 0
        tag, _, _ = RESPONSE.unpack(self.hdr)
        fut, buf = self.waiting[tag]
        if buf is not None and len(buf):
            self.data_for = buf
            self.data_tag = tag
            return
        del self.waiting[tag]
        fut.set_result(None)

    async def request(self, tag: int, kind: int, buf: memoryview) -> None:
        transport = self.transport
        assert transport is not None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[tag] = (fut, buf if kind == KIND_READ else None)
        if kind == KIND_READ:
            transport.write(REQUEST.pack(kind, tag, len(buf)))
        else:
            transport.writelines([REQUEST.pack(kind, tag, len(buf)), buf])
        await fut


@dataclass
class RawResult:
    ios: int
    bytes: int
    elapsed: float
    lat_ns: array.array[int]


async def run_client(
    port: int, *, write: bool, bs: int, depth: int, jobs: int, runtime: float
) -> RawResult:
    """``jobs`` connections with ``depth`` requests in flight each, for ``runtime`` seconds."""
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(jobs):
        _, proto = await loop.create_connection(_Client, "127.0.0.1", port)
        clients.append(proto)
    lat: array.array[int] = array.array("q")
    totals = [0]
    deadline = time.monotonic() + runtime
    kind = KIND_WRITE if write else KIND_READ

    async def worker(client: _Client, tag: int) -> None:
        buf = memoryview(bytearray(random.randbytes(bs)))
        clock = time.perf_counter_ns
        while time.monotonic() < deadline:
            t0 = clock()
            await client.request(tag, kind, buf)
            lat.append(clock() - t0)
            totals[0] += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(c, t) for c in clients for t in range(depth)))
    elapsed = time.monotonic() - start
    for c in clients:
        assert c.transport is not None
        c.transport.close()
    return RawResult(totals[0], totals[0] * bs, elapsed, lat)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    await server.serve_forever()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    try:
        import uvloop

        uvloop.run(serve(port))
    except ImportError:
        asyncio.run(serve(port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
