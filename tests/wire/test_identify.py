"""Identify data structures: sizes, byte offsets, padding, round trips, malformed input.

Offsets are checked against tables written here from the spec and Linux ``struct nvme_id_ctrl``
/ ``struct nvme_id_ns``, independently of the field tables in ``nvmf.wire.identify``: each field
is set alone to a distinctive value and must change exactly its bytes, and a buffer with only
those bytes set must decode to that value.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvmf.wire.identify import (
    ID_CTRL_LAYOUT,
    ID_NS_LAYOUT,
    IDENTIFY_DATA_SIZE,
    NIDT_LENGTH,
    NSID_ALL,
    NSID_MAX,
    Array,
    Ascii,
    Cns,
    Csi,
    Field,
    FieldType,
    IdentifyController,
    IdentifyNamespace,
    Layout,
    LbaFormat,
    NamespaceList,
    Nested,
    Nidt,
    Nqn,
    NsIdDescriptor,
    NsIdDescriptorList,
    PowerStateDescriptor,
    Raw,
    UInt,
    decode_ns_id_descriptors,
    encode_active_ns_list,
    encode_ns_id_descriptors,
)
from nvmf.wire.status import WireError

# ---------------------------------------------------------------------------------------------
# Strategies derived from a field table (the same helper lives in test_logpage.py)
# ---------------------------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

NQNS = st.one_of(
    st.just("nqn.2014-08.org.nvmexpress.discovery"),
    st.uuids().map(lambda u: f"nqn.2014-08.org.nvmexpress:uuid:{u}"),
    st.from_regex(
        r"nqn\.20[12][0-9]-(0[1-9]|1[0-2])\.[a-z]{2,10}(\.[a-z0-9-]{1,10}){0,3}:[A-Za-z0-9._:-]{1,64}",
        fullmatch=True,
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=80),
)


def strategy_for(ftype: FieldType) -> st.SearchStrategy[Any]:
    """Any value the field type encodes and decodes back unchanged."""
    if isinstance(ftype, UInt):
        return st.integers(0, (1 << (8 * ftype.size)) - 1)
    if isinstance(ftype, Ascii):
        return st.text(PRINTABLE, max_size=ftype.size).map(lambda s: s.rstrip(" "))
    if isinstance(ftype, Nqn):
        return NQNS.filter(lambda s: len(s.encode()) < ftype.size)
    if isinstance(ftype, Raw):
        return st.binary(min_size=ftype.size, max_size=ftype.size)
    if isinstance(ftype, Array):
        elem = strategy_for(ftype.elem)
        return st.lists(elem, min_size=ftype.count, max_size=ftype.count)
    if isinstance(ftype, Nested):
        return st.builds(ftype.cls, **layout_strategies(ftype.cls.LAYOUT))
    raise AssertionError(f"no strategy for {ftype!r}")


def layout_strategies(layout: Layout, **overrides: Any) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy per table field, ``overrides`` replacing some (realistic ranges)."""
    out = {f.name: strategy_for(f.type) for f in layout.fields}
    out.update(overrides)
    return out


def marker(width: int) -> bytes:
    """``width`` distinctive non-zero bytes."""
    return bytes((i % 251) + 1 for i in range(width))


def ascii_marker(width: int) -> str:
    """``width`` distinctive printable characters, no trailing space."""
    return "".join(chr(0x41 + i % 26) for i in range(width))


def value_and_bytes(ftype: FieldType) -> tuple[Any, bytes]:
    """A field value filling the whole field, and its expected wire bytes."""
    if isinstance(ftype, UInt):
        raw = marker(ftype.size)
        return int.from_bytes(raw, "little"), raw
    if isinstance(ftype, Ascii):
        text = ascii_marker(ftype.size)
        return text, text.encode()
    if isinstance(ftype, Nqn):
        text = ascii_marker(ftype.size - 1)
        return text, text.encode() + b"\0"
    if isinstance(ftype, Raw):
        raw = marker(ftype.size)
        return raw, raw
    raise AssertionError(f"not a scalar type: {ftype!r}")


