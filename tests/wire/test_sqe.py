"""SQE, CQE and SGL descriptors: sizes, byte offsets, round trips, malformed input.

Offsets come from the tables below, written from the NVMe Base 2.0 figures and the Linux
structures (``struct nvme_common_command``, ``struct nvme_completion``, ``struct nvme_sgl_desc``,
``struct nvme_keyed_sgl_desc`` in include/linux/nvme.h), not from the structs under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmf.wire import sqe as s
from nvmf.wire.sqe import (
    CQE_SIZE,
    NULL_TCP_SGL,
    SGL_INCAPSULE,
    SGL_RDMA_KEYED,
    SGL_RDMA_KEYED_INVALIDATE,
    SGL_TCP_TRANSPORT,
    SQE_SIZE,
    Cqe,
    SglDescriptor,
    SglSubtype,
    SglType,
    Sqe,
    encode_cqe,
    sgl_type_byte,
)
from nvmf.wire.status import SC, STATUS_DNR, Status, WireError

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, (1 << 64) - 1)

#: struct nvme_common_command: field -> (offset, size).
SQE_FIELDS: dict[str, tuple[int, int]] = {
    "opcode": (0, 1),
    "flags": (1, 1),
    "cid": (2, 2),
    "nsid": (4, 4),
    "cdw2": (8, 4),
    "cdw3": (12, 4),
    "mptr": (16, 8),
    "dptr": (24, 16),
    "cdw10": (40, 4),
    "cdw11": (44, 4),
    "cdw12": (48, 4),
    "cdw13": (52, 4),
    "cdw14": (56, 4),
    "cdw15": (60, 4),
}

#: struct nvme_completion: field -> (offset, size).
CQE_FIELDS: dict[str, tuple[int, int]] = {
    "dw0": (0, 4),
    "dw1": (4, 4),
    "sqhd": (8, 2),
    "sqid": (10, 2),
    "cid": (12, 2),
    "status": (14, 2),
}


def _pattern(size: int) -> bytes:
    """A value with no zero byte, distinct per position, so a misplaced field is visible."""
    return bytes(range(0xA1, 0xA1 + size))


# -- SQE ---------------------------------------------------------------------------------------


def test_sqe_sizes() -> None:
    assert SQE_SIZE == 64 and CQE_SIZE == 16
    assert len(Sqe(opcode=0).encode()) == 64
    assert len(Cqe().encode()) == 16


@pytest.mark.parametrize("name", sorted(SQE_FIELDS))
def test_sqe_field_lands_at_spec_offset(name: str) -> None:
    offset, size = SQE_FIELDS[name]
    raw = _pattern(size)
    value: int | bytes = raw if name == "dptr" else int.from_bytes(raw, "little")
    sqe = Sqe(opcode=0, flags=0)
    setattr(sqe, name, value)
    wire = sqe.encode()
    assert wire[offset : offset + size] == raw
    assert wire[:offset] + wire[offset + size :] == bytes(SQE_SIZE - size)
    assert getattr(Sqe.decode(wire), name) == value


def test_sqe_offset_constants_match_the_spec() -> None:
    constants = {
        "opcode": s.OFF_OPCODE,
        "flags": s.OFF_FLAGS,
        "cid": s.OFF_CID,
        "nsid": s.OFF_NSID,
        "dptr": s.OFF_DPTR,
        **{f"cdw{n}": getattr(s, f"OFF_CDW{n}") for n in range(10, 16)},
    }
    for name, offset in constants.items():
        assert offset == SQE_FIELDS[name][0], name


sqes = st.builds(
    Sqe,
    opcode=U8,
    flags=U8,
    cid=U16,
    nsid=U32,
    cdw2=U32,
    cdw3=U32,
    mptr=U64,
    dptr=st.binary(min_size=16, max_size=16),
    cdw10=U32,
    cdw11=U32,
    cdw12=U32,
    cdw13=U32,
    cdw14=U32,
    cdw15=U32,
)


@given(sqes)
def test_sqe_round_trip(sqe: Sqe) -> None:
    wire = sqe.encode()
    assert len(wire) == SQE_SIZE
    assert Sqe.decode(wire) == sqe
    assert Sqe.decode(memoryview(wire)) == sqe


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_sqe_decode_wrong_length_is_a_wire_error(length: int) -> None:
    with pytest.raises(WireError) as info:
        Sqe.decode(bytes(length))
    assert not isinstance(info.value, struct.error)


def test_sqe_flags_psdt_and_fuse() -> None:
    sqe = Sqe(opcode=1, flags=0xC3)
    assert sqe.psdt == 0xC0 and sqe.fuse == 0x03
    assert Sqe(opcode=1).psdt == s.PSDT_SGL_MPTR_CONTIG == 0x40  # default: SGL on fabrics
    assert s.PSDT_PRP == 0 and s.PSDT_SGL_MPTR_SGL == 0x80


def test_sqe_nvm_accessors() -> None:
    sqe = Sqe(opcode=2, cdw10=0x89ABCDEF, cdw11=0x01234567, cdw12=(1 << 30) | 0x1234)
    assert sqe.slba == 0x0123456789ABCDEF
    assert sqe.nlb == 0x1234
    assert sqe.fua
    other = Sqe(opcode=2, cdw12=0xBFFF0007)  # every bit but FUA
    assert not other.fua and other.nlb == 7


def test_sqe_sgl_setter_writes_dptr() -> None:
    sqe = Sqe(opcode=1)
    sqe.sgl = SglDescriptor.tcp_transport(0x12345)
    wire = sqe.encode()
    assert wire[24:40] == SglDescriptor.tcp_transport(0x12345).encode()
    assert Sqe.decode(wire).sgl == SglDescriptor.tcp_transport(0x12345)


# -- SGL descriptors ---------------------------------------------------------------------------


def test_sgl_type_bytes() -> None:
    assert SGL_INCAPSULE == 0x01  # data block, offset
    assert SGL_TCP_TRANSPORT == 0x5A  # transport data block, transport specific
    assert SGL_RDMA_KEYED == 0x40  # keyed data block, address
    assert SGL_RDMA_KEYED_INVALIDATE == 0x4F
    assert sgl_type_byte(SglType.LAST_SEGMENT, SglSubtype.ADDRESS) == 0x30
    desc = SglDescriptor(0, 0, 0x5A)
    assert desc.sgl_type == SglType.TRANSPORT_DATA_BLOCK
    assert desc.subtype == SglSubtype.TRANSPORT_SPECIFIC


def test_sgl_data_block_layout() -> None:
    """struct nvme_sgl_desc: addr u64 @0, length u32 @8, reserved 3 @12, type @15."""
    wire = SglDescriptor.incapsule(0x0A0B0C0D, offset=0x1122334455667788).encode()
    assert len(wire) == 16
    assert wire[0:8] == (0x1122334455667788).to_bytes(8, "little")
    assert wire[8:12] == (0x0A0B0C0D).to_bytes(4, "little")
    assert wire[12:15] == bytes(3)
    assert wire[15] == 0x01


def test_sgl_keyed_layout() -> None:
    """struct nvme_keyed_sgl_desc: addr u64 @0, length 3 bytes @8, key u32 @11, type @15."""
    wire = SglDescriptor.keyed(0x1122334455667788, 0xABCDEF, 0xDEADBEEF).encode()
    assert wire[0:8] == (0x1122334455667788).to_bytes(8, "little")
    assert wire[8:11] == bytes([0xEF, 0xCD, 0xAB])
    assert wire[11:15] == (0xDEADBEEF).to_bytes(4, "little")
    assert wire[15] == 0x40


@pytest.mark.parametrize("length", [0, 1, (1 << 24) - 1])
def test_sgl_keyed_length_in_range(length: int) -> None:
    desc = SglDescriptor.keyed(1, length, 2)
    assert SglDescriptor.decode(desc.encode()) == desc


@pytest.mark.parametrize("length", [-1, 1 << 24, 1 << 31])
def test_sgl_keyed_length_beyond_24_bits_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        SglDescriptor.keyed(1, length, 2).encode()


def test_sgl_keyed_decode_splits_length_and_key() -> None:
    """The top length byte of a data block is the key's first byte in a keyed descriptor."""
    raw = bytes(8) + bytes([1, 2, 3, 4, 5, 6, 7]) + bytes([0x40])
    desc = SglDescriptor.decode(raw)
    assert desc.length == 0x030201 and desc.key == 0x07060504


