"""The sans-IO NVMe/TCP codec in memory: a host and a controller wired through byte strings.

Placement stubs back every destination with a bytearray, so the tests see where data lands and
can check that bulk payload is received straight into it (zero copy); H2CData lands in the R2T
windows the controller opened with ``open_transfer``, each a bytearray of the test's.  The key
property of a streaming parser is checked with Hypothesis: any chunking of the same byte stream
gives the same events and the same data placement.  Fatal conditions are checked one by one for
their Fatal Error Status and Fatal Error Information (the FES/FEI of an NVMe/TCP 1.0 TermReq), and
random bytes may only ever raise :class:`TcpFatalError`.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvmf.protocol import tcp
from nvmf.protocol.tcp import (
    C2HDataReceived,
    CommandReceived,
    DataDigestError,
    Event,
    H2CDataReceived,
    ICReqReceived,
    ICRespReceived,
    R2TReceived,
    ResponseReceived,
    Role,
    TcpConnection,
    TcpFatalError,
    TermReqReceived,
)
from nvmf.wire import tcp as w
from nvmf.wire.sqe import Cqe, SglDescriptor, Sqe
from nvmf.wire.tcp import Fes, PduFlags, PduType

Buffers = list[bytes | memoryview]

# ---------------------------------------------------------------------------------------------
# Placement stubs, the connection pair, helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class Store:
    """A DataPlacement backed by bytearrays that records every destination it hands out, and
    the buffers of the R2T windows a test opened on its controller (:func:`open_h2c`)."""

    size: int = 1 << 16
    capsules: list[tuple[bytes, bytearray]] = field(default_factory=list)
    #: cccid -> the buffer of the command's R2T window (the codec places H2CData in it).
    h2c: dict[int, bytearray] = field(default_factory=dict)
    c2h: dict[int, bytearray] = field(default_factory=dict)
    #: (buffer, offset, length) of each destination, in the order they were asked for.
    handed: list[tuple[bytearray, int, int]] = field(default_factory=list)

    def capsule_data(self, sqe: memoryview, length: int) -> memoryview:
        buf = bytearray(length)
        self.capsules.append((bytes(sqe), buf))
        self.handed.append((buf, 0, length))
        return memoryview(buf)

    def c2h_data(self, cccid: int, datao: int, datal: int) -> memoryview:
        if datao + datal > self.size:
            raise TcpFatalError(Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO, b"", "out of range")
        buf = self.c2h.setdefault(cccid, bytearray(self.size))
        self.handed.append((buf, datao, datal))
        return memoryview(buf)[datao : datao + datal]


def open_h2c(ctrl: TcpConnection, store: Store, cccid: int, size: int) -> int:
    """Open an R2T window of ``size`` bytes for ``cccid`` on ``ctrl``, backed by a new buffer
    in ``store.h2c``; the transfer tag."""
    buf = store.h2c[cccid] = bytearray(size)
    ttag, _ = ctrl.open_transfer(cccid, memoryview(buf))
    return ttag


@dataclass
class Pair:
    host: TcpConnection
    ctrl: TcpConnection
    hstore: Store
    cstore: Store


def flat(bufs: Iterable[bytes | memoryview]) -> bytes:
    return b"".join(bytes(b) for b in bufs)


def new_pair(
    *,
    hdgst: bool = False,
    ddgst: bool = False,
    hpda: int = 0,
    cpda: int = 0,
    max_incapsule: int = 8192,
    maxh2cdata: int = 1 << 20,
) -> Pair:
    """Host and controller after the IC exchange (the controller allows what the host asks)."""
    hstore, cstore = Store(), Store()
    host = TcpConnection(Role.HOST, hstore)
    ctrl = TcpConnection(
        Role.CONTROLLER, cstore, max_incapsule=max_incapsule, maxh2cdata=maxh2cdata
    )
    ctrl.cpda = cpda
    (req,) = ctrl.receive(host.start_icreq(hdgst=hdgst, ddgst=ddgst, hpda=hpda))
    assert isinstance(req, ICReqReceived)
    (resp,) = host.receive(ctrl.accept_icreq(req, hdgst=True, ddgst=True))
    assert isinstance(resp, ICRespReceived)
    host.accept_icresp(resp)
    return Pair(host, ctrl, hstore, cstore)


def fresh_receiver(like: TcpConnection, store: Store) -> TcpConnection:
    """A new connection of the same role with the same negotiated parameters."""
    conn = TcpConnection(
        like.role, store, max_incapsule=like.max_incapsule, maxh2cdata=like.maxh2cdata
    )
    conn.hdgst, conn.ddgst = like.hdgst, like.ddgst
    conn.hpda, conn.cpda = like.hpda, like.cpda
    conn.established = True
    return conn


def sqe_bytes(cid: int, opcode: int = 0x01, length: int = 0) -> bytes:
    sqe = Sqe(opcode=opcode, cid=cid, nsid=1)
    sqe.sgl = SglDescriptor.incapsule(length) if length else SglDescriptor.tcp_transport(0)
    return sqe.encode()


def normalize(events: Iterable[Event]) -> list[object]:
    """Events as comparable values (a capsule's data view becomes its bytes)."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, CommandReceived):
            out.append(("cmd", ev.sqe, None if ev.data is None else bytes(ev.data)))
        else:
            out.append(ev)
    return out


def address(view: memoryview | bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + n).randbytes(n)


# ---------------------------------------------------------------------------------------------
# Initialization
# ---------------------------------------------------------------------------------------------

DIGESTS = [(False, False), (True, False), (False, True), (True, True)]
PDAS = [(0, 0), (1, 0), (0, 1), (3, 7), (31, 31)]


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
@pytest.mark.parametrize(("hpda", "cpda"), PDAS)
def test_ic_exchange(hdgst: bool, ddgst: bool, hpda: int, cpda: int) -> None:
    host = TcpConnection(Role.HOST, Store())
    ctrl = TcpConnection(Role.CONTROLLER, Store(), maxh2cdata=131072)
    ctrl.cpda = cpda
    icreq = host.start_icreq(hdgst=hdgst, ddgst=ddgst, hpda=hpda)
    assert icreq[10] == hpda and icreq[11] == (hdgst | ddgst << 1)
    (req,) = ctrl.receive(icreq)
    assert isinstance(req, ICReqReceived)
    assert req == ICReqReceived(hpda=hpda, hdgst=hdgst, ddgst=ddgst, maxr2t=0)
    established_before = ctrl.established
    assert not established_before
    icresp = ctrl.accept_icreq(req, hdgst=True, ddgst=True)
    assert ctrl.established and ctrl.hpda == hpda
    assert icresp[10] == cpda and icresp[11] == (hdgst | ddgst << 1)
    assert struct.unpack_from("<I", icresp, 12)[0] == 131072
    (resp,) = host.receive(icresp)
    assert isinstance(resp, ICRespReceived)
    assert resp == ICRespReceived(cpda=cpda, hdgst=hdgst, ddgst=ddgst, maxh2cdata=131072)
    host.accept_icresp(resp)
    assert host.established and host.cpda == cpda and host.maxh2cdata == 131072
    assert (host.hdgst, host.ddgst) == (ctrl.hdgst, ctrl.ddgst) == (hdgst, ddgst)


def test_controller_turns_off_digests_it_does_not_allow() -> None:
    host = TcpConnection(Role.HOST, Store())
    ctrl = TcpConnection(Role.CONTROLLER, Store())
    (req,) = ctrl.receive(host.start_icreq(hdgst=True, ddgst=True))
    assert isinstance(req, ICReqReceived)
    (resp,) = host.receive(ctrl.accept_icreq(req, hdgst=False, ddgst=True))
    assert isinstance(resp, ICRespReceived)
    host.accept_icresp(resp)
    assert (ctrl.hdgst, ctrl.ddgst) == (host.hdgst, host.ddgst) == (False, True)


# ---------------------------------------------------------------------------------------------
# Data movement for each digest combination and PDA
# ---------------------------------------------------------------------------------------------


def check_data_pdu_layout(
    pdu: bytes, header_len: int, pda: int, data: bytes, hdgst: bool, ddgst: bool
) -> None:
    hd = 4 if hdgst else 0
    pdo = w.pad_to(header_len + hd, pda)
    assert pdu[3] == pdo
    assert struct.unpack_from("<I", pdu, 4)[0] == len(pdu) == pdo + len(data) + (4 if ddgst else 0)
    assert bool(pdu[1] & PduFlags.HDGSTF) is hdgst
    assert bool(pdu[1] & PduFlags.DDGSTF) is ddgst
    if hdgst:
        assert pdu[header_len : header_len + 4] == w.digest(pdu[:header_len])
    assert pdu[header_len + hd : pdo] == bytes(pdo - header_len - hd)  # padding is zeros
    assert pdu[pdo : pdo + len(data)] == data
    if ddgst:
        assert pdu[-4:] == w.digest(data)


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
@pytest.mark.parametrize(("hpda", "cpda"), PDAS)
def test_capsule_with_and_without_incapsule_data(
    hdgst: bool, ddgst: bool, hpda: int, cpda: int
) -> None:
    p = new_pair(hdgst=hdgst, ddgst=ddgst, hpda=hpda, cpda=cpda)
    # Without data: the 72-byte header (and its digest), nothing else.
    pdu = flat(p.host.capsule_cmd(sqe_bytes(1)))
    assert len(pdu) == 72 + (4 if hdgst else 0) and pdu[3] == 0
    assert p.ctrl.receive(pdu) == [CommandReceived(sqe_bytes(1), None)]
    # With data: padded to CPDA, data in the placement's buffer.
    data = payload(1000)
    sqe = sqe_bytes(2, length=len(data))
    pdu = flat(p.host.capsule_cmd(sqe, memoryview(data)))
    check_data_pdu_layout(pdu, 72, cpda, data, hdgst, ddgst)
    events = p.ctrl.receive(pdu)
    assert normalize(events) == [("cmd", sqe, data)]
    assert p.cstore.capsules == [(sqe, bytearray(data))]
    # Empty data is the same as no data.
    assert flat(p.host.capsule_cmd(sqe_bytes(3), memoryview(b""))) == flat(
        p.host.capsule_cmd(sqe_bytes(3))
    )


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
@pytest.mark.parametrize(("hpda", "cpda"), PDAS)
def test_r2t_then_h2c_data_in_several_pdus(hdgst: bool, ddgst: bool, hpda: int, cpda: int) -> None:
    p = new_pair(hdgst=hdgst, ddgst=ddgst, hpda=hpda, cpda=cpda)
    data = payload(10000)
    dest = bytearray(len(data))
    ttag, r2t = p.ctrl.open_transfer(5, memoryview(dest))
    assert len(r2t) == 24 + (4 if hdgst else 0) and r2t[3] == 0
    assert p.host.receive(r2t) == [R2TReceived(cccid=5, ttag=ttag, r2to=0, r2tl=len(data))]
    cuts = [0, 4096, 8192, len(data)]
    events: list[Event] = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        last = hi == len(data)
        pdu = flat(p.host.h2c_data(5, ttag, lo, memoryview(data)[lo:hi], last=last))
        check_data_pdu_layout(pdu, 24, cpda, data[lo:hi], hdgst, ddgst)
        assert pdu[0] == PduType.H2C_DATA and bool(pdu[1] & PduFlags.DATA_LAST) is last
        events += p.ctrl.receive(pdu)
        assert len(events) == i + 1
    assert events == [
        H2CDataReceived(5, ttag, 0, 4096, False, False),
        H2CDataReceived(5, ttag, 4096, 4096, False, False),
        H2CDataReceived(5, ttag, 8192, len(data) - 8192, True, True),
    ]
    assert dest == data


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
@pytest.mark.parametrize(("hpda", "cpda"), PDAS)
def test_c2h_data_flags_and_capsule_resp(hdgst: bool, ddgst: bool, hpda: int, cpda: int) -> None:
    p = new_pair(hdgst=hdgst, ddgst=ddgst, hpda=hpda, cpda=cpda)
    data = payload(6000)
    first = flat(p.ctrl.c2h_data(3, 0, memoryview(data)[:2000], last=False))
    check_data_pdu_layout(first, 24, hpda, data[:2000], hdgst, ddgst)
    second = flat(p.ctrl.c2h_data(3, 2000, memoryview(data)[2000:], last=True, success=True))
    check_data_pdu_layout(second, 24, hpda, data[2000:], hdgst, ddgst)
    assert second[1] & (PduFlags.DATA_LAST | PduFlags.DATA_SUCCESS) == 0x0C
    assert first[1] & (PduFlags.DATA_LAST | PduFlags.DATA_SUCCESS) == 0
    assert p.host.receive(first + second) == [
        C2HDataReceived(3, 0, 2000, last=False, success=False),
        C2HDataReceived(3, 2000, 4000, last=True, success=True),
    ]
    assert p.hstore.c2h[3][:6000] == data
    # LAST without SUCCESS: a CapsuleResp follows.
    pdu = flat(p.ctrl.c2h_data(4, 0, memoryview(data)[:512], last=True))
    assert p.host.receive(pdu) == [C2HDataReceived(4, 0, 512, last=True, success=False)]
    cqe = Cqe(dw0=0xAABBCCDD, sqhd=3, cid=4).encode()
    resp = p.ctrl.capsule_resp(cqe)
    assert len(resp) == 24 + (4 if hdgst else 0) and resp[0] == PduType.RSP and resp[3] == 0
    assert resp[8:24] == cqe
    assert p.host.receive(resp) == [ResponseReceived(cqe)]


def test_large_h2c_data_beyond_the_receive_buffer() -> None:
    """1 MiB in one PDU (more than the 256 KiB receive buffer) goes straight to its buffer."""
    p = new_pair(ddgst=True)
    data = payload(1 << 20)
    ttag = open_h2c(p.ctrl, p.cstore, 1, len(data))
    pdu = flat(p.host.h2c_data(1, ttag, 0, memoryview(data), last=True))
    assert p.ctrl.receive(pdu) == [H2CDataReceived(1, ttag, 0, 1 << 20, True, True)]
    assert p.cstore.h2c[1] == data


# ---------------------------------------------------------------------------------------------
# Streaming: any chunking, same events, same placement, zero copy for the unbuffered part
# ---------------------------------------------------------------------------------------------


#: Where a data PDU's payload must land in the receiver: ("h2c", cccid, datao), the command's
#: R2T window at that offset, or ("placed", n), the receiver's n-th placement destination.
Where = tuple[str, int, int]


@dataclass
class Stream:
    data: bytes
    #: (start, end) in ``data`` of each data PDU's payload, in stream order, and its place.
    payloads: list[tuple[int, int, Where]]
    #: Number of PDUs in the stream.
    count: int


Op = tuple[str, int, int]


def open_windows(ctrl: TcpConnection, store: Store, ops: list[Op]) -> dict[int, int]:
    """Open on ``ctrl`` the R2T window of every "h2c" op (its cccid is its index): cccid ->
    transfer tag.  Fresh connections hand out the same tags in the same order."""
    return {cid: open_h2c(ctrl, store, cid, size) for cid, (kind, size, _) in enumerate(ops)
            if kind == "h2c"}  # fmt: skip


def build_stream(
    sender: TcpConnection, ops: list[Op], ttags: dict[int, int] | None = None
) -> Stream:
    """PDUs from ``sender``: (kind, size, pieces) per op, each op its own cccid; an "h2c" op's
    PDUs carry the tag ``ttags`` gives its cccid."""
    out = bytearray()
    payloads: list[tuple[int, int, Where]] = []
    count = 0
    placed = 0

    def add(bufs: Buffers, where: Where | None) -> None:
        nonlocal count, placed
        count += 1
        start = len(out) + len(bufs[0])
        out.extend(flat(bufs))
        if where is not None:
            if where[0] == "placed":
                where = ("placed", placed, 0)
                placed += 1
            payloads.append((start, start + len(bufs[1]), where))

    placement: Where = ("placed", 0, 0)
    for cid, (kind, size, pieces) in enumerate(ops):
        data = payload(size, cid)
        if kind == "cmd":
            sqe = sqe_bytes(cid, length=size)
            add(
                sender.capsule_cmd(sqe, memoryview(data) if size else None),
                placement if size else None,
            )
        elif kind in ("h2c", "c2h"):
            bounds = sorted({0, size, *(size * k // pieces for k in range(1, pieces))})
            for lo, hi in itertools.pairwise(bounds):
                view = memoryview(data)[lo:hi]
                last = hi == size
                if kind == "h2c":
                    assert ttags is not None
                    add(sender.h2c_data(cid, ttags[cid], lo, view, last=last), ("h2c", cid, lo))
                else:
                    add(sender.c2h_data(cid, lo, view, last=last, success=last), placement)
        elif kind == "r2t":
            add([sender.open_transfer(cid, memoryview(bytearray(size)))[1]], None)
        else:
            add([sender.capsule_resp(Cqe(cid=cid, sqhd=size & 0xFFFF).encode())], None)
    return Stream(bytes(out), payloads, count)


def feed(
    conn: TcpConnection, store: Store, stream: Stream, sizes: Iterable[int], *, check: bool
) -> list[Event]:
    """Feed ``stream`` as recv_into would, in pieces of the given sizes (then the rest).

    With ``check``, whenever the bytes fed so far end inside a data PDU's payload, the buffer
    the connection hands out must be the placement's destination at exactly that point.
    """
    events: list[Event] = []
    pos = 0
    total = len(stream.data)
    plan = [*sizes, total]
    for size in plan:
        end = min(total, pos + size)
        while pos < end:
            buf = conn.get_buffer()
            assert len(buf) > 0
            if check:
                for ds, de, (kind, key, at) in stream.payloads:
                    if ds <= pos < de:
                        if kind == "h2c":
                            dest, off = store.h2c[key], at
                        else:
                            dest, off, length = store.handed[key]
                            assert length == de - ds
                        assert len(buf) == de - pos
                        assert address(buf) == address(dest) + off + (pos - ds)
            n = min(len(buf), end - pos)
            buf[:n] = stream.data[pos : pos + n]
            events += conn.buffer_updated(n)
            pos += n
        if pos == total:
            break
    return events


host_ops = st.lists(
    st.one_of(
        st.tuples(st.just("cmd"), st.integers(0, 3000), st.just(1)),
        st.tuples(st.just("h2c"), st.integers(1, 5000), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=6,
)
ctrl_ops = st.lists(
    st.one_of(
        st.tuples(st.just("c2h"), st.integers(1, 5000), st.integers(1, 4)),
        st.tuples(st.just("r2t"), st.integers(1, 1 << 20), st.just(1)),
        st.tuples(st.just("rsp"), st.integers(0, 0xFFFF), st.just(1)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    to_controller=st.booleans(),
    hdgst=st.booleans(),
    ddgst=st.booleans(),
    hpda=st.sampled_from([0, 1, 7, 31]),
    cpda=st.sampled_from([0, 2, 15, 31]),
)
def test_any_chunking_gives_the_same_events_and_placement(
    data: st.DataObject, to_controller: bool, hdgst: bool, ddgst: bool, hpda: int, cpda: int
) -> None:
    p = new_pair(hdgst=hdgst, ddgst=ddgst, hpda=hpda, cpda=cpda)
    sender, receiver = (p.host, p.ctrl) if to_controller else (p.ctrl, p.host)
    ops = data.draw(host_ops if to_controller else ctrl_ops)
    whole_store, chunk_store = Store(), Store()
    whole_receiver = fresh_receiver(receiver, whole_store)
    chunk_receiver = fresh_receiver(receiver, chunk_store)
    ttags: dict[int, int] | None = None
    if to_controller:  # the H2CData answers R2Ts: the receivers open their windows first
        ttags = open_windows(whole_receiver, whole_store, ops)
        assert open_windows(chunk_receiver, chunk_store, ops) == ttags
    stream = build_stream(sender, ops, ttags)
    sizes = data.draw(
        st.one_of(
            st.lists(st.integers(1, 64), max_size=200),
            st.lists(st.integers(1, len(stream.data)), max_size=8),
        )
    )
    whole = whole_receiver.receive(stream.data)
    chunked = feed(chunk_receiver, chunk_store, stream, sizes, check=True)
    assert normalize(chunked) == normalize(whole)
    assert len(whole) == stream.count
    assert chunk_store.h2c == whole_store.h2c
    assert chunk_store.c2h == whole_store.c2h
    assert chunk_store.capsules == whole_store.capsules
    # And the data is what was sent.
    for cid, (kind, size, _) in enumerate(ops):
        if kind == "h2c":
            assert chunk_store.h2c[cid][:size] == payload(size, cid)
        elif kind == "c2h":
            assert chunk_store.c2h[cid][:size] == payload(size, cid)


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS)
def test_one_byte_pieces(hdgst: bool, ddgst: bool) -> None:
    p = new_pair(hdgst=hdgst, ddgst=ddgst, hpda=3, cpda=1)
    ops = [("cmd", 0, 1), ("cmd", 700, 1), ("h2c", 1500, 3), ("cmd", 64, 1)]
    whole_store, store = Store(), Store()
    whole_receiver, receiver = fresh_receiver(p.ctrl, whole_store), fresh_receiver(p.ctrl, store)
    ttags = open_windows(whole_receiver, whole_store, ops)
    assert open_windows(receiver, store, ops) == ttags
    stream = build_stream(p.host, ops, ttags)
    whole = whole_receiver.receive(stream.data)
    events = feed(receiver, store, stream, [1] * len(stream.data), check=True)
    assert normalize(events) == normalize(whole)
    assert [type(e).__name__ for e in events] == ["CommandReceived"] * 2 + [
        "H2CDataReceived"
    ] * 3 + ["CommandReceived"]
    assert store.h2c[2][:1500] == payload(1500, 2)
    assert store.capsules[0][1] == payload(700, 1)


def test_zero_copy_after_the_header() -> None:
    """Header plus a little data in one read: the rest is received into the destination."""
    p = new_pair()
    data = payload(50000)
    pdu = flat(p.ctrl.c2h_data(9, 100, memoryview(data), last=True, success=True))
    assert p.host.receive(pdu[: 24 + 10]) == []
    buf = p.host.get_buffer()
    dest = p.hstore.c2h[9]
    assert len(buf) == len(data) - 10
    assert address(buf) == address(dest) + 100 + 10
    buf[:1000] = pdu[34:1034]
    assert p.host.buffer_updated(1000) == []
    assert address(p.host.get_buffer()) == address(dest) + 100 + 1010
    rest = pdu[1034:]
    p.host.get_buffer()[: len(rest)] = rest
    assert p.host.buffer_updated(len(rest)) == [C2HDataReceived(9, 100, 50000, True, True)]
    assert dest[100:50100] == data
    # Back to the connection's own buffer for the next header.
    assert address(p.host.get_buffer()) != address(dest)


# ---------------------------------------------------------------------------------------------
# Digest errors
# ---------------------------------------------------------------------------------------------


def test_header_digest_mismatch_is_fatal() -> None:
    p = new_pair(hdgst=True)
    pdu = bytearray(flat(p.host.capsule_cmd(sqe_bytes(1))))
    pdu[72] ^= 0xFF
    with pytest.raises(TcpFatalError) as info:
        p.ctrl.receive(bytes(pdu))
    assert info.value.fes == Fes.HDR_DIGEST_ERR and info.value.fei == 0
    assert info.value.header == bytes(pdu[:72])


def test_header_digest_mismatch_on_the_host() -> None:
    p = new_pair(hdgst=True)
    pdu = bytearray(p.ctrl.capsule_resp(Cqe(cid=1).encode()))
    pdu[10] ^= 1  # the header changed, the digest did not
    with pytest.raises(TcpFatalError) as info:
        p.host.receive(bytes(pdu))
    assert info.value.fes == Fes.HDR_DIGEST_ERR


def test_data_digest_mismatch_in_a_capsule_is_an_event_and_the_stream_goes_on() -> None:
    p = new_pair(hdgst=True, ddgst=True)
    bad = bytearray(flat(p.host.capsule_cmd(sqe_bytes(0x1234, length=100), memoryview(bytes(100)))))
    bad[-1] ^= 0x01  # the data digest
    good = flat(p.host.capsule_cmd(sqe_bytes(0x22, length=8), memoryview(b"abcdefgh")))
    events = p.ctrl.receive(bytes(bad) + good)
    assert normalize(events) == [
        DataDigestError(0x1234, capsule=True),
        ("cmd", sqe_bytes(0x22, length=8), b"abcdefgh"),
    ]


def test_data_digest_mismatch_in_h2c_and_c2h_data() -> None:
    p = new_pair(ddgst=True)
    seven = open_h2c(p.ctrl, p.cstore, 7, 64)
    eight = open_h2c(p.ctrl, p.cstore, 8, 64)
    bad = bytearray(flat(p.host.h2c_data(7, seven, 0, memoryview(bytes(64)), last=True)))
    bad[30] ^= 0x80  # a data byte
    good = flat(p.host.h2c_data(8, eight, 0, memoryview(bytes(64)), last=True))
    assert p.ctrl.receive(bytes(bad) + good) == [
        DataDigestError(7, ttag=seven),
        H2CDataReceived(8, eight, 0, 64, True, True),
    ]
    bad = bytearray(flat(p.ctrl.c2h_data(5, 0, memoryview(bytes(64)), last=True)))
    bad[-2] ^= 0x10
    resp = p.ctrl.capsule_resp(Cqe(cid=5).encode())
    assert p.host.receive(bytes(bad) + resp) == [
        DataDigestError(5),
        ResponseReceived(Cqe(cid=5).encode()),
    ]
    # With SUCCESS no CapsuleResp follows: the event says so, for the host to end the command.
    bad = bytearray(flat(p.ctrl.c2h_data(6, 0, memoryview(bytes(64)), last=True, success=True)))
    bad[-2] ^= 0x10
    assert p.host.receive(bytes(bad)) == [DataDigestError(6, success=True)]


# ---------------------------------------------------------------------------------------------
# TermReq
# ---------------------------------------------------------------------------------------------


def test_term_req_both_directions() -> None:
    p = new_pair(hdgst=True)
    err = TcpFatalError(Fes.INVALID_PDU_HDR, w.OFF_PDO, bytes(range(72)), "test")
    c2h = p.ctrl.term_req(err)
    assert c2h[0] == PduType.C2H_TERM and len(c2h) == 24 + 72
    assert p.host.receive(c2h) == [TermReqReceived(Fes.INVALID_PDU_HDR, w.OFF_PDO)]
    h2c = p.host.term_req(TcpFatalError(Fes.HDR_DIGEST_ERR, 0, bytes(200), "test"))
    assert h2c[0] == PduType.H2C_TERM and len(h2c) == w.MAX_TERM_PLEN
    assert p.ctrl.receive(h2c) == [TermReqReceived(Fes.HDR_DIGEST_ERR, 0)]


def test_term_req_is_accepted_before_initialization() -> None:
    ctrl = TcpConnection(Role.CONTROLLER, Store())
    pdu = w.term_req(PduType.H2C_TERM, Fes.UNSUPPORTED_PARAM, 8)
    assert ctrl.receive(pdu) == [TermReqReceived(Fes.UNSUPPORTED_PARAM, 8)]
    host = TcpConnection(Role.HOST, Store())
    pdu = w.term_req(PduType.C2H_TERM, Fes.UNSUPPORTED_PARAM, 8, bytes(128))
    assert host.receive(pdu) == [TermReqReceived(Fes.UNSUPPORTED_PARAM, 8)]


# ---------------------------------------------------------------------------------------------
# Fatal conditions
# ---------------------------------------------------------------------------------------------


def ch(ptype: int, hlen: int, plen: int, *, flags: int = 0, pdo: int = 0) -> bytes:
    return w.CH.pack(ptype, flags, hlen, pdo, plen)


def cmd_pdu(plen: int, *, flags: int = 0, pdo: int = 0, hlen: int = 72) -> bytes:
    return ch(PduType.CMD, hlen, plen, flags=flags, pdo=pdo) + sqe_bytes(1) + bytes(512)


def data_pdu(
    ptype: int, datal: int, plen: int, *, pdo: int = 24, flags: int = 0, hlen: int = 24
) -> bytes:
    return w.DATA.pack(ptype, flags, hlen, pdo, plen, 1, 0, 0, datal) + bytes(max(0, plen - 24))


def icreq_pdu(pfv: int = 0, hpda: int = 0, dgst: int = 0, plen: int = 128) -> bytes:
    return w.ICREQ.pack(PduType.ICREQ, 0, 128, 0, plen, pfv, hpda, dgst, 0)


def icresp_pdu(pfv: int = 0, cpda: int = 0, dgst: int = 0, maxdata: int = 4096) -> bytes:
    return w.ICRESP.pack(PduType.ICRESP, 0, 128, 0, 128, pfv, cpda, dgst, maxdata)


@dataclass(frozen=True)
class Case:
    role: Role
    established: bool
    pdu: bytes
    fes: Fes
    fei: int
    options: tuple[tuple[str, int], ...] = ()


C, H = Role.CONTROLLER, Role.HOST
INV, SEQ = Fes.INVALID_PDU_HDR, Fes.PDU_SEQ_ERR
DDG = PduFlags.DDGSTF
HDG = PduFlags.HDGSTF

FATAL: dict[str, Case] = {
    # Unknown types
    "ctrl unknown type 08h": Case(C, True, ch(0x08, 24, 24), INV, w.OFF_TYPE),
    "ctrl unknown type ffh": Case(C, True, ch(0xFF, 24, 24), INV, w.OFF_TYPE),
    "host unknown type 0ah": Case(H, True, ch(0x0A, 24, 24), INV, w.OFF_TYPE),
    "ctrl unknown type before ic": Case(C, False, ch(0x10, 8, 8), INV, w.OFF_TYPE),
    # Wrong hlen for each type a side may receive
    "cmd hlen 24": Case(C, True, cmd_pdu(72, hlen=24), INV, w.OFF_HLEN),
    "cmd hlen 71": Case(C, True, cmd_pdu(72, hlen=71), INV, w.OFF_HLEN),
    "h2c data hlen 72": Case(C, True, data_pdu(6, 8, 80, hlen=72), INV, w.OFF_HLEN),
    "h2c term hlen 128": Case(C, True, ch(PduType.H2C_TERM, 128, 128), INV, w.OFF_HLEN),
    "icreq hlen 24": Case(C, False, ch(PduType.ICREQ, 24, 128) + bytes(120), INV, w.OFF_HLEN),
    "rsp hlen 72": Case(H, True, ch(PduType.RSP, 72, 72) + bytes(64), INV, w.OFF_HLEN),
    "c2h data hlen 8": Case(H, True, data_pdu(7, 8, 40, hlen=8), INV, w.OFF_HLEN),
    "r2t hlen 16": Case(H, True, ch(PduType.R2T, 16, 24) + bytes(16), INV, w.OFF_HLEN),
    "c2h term hlen 8": Case(H, True, ch(PduType.C2H_TERM, 8, 24) + bytes(16), INV, w.OFF_HLEN),
    "icresp hlen 24": Case(H, False, ch(PduType.ICRESP, 24, 128) + bytes(120), INV, w.OFF_HLEN),
    # plen shorter than the header, or carrying data where none may be
    "cmd plen 71": Case(C, True, cmd_pdu(71), INV, w.OFF_PLEN),
    "cmd plen 0": Case(C, True, cmd_pdu(0), INV, w.OFF_PLEN),
    "cmd plen hides hdgst": Case(C, True, cmd_pdu(72, flags=HDG), INV, w.OFF_PLEN, (("hd", 1),)),
    "h2c data plen 20": Case(C, True, data_pdu(6, 0, 20), INV, w.OFF_PLEN),
    "r2t carries data": Case(H, True, ch(PduType.R2T, 24, 28) + bytes(20), INV, w.OFF_PLEN),
    "rsp carries data": Case(H, True, ch(PduType.RSP, 24, 40) + bytes(32), INV, w.OFF_PLEN),
    "h2c term plen 23": Case(C, True, ch(PduType.H2C_TERM, 24, 23) + bytes(16), INV, w.OFF_PLEN),
    "c2h term plen 153": Case(H, True, ch(PduType.C2H_TERM, 24, 153) + bytes(145), INV, w.OFF_PLEN),
    "icreq plen 129": Case(C, False, icreq_pdu(plen=129), INV, w.OFF_PLEN),
    # Data PDUs without data
    "h2c data without data": Case(C, True, data_pdu(6, 0, 24, pdo=0), INV, w.OFF_PLEN),
    "c2h data without data": Case(H, True, data_pdu(7, 0, 24, pdo=0), INV, w.OFF_PLEN),
    "h2c data only a digest": Case(
        C, True, data_pdu(6, 0, 28, flags=DDG), INV, w.OFF_PLEN, (("dd", 1),)
    ),
    # Digest flags disagreeing with the negotiation
    "hdgstf without negotiation": Case(C, True, cmd_pdu(76, flags=HDG), INV, w.OFF_FLAGS),
    "hdgstf missing": Case(C, True, cmd_pdu(76), INV, w.OFF_FLAGS, (("hd", 1),)),
    "r2t hdgstf missing": Case(
        H, True, ch(PduType.R2T, 24, 28) + bytes(20), INV, w.OFF_FLAGS, (("hd", 1),)
    ),
    "ddgstf without negotiation": Case(
        C, True, cmd_pdu(72 + 64 + 4, flags=DDG, pdo=72), INV, w.OFF_FLAGS
    ),
    "ddgstf missing": Case(C, True, cmd_pdu(72 + 64 + 4, pdo=72), INV, w.OFF_FLAGS, (("dd", 1),)),
    "c2h ddgstf missing": Case(H, True, data_pdu(7, 8, 36), INV, w.OFF_FLAGS, (("dd", 1),)),
    # pdo
    "pdo inside the header": Case(C, True, cmd_pdu(72 + 64, pdo=64), INV, w.OFF_PDO),
    "pdo zero with data": Case(C, True, cmd_pdu(72 + 64, pdo=0), INV, w.OFF_PDO),
    "pdo inside the hdgst": Case(
        C, True, cmd_pdu(76 + 64, flags=HDG, pdo=72), INV, w.OFF_PDO, (("hd", 1),)
    ),
    "pdo beyond plen": Case(C, True, cmd_pdu(100, pdo=100), INV, w.OFF_PDO),
    "pdo misaligned to cpda": Case(
        C, True, cmd_pdu(76 + 64, pdo=76), INV, w.OFF_PDO, (("cpda", 3),)
    ),
    "pdo misaligned to hpda": Case(
        H, True, data_pdu(7, 8, 36, pdo=28), INV, w.OFF_PDO, (("hpda", 1),)
    ),
    # datal disagreeing with plen - pdo
    "h2c datal > plen": Case(C, True, data_pdu(6, 100, 24 + 50), INV, w.OFF_DATA_DATAL),
    "h2c datal < plen": Case(C, True, data_pdu(6, 10, 24 + 50), INV, w.OFF_DATA_DATAL),
    "c2h datal > plen": Case(H, True, data_pdu(7, 4096, 24 + 512), INV, w.OFF_DATA_DATAL),
    "c2h datal counts the digest": Case(
        H, True, data_pdu(7, 12, 24 + 12, flags=DDG), INV, w.OFF_DATA_DATAL, (("dd", 1),)
    ),
    # Limits
    "in-capsule over max": Case(
        C,
        True,
        ch(PduType.CMD, 72, 72 + 4100, pdo=72) + sqe_bytes(1) + bytes(4100),
        Fes.R2T_LIMIT_EXCEEDED,
        w.OFF_PLEN,
        (("max_incapsule", 4096),),
    ),
    "h2c data over maxh2cdata": Case(
        C,
        True,
        data_pdu(6, 4100, 24 + 4100),
        Fes.R2T_LIMIT_EXCEEDED,
        w.OFF_DATA_DATAL,
        (("maxh2cdata", 4096),),
    ),
    # ICReq / ICResp fields
    "icreq pfv 1": Case(C, False, icreq_pdu(pfv=1), Fes.UNSUPPORTED_PARAM, w.OFF_ICREQ_PFV),
    "icreq hpda 32": Case(C, False, icreq_pdu(hpda=32), INV, w.OFF_ICREQ_HPDA),
    "icreq dgst 04h": Case(C, False, icreq_pdu(dgst=4), INV, w.OFF_ICREQ_DGST),
    "icresp pfv 1": Case(H, False, icresp_pdu(pfv=1), Fes.UNSUPPORTED_PARAM, w.OFF_ICREQ_PFV),
    "icresp cpda 32": Case(H, False, icresp_pdu(cpda=32), INV, w.OFF_ICREQ_HPDA),
    "icresp maxh2cdata 0": Case(H, False, icresp_pdu(maxdata=0), INV, w.OFF_ICREQ_MAXR2T),
    "icresp maxh2cdata 4092": Case(H, False, icresp_pdu(maxdata=4092), INV, w.OFF_ICREQ_MAXR2T),
    "icresp maxh2cdata 4098": Case(H, False, icresp_pdu(maxdata=4098), INV, w.OFF_ICREQ_MAXR2T),
    # Order: before and after initialization, and the other side's PDU types
    "cmd before icreq": Case(C, False, cmd_pdu(72), SEQ, w.OFF_TYPE),
    "h2c data before icreq": Case(C, False, data_pdu(6, 8, 32), SEQ, w.OFF_TYPE),
    "second icreq": Case(C, True, icreq_pdu(), SEQ, w.OFF_TYPE),
    "icresp to controller": Case(C, False, icresp_pdu(), SEQ, w.OFF_TYPE),
    "rsp to controller": Case(C, True, ch(PduType.RSP, 24, 24) + bytes(16), SEQ, w.OFF_TYPE),
    "c2h data to controller": Case(C, True, data_pdu(7, 8, 32), SEQ, w.OFF_TYPE),
    "r2t to controller": Case(C, True, ch(PduType.R2T, 24, 24) + bytes(16), SEQ, w.OFF_TYPE),
    "c2h term to controller": Case(C, True, w.term_req(PduType.C2H_TERM, INV, 0), SEQ, 0),
    "rsp before icresp": Case(H, False, ch(PduType.RSP, 24, 24) + bytes(16), SEQ, w.OFF_TYPE),
    "c2h data before icresp": Case(H, False, data_pdu(7, 8, 32), SEQ, w.OFF_TYPE),
    "r2t before icresp": Case(H, False, ch(PduType.R2T, 24, 24) + bytes(16), SEQ, w.OFF_TYPE),
    "second icresp": Case(H, True, icresp_pdu(), SEQ, w.OFF_TYPE),
    "icreq to host": Case(H, False, icreq_pdu(), SEQ, w.OFF_TYPE),
    "cmd to host": Case(H, True, cmd_pdu(72), SEQ, w.OFF_TYPE),
    "h2c data to host": Case(H, True, data_pdu(6, 8, 32), SEQ, w.OFF_TYPE),
    "h2c term to host": Case(H, True, w.term_req(PduType.H2C_TERM, INV, 0), SEQ, 0),
}


def connection_for(case: Case) -> TcpConnection:
    opts = dict(case.options)
    conn = TcpConnection(
        case.role,
        Store(),
        max_incapsule=opts.get("max_incapsule", 8192),
        maxh2cdata=opts.get("maxh2cdata", 1 << 20),
    )
    conn.hdgst = bool(opts.get("hd", 0))
    conn.ddgst = bool(opts.get("dd", 0))
    conn.cpda = opts.get("cpda", 0)
    conn.hpda = opts.get("hpda", 0)
    conn.established = case.established
    return conn


@pytest.mark.parametrize("name", sorted(FATAL))
def test_fatal_condition(name: str) -> None:
    case = FATAL[name]
    conn = connection_for(case)
    with pytest.raises(TcpFatalError) as info:
        conn.receive(case.pdu)
    err = info.value
    assert (err.fes, err.fei) == (case.fes, case.fei), err.reason
    assert err.header[:8] == case.pdu[:8]  # the offending header travels in the TermReq
    term = conn.term_req(err)
    assert len(term) <= w.MAX_TERM_PLEN
    assert term[0] == (PduType.C2H_TERM if case.role is C else PduType.H2C_TERM)
    assert w.TERM.unpack_from(term)[5:] == (case.fes, case.fei)


@pytest.mark.parametrize("name", ["cmd hlen 24", "pdo misaligned to cpda", "second icreq"])
def test_fatal_condition_in_one_byte_pieces(name: str) -> None:
    """The error is found the same way however the header arrives."""
    case = FATAL[name]
    conn = connection_for(case)
    with pytest.raises(TcpFatalError) as info:
        for i in range(len(case.pdu)):
            conn.receive(case.pdu[i : i + 1])
    assert (info.value.fes, info.value.fei) == (case.fes, case.fei)


def test_aligned_pdo_is_accepted() -> None:
    """The counterpart of the pdo cases: pdo at the CPDA boundary past the header is fine."""
    conn = connection_for(Case(C, True, b"", INV, 0, (("cpda", 3),)))
    pdu = ch(PduType.CMD, 72, 80 + 64, pdo=80) + sqe_bytes(1, length=64) + bytes(8) + bytes(64)
    (ev,) = conn.receive(pdu)
    assert isinstance(ev, CommandReceived) and ev.data is not None and len(ev.data) == 64


def test_term_req_header_holds_only_bytes_of_the_offending_pdu() -> None:
    """The header a TermReq reports must be bytes of the PDU in error, never leftovers.

    A good capsule goes first; then only the 8-byte common header of a bad one arrives (its
    plen is shorter than its hlen, so the error is found right there).  What the error carries
    must be a prefix of the bad PDU as sent, not the previous capsule's SQE still lying in the
    receive buffer.
    """
    p = new_pair()
    previous = Sqe(opcode=0x01, cid=0x5A5A, nsid=1, cdw10=0xDEADBEEF, cdw15=0xFEEDFACE).encode()
    assert p.ctrl.receive(flat(p.host.capsule_cmd(previous))) == [CommandReceived(previous, None)]
    bad = ch(PduType.CMD, 72, 71)
    with pytest.raises(TcpFatalError) as info:
        p.ctrl.receive(bad)
    assert (info.value.fes, info.value.fei) == (Fes.INVALID_PDU_HDR, w.OFF_PLEN)
    header = info.value.header
    assert header[:8] == bad
    assert header == bad[: len(header)], f"{len(header) - 8} bytes that never arrived in this PDU"


def test_placement_error_carries_the_offending_header() -> None:
    p = new_pair()
    p.hstore.size = 4096
    pdu = flat(p.ctrl.c2h_data(1, 4000, memoryview(bytes(200)), last=True))
    with pytest.raises(TcpFatalError) as info:
        p.host.receive(pdu)
    assert info.value.fes == Fes.DATA_OUT_OF_RANGE
    assert info.value.header == pdu[:24]


# ---------------------------------------------------------------------------------------------
# Fuzz: after a valid IC exchange, any bytes raise TcpFatalError or nothing at all
# ---------------------------------------------------------------------------------------------

header_like = st.builds(
    lambda ptype, flags, hlen, pdo, plen, body: w.CH.pack(ptype, flags, hlen, pdo, plen) + body,
    st.sampled_from([int(t) for t in PduType] + [8, 0x0A, 0xFF]),
    st.integers(0, 0xFF),
    st.one_of(st.sampled_from([8, 24, 72, 128]), st.integers(0, 0xFF)),
    st.integers(0, 0xFF),
    st.one_of(st.integers(0, 300), st.integers(0, 0xFFFFFFFF)),
    st.binary(max_size=300),
)


@settings(max_examples=400, deadline=None)
@given(
    role=st.sampled_from([Role.CONTROLLER, Role.HOST]),
    digests=st.sampled_from(DIGESTS),
    pdas=st.sampled_from(PDAS),
    chunks=st.lists(st.one_of(st.binary(max_size=200), header_like), max_size=6),
    piece=st.integers(1, 97),
)
def test_random_bytes_only_raise_tcp_fatal_error(
    role: Role,
    digests: tuple[bool, bool],
    pdas: tuple[int, int],
    chunks: list[bytes],
    piece: int,
) -> None:
    p = new_pair(hdgst=digests[0], ddgst=digests[1], hpda=pdas[0], cpda=pdas[1])
    conn, peer = (p.ctrl, p.host) if role is Role.CONTROLLER else (p.host, p.ctrl)
    data = b"".join(chunks)
    try:
        for i in range(0, len(data), piece):
            for ev in conn.receive(data[i : i + piece]):
                assert isinstance(
                    ev,
                    CommandReceived
                    | H2CDataReceived
                    | C2HDataReceived
                    | R2TReceived
                    | ResponseReceived
                    | TermReqReceived
                    | DataDigestError,
                )
    except TcpFatalError as err:
        assert isinstance(err.fes, Fes) and 0 <= err.fei < 1 << 32
        assert len(err.header) <= 128
        (term,) = peer.receive(conn.term_req(err))
        assert term == TermReqReceived(err.fes, err.fei)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    to_controller=st.booleans(),
    digests=st.sampled_from(DIGESTS),
    pdas=st.sampled_from(PDAS),
)
def test_mutated_valid_streams_only_raise_tcp_fatal_error(
    data: st.DataObject, to_controller: bool, digests: tuple[bool, bool], pdas: tuple[int, int]
) -> None:
    """Valid PDUs with a few bytes changed reach deeper into the parser than random bytes."""
    p = new_pair(hdgst=digests[0], ddgst=digests[1], hpda=pdas[0], cpda=pdas[1])
    sender, conn = (p.host, p.ctrl) if to_controller else (p.ctrl, p.host)
    ops = data.draw(host_ops if to_controller else ctrl_ops)
    ttags = open_windows(p.ctrl, p.cstore, ops) if to_controller else None
    stream = bytearray(build_stream(sender, ops, ttags).data)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at] = data.draw(st.integers(0, 0xFF))
    piece = data.draw(st.integers(1, 512))
    try:
        for i in range(0, len(stream), piece):
            conn.receive(bytes(stream[i : i + piece]))
    except TcpFatalError as err:
        assert isinstance(err.fes, Fes)
        assert len(conn.term_req(err)) <= w.MAX_TERM_PLEN


def test_c2h_success_without_last_is_a_header_error() -> None:
    """NVMe/TCP 1.0: SUCCESS may only be set together with LAST_PDU."""
    from nvmf.protocol import tcp as p
    from nvmf.wire.tcp import DATA, Fes, PduFlags, PduType

    class _Sink:
        def capsule_data(self, sqe: memoryview, length: int) -> memoryview:
            raise AssertionError

        def c2h_data(self, cccid: int, datao: int, datal: int) -> memoryview:
            return memoryview(bytearray(datal))

    host = p.TcpConnection(p.Role.HOST, _Sink())
    host.established = True
    pdu = DATA.pack(PduType.C2H_DATA, PduFlags.DATA_SUCCESS, 24, 24, 24 + 8, 1, 0, 0, 8)
    with pytest.raises(p.TcpFatalError) as info:
        host.receive(pdu + bytes(8))
    assert info.value.fes == Fes.INVALID_PDU_HDR and info.value.fei == 1


def test_import_takes_more_pending_bytes_than_the_small_receive_buffer() -> None:
    """The receive buffer holds headers only (4 KiB); a connection handed over with more
    bytes held back than that (commands parsed no further for lack of credit) grows it."""
    p = new_pair()
    p.ctrl.capsule_credit = 0
    capsules = b"".join(flat(p.host.capsule_cmd(sqe_bytes(cid))) for cid in range(100))
    assert len(capsules) > 4096
    mv = memoryview(capsules)
    while mv:  # fed as the transport would; nothing is parsed without credit
        buf = p.ctrl.get_buffer()
        n = min(len(buf), len(mv))
        buf[:n] = mv[:n]
        mv = mv[n:]
        assert p.ctrl.buffer_updated(n) == []
        if not mv:
            break
        if len(p.ctrl.get_buffer()) == 0:
            break
    state = p.ctrl.export_state()
    rest = bytes(mv)
    taker = fresh_receiver(p.ctrl, Store())
    taker.import_state({**state, "pending": state["pending"] + rest})
    events = taker.take_events()
    assert [e.sqe for e in events if isinstance(e, CommandReceived)] == [
        sqe_bytes(cid) for cid in range(100)
    ]


# ---------------------------------------------------------------------------------------------
# The command sink: the target's hot path
# ---------------------------------------------------------------------------------------------


def sink_pair() -> tuple[Pair, list[tuple[bytes, bytes | None]]]:
    """A pair whose controller delivers commands to a sink, as the target's queues do."""
    got: list[tuple[bytes, bytes | None]] = []
    hstore, cstore = Store(), Store()
    host = TcpConnection(Role.HOST, hstore)
    ctrl = TcpConnection(
        Role.CONTROLLER,
        cstore,
        on_command=lambda sqe, data: got.append(
            (bytes(sqe), None if data is None else bytes(data))
        ),
    )
    (req,) = ctrl.receive(host.start_icreq(hdgst=False, ddgst=False))
    assert isinstance(req, ICReqReceived)
    (resp,) = host.receive(ctrl.accept_icreq(req, hdgst=False, ddgst=False))
    assert isinstance(resp, ICRespReceived)
    host.accept_icresp(resp)
    return Pair(host, ctrl, hstore, cstore), got


@pytest.mark.parametrize("chunk", [1, 100, 4168, 1 << 20])
def test_sink_gets_every_capsule_in_order_however_the_bytes_arrive(chunk: int) -> None:
    """Capsules with and without in-capsule data reach the sink, never the event list, in
    order, with their data, whether they arrive whole in one read or split anywhere."""
    p, got = sink_pair()
    sent = []
    stream = b""
    for i in range(12):
        sqe = Sqe(opcode=0x01 if i % 2 else 0x02, cid=i).encode()
        data = bytes([i]) * 4096 if i % 2 else None
        sent.append((sqe, data))
        stream += flat(p.host.capsule_cmd(sqe, None if data is None else memoryview(data)))
    for lo in range(0, len(stream), chunk):
        assert p.ctrl.receive(stream[lo : lo + chunk]) == []
    assert got == sent


def test_a_connection_with_large_capsules_grows_its_receive_buffer_once() -> None:
    """A capsule larger than the small header buffer makes the buffer grow (once), so that the
    next reads take in several such capsules at a time."""
    p, got = sink_pair()
    assert len(p.ctrl.get_buffer()) <= tcp.RECV_BUFFER_SIZE
    capsule = flat(p.host.capsule_cmd(Sqe(opcode=0x01).encode(), memoryview(bytes(4096))))
    p.ctrl.receive(capsule * 3)
    assert len(got) == 3
    room = len(p.ctrl.get_buffer())
    assert room == tcp.RECV_BUFFER_LARGE
    p.ctrl.receive(capsule * 10)
    assert len(got) == 13 and len(p.ctrl.get_buffer()) == room


@pytest.mark.parametrize("chunk", [1, 23, 24, 100, 4096, 1 << 20])
def test_sink_connection_places_h2c_data_however_the_bytes_arrive(chunk: int) -> None:
    """A controller with a sink takes a digest-free H2CData header in one step: the events,
    and the bytes placed, are the general path's, wherever the reads split the stream."""
    p, _ = sink_pair()
    payload = os.urandom(3 * 8192 + 100)
    ttag = open_h2c(p.ctrl, p.cstore, 7, len(payload))
    stream = b""
    expected = []
    for datao in range(0, len(payload), 8192):
        piece = payload[datao : datao + 8192]
        last = datao + len(piece) == len(payload)
        stream += flat(p.host.h2c_data(7, ttag, datao, memoryview(piece), last=last))
        expected.append(H2CDataReceived(7, ttag, datao, len(piece), last, last))
    events = []
    for lo in range(0, len(stream), chunk):
        events += p.ctrl.receive(stream[lo : lo + chunk])
    assert events == expected
    assert bytes(p.cstore.h2c[7][: len(payload)]) == payload


@pytest.mark.parametrize("ddgst", [False, True])
def test_h2c_sink_hears_each_window_once_in_arrival_order(ddgst: bool) -> None:
    """With ``on_filled``, no H2CData PDU is an event: the one that fills its window calls
    the sink (data placed), one whose data digest fails calls it with False at once, before
    any later PDU of the same read, so a window the host goes on filling after the failure
    is never reported as a success first (the target completes the command on the first
    call it hears)."""
    p = new_pair(hdgst=ddgst, ddgst=ddgst)
    heard: list[tuple[int, bool]] = []
    p.ctrl.on_filled = lambda ttag, intact: heard.append((ttag, intact))
    failing = open_h2c(p.ctrl, p.cstore, 1, 1024)
    other = open_h2c(p.ctrl, p.cstore, 2, 512)
    first = bytearray(h2c_pdu(p, 1, failing, 0, bytes(512), last=False))
    if ddgst:
        first[-1] ^= 0xFF  # the data digest of the window's first half
    data = os.urandom(512)
    stream = bytes(first) + h2c_pdu(p, 1, failing, 512, bytes(512), last=True)
    assert p.ctrl.receive(stream + h2c_pdu(p, 2, other, 0, data, last=True)) == []
    if ddgst:
        assert heard == [(failing, False), (failing, True), (other, True)]
    else:
        assert heard == [(failing, True), (other, True)]
    assert bytes(p.cstore.h2c[2]) == data


def test_sink_connection_reports_a_bad_h2c_window_with_its_header() -> None:
    p, _ = sink_pair()
    ttag = open_h2c(p.ctrl, p.cstore, 7, 1 << 16)
    pdu = flat(p.host.h2c_data(7, ttag, (1 << 16) - 8, memoryview(bytes(16)), last=True))
    with pytest.raises(TcpFatalError) as err:
        p.ctrl.receive(pdu)
    assert err.value.fes == Fes.DATA_OUT_OF_RANGE
    assert err.value.header == pdu[:24]


# ---------------------------------------------------------------------------------------------
# R2T windows: the controller's H2C bookkeeping (transfer tags, windows, placement)
# ---------------------------------------------------------------------------------------------

#: The controller's two ways of taking an H2CData header: the general parser (digests on) and
#: the one-step path of a digest-free connection with a command sink.
PATHS = ["general", "fast"]


def h2c_pair(path: str) -> Pair:
    return new_pair(hdgst=True, ddgst=True) if path == "general" else sink_pair()[0]


def h2c_pdu(p: Pair, cccid: int, ttag: int, datao: int, data: bytes, *, last: bool) -> bytes:
    return flat(p.host.h2c_data(cccid, ttag, datao, memoryview(data), last=last))


def fatal_of(conn: TcpConnection, data: bytes) -> TcpFatalError:
    with pytest.raises(TcpFatalError) as info:
        conn.receive(data)
    return info.value


@pytest.mark.parametrize("path", PATHS)
def test_h2c_data_with_an_unknown_ttag_is_fatal(path: str) -> None:
    p = h2c_pair(path)
    ttag = open_h2c(p.ctrl, p.cstore, 1, 512)
    pdu = h2c_pdu(p, 1, ttag + 1, 0, bytes(512), last=True)
    err = fatal_of(p.ctrl, pdu)
    assert (err.fes, err.fei) == (Fes.INVALID_PDU_HDR, w.OFF_DATA_TTAG)
    assert err.header[:24] == pdu[:24]


@pytest.mark.parametrize("path", PATHS)
def test_h2c_data_with_another_commands_cccid_is_fatal(path: str) -> None:
    p = h2c_pair(path)
    ttag = open_h2c(p.ctrl, p.cstore, 1, 512)
    open_h2c(p.ctrl, p.cstore, 2, 512)
    err = fatal_of(p.ctrl, h2c_pdu(p, 2, ttag, 0, bytes(512), last=True))
    assert (err.fes, err.fei) == (Fes.INVALID_PDU_HDR, w.OFF_DATA_CCCID)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("together", [False, True])
def test_duplicate_h2c_data_is_out_of_range_and_never_placed(path: str, together: bool) -> None:
    """A PDU repeating a range already received is DATA_OUT_OF_RANGE, whether it arrives in
    the same read as the original or later, and none of its bytes land in the window."""
    p = h2c_pair(path)
    ttag = open_h2c(p.ctrl, p.cstore, 1, 8192)
    good = h2c_pdu(p, 1, ttag, 0, b"\x11" * 4096, last=False)
    dup = h2c_pdu(p, 1, ttag, 0, b"\xee" * 4096, last=False)
    if together:
        err = fatal_of(p.ctrl, good + dup)
    else:
        assert p.ctrl.receive(good) == [H2CDataReceived(1, ttag, 0, 4096, False, False)]
        err = fatal_of(p.ctrl, dup)
    assert (err.fes, err.fei) == (Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO)
    assert p.cstore.h2c[1] == b"\x11" * 4096 + bytes(4096)


@pytest.mark.parametrize("path", PATHS)
def test_h2c_data_past_the_window_or_skipping_ahead_is_out_of_range(path: str) -> None:
    for datao, size in [(4096, 512), (512, 512), (0, 4608)]:
        p = h2c_pair(path)
        ttag = open_h2c(p.ctrl, p.cstore, 1, 4096)
        err = fatal_of(p.ctrl, h2c_pdu(p, 1, ttag, datao, bytes(size), last=True))
        assert (err.fes, err.fei) == (Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO), (datao, size)
        assert p.cstore.h2c[1] == bytes(4096)


@pytest.mark.parametrize("path", PATHS)
def test_two_h2c_data_pdus_of_one_r2t_in_one_receive(path: str) -> None:
    p = h2c_pair(path)
    data = payload(8192)
    ttag = open_h2c(p.ctrl, p.cstore, 3, len(data))
    first = h2c_pdu(p, 3, ttag, 0, data[:4096], last=False)
    second = h2c_pdu(p, 3, ttag, 4096, data[4096:], last=True)
    assert p.ctrl.receive(first + second) == [
        H2CDataReceived(3, ttag, 0, 4096, False, False),
        H2CDataReceived(3, ttag, 4096, 4096, True, True),
    ]
    assert p.cstore.h2c[3] == data


@pytest.mark.parametrize("path", PATHS)
def test_last_h2c_data_before_the_window_is_filled_is_a_sequence_error(path: str) -> None:
    p = h2c_pair(path)
    ttag = open_h2c(p.ctrl, p.cstore, 1, 8192)
    pdu = h2c_pdu(p, 1, ttag, 0, bytes(4096), last=True)
    err = fatal_of(p.ctrl, pdu)
    assert (err.fes, err.fei) == (Fes.PDU_SEQ_ERR, 0)
    assert err.header[:24] == pdu[:24]


def test_a_window_at_an_offset_takes_the_commands_offsets() -> None:
    """An R2T for part of a command's data: H2CData offsets are the command's (r2to on)."""
    p = new_pair()
    dest = bytearray(1000)
    ttag, r2t = p.ctrl.open_transfer(4, memoryview(dest), r2to=3000)
    assert p.host.receive(r2t) == [R2TReceived(4, ttag, 3000, 1000)]
    data = payload(1000)
    assert p.ctrl.receive(h2c_pdu(p, 4, ttag, 3000, data, last=True)) == [
        H2CDataReceived(4, ttag, 3000, 1000, True, True)
    ]
    assert dest == data
    other = new_pair()
    ttag = other.ctrl.open_transfer(4, memoryview(bytearray(1000)), r2to=3000)[0]
    err = fatal_of(other.ctrl, h2c_pdu(other, 4, ttag, 0, bytes(1000), last=True))
    assert (err.fes, err.fei) == (Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO)


@pytest.mark.parametrize("path", PATHS)
def test_a_tag_stays_reserved_until_close_transfer(path: str) -> None:
    """Once its window is filled, the tag is neither free nor open to data: a repeated PDU is
    out of range (not data of a new command), and no R2T gets the tag, until the command's
    completion is sent (close_transfer); then the tag is unknown, and free again."""
    for close in (False, True):
        p = h2c_pair(path)
        ttag = open_h2c(p.ctrl, p.cstore, 1, 512)
        pdu = h2c_pdu(p, 1, ttag, 0, b"\x22" * 512, last=True)
        assert p.ctrl.receive(pdu) == [H2CDataReceived(1, ttag, 0, 512, True, True)]
        dup = h2c_pdu(p, 1, ttag, 0, b"\xee" * 512, last=True)
        if close:
            break
        err = fatal_of(p.ctrl, dup)
        assert (err.fes, err.fei) == (Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO)
        assert p.cstore.h2c[1] == b"\x22" * 512
    tags = {p.ctrl.open_transfer(9, memoryview(bytearray(8)))[0] for _ in range(0xFFFE)}
    assert ttag not in tags and 0xFFFF not in tags  # every other tag: this one is reserved
    p.ctrl.close_transfer(ttag)
    p.ctrl.close_transfer(ttag)  # a tag not open: nothing happens
    err = fatal_of(p.ctrl, dup)
    assert (err.fes, err.fei) == (Fes.INVALID_PDU_HDR, w.OFF_DATA_TTAG)
    assert p.cstore.h2c[1] == b"\x22" * 512


def test_tag_allocation_skips_ffffh_and_tags_in_use() -> None:
    p = new_pair()
    dest = memoryview(bytearray(1))
    first = [p.ctrl.open_transfer(1, dest)[0] for _ in range(3)]
    assert first == [0, 1, 2]
    p.ctrl.close_transfer(1)
    assert p.ctrl.open_transfer(1, dest)[0] == 3  # round robin: a tag just freed waits
    tags = [p.ctrl.open_transfer(1, dest)[0] for _ in range(0xFFFF - 3)]
    assert 0xFFFF not in tags and 0 not in tags and 2 not in tags
    assert tags[-1] == 1  # after FFFEh the allocator wraps, past FFFFh, 0 and 2 in use, to 1
    assert sorted([*tags, 0, 2, 3]) == list(range(0xFFFF))  # every tag but FFFFh is in use
    with pytest.raises(RuntimeError, match="no free transfer tag"):
        p.ctrl.open_transfer(1, dest)
    p.ctrl.close_transfer(0x1234)
    ttag, r2t = p.ctrl.open_transfer(6, memoryview(bytearray(16)))
    assert ttag == 0x1234
    assert p.host.receive(r2t) == [R2TReceived(6, 0x1234, 0, 16)]


def test_only_a_controller_opens_transfers_of_at_least_one_byte() -> None:
    p = new_pair()
    with pytest.raises(RuntimeError):
        p.host.open_transfer(1, memoryview(bytearray(8)))
    with pytest.raises(ValueError):
        p.ctrl.open_transfer(1, memoryview(bytearray(0)))


def test_a_digest_error_leaves_the_window_open_for_the_rest_of_the_r2t() -> None:
    """The host goes on sending the R2T's other PDUs (it learns of the error from the
    completion): they are placed, not fatal, and the last one still fills the window."""
    p = new_pair(ddgst=True)
    ttag = open_h2c(p.ctrl, p.cstore, 1, 8192)
    bad = bytearray(h2c_pdu(p, 1, ttag, 0, bytes(4096), last=False))
    bad[-1] ^= 0xFF
    rest = h2c_pdu(p, 1, ttag, 4096, bytes(4096), last=True)
    assert p.ctrl.receive(bytes(bad) + rest) == [
        DataDigestError(1, ttag=ttag),
        H2CDataReceived(1, ttag, 4096, 4096, True, True),
    ]


def test_closing_a_transfer_while_its_pdu_arrives_keeps_the_rest_out_of_its_buffer() -> None:
    """A command that failed early (a digest error) may complete while another of its PDUs is
    still arriving: after close_transfer the rest of that PDU's data must not land in memory
    the command gave back (the next command's staging buffer)."""
    p = new_pair()
    ttag = open_h2c(p.ctrl, p.cstore, 1, 8192)
    pdu = h2c_pdu(p, 1, ttag, 0, b"\x33" * 8192, last=True)
    assert p.ctrl.receive(pdu[: 24 + 100]) == []
    p.ctrl.close_transfer(ttag)
    assert p.ctrl.receive(pdu[24 + 100 :]) == [H2CDataReceived(1, ttag, 0, 8192, True, True)]
    assert p.cstore.h2c[1] == b"\x33" * 100 + bytes(8092)
    err = fatal_of(p.ctrl, pdu)  # and the tag is unknown now
    assert (err.fes, err.fei) == (Fes.INVALID_PDU_HDR, w.OFF_DATA_TTAG)


def test_a_connection_receiving_h2c_data_is_not_handed_over() -> None:
    p = new_pair()
    ttag = open_h2c(p.ctrl, p.cstore, 1, 8192)
    with pytest.raises(RuntimeError, match="H2CData"):
        p.ctrl.export_state()
    p.ctrl.receive(h2c_pdu(p, 1, ttag, 0, bytes(8192), last=True))
    assert p.ctrl.export_state()["established"]  # filled (its tag reserved): fine
