"""H2CData bookkeeping on a live target (issue 7): several H2CData PDUs answering one R2T may
arrive in one read, and a PDU covering data already received is a fatal transport error that
ends only its own connection."""

from __future__ import annotations

import os

from nvmf.protocol import tcp as p
from nvmf.wire import tcp as w
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.sqe import Cqe, SglDescriptor
from nvmf.wire.status import SC
from nvmf.wire.tcp import Fes, PduType
from tests.target.conftest import RunningTarget
from tests.target.rawhost import RawHost, status_of
from tests.target.test_malformed import bystander_still_served
from tests.target.test_tcp_target import admin, io_queue, rw


def _start_write(q: RawHost, length: int) -> p.R2TReceived:
    sqe = rw(q.next_cid(), IoOpcode.WRITE, 1, 16, length // 512, length)
    q.send(q.conn.capsule_cmd(sqe.encode()))
    (r2t,) = q.events()
    assert isinstance(r2t, p.R2TReceived) and r2t.r2tl == length
    return r2t


def test_two_h2c_data_pdus_for_one_r2t_in_one_read(target: RunningTarget) -> None:
    adm = admin(target)
    q = io_queue(target, adm)
    data = os.urandom(8192)
    r2t = _start_write(q, len(data))
    view = memoryview(data)
    first = q.conn.h2c_data(r2t.cccid, r2t.ttag, 0, view[:4096], last=False)
    second = q.conn.h2c_data(r2t.cccid, r2t.ttag, 4096, view[4096:], last=True)
    q.send(first + second)  # one sendall: the target sees both PDUs in one read
    cqe, _ = q.wait_response()
    assert cqe.cid == r2t.cccid and status_of(cqe).ok
    _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 16, 16, 8192))
    assert back == data


def test_duplicate_h2c_data_is_a_fatal_error_of_its_connection(target: RunningTarget) -> None:
    adm = admin(target)
    q = io_queue(target, adm)
    victim = io_queue(target, adm, qid=2)
    r2t = _start_write(victim, 4096)
    good = victim.conn.h2c_data(r2t.cccid, r2t.ttag, 0, memoryview(bytes(4096)), last=True)
    dup = victim.conn.h2c_data(r2t.cccid, r2t.ttag, 0, memoryview(b"\xee" * 4096), last=True)
    flush = victim.conn.capsule_cmd(rw(victim.next_cid(), IoOpcode.FLUSH, 1, 0, 1, 0).encode())
    victim.send(good + dup + flush)
    data = b""
    victim.sock.settimeout(5)
    while True:  # the write's completion may precede the TermReq
        chunk = victim.sock.recv(65536)
        if not chunk:
            break
        data += chunk
    term = data.find(bytes([PduType.C2H_TERM]) + b"\x00\x18\x00")
    assert term >= 0, f"no C2HTermReq in {data!r}"
    ptype, _, _, _, _, fes, fei = w.TERM.unpack_from(data, term)
    assert ptype == PduType.C2H_TERM
    assert (fes, fei) == (Fes.DATA_OUT_OF_RANGE, w.OFF_DATA_DATAO)
    bystander_still_served(target, q)
    # The data of the duplicate never reached the namespace.
    _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 16, 8, 4096))
    assert back != b"\xee" * 4096


def test_capsule_digest_error_with_a_cid_of_a_pending_write(target: RunningTarget) -> None:
    """A data digest error on a capsule whose cid is also that of a write waiting for its
    H2CData fails the capsule, not the write: each keeps its own buffer (this used to pop
    the wrong in-capsule buffer, misplace later commands' data, and end in IndexError)."""
    adm = admin(target)
    q = io_queue(target, adm, ddgst=True)
    r2t = _start_write(q, 4096)
    sqe = rw(r2t.cccid, IoOpcode.WRITE, 1, 40, 1, 512)  # the same cid, in-capsule data
    sqe.sgl = SglDescriptor.incapsule(512)
    bad = bytearray(
        b"".join(bytes(b) for b in q.conn.capsule_cmd(sqe.encode(), memoryview(b"\xaa" * 512)))
    )
    bad[-1] ^= 0xFF  # its data digest
    good_data = os.urandom(512)
    good = rw(q.next_cid(), IoOpcode.WRITE, 1, 48, 1, 512)
    good.sgl = SglDescriptor.incapsule(512)
    q.send(
        bytes(bad)
        + b"".join(bytes(b) for b in q.conn.capsule_cmd(good.encode(), memoryview(good_data)))
    )
    write_data = os.urandom(4096)
    q.send(q.conn.h2c_data(r2t.cccid, r2t.ttag, 0, memoryview(write_data), last=True))
    statuses = _responses(q, 3)
    assert sorted(statuses) == sorted(
        [(r2t.cccid, SC.TRANSIENT_TR_ERR), (good.cid, SC.SUCCESS), (r2t.cccid, SC.SUCCESS)]
    )
    _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 48, 1, 512))
    assert back == good_data
    _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 16, 8, 4096))
    assert back == write_data


def test_data_digest_error_part_way_through_an_r2t_fails_only_that_write(
    target: RunningTarget,
) -> None:
    """A data digest error on the first H2CData PDU of an R2T fails that write at once; the
    host still sends the R2T's other PDUs, which fill the window of a transfer that already
    failed.  That must end nothing else: a second write's data parsed from the same read
    completes it (the filled window once raised KeyError and dropped the read's later events).
    The PDUs are small, so that one read of the receive buffer takes them all."""
    adm = admin(target)
    q = io_queue(target, adm, ddgst=True)
    failing = _start_write(q, 1024)
    other = _start_write(q, 512)

    def pdu(r2t: p.R2TReceived, datao: int, data: bytes, last: bool) -> bytes:
        bufs = q.conn.h2c_data(r2t.cccid, r2t.ttag, datao, memoryview(data), last=last)
        return b"".join(bytes(b) for b in bufs)

    bad = bytearray(pdu(failing, 0, bytes(512), False))
    bad[-1] ^= 0xFF  # its data digest
    data = os.urandom(512)
    # One sendall: the target parses them from one read.
    q.send(bytes(bad) + pdu(failing, 512, bytes(512), True) + pdu(other, 0, data, True))
    statuses = dict(_responses(q, 2))
    assert statuses == {failing.cccid: SC.TRANSIENT_TR_ERR, other.cccid: SC.SUCCESS}
    _, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 16, 1, 512))
    assert back == data


def _responses(q: RawHost, count: int) -> list[tuple[int, SC]]:
    """The next ``count`` completions on ``q``, as (cid, status code); nothing else may come."""
    statuses: list[tuple[int, SC]] = []
    while len(statuses) < count:
        events = q.events()
        assert events, "the target closed the connection"
        for ev in events:
            assert isinstance(ev, p.ResponseReceived), ev
            cqe = Cqe.decode(ev.cqe)
            statuses.append((cqe.cid, status_of(cqe).code))
    return statuses
