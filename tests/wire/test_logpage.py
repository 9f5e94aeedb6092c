"""Log pages: sizes, byte offsets, padding, round trips, malformed input.

As in test_identify.py, offsets come from tables written here from the spec and the Linux
structures (``struct nvme_error_slot``, ``nvme_smart_log``, ``nvmf_disc_rsp_page_entry`` ...),
not from the field tables under test.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvmf.wire.identify import NSID_MAX, Array, Ascii, FieldType, Layout, Nqn, Raw, UInt
from nvmf.wire.logpage import (
    ANA_LOG_RGO,
    CHANGED_NS_OVERFLOW,
    TREQ_SECURE_CHANNEL_MASK,
    TSAS_SIZE,
    AddressFamily,
    AnaGroupDescriptor,
    AnaLog,
    AnaLogHeader,
    AnaState,
    ChangedNamespaceList,
    CommandEffects,
    CommandEffectsLog,
    CriticalWarning,
    DiscoveryEntryFlags,
    DiscoveryLog,
    DiscoveryLogEntry,
    DiscoveryLogHeader,
    ErrorInformationEntry,
    FirmwareSlotLog,
    LogPageId,
    RdmaCms,
    RdmaPrType,
    RdmaQpType,
    SmartLog,
    SubsystemType,
    TcpSecType,
    TransportType,
    Treq,
    decode_discovery_log,
    decode_error_log,
    encode_discovery_log,
    encode_error_log,
    tsas_rdma,
    tsas_tcp,
)
from nvmf.wire.status import WireError

# ---------------------------------------------------------------------------------------------
# Helpers (as in test_identify.py)
# ---------------------------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
NQNS = st.one_of(
    st.just("nqn.2014-08.org.nvmexpress.discovery"),
    st.uuids().map(lambda u: f"nqn.2014-08.org.nvmexpress:uuid:{u}"),
    st.from_regex(
        r"nqn\.20[12][0-9]-(0[1-9]|1[0-2])\.[a-z]{2,10}:[A-Za-z0-9._:-]{1,64}", fullmatch=True
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
    raise AssertionError(f"no strategy for {ftype!r}")


def layout_strategies(layout: Layout, **overrides: Any) -> dict[str, st.SearchStrategy[Any]]:
    out = {f.name: strategy_for(f.type) for f in layout.fields}
    out.update(overrides)
    return out


def marker(width: int) -> bytes:
    return bytes((i % 251) + 1 for i in range(width))


def value_and_bytes(ftype: FieldType) -> tuple[Any, bytes]:
    if isinstance(ftype, UInt):
        raw = marker(ftype.size)
        return int.from_bytes(raw, "little"), raw
    if isinstance(ftype, Ascii):
        text = "".join(chr(0x41 + i % 26) for i in range(ftype.size))
        return text, text.encode()
    if isinstance(ftype, Nqn):
        text = "".join(chr(0x61 + i % 26) for i in range(ftype.size - 1))
        return text, text.encode() + b"\0"
    if isinstance(ftype, Raw):
        raw = marker(ftype.size)
        return raw, raw
    raise AssertionError(f"not a scalar type: {ftype!r}")


def check_field_alone(cls: Any, name: str, offset: int, width: int, **base: Any) -> None:
    """Setting ``name`` alone changes exactly bytes [offset, offset+width), both directions."""
    ftype = cls.LAYOUT.field(name).type
    assert ftype.size == width, f"{name}: width {ftype.size}, spec says {width}"
    value, raw = value_and_bytes(ftype)
    default = cls(**base).encode()
    encoded = cls(**base, **{name: value}).encode()
    assert encoded[offset : offset + width] == raw
    changed = [i for i in range(len(encoded)) if encoded[i] != default[i]]
    assert changed and offset <= min(changed) and max(changed) < offset + width
    buf = bytearray(len(default))
    buf[offset : offset + width] = raw
    assert getattr(cls.decode(bytes(buf)), name) == value


def covers(cls: Any, table: list[tuple[str, int, int]], *others: str) -> None:
    assert {n for n, _, _ in table} | set(others) == {f.name for f in cls.LAYOUT.fields}


# ---------------------------------------------------------------------------------------------
# Log page identifiers
# ---------------------------------------------------------------------------------------------


def test_log_page_ids_match_the_kernel() -> None:
    assert (LogPageId.ERROR, LogPageId.SMART, LogPageId.FW_SLOT) == (1, 2, 3)
    assert (LogPageId.CHANGED_NS, LogPageId.CMD_EFFECTS, LogPageId.ANA) == (4, 5, 0x0C)
    assert (LogPageId.DISC, LogPageId.RESERVATION, LogPageId.SUPPORTED) == (0x70, 0x80, 0)


# ---------------------------------------------------------------------------------------------
# Error Information
# ---------------------------------------------------------------------------------------------

ERROR_OFFSETS = [
    ("error_count", 0, 8), ("sqid", 8, 2), ("cmdid", 10, 2), ("status_field", 12, 2),
    ("param_error_location", 14, 2), ("lba", 16, 8), ("nsid", 24, 4), ("vs", 28, 1),
    ("trtype", 29, 1), ("csi", 30, 1), ("opcode", 31, 1), ("cs", 32, 8),
    ("trtype_spec_info", 40, 2), ("log_page_version", 63, 1),
]  # fmt: skip


def test_error_entry_size_and_table() -> None:
    assert ErrorInformationEntry.SIZE == len(ErrorInformationEntry().encode()) == 64
    covers(ErrorInformationEntry, ERROR_OFFSETS)


@pytest.mark.parametrize(("name", "offset", "width"), ERROR_OFFSETS)
def test_error_entry_field_offset(name: str, offset: int, width: int) -> None:
    check_field_alone(ErrorInformationEntry, name, offset, width)


@given(st.fixed_dictionaries(layout_strategies(ErrorInformationEntry.LAYOUT)))
def test_error_entry_round_trip_property(values: dict[str, Any]) -> None:
    entry = ErrorInformationEntry(**values)
    assert ErrorInformationEntry.decode(entry.encode()) == entry


def test_error_log_array() -> None:
    entries = [
        ErrorInformationEntry(error_count=2, sqid=0, cmdid=7, status_field=0x4004, nsid=1),
        ErrorInformationEntry(error_count=1, sqid=1, cmdid=3, status_field=0x0002 << 1),
    ]
    buf = encode_error_log(entries)
    assert len(buf) == 128
    assert decode_error_log(buf) == entries
    assert decode_error_log(buf + bytes(63)) == entries  # a partial entry is not an entry
    assert decode_error_log(b"") == []


def test_error_entry_short_buffer() -> None:
    with pytest.raises(WireError, match="ErrorInformationEntry"):
        ErrorInformationEntry.decode(bytes(63))


# ---------------------------------------------------------------------------------------------
# SMART / Health Information
# ---------------------------------------------------------------------------------------------

SMART_OFFSETS = [
    ("critical_warning", 0, 1), ("temperature", 1, 2), ("avail_spare", 3, 1),
    ("spare_thresh", 4, 1), ("percent_used", 5, 1), ("endu_grp_crit_warn_sumry", 6, 1),
    ("data_units_read", 32, 16), ("data_units_written", 48, 16), ("host_reads", 64, 16),
    ("host_writes", 80, 16), ("ctrl_busy_time", 96, 16), ("power_cycles", 112, 16),
    ("power_on_hours", 128, 16), ("unsafe_shutdowns", 144, 16), ("media_errors", 160, 16),
    ("num_err_log_entries", 176, 16), ("warning_temp_time", 192, 4),
    ("critical_comp_time", 196, 4), ("thm_temp1_trans_count", 216, 4),
    ("thm_temp2_trans_count", 220, 4), ("thm_temp1_total_time", 224, 4),
    ("thm_temp2_total_time", 228, 4),
]  # fmt: skip


def test_smart_log_size_and_table() -> None:
    assert SmartLog.SIZE == len(SmartLog().encode()) == 512
    covers(SmartLog, SMART_OFFSETS, "temp_sensor")


@pytest.mark.parametrize(("name", "offset", "width"), SMART_OFFSETS)
def test_smart_log_field_offset(name: str, offset: int, width: int) -> None:
    check_field_alone(SmartLog, name, offset, width)


def test_smart_log_known_values() -> None:
    smart = SmartLog(
        critical_warning=CriticalWarning.SPARE | CriticalWarning.MEDIA,
        temperature=273 + 35,
        avail_spare=100,
        spare_thresh=10,
        data_units_read=(1 << 100) + 5,
        temp_sensor=[300, 0, 0, 0, 0, 0, 0, 310],
    )
    buf = smart.encode()
    assert buf[0] == 0x9
    assert buf[1:3] == (308).to_bytes(2, "little")
    assert buf[32:48] == ((1 << 100) + 5).to_bytes(16, "little")
    assert buf[200:202] == (300).to_bytes(2, "little")
    assert buf[214:216] == (310).to_bytes(2, "little")
    assert SmartLog.decode(buf) == smart


@given(st.fixed_dictionaries(layout_strategies(SmartLog.LAYOUT, temperature=st.integers(0, 400))))
def test_smart_log_round_trip_property(values: dict[str, Any]) -> None:
    smart = SmartLog(**values)
    assert SmartLog.decode(smart.encode()) == smart


def test_smart_log_rejects_and_short() -> None:
    with pytest.raises(ValueError, match=r"SmartLog\.power_on_hours"):
        SmartLog(power_on_hours=1 << 128).encode()
    with pytest.raises(ValueError, match=r"SmartLog.temp_sensor"):
        SmartLog(temp_sensor=[0] * 9).encode()
    with pytest.raises(WireError, match="SmartLog"):
        SmartLog.decode(bytes(511))


# ---------------------------------------------------------------------------------------------
# Firmware Slot Information
# ---------------------------------------------------------------------------------------------


def test_firmware_slot_log() -> None:
    log = FirmwareSlotLog(afi=0x11, frs=["6.1.0", "", "", "", "", "", "ABCDEFGH"])
    buf = log.encode()
    assert len(buf) == FirmwareSlotLog.SIZE == 512
    assert buf[0] == 0x11
    assert buf[8:16] == b"6.1.0   "  # space padded
    assert buf[16:56] == bytes(40)  # empty slots are zero
    assert buf[56:64] == b"ABCDEFGH"
    assert not any(buf[64:])
    assert FirmwareSlotLog.decode(buf) == log
    assert FirmwareSlotLog.decode(FirmwareSlotLog(afi=1).encode()).frs == [""] * 7


@given(st.fixed_dictionaries(layout_strategies(FirmwareSlotLog.LAYOUT)))
def test_firmware_slot_round_trip_property(values: dict[str, Any]) -> None:
    log = FirmwareSlotLog(**values)
    assert FirmwareSlotLog.decode(log.encode()) == log


def test_firmware_slot_rejects_and_short() -> None:
    with pytest.raises(ValueError, match=r"FirmwareSlotLog.frs\[0\]"):
        FirmwareSlotLog(frs=["123456789"]).encode()
    with pytest.raises(WireError, match="FirmwareSlotLog"):
        FirmwareSlotLog.decode(bytes(100))


# ---------------------------------------------------------------------------------------------
# Changed Namespace List
# ---------------------------------------------------------------------------------------------


def test_changed_ns_list_bytes() -> None:
    log = ChangedNamespaceList.from_changed([5, 2, 9])
    buf = log.encode()
    assert len(buf) == ChangedNamespaceList.SIZE == 4096
    assert buf[:12] == struct.pack("<3I", 5, 2, 9)  # reported in the order they changed
    assert not any(buf[12:])
    assert ChangedNamespaceList.decode(buf) == log


def test_changed_ns_list_overflow() -> None:
    assert ChangedNamespaceList.from_changed(range(1, 1025)).overflow is False
    log = ChangedNamespaceList.from_changed(range(1, 1026))
    assert log.overflow and log.nsids == []
    buf = log.encode()
    assert buf[:4] == b"\xff\xff\xff\xff" and not any(buf[4:])
    assert CHANGED_NS_OVERFLOW == 0xFFFFFFFF
    assert ChangedNamespaceList.decode(buf) == log


@given(st.lists(st.integers(1, NSID_MAX), max_size=1100))
def test_changed_ns_list_round_trip_property(nsids: list[int]) -> None:
    log = ChangedNamespaceList.from_changed(nsids)
    assert ChangedNamespaceList.decode(log.encode()) == log
    assert log.overflow == (len(nsids) > 1024)


@pytest.mark.parametrize(
    "log",
    [
        ChangedNamespaceList([0]),
        ChangedNamespaceList([0xFFFFFFFF]),
        ChangedNamespaceList(list(range(1, 1026))),
        ChangedNamespaceList([1], overflow=True),
    ],
)
def test_changed_ns_list_rejects(log: ChangedNamespaceList) -> None:
    with pytest.raises(ValueError, match="ChangedNamespaceList"):
        log.encode()


def test_changed_ns_list_short() -> None:
    with pytest.raises(WireError, match="ChangedNamespaceList"):
        ChangedNamespaceList.decode(bytes(4095))


# ---------------------------------------------------------------------------------------------
# Commands Supported and Effects
# ---------------------------------------------------------------------------------------------


def test_command_effects_log_positions() -> None:
    log = CommandEffectsLog()
    log.acs[0x06] = CommandEffects.CSUPP  # Identify
    log.acs[0xFF] = CommandEffects.CSUPP | CommandEffects.CCC
    log.iocs[0x01] = CommandEffects.CSUPP | CommandEffects.LBCC  # Write
    buf = log.encode()
    assert len(buf) == CommandEffectsLog.SIZE == 4096
    assert buf[0x06 * 4 : 0x06 * 4 + 4] == b"\x01\x00\x00\x00"
    assert buf[0xFF * 4 : 0xFF * 4 + 4] == b"\x11\x00\x00\x00"
    assert buf[1024 + 4 : 1024 + 8] == b"\x03\x00\x00\x00"
    assert not any(buf[2048:])
    assert CommandEffectsLog.decode(buf) == log


def test_command_effects_short_lists_are_zero_filled() -> None:
    decoded = CommandEffectsLog.decode(CommandEffectsLog(acs=[1, 1], iocs=[]).encode())
    assert decoded.acs == [1, 1] + [0] * 254 and decoded.iocs == [0] * 256


# Two 256-entry lists per example: generation is slow on a loaded 2-core machine, which is no
# failure of the code under test.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries(layout_strategies(CommandEffectsLog.LAYOUT)))
def test_command_effects_round_trip_property(values: dict[str, Any]) -> None:
    log = CommandEffectsLog(**values)
    assert CommandEffectsLog.decode(log.encode()) == log


def test_command_effects_rejects_and_short() -> None:
    with pytest.raises(ValueError, match=r"CommandEffectsLog.iocs\[3\]"):
        CommandEffectsLog(iocs=[0, 0, 0, 1 << 32]).encode()
    with pytest.raises(WireError, match="CommandEffectsLog"):
        CommandEffectsLog.decode(bytes(2048))


# ---------------------------------------------------------------------------------------------
# Asymmetric Namespace Access
# ---------------------------------------------------------------------------------------------


def test_ana_values() -> None:
    assert [int(s) for s in AnaState] == [1, 2, 3, 4, 0x0F]
    assert ANA_LOG_RGO == 1


def test_ana_header_and_group_offsets() -> None:
    assert AnaLogHeader.SIZE == 16 and AnaGroupDescriptor.HEADER_SIZE == 32
    check_field_alone(AnaLogHeader, "chgcnt", 0, 8)
    check_field_alone(AnaLogHeader, "ngrps", 8, 2)
    group = AnaGroupDescriptor(grpid=0x01020304, state=AnaState.INACCESSIBLE, chgcnt=7)
    group.nsids = [0x11, 0x22]
    buf = group.encode()
    assert len(buf) == group.size == 40
    assert buf[0:4] == b"\x04\x03\x02\x01"
    assert buf[4:8] == b"\x02\x00\x00\x00"  # NNSIDS
    assert buf[8:16] == b"\x07" + bytes(7)
    assert buf[16] == 3
    assert buf[17:32] == bytes(15)
    assert buf[32:40] == b"\x11\x00\x00\x00\x22\x00\x00\x00"


def test_ana_log_round_trip() -> None:
    log = AnaLog(
        chgcnt=5,
        groups=[
            AnaGroupDescriptor(1, AnaState.OPTIMIZED, 3, [1, 2, 3]),
            AnaGroupDescriptor(2, AnaState.CHANGE, 4, []),  # RGO, or an empty group
            AnaGroupDescriptor(3, AnaState.NONOPTIMIZED, 0, [7]),
        ],
    )
    buf = log.encode()
    assert len(buf) == 16 + (32 + 12) + 32 + (32 + 4)
    assert buf[:10] == b"\x05" + bytes(7) + b"\x03\x00"
    assert AnaLog.decode(buf) == log
    assert AnaLog.decode(buf + bytes(100)) == log


ANA_GROUPS = st.builds(
    AnaGroupDescriptor,
    grpid=st.integers(1, 1024),
    state=st.sampled_from(list(AnaState)),
    chgcnt=st.integers(0, (1 << 64) - 1),
    nsids=st.lists(st.integers(1, NSID_MAX), max_size=20),
)


@given(st.integers(0, (1 << 64) - 1), st.lists(ANA_GROUPS, max_size=8))
def test_ana_log_round_trip_property(chgcnt: int, groups: list[AnaGroupDescriptor]) -> None:
    log = AnaLog(chgcnt, groups)
    assert AnaLog.decode(log.encode()) == log


def test_ana_log_truncated() -> None:
    buf = AnaLog(1, [AnaGroupDescriptor(1, AnaState.OPTIMIZED, 0, [1, 2])]).encode()
    with pytest.raises(WireError, match="AnaGroupDescriptor"):
        AnaLog.decode(buf[:-1])
    with pytest.raises(WireError, match="AnaGroupDescriptor"):
        AnaLog.decode(buf[:20])
    with pytest.raises(WireError, match="AnaLogHeader"):
        AnaLog.decode(buf[:15])


def test_ana_group_rejects_invalid_nsid() -> None:
    with pytest.raises(ValueError, match=r"AnaGroupDescriptor\.nsids"):
        AnaGroupDescriptor(1, AnaState.OPTIMIZED, 0, [0]).encode()


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

DISC_ENTRY_OFFSETS = [
    ("trtype", 0, 1), ("adrfam", 1, 1), ("subtype", 2, 1), ("treq", 3, 1), ("portid", 4, 2),
    ("cntlid", 6, 2), ("asqsz", 8, 2), ("eflags", 10, 2), ("trsvcid", 32, 32),
    ("subnqn", 256, 256), ("traddr", 512, 256), ("tsas", 768, 256),
]  # fmt: skip


def test_discovery_enums_match_the_kernel() -> None:
    assert (TransportType.RDMA, TransportType.FC, TransportType.TCP) == (1, 2, 3)
    assert int(TransportType.LOOP) == 254
    assert (AddressFamily.IPV4, AddressFamily.IPV6, AddressFamily.IB) == (1, 2, 3)
    assert (AddressFamily.FC, AddressFamily.LOOP) == (4, 254)
    assert (SubsystemType.DISCOVERY, SubsystemType.NVME, SubsystemType.CURRENT_DISCOVERY) == (
        1,
        2,
        3,
    )
    assert (Treq.NOT_SPECIFIED, Treq.REQUIRED, Treq.NOT_REQUIRED) == (0, 1, 2)
    assert int(Treq.DISABLE_SQFLOW) == 0x4 and TREQ_SECURE_CHANNEL_MASK == 0x3
    assert (DiscoveryEntryFlags.DUPRETINFO, DiscoveryEntryFlags.EPCSD) == (1, 2)
    assert (TcpSecType.NONE, TcpSecType.TLS12, TcpSecType.TLS13) == (0, 1, 2)


def test_discovery_sizes_and_tables() -> None:
    assert DiscoveryLogHeader.SIZE == len(DiscoveryLogHeader().encode()) == 1024
    assert DiscoveryLogEntry.SIZE == len(DiscoveryLogEntry().encode()) == 1024
    covers(DiscoveryLogEntry, DISC_ENTRY_OFFSETS)


@pytest.mark.parametrize(
    ("name", "offset", "width"), [("genctr", 0, 8), ("numrec", 8, 8), ("recfmt", 16, 2)]
)
def test_discovery_header_field_offset(name: str, offset: int, width: int) -> None:
    check_field_alone(DiscoveryLogHeader, name, offset, width)


@pytest.mark.parametrize(("name", "offset", "width"), DISC_ENTRY_OFFSETS)
def test_discovery_entry_field_offset(name: str, offset: int, width: int) -> None:
    check_field_alone(DiscoveryLogEntry, name, offset, width)


def tcp_entry(**kwargs: Any) -> DiscoveryLogEntry:
    values: dict[str, Any] = {
        "trtype": TransportType.TCP,
        "adrfam": AddressFamily.IPV4,
        "subtype": SubsystemType.NVME,
        "treq": Treq.NOT_SPECIFIED | Treq.DISABLE_SQFLOW,
        "portid": 1,
        "cntlid": 0xFFFF,
        "asqsz": 32,
        "trsvcid": "4420",
        "subnqn": "nqn.2014-08.org.example:disk1",
        "traddr": "192.168.122.10",
        "tsas": tsas_tcp(TcpSecType.NONE),
    }
    values.update(kwargs)
    return DiscoveryLogEntry(**values)


def test_discovery_entry_padding() -> None:
    buf = tcp_entry().encode()
    assert buf[:12] == b"\x03\x01\x02\x04\x01\x00\xff\xff\x20\x00\x00\x00"
    assert buf[32:64] == b"4420" + b" " * 28  # trsvcid: space padded
    assert buf[256:512] == b"nqn.2014-08.org.example:disk1".ljust(256, b"\0")  # NUL padded
    assert buf[512:768] == b"192.168.122.10".ljust(256, b" ")  # traddr: space padded
    assert buf[768:1024] == bytes(256)  # TCP, SECTYPE none
    assert not any(buf[12:32]) and not any(buf[64:256])


def test_discovery_entry_decode_tolerates_nul_padding() -> None:
    buf = bytearray(tcp_entry().encode())
    buf[32:64] = b"4420".ljust(32, b"\0")
    buf[512:768] = b"fe80::1".ljust(256, b"\0")
    entry = DiscoveryLogEntry.decode(bytes(buf))
    assert (entry.trsvcid, entry.traddr) == ("4420", "fe80::1")


def test_tsas_helpers() -> None:
    assert tsas_tcp(TcpSecType.TLS13) == b"\x02" + bytes(255)
    rdma = tsas_rdma(RdmaQpType.CONNECTED, RdmaPrType.ROCEV2, RdmaCms.RDMA_CM, pkey=0xFFFF)
    assert len(rdma) == TSAS_SIZE == 256
    assert rdma[:10] == b"\x01\x04\x01\x00\x00\x00\x00\x00\xff\xff"
    assert not any(rdma[10:])
    assert tsas_rdma()[:3] == b"\x01\x01\x01"


def test_discovery_log_page() -> None:
    entries = [
        tcp_entry(),
        tcp_entry(
            trtype=TransportType.RDMA,
            adrfam=AddressFamily.IPV6,
            traddr="fd00::10",
            portid=2,
            tsas=tsas_rdma(),
        ),
        tcp_entry(
            subtype=SubsystemType.CURRENT_DISCOVERY, subnqn="nqn.2014-08.org.nvmexpress.discovery"
        ),
    ]
    page = encode_discovery_log(42, entries)
    assert len(page) == 1024 * 4
    assert page[:18] == struct.pack("<QQH", 42, 3, 0)
    assert not any(page[18:1024])
    assert page[1024:2048] == entries[0].encode()
    assert decode_discovery_log(page) == DiscoveryLog(42, 3, 0, entries)
    # a host's first, header-only read
    assert DiscoveryLogHeader.decode(page[:1024]) == DiscoveryLogHeader(42, 3, 0)
    # reading in pieces (LPO/NUMD) then reassembling gives the same page
    pieces = [page[o : o + 512] for o in range(0, len(page), 512)]
    assert decode_discovery_log(b"".join(pieces)) == DiscoveryLog(42, 3, 0, entries)


def test_empty_discovery_log() -> None:
    page = encode_discovery_log(1, [])
    assert len(page) == 1024
    assert decode_discovery_log(page) == DiscoveryLog(1, 0, 0, [])


def test_discovery_log_truncated() -> None:
    page = encode_discovery_log(7, [tcp_entry(), tcp_entry()])
    with pytest.raises(WireError, match="DiscoveryLog"):
        decode_discovery_log(page[:-1])
    with pytest.raises(WireError, match="DiscoveryLogHeader"):
        decode_discovery_log(page[:1023])
    with pytest.raises(WireError, match="DiscoveryLogEntry"):
        DiscoveryLogEntry.decode(page[1024:2047])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"traddr": "x" * 257}, "DiscoveryLogEntry.traddr"),
        ({"trsvcid": "4" * 33}, "DiscoveryLogEntry.trsvcid"),
        ({"traddr": "h\u00f4te"}, "DiscoveryLogEntry.traddr"),
        ({"subnqn": "n" * 256}, "DiscoveryLogEntry.subnqn"),
        ({"tsas": b"\x00"}, "DiscoveryLogEntry.tsas"),
        ({"portid": 0x10000}, "DiscoveryLogEntry.portid"),
    ],
)
def test_discovery_entry_rejects(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tcp_entry(**kwargs).encode()


IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
DISCOVERY_ENTRIES = st.builds(
    DiscoveryLogEntry,
    **layout_strategies(
        DiscoveryLogEntry.LAYOUT,
        trtype=st.sampled_from(list(TransportType)),
        adrfam=st.sampled_from(list(AddressFamily)),
        subtype=st.sampled_from(list(SubsystemType)),
        treq=st.integers(0, 7),
        cntlid=st.one_of(st.just(0xFFFF), st.just(0xFFFE), st.integers(1, 0xFFEF)),
        asqsz=st.integers(1, 0xFFFF),
        trsvcid=st.one_of(st.integers(1, 65535).map(str), strategy_for(Ascii(32))),
        traddr=st.one_of(IPV4, strategy_for(Ascii(256))),
    ),
)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.lists(DISCOVERY_ENTRIES, max_size=5))
def test_discovery_log_round_trip_property(genctr: int, entries: list[DiscoveryLogEntry]) -> None:
    page = encode_discovery_log(genctr, entries)
    assert len(page) == 1024 * (1 + len(entries))
    assert decode_discovery_log(page) == DiscoveryLog(genctr, len(entries), 0, entries)


# ---------------------------------------------------------------------------------------------
# Any bytes: decoders return or raise WireError, nothing else
# ---------------------------------------------------------------------------------------------

DECODERS = [
    ErrorInformationEntry.decode,
    decode_error_log,
    SmartLog.decode,
    FirmwareSlotLog.decode,
    ChangedNamespaceList.decode,
    CommandEffectsLog.decode,
    AnaLogHeader.decode,
    AnaGroupDescriptor.decode,
    AnaLog.decode,
    DiscoveryLogHeader.decode,
    DiscoveryLogEntry.decode,
    decode_discovery_log,
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(DECODERS),
    st.one_of(st.binary(max_size=80), st.binary(min_size=1000, max_size=4200)),
)
def test_decoders_raise_only_wire_error(decode: Any, data: bytes) -> None:
    try:
        decode(data)
    except WireError:
        pass


@given(st.integers(0, 2000), st.lists(ANA_GROUPS, max_size=3))
def test_ana_log_with_lying_counts_raises_wire_error(ngrps: int, groups: Any) -> None:
    buf = bytearray(AnaLog(1, groups).encode())
    buf[8:10] = ngrps.to_bytes(2, "little")
    try:
        AnaLog.decode(bytes(buf))
    except WireError:
        pass