def check_field_alone(
    cls: Any, layout: Layout, name: str, offset: int, width: int, **base: Any
) -> None:
    """Setting ``name`` alone changes exactly bytes [offset, offset+width), both directions."""
    ftype = layout.field(name).type
    assert ftype.size == width, f"{name}: width {ftype.size}, spec says {width}"
    value, raw = value_and_bytes(ftype)
    default = cls(**base).encode()
    encoded = cls(**base, **{name: value}).encode()
    assert encoded[offset : offset + width] == raw
    changed = [i for i in range(len(encoded)) if encoded[i] != default[i]]
    assert changed and offset <= min(changed) and max(changed) < offset + width
    # decode direction: a buffer of zeros with only this field's bytes set
    buf = bytearray(len(default))
    buf[offset : offset + width] = raw
    assert getattr(cls.decode(bytes(buf)), name) == value


# ---------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------


def test_cns_values_match_the_kernel() -> None:
    assert (Cns.NS, Cns.CTRL, Cns.NS_ACTIVE_LIST, Cns.NS_DESC_LIST) == (0, 1, 2, 3)
    assert (Cns.CS_NS, Cns.CS_CTRL, Cns.NS_ACTIVE_LIST_CS, Cns.NS_CS_INDEP) == (5, 6, 7, 8)
    assert (Cns.NS_PRESENT_LIST, Cns.CTRL_LIST, Cns.UUID_LIST) == (0x10, 0x13, 0x17)
    assert (Csi.NVM, Csi.ZNS) == (0, 2)


def test_nidt_values_and_lengths() -> None:
    assert (Nidt.EUI64, Nidt.NGUID, Nidt.UUID, Nidt.CSI) == (1, 2, 3, 4)
    assert NIDT_LENGTH == {1: 8, 2: 16, 3: 16, 4: 1}


# ---------------------------------------------------------------------------------------------
# Field-table machinery
# ---------------------------------------------------------------------------------------------


def test_layout_rejects_overlap_and_wrong_size() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        Layout("T", 8, [Field(0, "a", UInt(4)), Field(2, "b", UInt(2))])
    with pytest.raises(ValueError, match="past the size"):
        Layout("T", 4, [Field(2, "a", UInt(4))])
    with pytest.raises(ValueError, match="repeats"):
        Layout("T", 8, [Field(0, "a", UInt(1)), Field(4, "a", UInt(1))])


def test_layout_fills_reserved_gaps() -> None:
    layout = Layout("T", 16, [Field(1, "a", UInt(2)), Field(8, "b", UInt(4))])
    assert layout.struct.format == "<1xH5xI4x"
    assert layout.offset("b") == 8


# ---------------------------------------------------------------------------------------------
# Identify Controller
# ---------------------------------------------------------------------------------------------

# (name, offset, width) from NVMe Base 2.0 / NVMe-oF 1.1 and Linux struct nvme_id_ctrl.
ID_CTRL_OFFSETS = [
    ("vid", 0, 2), ("ssvid", 2, 2), ("sn", 4, 20), ("mn", 24, 40), ("fr", 64, 8),
    ("rab", 72, 1), ("ieee", 73, 3), ("cmic", 76, 1), ("mdts", 77, 1), ("cntlid", 78, 2),
    ("ver", 80, 4), ("rtd3r", 84, 4), ("rtd3e", 88, 4), ("oaes", 92, 4), ("ctratt", 96, 4),
    ("rrls", 100, 2), ("cntrltype", 111, 1), ("fguid", 112, 16),
    ("crdt1", 128, 2), ("crdt2", 130, 2), ("crdt3", 132, 2),
    ("nvmsr", 253, 1), ("vwci", 254, 1), ("mec", 255, 1),
    ("oacs", 256, 2), ("acl", 258, 1), ("aerl", 259, 1), ("frmw", 260, 1), ("lpa", 261, 1),
    ("elpe", 262, 1), ("npss", 263, 1), ("avscc", 264, 1), ("apsta", 265, 1),
    ("wctemp", 266, 2), ("cctemp", 268, 2), ("mtfa", 270, 2), ("hmpre", 272, 4),
    ("hmmin", 276, 4), ("tnvmcap", 280, 16), ("unvmcap", 296, 16), ("rpmbs", 312, 4),
    ("edstt", 316, 2), ("dsto", 318, 1), ("fwug", 319, 1), ("kas", 320, 2),
    ("hctma", 322, 2), ("mntmt", 324, 2), ("mxtmt", 326, 2), ("sanicap", 328, 4),
    ("hmminds", 332, 4), ("hmmaxd", 336, 2), ("nsetidmax", 338, 2), ("endgidmax", 340, 2),
    ("anatt", 342, 1), ("anacap", 343, 1), ("anagrpmax", 344, 4), ("nanagrpid", 348, 4),
    ("pels", 352, 4), ("domainid", 356, 2), ("megcap", 368, 16),
    ("sqes", 512, 1), ("cqes", 513, 1), ("maxcmd", 514, 2), ("nn", 516, 4), ("oncs", 520, 2),
    ("fuses", 522, 2), ("fna", 524, 1), ("vwc", 525, 1), ("awun", 526, 2), ("awupf", 528, 2),
    ("nvscc", 530, 1), ("nwpc", 531, 1), ("acwu", 532, 2), ("ocfs", 534, 2), ("sgls", 536, 4),
    ("mnan", 540, 4), ("maxdna", 544, 16), ("maxcna", 560, 4), ("subnqn", 768, 256),
    ("ioccsz", 1792, 4), ("iorcsz", 1796, 4), ("icdoff", 1800, 2), ("fcatt", 1802, 1),
    ("msdbd", 1803, 1), ("ofcs", 1804, 2), ("dctype", 1806, 1),
]  # fmt: skip

