"""In-band authentication on the wire: the Authentication Send/Receive fabrics commands and the
DH-HMAC-CHAP messages they carry (NVMe Base 2.0 §8.13, Figures 583-593; NVMe-oF 1.1 §3.3; Linux
``struct nvmf_auth_send_command`` and ``struct nvmf_auth_dhchap_*_data``).

Authentication Send (FCTYPE 05h) carries a message from the host (TL bytes of data);
Authentication Receive (FCTYPE 06h) asks for the controller's next message (AL bytes).  Both have
at byte 41 SPSP0, 42 SPSP1, 43 SECP, and at 44 TL or AL (u32).  For DH-HMAC-CHAP, SECP is E9h
and SPSP0/SPSP1 are 01h.

Every message starts with AUTH-Type (00h common, 01h DH-HMAC-CHAP), AUTH-Id (the message) and,
at byte 4, T_ID (the transaction).  Field names are the specification's (``hl``, ``dhvlen``,
``cvalid``, ``rescode_exp`` ...).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from nvmf.wire.fabrics import FABRICS_HDR
from nvmf.wire.opcodes import AdminOpcode, FabricsType
from nvmf.wire.sqe import NULL_TCP_SGL, PSDT_SGL_MPTR_CONTIG, SQE_SIZE, SglDescriptor
from nvmf.wire.status import WireError

#: resv3, spsp0, spsp1, secp, tl/al, reserved (bytes 40-63 of the SQE).
AUTH_SPECIFIC = struct.Struct("<xBBBI16x")
assert AUTH_SPECIFIC.size == 24
#: Byte offsets in the SQE, for the error log's parameter location.
AUTH_OFF_SPSP0 = 41
AUTH_OFF_SPSP1 = 42
AUTH_OFF_SECP = 43
AUTH_OFF_TL = 44
AUTH_OFF_AL = 44

#: Security Protocol of DH-HMAC-CHAP (Linux ``NVME_AUTH_DHCHAP_PROTOCOL_IDENTIFIER``).
SECP_DHCHAP = 0xE9
#: SPSP0 and SPSP1 of DH-HMAC-CHAP.
SPSP_DHCHAP = 0x01

#: Connect response DW0 AUTHREQ (NVMe-oF 1.1 Figure 22; Linux ``NVME_CONNECT_AUTHREQ_*``):
#: authentication transaction required, secure channel concatenation required.
CONNECT_AUTHREQ_ATR = 1 << 17
CONNECT_AUTHREQ_ASCR = 1 << 18


class AuthType(enum.IntEnum):
    """AUTH-Type (Base 2.0 Figure 584)."""

    COMMON = 0x00
    DHCHAP = 0x01


class AuthId(enum.IntEnum):
    """AUTH-Id: which message (Linux ``NVME_AUTH_DHCHAP_MESSAGE_*``)."""

    NEGOTIATE = 0x00
    CHALLENGE = 0x01
    REPLY = 0x02
    SUCCESS1 = 0x03
    SUCCESS2 = 0x04
    FAILURE2 = 0xF0
    FAILURE1 = 0xF1


#: AUTH_Negotiate protocol descriptor AUTHID of DH-HMAC-CHAP.
AUTHID_DHCHAP = 0x01
#: SC_C: no secure channel concatenation.
SC_C_NOSC = 0x00


class FailureReason(enum.IntEnum):
    """Reason Code of a failure message (Base 2.0 Figure 593)."""

    FAILED = 0x01


class FailureExplanation(enum.IntEnum):
    """Reason Code Explanation of a failure message (Base 2.0 Figure 593)."""

    FAILED = 0x01
    NOT_USABLE = 0x02
    CONCAT_MISMATCH = 0x03
    HASH_UNUSABLE = 0x04
    DHGROUP_UNUSABLE = 0x05
    INCORRECT_PAYLOAD = 0x06
    INCORRECT_MESSAGE = 0x07


class AuthMessageError(WireError):
    """A message that cannot be decoded; ``explanation`` is the failure to answer it with."""

    def __init__(
        self, message: str, explanation: FailureExplanation = FailureExplanation.INCORRECT_PAYLOAD
    ) -> None:
        super().__init__(message)
        self.explanation = explanation


# -- the commands -------------------------------------------------------------------------------


@dataclass(slots=True)
class AuthCommand:
    """Authentication Send (FCTYPE 05h, ``length`` is TL) or Receive (06h, ``length`` is AL)."""

    cid: int
    fctype: int
    secp: int = SECP_DHCHAP
    spsp0: int = SPSP_DHCHAP
    spsp1: int = SPSP_DHCHAP
    length: int = 0
    sgl: SglDescriptor = NULL_TCP_SGL

    @classmethod
    def decode(cls, raw: bytes | memoryview) -> AuthCommand:
        if len(raw) < SQE_SIZE:
            raise WireError(f"Authentication command: need {SQE_SIZE} bytes, got {len(raw)}")
        _, _, cid, fctype, dptr = FABRICS_HDR.unpack_from(raw)
        spsp0, spsp1, secp, length = AUTH_SPECIFIC.unpack_from(raw, 40)
        return cls(cid, fctype, secp, spsp0, spsp1, length, SglDescriptor.decode(dptr))

    def encode(self) -> bytes:
        head = FABRICS_HDR.pack(
            AdminOpcode.FABRICS, PSDT_SGL_MPTR_CONTIG, self.cid, self.fctype, self.sgl.encode()
        )
        return head + AUTH_SPECIFIC.pack(self.spsp0, self.spsp1, self.secp, self.length)

    @property
    def is_send(self) -> bool:
        return self.fctype == FabricsType.AUTH_SEND


# -- the messages -------------------------------------------------------------------------------

#: auth_type, auth_id, rsvd, t_id: the head every message shares.
MESSAGE_HEAD = struct.Struct("<BBxxH")
assert MESSAGE_HEAD.size == 4 + 2
#: AUTH_Negotiate (Figure 586): head, sc_c, napd; then napd 64-byte protocol descriptors.
NEGOTIATE = struct.Struct("<BBxxHBB")
assert NEGOTIATE.size == 8
#: Protocol descriptor (Figure 587): authid, rsvd, halen, dhlen, idlist[60] (hash ids from 0,
#: DH group ids from 30).
PROTOCOL_DESCRIPTOR = struct.Struct("<BxBB60s")
assert PROTOCOL_DESCRIPTOR.size == 64
IDLIST_DH_OFFSET = 30
#: DH-HMAC-CHAP_Challenge (Figure 588): head, hl, rsvd, hashid, dhgid, dhvlen, seqnum; then C1
#: (hl bytes) and the DH value (dhvlen bytes).
CHALLENGE = struct.Struct("<BBxxHBxBBHI")
assert CHALLENGE.size == 16
#: DH-HMAC-CHAP_Reply (Figure 589): head, hl, rsvd, cvalid, rsvd, dhvlen, seqnum; then the
#: response R1 (hl), the challenge C2 (hl) and the DH value (dhvlen).
REPLY = struct.Struct("<BBxxHBxBxHI")
assert REPLY.size == 16
#: DH-HMAC-CHAP_Success1 (Figure 590): head, hl, rsvd, rvalid, rsvd[7]; then R2 (hl).
SUCCESS1 = struct.Struct("<BBxxHBxB7x")
assert SUCCESS1.size == 16
#: DH-HMAC-CHAP_Success2 (Figure 591): head and 10 reserved bytes.
SUCCESS2 = struct.Struct("<BBxxH10x")
assert SUCCESS2.size == 16
#: AUTH_Failure1/2 (Figure 593): head, rescode, rescode_exp.
FAILURE = struct.Struct("<BBxxHBB")
assert FAILURE.size == 8


def message_kind(data: bytes | memoryview) -> tuple[int, int, int]:
    """(auth_type, auth_id, t_id) of a message."""
    if len(data) < MESSAGE_HEAD.size:
        raise AuthMessageError(f"authentication message of {len(data)} bytes")
    auth_type, auth_id, t_id = MESSAGE_HEAD.unpack_from(data)
    return auth_type, auth_id, t_id


@dataclass(slots=True)
class Negotiate:
    """AUTH_Negotiate: the host's transaction id, and what it offers (one DH-HMAC-CHAP
    descriptor: hash ids, DH group ids)."""

    t_id: int
    hash_ids: tuple[int, ...]
    dh_group_ids: tuple[int, ...]
    sc_c: int = SC_C_NOSC
    napd: int = 1
    authid: int = AUTHID_DHCHAP

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Negotiate:
        if len(data) < NEGOTIATE.size + PROTOCOL_DESCRIPTOR.size:
            raise AuthMessageError(f"AUTH_Negotiate of {len(data)} bytes")
        auth_type, auth_id, t_id, sc_c, napd = NEGOTIATE.unpack_from(data)
        if (auth_type, auth_id) != (AuthType.COMMON, AuthId.NEGOTIATE):
            raise AuthMessageError("not an AUTH_Negotiate", FailureExplanation.INCORRECT_MESSAGE)
        authid, halen, dhlen, idlist = PROTOCOL_DESCRIPTOR.unpack_from(data, NEGOTIATE.size)
        if halen > IDLIST_DH_OFFSET or dhlen > IDLIST_DH_OFFSET:
            raise AuthMessageError(f"AUTH_Negotiate: halen {halen}, dhlen {dhlen} beyond 30")
        hash_ids = tuple(idlist[:halen])
        dh_ids = tuple(idlist[IDLIST_DH_OFFSET : IDLIST_DH_OFFSET + dhlen])
        return cls(t_id, hash_ids, dh_ids, sc_c, napd, authid)

    def encode(self) -> bytes:
        idlist = bytearray(60)
        idlist[: len(self.hash_ids)] = bytes(self.hash_ids)
        idlist[IDLIST_DH_OFFSET : IDLIST_DH_OFFSET + len(self.dh_group_ids)] = bytes(
            self.dh_group_ids
        )
        head = NEGOTIATE.pack(AuthType.COMMON, AuthId.NEGOTIATE, self.t_id, self.sc_c, self.napd)
        return head + PROTOCOL_DESCRIPTOR.pack(
            self.authid, len(self.hash_ids), len(self.dh_group_ids), bytes(idlist)
        )


@dataclass(slots=True)
class Challenge:
    """DH-HMAC-CHAP_Challenge: hash, C1, sequence number S1, and the controller's DH value."""

    t_id: int
    hashid: int
    dhgid: int
    seqnum: int
    cval: bytes
    dhv: bytes = b""

    def encode(self) -> bytes:
        head = CHALLENGE.pack(
            AuthType.DHCHAP,
            AuthId.CHALLENGE,
            self.t_id,
            len(self.cval),
            self.hashid,
            self.dhgid,
            len(self.dhv),
            self.seqnum,
        )
        return head + self.cval + self.dhv

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Challenge:
        if len(data) < CHALLENGE.size:
            raise AuthMessageError(f"DH-HMAC-CHAP_Challenge of {len(data)} bytes")
        _, _, t_id, hl, hashid, dhgid, dhvlen, seqnum = CHALLENGE.unpack_from(data)
        end = CHALLENGE.size + hl + dhvlen
        if len(data) < end:
            raise AuthMessageError("DH-HMAC-CHAP_Challenge: hl and dhvlen beyond the data")
        cval = bytes(data[CHALLENGE.size : CHALLENGE.size + hl])
        return cls(t_id, hashid, dhgid, seqnum, cval, bytes(data[CHALLENGE.size + hl : end]))


