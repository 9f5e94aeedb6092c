"""NVMe/TCP PDU layouts (NVMe/TCP Transport Specification 1.0, §3.6; Linux ``nvme-tcp.h``).

Every PDU starts with an 8-byte common header (CH): ``type``, ``flags``, ``hlen`` (header
length, without digest), ``pdo`` (offset of the data from the PDU start, 0 when no data),
``plen`` (total PDU length: header, header digest, padding, data, data digest).

==========  ======  ====  ===================================================
PDU         type    hlen  PDU specific header (after the CH)
==========  ======  ====  ===================================================
ICReq       00h     128   pfv u16, hpda u8, dgst u8, maxr2t u32
ICResp      01h     128   pfv u16, cpda u8, dgst u8, maxh2cdata u32
H2CTermReq  02h     24    fes u16, fei u32 (then the erroneous header)
C2HTermReq  03h     24    fes u16, fei u32 (then the erroneous header)
CapsuleCmd  04h     72    the 64-byte SQE (then in-capsule data)
CapsuleResp 05h     24    the 16-byte CQE
H2CData     06h     24    cccid u16, ttag u16, datao u32, datal u32
C2HData     07h     24    cccid u16, rsvd u16, datao u32, datal u32
R2T         09h     24    cccid u16, ttag u16, r2to u32, r2tl u32
==========  ======  ====  ===================================================

Digests are CRC32C (the ``crc32c`` package) stored little-endian: HDGST over the ``hlen`` header
bytes, DDGST over the data only (not the padding).  Data is aligned by padding to a multiple of
the receiver's PDA: ``(cpda + 1) * 4`` for the controller to host direction, ``(hpda + 1) * 4``
for host to controller.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any

from nvmf.wire.sqe import CQE_SIZE, SQE_SIZE

CH = struct.Struct("<BBBBI")
assert CH.size == 8
ICREQ = struct.Struct("<BBBBIHBBI112x")
assert ICREQ.size == 128
ICRESP = ICREQ  # same shape: pfv, cpda, dgst, maxh2cdata
TERM = struct.Struct("<BBBBIHI10x")
assert TERM.size == 24
DATA = struct.Struct("<BBBBIHHII4x")
assert DATA.size == 24
R2T = DATA  # cccid, ttag, r2to, r2tl
CAPSULE_CMD_HLEN = CH.size + SQE_SIZE
assert CAPSULE_CMD_HLEN == 72
CAPSULE_RESP_HLEN = CH.size + CQE_SIZE
assert CAPSULE_RESP_HLEN == 24
DIGEST = struct.Struct("<I")
DIGEST_LEN = 4

PFV_1_0 = 0
#: Smallest MAXH2CDATA a controller may offer (NVMe/TCP 1.0 §3.6.2.3).
MIN_MAXH2CDATA = 4096
#: C2HTermReq/H2CTermReq carry at most this many bytes in all (header plus offending header).
MAX_TERM_PLEN = 152


class PduType(enum.IntEnum):
    ICREQ = 0x00
    ICRESP = 0x01
    H2C_TERM = 0x02
    C2H_TERM = 0x03
    CMD = 0x04
    RSP = 0x05
    H2C_DATA = 0x06
    C2H_DATA = 0x07
    R2T = 0x09


class PduFlags(enum.IntFlag):
    HDGSTF = 0x01
    DDGSTF = 0x02
    DATA_LAST = 0x04
    DATA_SUCCESS = 0x08


#: ICReq/ICResp DGST byte.
DGST_HDR = 0x01
DGST_DATA = 0x02


class Fes(enum.IntEnum):
    """Fatal Error Status of a TermReq (NVMe/TCP 1.0 Figure 26)."""

    INVALID_PDU_HDR = 0x01
    PDU_SEQ_ERR = 0x02
    HDR_DIGEST_ERR = 0x03
    DATA_OUT_OF_RANGE = 0x04
    R2T_LIMIT_EXCEEDED = 0x05  # also "data transfer limit exceeded"
    UNSUPPORTED_PARAM = 0x06


#: hlen each PDU type must carry; anything else is an invalid header.
HLEN = {
    PduType.ICREQ: 128,
    PduType.ICRESP: 128,
    PduType.H2C_TERM: 24,
    PduType.C2H_TERM: 24,
    PduType.CMD: CAPSULE_CMD_HLEN,
    PduType.RSP: CAPSULE_RESP_HLEN,
    PduType.H2C_DATA: 24,
    PduType.C2H_DATA: 24,
    PduType.R2T: 24,
}
#: PDU types that may carry a header digest / data once digests were negotiated.
HAS_HDGST = frozenset({PduType.CMD, PduType.RSP, PduType.H2C_DATA, PduType.C2H_DATA, PduType.R2T})
HAS_DATA = frozenset({PduType.CMD, PduType.H2C_DATA, PduType.C2H_DATA})

#: Byte offsets inside the PDU for the FEI of an Invalid PDU Header Field error.
OFF_TYPE = 0
OFF_FLAGS = 1
OFF_HLEN = 2
OFF_PDO = 3
OFF_PLEN = 4
OFF_ICREQ_PFV = 8
OFF_ICREQ_HPDA = 10
OFF_ICREQ_DGST = 11
OFF_ICREQ_MAXR2T = 12
OFF_DATA_CCCID = 8
OFF_DATA_TTAG = 10
OFF_DATA_DATAO = 12
OFF_DATA_DATAL = 16


_crc32c: Callable[[Any, int], int] | None = None


def load_crc32c() -> None:
    """Import the ``crc32c`` package, once, where a stall harms no connection.

    Not with this module: the package's ``__init__`` asks ``importlib.metadata`` for its
    version, which pulls in ``email`` and ``urllib`` (60 ms here, seconds per process in the
    emulated guest) for every host command, target and worker, though most connections use no
    digest.  Not at the first digest either: a target that stalls there holds a Connect while
    its controller's Keep Alive Timer runs (the Linux host sends no Keep Alive before every I/O
    queue is connected).  So a target loads it when its NVMe/TCP transport starts, a host before
    the ICReq of a queue that asks for a digest; :func:`crc32c` loads it if nobody did."""
    global _crc32c
    if _crc32c is None:
        from crc32c import crc32c as function

        _crc32c = function


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of a buffer (no copy for memoryviews), continuing from ``value``."""
    if _crc32c is None:
        load_crc32c()
        assert _crc32c is not None
    return _crc32c(data, value)


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """The 4-byte digest field for ``data``."""
    return DIGEST.pack(crc32c(data))