@given(address=U64, length=st.integers(0, (1 << 24) - 1), key=U32, invalidate=st.booleans())
def test_sgl_keyed_round_trip(address: int, length: int, key: int, invalidate: bool) -> None:
    type_byte = SGL_RDMA_KEYED_INVALIDATE if invalidate else SGL_RDMA_KEYED
    desc = SglDescriptor(address, length, type_byte, key)
    assert SglDescriptor.decode(desc.encode()) == desc


@given(
    address=U64,
    length=U32,
    type_byte=st.sampled_from([SGL_INCAPSULE, SGL_TCP_TRANSPORT, 0x00, 0x20, 0x30]),
)
def test_sgl_data_round_trip(address: int, length: int, type_byte: int) -> None:
    desc = SglDescriptor(address, length, type_byte)
    assert SglDescriptor.decode(desc.encode()) == desc
    assert SglDescriptor.decode(memoryview(desc.encode())) == desc


@pytest.mark.parametrize("length", [0, 15, 17, 64])
def test_sgl_decode_wrong_length_is_a_wire_error(length: int) -> None:
    with pytest.raises(WireError):
        SglDescriptor.decode(bytes(length))


def test_null_tcp_sgl() -> None:
    assert NULL_TCP_SGL.encode() == bytes(15) + b"\x5a"