PSD_OFFSETS = [
    ("mp", 0, 2), ("flags", 3, 1), ("enlat", 4, 4), ("exlat", 8, 4), ("rrt", 12, 1),
    ("rrl", 13, 1), ("rwt", 14, 1), ("rwl", 15, 1), ("idlp", 16, 2), ("ips", 18, 1),
    ("actp", 20, 2), ("apw_aps", 22, 1),
]  # fmt: skip


def test_identify_controller_size() -> None:
    assert IdentifyController.SIZE == IDENTIFY_DATA_SIZE == 4096
    assert ID_CTRL_LAYOUT.struct.size == 4096
    assert len(IdentifyController().encode()) == 4096
    assert PowerStateDescriptor.SIZE == len(PowerStateDescriptor().encode()) == 32


def test_identify_controller_offset_table_covers_every_field() -> None:
    tested = {name for name, _, _ in ID_CTRL_OFFSETS} | {"psd"}
    assert tested == {f.name for f in ID_CTRL_LAYOUT.fields}
    for name, offset, _ in ID_CTRL_OFFSETS:
        assert ID_CTRL_LAYOUT.offset(name) == offset, name


@pytest.mark.parametrize(("name", "offset", "width"), ID_CTRL_OFFSETS)
def test_identify_controller_field_offset(name: str, offset: int, width: int) -> None:
    if name == "npss":  # NPSS says how many descriptors follow: keep them consistent
        count = int.from_bytes(marker(1), "little") + 1
        base: dict[str, Any] = {"psd": [PowerStateDescriptor() for _ in range(count)]}
        value, raw = value_and_bytes(ID_CTRL_LAYOUT.field(name).type)
        encoded = IdentifyController(npss=value, **base).encode()
        assert encoded[offset : offset + width] == raw
        return
    check_field_alone(IdentifyController, ID_CTRL_LAYOUT, name, offset, width)


@pytest.mark.parametrize(("name", "offset", "width"), PSD_OFFSETS)
def test_power_state_descriptor_field_offset(name: str, offset: int, width: int) -> None:
    check_field_alone(PowerStateDescriptor, PowerStateDescriptor.LAYOUT, name, offset, width)


def test_power_state_descriptors_start_at_2048() -> None:
    psd = [PowerStateDescriptor(mp=0x09C4, flags=0x2), PowerStateDescriptor(enlat=0x10)]
    buf = IdentifyController(npss=1, psd=psd).encode()
    assert buf[2048:2050] == b"\xc4\x09"
    assert buf[2051] == 0x2
    assert buf[2080 + 4 : 2080 + 8] == b"\x10\x00\x00\x00"
    assert not any(buf[2112:])