@dataclass(slots=True)
class Reply:
    """DH-HMAC-CHAP_Reply: the host's response R1, its challenge C2 (``cvalid``) with sequence
    number S2 (0: no controller authentication asked), and its DH value."""

    t_id: int
    rval: bytes
    seqnum: int = 0
    cval: bytes = b""
    cvalid: bool = False
    dhv: bytes = b""

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Reply:
        if len(data) < REPLY.size:
            raise AuthMessageError(f"DH-HMAC-CHAP_Reply of {len(data)} bytes")
        auth_type, auth_id, t_id, hl, cvalid, dhvlen, seqnum = REPLY.unpack_from(data)
        if (auth_type, auth_id) != (AuthType.DHCHAP, AuthId.REPLY):
            raise AuthMessageError("not a DH-HMAC-CHAP_Reply", FailureExplanation.INCORRECT_MESSAGE)
        end = REPLY.size + 2 * hl + dhvlen
        if len(data) < end:
            raise AuthMessageError("DH-HMAC-CHAP_Reply: hl and dhvlen beyond the data")
        rval = bytes(data[REPLY.size : REPLY.size + hl])
        cval = bytes(data[REPLY.size + hl : REPLY.size + 2 * hl])
        dhv = bytes(data[REPLY.size + 2 * hl : end])
        return cls(t_id, rval, seqnum, cval, bool(cvalid & 1), dhv)

    def encode(self) -> bytes:
        hl = len(self.rval)
        cval = self.cval.ljust(hl, b"\0")
        head = REPLY.pack(
            AuthType.DHCHAP,
            AuthId.REPLY,
            self.t_id,
            hl,
            int(self.cvalid),
            len(self.dhv),
            self.seqnum,
        )
        return head + self.rval + cval + self.dhv


