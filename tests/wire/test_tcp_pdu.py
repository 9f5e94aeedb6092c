"""NVMe/TCP PDU layouts, padding and digests.

Offsets are from Linux include/linux/nvme-tcp.h (``struct nvme_tcp_hdr``, ``nvme_tcp_icreq_pdu``,
``nvme_tcp_icresp_pdu``, ``nvme_tcp_term_pdu``, ``nvme_tcp_data_pdu``, ``nvme_tcp_r2t_pdu``) and
the NVMe/TCP 1.0 specification, written here independently of the structs under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmf.wire import tcp as w
from nvmf.wire.tcp import Fes, PduFlags, PduType


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def test_enum_values_match_linux() -> None:
    assert [int(t) for t in PduType] == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert (PduFlags.HDGSTF, PduFlags.DDGSTF) == (1, 2)
    assert (PduFlags.DATA_LAST, PduFlags.DATA_SUCCESS) == (4, 8)
    assert [int(f) for f in Fes] == [1, 2, 3, 4, 5, 6]
    assert (w.DGST_HDR, w.DGST_DATA) == (1, 2)


def test_header_lengths() -> None:
    """hlen per type = sizeof the Linux struct of that PDU."""
    assert w.CH.size == 8
    assert w.ICREQ.size == w.ICRESP.size == 128
    assert w.TERM.size == 24
    assert w.DATA.size == w.R2T.size == 24
    assert w.HLEN == {
        PduType.ICREQ: 128,
        PduType.ICRESP: 128,
        PduType.H2C_TERM: 24,
        PduType.C2H_TERM: 24,
        PduType.CMD: 72,
        PduType.RSP: 24,
        PduType.H2C_DATA: 24,
        PduType.C2H_DATA: 24,
        PduType.R2T: 24,
    }
    assert w.MIN_MAXH2CDATA == 4096 and w.MAX_TERM_PLEN == 152


def test_offset_constants() -> None:
    assert (w.OFF_TYPE, w.OFF_FLAGS, w.OFF_HLEN, w.OFF_PDO, w.OFF_PLEN) == (0, 1, 2, 3, 4)
    assert (w.OFF_ICREQ_PFV, w.OFF_ICREQ_HPDA, w.OFF_ICREQ_DGST, w.OFF_ICREQ_MAXR2T) == (
        8,
        10,
        11,
        12,
    )
    offs = (w.OFF_DATA_CCCID, w.OFF_DATA_TTAG, w.OFF_DATA_DATAO, w.OFF_DATA_DATAL)
    assert offs == (8, 10, 12, 16)


def test_icreq_layout() -> None:
    pdu = w.icreq(hpda=0x1F, hdgst=True, ddgst=True, maxr2t=0x01020304)
    assert len(pdu) == 128
    assert pdu[0] == 0x00 and pdu[1] == 0 and pdu[2] == 128 and pdu[3] == 0
    assert pdu[4:8] == _le(128, 4)
    assert pdu[8:10] == _le(0, 2)  # pfv 1.0
    assert pdu[10] == 0x1F  # hpda
    assert pdu[11] == 0x03  # digest: header | data
    assert pdu[12:16] == _le(0x01020304, 4)
    assert pdu[16:] == bytes(112)
    assert w.icreq(hdgst=True)[11] == 1 and w.icreq(ddgst=True)[11] == 2 and w.icreq()[11] == 0


def test_icresp_layout() -> None:
    pdu = w.icresp(cpda=3, hdgst=False, ddgst=True, maxh2cdata=0x00100000)
    assert len(pdu) == 128
    assert pdu[0] == 0x01 and pdu[2] == 128 and pdu[4:8] == _le(128, 4)
    assert pdu[10] == 3 and pdu[11] == 0x02
    assert pdu[12:16] == _le(0x00100000, 4)
    assert pdu[16:] == bytes(112)


def test_data_and_r2t_layout() -> None:
    pdu = w.DATA.pack(PduType.C2H_DATA, 0x0C, 24, 24, 0x200, 0xA1A2, 0xB1B2, 0xC1C2C3C4, 0xD1D2D3)
    assert pdu[0] == 7 and pdu[1] == 0x0C and pdu[2] == 24 and pdu[3] == 24
    assert pdu[4:8] == _le(0x200, 4)
    assert pdu[8:10] == _le(0xA1A2, 2)  # cccid
    assert pdu[10:12] == _le(0xB1B2, 2)  # ttag
    assert pdu[12:16] == _le(0xC1C2C3C4, 4)  # datao / r2to
    assert pdu[16:20] == _le(0xD1D2D3, 4)  # datal / r2tl
    assert pdu[20:24] == bytes(4)


def test_term_req_layout_without_header() -> None:
    pdu = w.term_req(PduType.C2H_TERM, Fes.PDU_SEQ_ERR, 0x01020304)
    assert len(pdu) == 24
    assert pdu[0] == 3 and pdu[2] == 24 and pdu[3] == 0 and pdu[4:8] == _le(24, 4)
    assert pdu[8:10] == _le(2, 2)  # fes
    assert pdu[10:14] == _le(0x01020304, 4)  # fei
    assert pdu[14:24] == bytes(10)


@pytest.mark.parametrize("hlen", [1, 72, 128, 129, 300])
def test_term_req_truncates_at_152_bytes(hlen: int) -> None:
    header = bytes(range(256))[:hlen] if hlen <= 256 else bytes(hlen)
    pdu = w.term_req(PduType.H2C_TERM, Fes.INVALID_PDU_HDR, 3, header)
    kept = min(hlen, 128)
    assert len(pdu) == 24 + kept <= 152
    assert struct.unpack_from("<I", pdu, 4)[0] == len(pdu)
    assert pdu[3] == 0  # PDO 0: the offending header follows directly (as SPDK, FreeBSD)
    assert pdu[24:] == header[:kept]


@given(st.binary(max_size=400), st.sampled_from(list(Fes)), st.integers(0, 0xFFFFFFFF))
def test_term_req_property(header: bytes, fes: Fes, fei: int) -> None:
    pdu = w.term_req(PduType.C2H_TERM, fes, fei, header)
    ptype, _, hlen, _, plen, got_fes, got_fei = w.TERM.unpack_from(pdu)
    assert (ptype, hlen, plen, got_fes, got_fei) == (3, 24, len(pdu), fes, fei)
    assert w.TERM.size <= plen <= w.MAX_TERM_PLEN
    assert header.startswith(pdu[24:])


@pytest.mark.parametrize("pda", range(32))
def test_pad_to_every_pda(pda: int) -> None:
    align = (pda + 1) * 4
    for offset in range(0, 300):
        padded = w.pad_to(offset, pda)
        if pda == 0:
            assert padded == offset
            continue
        assert padded % align == 0
        assert offset <= padded < offset + align
    # The offsets data PDUs actually use: headers with and without a digest.
    for header in (24, 28, 72, 76):
        assert w.pad_to(header, pda) >= header
        assert w.pad_to(header, pda) % 4 == 0


@given(st.integers(0, 1 << 20), st.integers(1, 31))
def test_pad_to_is_the_smallest_aligned_offset(offset: int, pda: int) -> None:
    align = (pda + 1) * 4
    padded = w.pad_to(offset, pda)
    assert padded % align == 0 and padded >= offset and padded - align < offset
    assert w.pad_to(padded, pda) == padded


def test_crc32c_known_vector() -> None:
    assert w.crc32c(b"123456789") == 0xE3069283
    assert w.digest(b"123456789") == bytes([0x83, 0x92, 0x06, 0xE3])  # little-endian
    assert w.crc32c(b"") == 0
    assert w.DIGEST_LEN == 4


@given(st.binary(max_size=2048), st.integers(0, 64), st.integers(0, 64))
def test_digest_over_views_equals_over_bytes(data: bytes, start: int, cut: int) -> None:
    view = memoryview(bytearray(data))
    assert w.crc32c(view) == w.crc32c(data) == w.crc32c(bytearray(data))
    assert w.digest(view) == w.digest(data)
    part = view[start : len(data) - cut] if start + cut <= len(data) else view[0:0]
    assert w.crc32c(part) == w.crc32c(bytes(part))
    # Continuing a CRC over two pieces equals one CRC over both.
    mid = len(data) // 2
    assert w.crc32c(view[mid:], w.crc32c(view[:mid])) == w.crc32c(data)