def test_identify_controller_known_positions() -> None:
    """The offsets the brief and the Linux host depend on, spelled out."""
    ctrl = IdentifyController(
        cntlid=0x1234, mdts=5, nn=0x400, sgls=0x100005, subnqn="nqn.2014-08.org.example:s1",
        ioccsz=0x104, iorcsz=1, kas=100, sqes=0x66, cqes=0x44, ver=0x00010400,
    )  # fmt: skip
    buf = ctrl.encode()
    assert buf[78:80] == b"\x34\x12"
    assert buf[77] == 5
    assert buf[80:84] == b"\x00\x04\x01\x00"
    assert buf[516:520] == b"\x00\x04\x00\x00"
    assert buf[536:540] == b"\x05\x00\x10\x00"
    assert buf[768 : 768 + 27] == b"nqn.2014-08.org.example:s1\0"
    assert buf[1792:1800] == b"\x04\x01\x00\x00\x01\x00\x00\x00"
    assert buf[320:322] == b"\x64\x00"
    assert buf[512:514] == b"\x66\x44"


def test_identify_controller_string_padding() -> None:
    buf = IdentifyController(sn="abc", mn="Linux", fr="6.1", subnqn="nqn.x").encode()
    assert buf[4:24] == b"abc" + b" " * 17
    assert buf[24:64] == b"Linux" + b" " * 35
    assert buf[64:72] == b"6.1     "
    assert buf[768:1024] == b"nqn.x" + b"\0" * 251
    empty = IdentifyController().encode()
    assert empty[4:72] == b" " * 68
    assert empty[768:1024] == bytes(256)


def test_identify_controller_decode_strips_padding() -> None:
    buf = bytearray(4096)
    buf[4:24] = b"SN 1".ljust(20, b" ")
    buf[24:64] = b"NUL padded".ljust(40, b"\0")  # tolerated: some devices do this
    buf[64:72] = b"1.0     "
    buf[768:1024] = b"nqn.a\0garbage after the terminator".ljust(256, b"\0")
    ctrl = IdentifyController.decode(bytes(buf))
    assert (ctrl.sn, ctrl.mn, ctrl.fr, ctrl.subnqn) == ("SN 1", "NUL padded", "1.0", "nqn.a")


def linux_target_like() -> IdentifyController:
    """Roughly what nvmet_execute_identify_ctrl reports for an NVMe/TCP I/O controller."""
    return IdentifyController(
        vid=0, ssvid=0, sn="a3f0c2d1e4b5968712ab", mn="Linux", fr="6.1.0", rab=6, ieee=0x000000,
        cmic=(1 << 0) | (1 << 1) | (1 << 3), mdts=0, cntlid=1, ver=0x00020000, oaes=0x900,
        ctratt=1, cntrltype=1, oacs=0, acl=3, aerl=3, frmw=3, lpa=(1 << 1) | (1 << 3), elpe=127,
        npss=0, kas=100, anacap=0x5F, anatt=10, anagrpmax=128, nanagrpid=128, sqes=0x66,
        cqes=0x44, maxcmd=128, nn=1024, mnan=1024, oncs=0x5D, vwc=0x7, sgls=(1 << 0) | (1 << 2),
        subnqn="nqn.2014-08.org.nvmexpress:uuid:f9d5b6e2-9a1c-4c3e-8f2a-0e4d3c2b1a00",
        ioccsz=(8192 + 64) // 16, iorcsz=1, icdoff=0, msdbd=1, ofcs=1,
        psd=[PowerStateDescriptor(mp=0x9C4, enlat=0x10, exlat=0x4)],
    )  # fmt: skip


def test_identify_controller_round_trip() -> None:
    ctrl = linux_target_like()
    buf = ctrl.encode()
    assert IdentifyController.decode(buf) == ctrl
    assert IdentifyController.decode(memoryview(buf)) == ctrl
    assert IdentifyController.decode(bytearray(buf) + b"extra") == ctrl