def pad_to(offset: int, pda: int) -> int:
    """``offset`` rounded up to the PDA alignment ``(pda + 1) * 4`` (PDA 0: no padding)."""
    if pda == 0:
        return offset
    align = (pda + 1) * 4
    return (offset + align - 1) // align * align


def icreq(*, hpda: int = 0, hdgst: bool = False, ddgst: bool = False, maxr2t: int = 0) -> bytes:
    dgst = (DGST_HDR if hdgst else 0) | (DGST_DATA if ddgst else 0)
    return ICREQ.pack(PduType.ICREQ, 0, 128, 0, 128, PFV_1_0, hpda, dgst, maxr2t)


def icresp(*, cpda: int = 0, hdgst: bool = False, ddgst: bool = False, maxh2cdata: int) -> bytes:
    dgst = (DGST_HDR if hdgst else 0) | (DGST_DATA if ddgst else 0)
    return ICRESP.pack(PduType.ICRESP, 0, 128, 0, 128, PFV_1_0, cpda, dgst, maxh2cdata)


def term_req(pdu_type: PduType, fes: Fes, fei: int, bad_header: bytes = b"") -> bytes:
    """H2CTermReq / C2HTermReq with the offending header (truncated to fit 152 bytes).

    PDO is 0: the error data follows the 24-byte header directly, and receivers such as
    FreeBSD's reject a TermReq whose PDO is not 0 (SPDK sends 0 as well).
    """
    data = bytes(bad_header[: MAX_TERM_PLEN - TERM.size])
    plen = TERM.size + len(data)
    return TERM.pack(pdu_type, 0, TERM.size, 0, plen, fes, fei) + data
