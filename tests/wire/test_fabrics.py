"""Fabrics commands, Connect data and controller properties: offsets, round trips, limits.

Offsets are from NVMe-oF 1.1 Figures 19-27 and Linux ``struct nvmf_connect_command``,
``nvmf_connect_data``, ``nvmf_property_set_command`` (include/linux/nvme.h); property and CAP/CC/
CSTS bit positions from NVMe Base 2.0 Figures 33, 36, 41, 42.  None is read from the code.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmf.wire import fabrics as f
from nvmf.wire.fabrics import (
    CC,
    CONNECT_DATA_OFF_HOSTNQN,
    CONNECT_DATA_OFF_SUBSYSNQN,
    CSTS,
    Cap,
    ConnectCommand,
    ConnectData,
    ConnectDataError,
    Prop,
    PropertyCommand,
    disconnect_command,
    fctype_of,
    parse_version,
    vs,
)
from nvmf.wire.opcodes import FabricsType
from nvmf.wire.sqe import SglDescriptor
from nvmf.wire.status import WireError

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, (1 << 64) - 1)


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


# -- Connect -----------------------------------------------------------------------------------


def test_connect_command_layout() -> None:
    sgl = SglDescriptor.incapsule(1024)
    cmd = ConnectCommand(
        cid=0xA1B2, qid=0x0C0D, sqsize=0x0E0F, kato=0x11223344, cattr=0x44, recfmt=0x0506, sgl=sgl
    )
    wire = cmd.encode()
    assert len(wire) == 64
    assert wire[0] == 0x7F  # opcode: fabrics
    assert wire[1] == 0x40  # PSDT: SGL
    assert wire[2:4] == _le(0xA1B2, 2)
    assert wire[4] == 0x01  # fctype: Connect
    assert wire[5:24] == bytes(19)
    assert wire[24:40] == sgl.encode()
    assert wire[40:42] == _le(0x0506, 2)  # recfmt
    assert wire[42:44] == _le(0x0C0D, 2)  # qid
    assert wire[44:46] == _le(0x0E0F, 2)  # sqsize
    assert wire[46] == 0x44  # cattr
    assert wire[47] == 0
    assert wire[48:52] == _le(0x11223344, 4)  # kato
    assert wire[52:64] == bytes(12)
    assert fctype_of(wire) == FabricsType.CONNECT


def test_connect_offset_constants() -> None:
    assert (f.CONNECT_OFF_RECFMT, f.CONNECT_OFF_QID, f.CONNECT_OFF_SQSIZE) == (40, 42, 44)
    assert (f.CONNECT_OFF_CATTR, f.CONNECT_OFF_KATO) == (46, 48)
    assert (f.CONNECT_DATA_OFF_HOSTID, f.CONNECT_DATA_OFF_CNTLID) == (0, 16)
    assert (f.CONNECT_DATA_OFF_SUBSYSNQN, f.CONNECT_DATA_OFF_HOSTNQN) == (256, 512)


@given(cid=U16, qid=U16, sqsize=U16, kato=U32, cattr=U8, recfmt=U16, length=U32)
def test_connect_command_round_trip(
    cid: int, qid: int, sqsize: int, kato: int, cattr: int, recfmt: int, length: int
) -> None:
    cmd = ConnectCommand(cid, qid, sqsize, kato, cattr, recfmt, SglDescriptor.incapsule(length))
    assert ConnectCommand.decode(cmd.encode()) == cmd


@pytest.mark.parametrize("length", [0, 40, 63])
def test_connect_command_short_is_a_wire_error(length: int) -> None:
    with pytest.raises(WireError):
        ConnectCommand.decode(bytes(length))


def test_connect_data_layout() -> None:
    hostid = bytes(range(1, 17))
    data = ConnectData(hostid, 0xBEEF, "nqn.sub", "nqn.host").encode()
    assert len(data) == 1024
    assert data[0:16] == hostid
    assert data[16:18] == _le(0xBEEF, 2)
    assert data[18:256] == bytes(238)
    assert data[256:263] == b"nqn.sub" and data[263:512] == bytes(249)
    assert data[512:520] == b"nqn.host" and data[520:1024] == bytes(504)


def test_connect_data_nqn_lengths() -> None:
    """256-byte fields hold at most 255 bytes and the terminating NUL."""
    hostid = bytes(16)
    longest = "n" * 255
    data = ConnectData(hostid, 1, longest, longest).encode()
    assert ConnectData.decode(data).subsysnqn == longest
    assert ConnectData.decode(data).hostnqn == longest
    with pytest.raises(ValueError):
        ConnectData(hostid, 1, "n" * 256, "h").encode()
    with pytest.raises(ValueError):
        ConnectData(hostid, 1, "s", "n" * 256).encode()
    # Bytes count, not characters: 128 two-byte characters are 256 bytes.
    with pytest.raises(ValueError):
        ConnectData(hostid, 1, "é" * 128, "h").encode()


@pytest.mark.parametrize("hostid", [b"", bytes(15), bytes(17)])
def test_connect_data_hostid_must_be_16_bytes(hostid: bytes) -> None:
    with pytest.raises(ValueError):
        ConnectData(hostid, 1, "s", "h").encode()


@pytest.mark.parametrize("length", [0, 512, 1023])
def test_connect_data_short_is_a_wire_error(length: int) -> None:
    with pytest.raises(WireError):
        ConnectData.decode(bytes(length))


@pytest.mark.parametrize("offset", [CONNECT_DATA_OFF_SUBSYSNQN, CONNECT_DATA_OFF_HOSTNQN])
def test_connect_data_non_utf8_nqn_names_its_field(offset: int) -> None:
    data = bytearray(ConnectData(bytes(16), 1, "s", "h").encode())
    data[offset] = 0xFF
    with pytest.raises(ConnectDataError) as info:
        ConnectData.decode(bytes(data))
    assert isinstance(info.value, WireError)
    assert info.value.offset == offset


def test_connect_data_hostid_uuid() -> None:
    u = uuid.uuid4()
    assert ConnectData(u.bytes, 1, "s", "h").hostid_uuid == u


def _utf8_at_most(n: int) -> st.SearchStrategy[str]:
    text = st.text(st.characters(codec="utf-8", exclude_characters="\0"))
    return text.filter(lambda t: len(t.encode()) <= n)


@given(
    hostid=st.binary(min_size=16, max_size=16),
    cntlid=U16,
    subsysnqn=_utf8_at_most(255),
    hostnqn=_utf8_at_most(255),
)
def test_connect_data_round_trip(hostid: bytes, cntlid: int, subsysnqn: str, hostnqn: str) -> None:
    data = ConnectData(hostid, cntlid, subsysnqn, hostnqn)
    wire = data.encode()
    assert len(wire) == 1024
    assert ConnectData.decode(wire) == data
    assert ConnectData.decode(memoryview(wire)) == data


# -- Property Get/Set, Disconnect --------------------------------------------------------------


def test_property_set_layout() -> None:
    cmd = PropertyCommand(0x1234, FabricsType.PROPERTY_SET, 1, 0x14, 0x0102030405060708)
    wire = cmd.encode()
    assert len(wire) == 64
    assert wire[0] == 0x7F and wire[2:4] == _le(0x1234, 2) and wire[4] == 0x00
    assert wire[40] == 1  # attrib
    assert wire[41:44] == bytes(3)
    assert wire[44:48] == _le(0x14, 4)  # offset
    assert wire[48:56] == _le(0x0102030405060708, 8)  # value
    assert wire[56:64] == bytes(8)
    assert cmd.size == 8


def test_property_get_layout() -> None:
    cmd = PropertyCommand(7, FabricsType.PROPERTY_GET, 0, Prop.CSTS)
    wire = cmd.encode()
    assert wire[4] == 0x04 and wire[40] == 0 and wire[44:48] == _le(0x1C, 4)
    assert wire[48:64] == bytes(16)
    assert cmd.size == 4
    assert fctype_of(wire) == FabricsType.PROPERTY_GET


@given(cid=U16, fctype=st.sampled_from([0x00, 0x04]), attrib=U8, offset=U32, value=U64)
def test_property_round_trip(cid: int, fctype: int, attrib: int, offset: int, value: int) -> None:
    cmd = PropertyCommand(cid, fctype, attrib, offset, value)
    assert PropertyCommand.decode(cmd.encode()) == cmd


@pytest.mark.parametrize("length", [0, 48, 63])
def test_property_short_is_a_wire_error(length: int) -> None:
    with pytest.raises(WireError) as info:
        PropertyCommand.decode(bytes(length))
    assert not isinstance(info.value, struct.error)


def test_disconnect_layout() -> None:
    wire = disconnect_command(0x4321, recfmt=0x0102)
    assert len(wire) == 64
    assert wire[0] == 0x7F and wire[2:4] == _le(0x4321, 2) and wire[4] == 0x08
    assert wire[40:42] == _le(0x0102, 2) and wire[42:64] == bytes(22)


def test_property_offsets() -> None:
    assert (Prop.CAP, Prop.VS, Prop.INTMS, Prop.INTMC) == (0x00, 0x08, 0x0C, 0x10)
    assert (Prop.CC, Prop.CSTS, Prop.NSSR) == (0x14, 0x1C, 0x20)
    assert f.PROP_SIZE[Prop.CAP] == 8 and f.PROP_SIZE[Prop.CC] == 4
    assert f.NSSR_RESET.to_bytes(4, "big") == b"NVMe"


def test_connect_and_invalid_parameter_results() -> None:
    assert f.connect_result(0x12345) == 0x2345
    assert f.invalid_parameter_result(42, in_data=False) == 42
    assert f.invalid_parameter_result(256, in_data=True) == (1 << 16) | 256


# -- CAP, VS, CC, CSTS -------------------------------------------------------------------------


def test_cap_bit_positions() -> None:
    def bits(**kw: Any) -> int:
        return Cap(**{"mqes": 0, "cqr": False, "to": 0, "css_nvm": False, **kw}).encode()

    assert bits(mqes=0xFFFF) == 0xFFFF
    assert bits(cqr=True) == 1 << 16
    assert bits(to=0xFF) == 0xFF << 24
    assert bits(dstrd=0xF) == 0xF << 32
    assert bits(nssrs=True) == 1 << 36
    assert bits(css_nvm=True) == 1 << 37  # CSS bit 0 (NVM command set)
    assert bits(mpsmin=0xF) == 0xF << 48
    assert bits(mpsmax=0xF) == 0xF << 52
    assert bits(cmbs=True) == 1 << 57


@given(
    mqes=U16,
    cqr=st.booleans(),
    to=U8,
    dstrd=st.integers(0, 15),
    nssrs=st.booleans(),
    css_nvm=st.booleans(),
    mpsmin=st.integers(0, 15),
    mpsmax=st.integers(0, 15),
    cmbs=st.booleans(),
)
def test_cap_round_trip(
    mqes: int,
    cqr: bool,
    to: int,
    dstrd: int,
    nssrs: bool,
    css_nvm: bool,
    mpsmin: int,
    mpsmax: int,
    cmbs: bool,
) -> None:
    cap = Cap(mqes, cqr, to, dstrd, nssrs, css_nvm, mpsmin, mpsmax, cmbs)
    assert Cap.decode(cap.encode()) == cap


def test_version() -> None:
    assert vs(1, 3) == 0x00010300
    assert vs(2, 0, 1) == 0x00020001
    assert parse_version("1.3") == 0x10300
    assert parse_version(" 1.4 ") == 0x10400
    assert parse_version("2.0.1") == 0x20001
    assert parse_version("65535.255.255") == 0xFFFFFFFF


@pytest.mark.parametrize(
    "text", ["", "1", "1.", "1.2.3.4", "a.b", "1.x", "1.256", "65536.0", "1.0.256", "1.-1", "v1.3"]
)
def test_version_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_version(text)


@given(st.integers(0, 0xFFFF), U8, U8)
def test_version_round_trip(major: int, minor: int, tertiary: int) -> None:
    value = parse_version(f"{major}.{minor}.{tertiary}")
    assert value == (major << 16) | (minor << 8) | tertiary


def test_cc_fields() -> None:
    """CC: EN 0, CSS 6:4, MPS 10:7, AMS 13:11, SHN 15:14, IOSQES 19:16, IOCQES 23:20."""
    assert CC.EN == 1
    assert CC.css(0b111 << 4) == 7 and CC.css(0b1000 << 4) == 0
    assert CC.mps(0xF << 7) == 15 and CC.mps(1 << 11) == 0
    assert CC.ams(0b111 << 11) == 7 and CC.ams(1 << 14) == 0
    assert CC.shn(0b11 << 14) == 3 and CC.shn(1 << 16) == 0
    assert CC.iosqes(0xF << 16) == 15 and CC.iosqes(1 << 20) == 0
    assert CC.iocqes(0xF << 20) == 15 and CC.iocqes(1 << 24) == 0
    assert CC.SHN_NORMAL == 1 << 14 and CC.SHN_ABRUPT == 2 << 14 and CC.SHN_MASK == 3 << 14
    shifts = (CC.CSS_SHIFT, CC.MPS_SHIFT, CC.AMS_SHIFT, CC.SHN_SHIFT)
    assert shifts == (4, 7, 11, 14)
    assert (CC.IOSQES_SHIFT, CC.IOCQES_SHIFT) == (16, 20)


def test_csts_bits() -> None:
    assert (CSTS.RDY, CSTS.CFS, CSTS.NSSRO, CSTS.PP) == (1, 2, 16, 32)
    assert CSTS.SHST_MASK == 0b1100
    assert (CSTS.SHST_OCCUR, CSTS.SHST_CMPLT) == (0b0100, 0b1000)