@st.composite
def identify_controllers(draw: st.DrawFn) -> IdentifyController:
    npss = draw(st.integers(0, 31))
    values = draw(
        st.fixed_dictionaries(
            layout_strategies(
                ID_CTRL_LAYOUT,
                cntlid=st.integers(1, 0xFFEF),
                ver=st.sampled_from([0x00010300, 0x00010400, 0x00020000, 0x00020100]),
                mdts=st.integers(0, 12),
                sqes=st.just(0x66),
                cqes=st.just(0x44),
                kas=st.integers(0, 0xFFFF),
                ioccsz=st.integers(4, (1 << 20) // 16),
                npss=st.just(npss),
                psd=st.lists(
                    strategy_for(Nested(PowerStateDescriptor)),
                    min_size=npss + 1,
                    max_size=npss + 1,
                ),
            )
        )
    )
    return IdentifyController(**values)


@settings(max_examples=60, deadline=None)
@given(identify_controllers())
def test_identify_controller_round_trip_property(ctrl: IdentifyController) -> None:
    buf = ctrl.encode()
    assert len(buf) == 4096
    assert IdentifyController.decode(buf) == ctrl
    assert IdentifyController.decode(buf).encode() == buf


@pytest.mark.parametrize("length", [0, 1, 2047, 4095])
def test_identify_controller_short_buffer(length: int) -> None:
    with pytest.raises(WireError, match="IdentifyController"):
        IdentifyController.decode(bytes(length))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sn": "x" * 21}, "IdentifyController.sn"),
        ({"mn": "caf\u00e9"}, "IdentifyController.mn"),
        ({"fr": "a\tb"}, "IdentifyController.fr"),
        ({"cntlid": 0x10000}, "IdentifyController.cntlid"),
        ({"nn": -1}, "IdentifyController.nn"),
        ({"tnvmcap": 1 << 128}, "IdentifyController.tnvmcap"),
        ({"ieee": 1 << 24}, "IdentifyController.ieee"),
        ({"fguid": bytes(15)}, "IdentifyController.fguid"),
        ({"subnqn": "n" * 256}, "IdentifyController.subnqn"),
        ({"subnqn": "a\0b"}, "IdentifyController.subnqn"),
        ({"npss": 1}, "IdentifyController.psd"),
        ({"psd": []}, "IdentifyController.psd"),
        ({"sn": 5}, "IdentifyController.sn"),
    ],
)
def test_identify_controller_encode_rejects(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IdentifyController(**kwargs).encode()


def test_identify_controller_longest_values_fit() -> None:
    ctrl = IdentifyController(sn="s" * 20, mn="m" * 40, fr="f" * 8, subnqn="n" * 255)
    assert IdentifyController.decode(ctrl.encode()) == ctrl


def test_identify_controller_decode_rejects_bad_strings() -> None:
    buf = bytearray(IdentifyController().encode())
    buf[4] = 0xFF
    with pytest.raises(WireError, match=r"IdentifyController\.sn"):
        IdentifyController.decode(bytes(buf))
    buf = bytearray(IdentifyController().encode())
    buf[768:770] = b"\xc3\x28"
    with pytest.raises(WireError, match=r"IdentifyController\.subnqn"):
        IdentifyController.decode(bytes(buf))


def test_identify_controller_psd_trimmed_to_npss() -> None:
    buf = bytearray(IdentifyController().encode())
    buf[2080:2082] = b"\x01\x00"  # psd[1] set, but NPSS = 0 says only psd[0] is valid
    assert IdentifyController.decode(bytes(buf)).psd == [PowerStateDescriptor()]


# ---------------------------------------------------------------------------------------------
# Identify Namespace
# ---------------------------------------------------------------------------------------------

ID_NS_OFFSETS = [
    ("nsze", 0, 8), ("ncap", 8, 8), ("nuse", 16, 8), ("nsfeat", 24, 1), ("nlbaf", 25, 1),
    ("flbas", 26, 1), ("mc", 27, 1), ("dpc", 28, 1), ("dps", 29, 1), ("nmic", 30, 1),
    ("rescap", 31, 1), ("fpi", 32, 1), ("dlfeat", 33, 1), ("nawun", 34, 2), ("nawupf", 36, 2),
    ("nacwu", 38, 2), ("nabsn", 40, 2), ("nabo", 42, 2), ("nabspf", 44, 2), ("noiob", 46, 2),
    ("nvmcap", 48, 16), ("npwg", 64, 2), ("npwa", 66, 2), ("npdg", 68, 2), ("npda", 70, 2),
    ("nows", 72, 2), ("mssrl", 74, 2), ("mcl", 76, 4), ("msrc", 80, 1), ("anagrpid", 92, 4),
    ("nsattr", 99, 1), ("nvmsetid", 100, 2), ("endgid", 102, 2), ("nguid", 104, 16),
    ("eui64", 120, 8),
]  # fmt: skip


def test_identify_namespace_size() -> None:
    assert IdentifyNamespace.SIZE == ID_NS_LAYOUT.struct.size == 4096
    assert len(IdentifyNamespace().encode()) == 4096
    assert LbaFormat.SIZE == len(LbaFormat().encode()) == 4


def test_identify_namespace_offset_table_covers_every_field() -> None:
    tested = {name for name, _, _ in ID_NS_OFFSETS} | {"lbaf"}
    assert tested == {f.name for f in ID_NS_LAYOUT.fields}


@pytest.mark.parametrize(("name", "offset", "width"), ID_NS_OFFSETS)
def test_identify_namespace_field_offset(name: str, offset: int, width: int) -> None:
    if name == "nlbaf":
        ns = IdentifyNamespace(nlbaf=63, lbaf=[LbaFormat() for _ in range(64)])
        assert ns.encode()[25] == 63
        return
    check_field_alone(IdentifyNamespace, ID_NS_LAYOUT, name, offset, width, lbaf=[LbaFormat()])


@pytest.mark.parametrize(("name", "offset", "width"), [("ms", 0, 2), ("lbads", 2, 1), ("rp", 3, 1)])
def test_lba_format_field_offset(name: str, offset: int, width: int) -> None:
    check_field_alone(LbaFormat, LbaFormat.LAYOUT, name, offset, width)


def test_lba_formats_start_at_128() -> None:
    formats = [LbaFormat(ms=0, lbads=9), LbaFormat(ms=8, lbads=12, rp=1)]
    formats += [LbaFormat(lbads=i) for i in range(14)] + [LbaFormat(ms=0xABCD, lbads=16, rp=3)]
    ns = IdentifyNamespace(nlbaf=16, flbas=1, lbaf=formats)
    buf = ns.encode()
    assert buf[128:132] == b"\x00\x00\x09\x00"
    assert buf[132:136] == b"\x08\x00\x0c\x01"
    assert buf[192:196] == b"\xcd\xab\x10\x03"  # lbaf[16], past the 1.4 array of 16
    assert not any(buf[196:])
    assert ns.lba_format == LbaFormat(ms=8, lbads=12, rp=1)
    assert IdentifyNamespace.decode(buf) == ns


def test_identify_namespace_flbas_upper_bits_select_formats_past_16() -> None:
    formats = [LbaFormat(lbads=9)] * 20 + [LbaFormat(lbads=12)]
    ns = IdentifyNamespace(nlbaf=20, flbas=(20 & 0xF) | ((20 >> 4) << 5), lbaf=formats)
    assert ns.lba_format.lbads == 12


def test_identify_namespace_default_is_one_512_byte_format() -> None:
    ns = IdentifyNamespace.decode(IdentifyNamespace(nsze=8, ncap=8, nuse=8).encode())
    assert ns.nlbaf == 0
    assert ns.lbaf == [LbaFormat(ms=0, lbads=9, rp=0)]
    assert ns.lba_format.lbads == 9


@st.composite
def identify_namespaces(draw: st.DrawFn) -> IdentifyNamespace:
    nlbaf = draw(st.integers(0, 63))
    lbaf = st.builds(
        LbaFormat,
        ms=st.sampled_from([0, 8, 16, 64]),
        lbads=st.one_of(st.integers(9, 16), st.just(0)),
        rp=st.integers(0, 3),
    )
    nsze = draw(st.integers(0, (1 << 48)))
    values = draw(
        st.fixed_dictionaries(
            layout_strategies(
                ID_NS_LAYOUT,
                nsze=st.just(nsze),
                ncap=st.integers(0, nsze),
                nuse=st.integers(0, nsze),
                nlbaf=st.just(nlbaf),
                flbas=st.integers(0, min(nlbaf, 15)),
                anagrpid=st.integers(0, 1024),
                lbaf=st.lists(lbaf, min_size=nlbaf + 1, max_size=nlbaf + 1),
            )
        )
    )
    return IdentifyNamespace(**values)


@settings(max_examples=60, deadline=None)
@given(identify_namespaces())
def test_identify_namespace_round_trip_property(ns: IdentifyNamespace) -> None:
    buf = ns.encode()
    assert len(buf) == 4096
    assert IdentifyNamespace.decode(buf) == ns
    assert ns.lba_format is ns.lbaf[ns.flbas & 0xF]


def test_identify_namespace_short_buffer() -> None:
    with pytest.raises(WireError, match="IdentifyNamespace"):
        IdentifyNamespace.decode(bytes(383))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nlbaf": 1}, "IdentifyNamespace.lbaf"),
        ({"nlbaf": 64, "lbaf": [LbaFormat()] * 65}, "IdentifyNamespace.lbaf"),
        ({"nguid": bytes(8)}, "IdentifyNamespace.nguid"),
        ({"eui64": bytes(16)}, "IdentifyNamespace.eui64"),
        ({"nsze": 1 << 64}, "IdentifyNamespace.nsze"),
        ({"lbaf": [LbaFormat(lbads=256)]}, r"IdentifyNamespace.lbaf\[0\]"),
        ({"lbaf": ["512"]}, r"IdentifyNamespace.lbaf\[0\]"),
    ],
)
def test_identify_namespace_encode_rejects(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IdentifyNamespace(**kwargs).encode()


# ---------------------------------------------------------------------------------------------
# Namespace list (CNS 02h)
# ---------------------------------------------------------------------------------------------


def test_active_ns_list_selects_sorts_and_caps() -> None:
    assert NamespaceList.active([7, 3, 3, 1, 10], after=0).nsids == [1, 3, 7, 10]
    assert NamespaceList.active([7, 3, 1, 10], after=3).nsids == [7, 10]
    assert NamespaceList.active([1, 2], after=2).nsids == []
    assert NamespaceList.active(range(1, 3000), after=100).nsids == list(range(101, 1125))


def test_active_ns_list_bytes() -> None:
    buf = encode_active_ns_list([2, 1, 0x12345678])
    assert len(buf) == NamespaceList.SIZE == 4096
    assert buf[:12] == b"\x01\x00\x00\x00\x02\x00\x00\x00\x78\x56\x34\x12"
    assert not any(buf[12:])
    assert NamespaceList.decode(buf).nsids == [1, 2, 0x12345678]


def test_full_ns_list_has_no_terminator() -> None:
    nsids = list(range(1, 1025))
    buf = NamespaceList(nsids).encode()
    assert struct.unpack_from("<I", buf, 4092)[0] == 1024
    assert NamespaceList.decode(buf).nsids == nsids


@given(st.sets(st.integers(1, NSID_MAX), max_size=1500), st.integers(0, NSID_MAX))
def test_ns_list_round_trip_property(nsids: set[int], after: int) -> None:
    nslist = NamespaceList.active(nsids, after)
    assert nslist.nsids == sorted(n for n in nsids if n > after)[:1024]
    assert NamespaceList.decode(nslist.encode()) == nslist


@pytest.mark.parametrize(
    "nsids", [[2, 1], [1, 1], [0], [NSID_ALL], list(range(1, 1026)), [-1], ["1"]]
)
def test_ns_list_encode_rejects(nsids: list[Any]) -> None:
    with pytest.raises(ValueError, match="NamespaceList"):
        NamespaceList(nsids).encode()


def test_ns_list_short_buffer() -> None:
    with pytest.raises(WireError, match="NamespaceList"):
        NamespaceList.decode(bytes(4092))


def test_ns_list_decode_stops_at_first_zero() -> None:
    buf = struct.pack("<4I", 1, 2, 0, 9).ljust(4096, b"\0")
    assert NamespaceList.decode(buf).nsids == [1, 2]


# ---------------------------------------------------------------------------------------------
# Namespace Identification Descriptor list (CNS 03h)
# ---------------------------------------------------------------------------------------------

EUI64 = bytes.fromhex("0011223344556677")
NGUID = bytes.fromhex("00112233445566778899aabbccddeeff")
UUID = bytes.fromhex("f9d5b6e29a1c4c3e8f2a0e4d3c2b1a00")


def test_ns_id_descriptor_bytes() -> None:
    buf = encode_ns_id_descriptors(
        [(Nidt.EUI64, EUI64), (Nidt.NGUID, NGUID), (Nidt.UUID, UUID), (Nidt.CSI, b"\0")]
    )
    assert len(buf) == NsIdDescriptorList.SIZE == 4096
    assert buf[0:4] == b"\x01\x08\x00\x00" and buf[4:12] == EUI64
    assert buf[12:16] == b"\x02\x10\x00\x00" and buf[16:32] == NGUID
    assert buf[32:36] == b"\x03\x10\x00\x00" and buf[36:52] == UUID
    assert buf[52:56] == b"\x04\x01\x00\x00" and buf[56] == 0
    assert not any(buf[57:])
    assert decode_ns_id_descriptors(buf) == [
        (1, EUI64), (2, NGUID), (3, UUID), (4, b"\0"),
    ]  # fmt: skip


def test_ns_id_descriptor_decode_skips_unknown_types() -> None:
    buf = (b"\x7f\x03\x00\x00abc" + b"\x03\x10\x00\x00" + UUID).ljust(4096, b"\0")
    assert decode_ns_id_descriptors(buf) == [NsIdDescriptor(0x7F, b"abc"), (3, UUID)]


def test_ns_id_descriptor_decode_rejects_malformed() -> None:
    with pytest.raises(WireError, match="NsIdDescriptorList"):  # a UUID of 8 bytes
        decode_ns_id_descriptors((b"\x03\x08\x00\x00" + bytes(8)).ljust(4096, b"\0"))
    filler = (b"\x80\xfb\x00\x00" + bytes(251)) * 16 + b"\x80\x08\x00\x00" + bytes(8)
    assert len(filler) == 4092
    with pytest.raises(WireError, match="NsIdDescriptorList"):  # runs past the end
        decode_ns_id_descriptors(filler + b"\x05\xff\x00\x00")
    with pytest.raises(WireError, match="NsIdDescriptorList"):
        decode_ns_id_descriptors(b"\x03\x10\x00\x00" + UUID)  # short buffer


def test_ns_id_descriptor_list_filling_the_buffer() -> None:
    # 204 NGUID descriptors of 20 bytes (4080), then one of 16: exactly 4096, no terminator
    entries: list[tuple[int, bytes]] = [(Nidt.NGUID, bytes([i]) * 16) for i in range(204)]
    entries.append((0x80, bytes(12)))
    buf = encode_ns_id_descriptors(entries)
    assert decode_ns_id_descriptors(buf) == entries
    with pytest.raises(ValueError, match="4096"):
        encode_ns_id_descriptors([*entries, (Nidt.CSI, b"\0")])


@pytest.mark.parametrize(
    "entries",
    [[(Nidt.UUID, bytes(15))], [(Nidt.CSI, b"")], [(0, b"x")], [(256, b"x")], [(9, bytes(256))]],
)
def test_ns_id_descriptor_encode_rejects(entries: list[tuple[int, bytes]]) -> None:
    with pytest.raises(ValueError, match="NsIdDescriptorList"):
        encode_ns_id_descriptors(entries)


#: Defined types with their exact length, or unknown types with any length.
DESCRIPTORS = st.sampled_from(list(Nidt)).flatmap(
    lambda t: st.tuples(
        st.just(int(t)), st.binary(min_size=NIDT_LENGTH[t], max_size=NIDT_LENGTH[t])
    )
) | st.tuples(st.integers(5, 255), st.binary(min_size=1, max_size=40))


@given(st.lists(DESCRIPTORS, max_size=60))
def test_ns_id_descriptor_round_trip_property(entries: list[tuple[int, bytes]]) -> None:
    assert decode_ns_id_descriptors(encode_ns_id_descriptors(entries)) == entries


# ---------------------------------------------------------------------------------------------
# Any bytes: decoders return or raise WireError, nothing else
# ---------------------------------------------------------------------------------------------

DECODERS = [
    IdentifyController.decode,
    IdentifyNamespace.decode,
    PowerStateDescriptor.decode,
    LbaFormat.decode,
    NamespaceList.decode,
    NsIdDescriptorList.decode,
]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(DECODERS),
    st.one_of(st.binary(max_size=64), st.binary(min_size=4090, max_size=4100)),
)
def test_decoders_raise_only_wire_error(decode: Any, data: bytes) -> None:
    try:
        decode(data)
    except WireError:
        pass
