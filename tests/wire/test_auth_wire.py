"""Authentication Send/Receive and the DH-HMAC-CHAP messages: byte layouts as Base 2.0
Figures 583-593 (and Linux ``struct nvmf_auth_*``) place them, and round trips."""

from __future__ import annotations

import pytest

from nvmf.wire import auth as w
from nvmf.wire.opcodes import FabricsType


def test_auth_send_command_layout() -> None:
    raw = w.AuthCommand(cid=0x1234, fctype=FabricsType.AUTH_SEND, length=72).encode()
    assert len(raw) == 64
    assert raw[0] == 0x7F and raw[2:4] == b"\x34\x12" and raw[4] == 0x05
    assert (raw[41], raw[42], raw[43]) == (0x01, 0x01, 0xE9)  # spsp0, spsp1, secp
    assert raw[44:48] == (72).to_bytes(4, "little")  # tl
    cmd = w.AuthCommand.decode(raw)
    assert (cmd.cid, cmd.length, cmd.is_send) == (0x1234, 72, True)
    recv = w.AuthCommand.decode(
        w.AuthCommand(cid=1, fctype=FabricsType.AUTH_RECEIVE, length=4096).encode()
    )
    assert (recv.fctype, recv.length, recv.is_send) == (0x06, 4096, False)


def test_negotiate_layout() -> None:
    raw = w.Negotiate(t_id=0x0102, hash_ids=(1, 2, 3), dh_group_ids=(0, 1, 2, 3, 4, 5)).encode()
    assert len(raw) == 8 + 64
    assert raw[0:2] == b"\x00\x00"  # AUTH_Type common, AUTH_Id negotiate
    assert raw[4:6] == b"\x02\x01"  # T_ID
    assert (raw[6], raw[7]) == (0, 1)  # SC_C, NAPD
    assert (raw[8], raw[10], raw[11]) == (1, 3, 6)  # AUTHID, HALEN, DHLEN
    assert raw[12:15] == bytes((1, 2, 3))  # hash ids from the IDlist's start
    assert raw[12 + 30 : 12 + 36] == bytes(range(6))  # DH group ids from byte 30 of it
    msg = w.Negotiate.decode(raw)
    assert (msg.t_id, msg.hash_ids, msg.dh_group_ids) == (0x0102, (1, 2, 3), tuple(range(6)))


def test_challenge_layout() -> None:
    raw = w.Challenge(7, 2, 1, 0xA0B0C0D0, b"\x11" * 48, b"\x22" * 256).encode()
    assert raw[0:2] == b"\x01\x01"  # DH-HMAC-CHAP, Challenge
    assert raw[4:6] == b"\x07\x00"
    assert (raw[6], raw[8], raw[9]) == (48, 2, 1)  # HL, HASHID, DHGID
    assert raw[10:12] == (256).to_bytes(2, "little")  # DHVLEN
    assert raw[12:16] == (0xA0B0C0D0).to_bytes(4, "little")  # SEQNUM
    assert raw[16:64] == b"\x11" * 48 and raw[64:] == b"\x22" * 256
    assert w.Challenge.decode(raw) == w.Challenge(7, 2, 1, 0xA0B0C0D0, b"\x11" * 48, b"\x22" * 256)


def test_reply_layout() -> None:
    raw = w.Reply(9, b"\x01" * 32, 0x55, b"\x02" * 32, True, b"\x03" * 16).encode()
    assert raw[0:2] == b"\x01\x02"
    assert raw[4:6] == b"\x09\x00"
    assert (raw[6], raw[8]) == (32, 1)  # HL, CVALID
    assert raw[10:12] == (16).to_bytes(2, "little") and raw[12:16] == (0x55).to_bytes(4, "little")
    assert raw[16:48] == b"\x01" * 32 and raw[48:80] == b"\x02" * 32 and raw[80:] == b"\x03" * 16
    msg = w.Reply.decode(raw)
    assert (msg.rval, msg.cval, msg.cvalid, msg.seqnum, msg.dhv) == (
        b"\x01" * 32,
        b"\x02" * 32,
        True,
        0x55,
        b"\x03" * 16,
    )


def test_success_and_failure_layouts() -> None:
    s1 = w.Success1(3, 32, b"\x09" * 32).encode()
    assert s1[0:2] == b"\x01\x03" and s1[4:6] == b"\x03\x00" and (s1[6], s1[8]) == (32, 1)
    assert len(s1) == 16 + 32
    plain = w.Success1(3, 48).encode()
    assert len(plain) == 16 and (plain[6], plain[8]) == (48, 0)
    assert w.success2(5) == b"\x01\x04\x00\x00\x05\x00" + bytes(10)
    f1 = w.Failure(6, w.FailureExplanation.HASH_UNUSABLE).encode()
    assert f1 == b"\x00\xf1\x00\x00\x06\x00\x01\x04"
    assert w.Failure.decode(f1).rescode_exp == w.FailureExplanation.HASH_UNUSABLE


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", bytes(20), w.Reply(1, b"\x01" * 32).encode()[:40]],
    ids=["empty", "one", "short-negotiate", "short-reply"],
)
def test_short_messages_raise_a_wire_error(raw: bytes) -> None:
    with pytest.raises(w.AuthMessageError):
        if len(raw) >= 16 and raw[1] == w.AuthId.REPLY:
            w.Reply.decode(raw)
        else:
            w.Negotiate.decode(raw)


def test_connect_authreq_bits() -> None:
    assert w.CONNECT_AUTHREQ_ATR == 1 << 17 and w.CONNECT_AUTHREQ_ASCR == 1 << 18