@dataclass(slots=True)
class Success1:
    """DH-HMAC-CHAP_Success1: the controller's response R2 when the host asked for it."""

    t_id: int
    hl: int
    rval: bytes = b""

    def encode(self) -> bytes:
        head = SUCCESS1.pack(
            AuthType.DHCHAP, AuthId.SUCCESS1, self.t_id, self.hl, int(bool(self.rval))
        )
        return head + self.rval

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Success1:
        if len(data) < SUCCESS1.size:
            raise AuthMessageError(f"DH-HMAC-CHAP_Success1 of {len(data)} bytes")
        _, _, t_id, hl, rvalid = SUCCESS1.unpack_from(data)
        rval = bytes(data[SUCCESS1.size : SUCCESS1.size + hl]) if rvalid & 1 else b""
        return cls(t_id, hl, rval)


def success2(t_id: int) -> bytes:
    """DH-HMAC-CHAP_Success2 (the host's, after checking R2)."""
    return SUCCESS2.pack(AuthType.DHCHAP, AuthId.SUCCESS2, t_id)


@dataclass(slots=True)
class Failure:
    """AUTH_Failure1 (controller to host) or AUTH_Failure2 (host to controller)."""

    t_id: int
    rescode_exp: int
    rescode: int = FailureReason.FAILED
    auth_id: int = AuthId.FAILURE1

    def encode(self) -> bytes:
        return FAILURE.pack(
            AuthType.COMMON, self.auth_id, self.t_id, self.rescode, self.rescode_exp
        )

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Failure:
        if len(data) < FAILURE.size:
            raise AuthMessageError(f"AUTH_Failure of {len(data)} bytes")
        _, auth_id, t_id, rescode, rescode_exp = FAILURE.unpack_from(data)
        return cls(t_id, rescode_exp, rescode, auth_id)