# -- CQE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CQE_FIELDS))
def test_cqe_field_lands_at_spec_offset(name: str) -> None:
    offset, size = CQE_FIELDS[name]
    raw = _pattern(size)
    cqe = Cqe()
    setattr(cqe, name, int.from_bytes(raw, "little"))
    wire = cqe.encode()
    assert wire[offset : offset + size] == raw
    assert wire[:offset] + wire[offset + size :] == bytes(CQE_SIZE - size)


@pytest.mark.parametrize("length", [0, 15, 17])
def test_cqe_decode_wrong_length_is_a_wire_error(length: int) -> None:
    with pytest.raises(WireError):
        Cqe.decode(bytes(length))


def test_encode_cqe_status_and_phase_bits() -> None:
    """CQE DW3 31:16 = status field (15 bits) << 1 | phase; DNR is bit 15 of that word."""
    st_ = Status(SC.CONNECT_INVALID_PARAM, dnr=True, result=0x12345678, result_hi=0x9ABCDEF0)
    wire = encode_cqe(st_, cid=0x1234, sqid=3, sqhd=0x55, phase=1)
    dw0, dw1, sqhd, sqid, cid, status = struct.unpack("<IIHHHH", wire)
    assert (dw0, dw1, sqhd, sqid, cid) == (0x12345678, 0x9ABCDEF0, 0x55, 3, 0x1234)
    assert status & 1 == 1  # phase tag
    assert status >> 1 & 0xFF == 0x82  # SC
    assert status >> 9 & 0x7 == 1  # SCT
    assert status >> 15 == 1  # DNR
    assert status == (st_.encode() << 1) | 1
    assert encode_cqe(st_, cid=0, sqid=0, sqhd=0, phase=0)[14:16] == (
        (st_.encode() << 1).to_bytes(2, "little")
    )
    # The phase argument contributes only its low bit.
    assert encode_cqe(Status(), cid=0, sqid=0, sqhd=0, phase=2)[14:16] == bytes(2)


def test_encode_cqe_success_is_all_zero_status() -> None:
    wire = encode_cqe(Status(), cid=7, sqid=0, sqhd=1)
    assert wire[14:16] == bytes(2)
    assert Cqe.decode(wire).decoded_status().ok


def test_cqe_result_and_phase_accessors() -> None:
    cqe = Cqe(dw0=0x11223344, dw1=0x55667788, status=(STATUS_DNR << 1) | 1)
    assert cqe.result == 0x5566778811223344
    assert cqe.phase == 1
    assert cqe.decoded_status() == Status(SC.SUCCESS, dnr=True)


@given(
    code=st.sampled_from(list(SC)),
    dnr=st.booleans(),
    cid=U16,
    sqid=U16,
    sqhd=U16,
    phase=st.integers(0, 1),
    result=U32,
    result_hi=U32,
)
def test_cqe_round_trip(
    code: SC, dnr: bool, cid: int, sqid: int, sqhd: int, phase: int, result: int, result_hi: int
) -> None:
    status = Status(code, dnr=dnr, result=result, result_hi=result_hi)
    cqe = Cqe.decode(encode_cqe(status, cid=cid, sqid=sqid, sqhd=sqhd, phase=phase))
    assert (cqe.cid, cqe.sqid, cqe.sqhd, cqe.phase) == (cid, sqid, sqhd, phase)
    assert cqe.result == result | (result_hi << 32)
    assert cqe.decoded_status() == Status(code, dnr=dnr)
    assert Cqe.decode(cqe.encode()) == cqe
