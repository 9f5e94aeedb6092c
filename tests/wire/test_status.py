"""Status values: every SC round-trips, SCT in bits 10:8, CRD/More/DNR kept, unknown codes too.

Expected numbers are Linux's ``NVME_SC_*`` (include/linux/nvme.h), which spell SCT in bits 10:8
and DNR as 0x4000 of the 15-bit field, written here independently of the enum under test.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvmf.wire.status import SC, SCT, STATUS_DNR, STATUS_MORE, SUCCESS, Status, error

#: A sample of Linux's values (name in this project -> NVME_SC_* value).
LINUX_VALUES = {
    "SUCCESS": 0x0,
    "INVALID_OPCODE": 0x1,
    "INVALID_FIELD": 0x2,
    "CMD_SEQ_ERROR": 0xC,
    "INVALID_NS": 0xB,
    "SGL_INVALID_DATA": 0xF,
    "SGL_INVALID_TYPE": 0x11,
    "CMB_INVALID_USE": 0x12,
    "SGL_INVALID_OFFSET": 0x16,
    "HOST_ID_INCONSIST": 0x18,
    "KA_TIMEOUT_EXPIRED": 0x19,
    "KA_TIMEOUT_INVALID": 0x1A,
    "SGL_INVALID_GRANULARITY": 0x1E,
    "NS_WRITE_PROTECTED": 0x20,
    "CMD_INTERRUPTED": 0x21,
    "TRANSIENT_TR_ERR": 0x22,
    "LBA_RANGE": 0x80,
    "QID_INVALID": 0x101,
    "ASYNC_LIMIT": 0x105,
    "INVALID_LOG_PAGE": 0x109,
    "FEATURE_NOT_SAVEABLE": 0x10D,
    "CONNECT_FORMAT": 0x180,
    "CONNECT_CTRL_BUSY": 0x181,
    "CONNECT_INVALID_PARAM": 0x182,
    "CONNECT_INVALID_HOST": 0x184,
    "WRITE_FAULT": 0x280,
    "COMPARE_FAILED": 0x285,
    "ANA_INACCESSIBLE": 0x302,
    "ANA_TRANSITION": 0x303,
    "HOST_PATH_ERROR": 0x370,
}


def test_bit_positions() -> None:
    assert STATUS_DNR == 0x4000  # NVME_SC_DNR
    assert STATUS_MORE == 0x2000  # NVME_SC_MORE


@pytest.mark.parametrize("name", sorted(LINUX_VALUES))
def test_values_match_linux(name: str) -> None:
    assert SC[name] == LINUX_VALUES[name]


def test_no_aliases() -> None:
    """An IntEnum silently aliases equal values; every status name must be its own value."""
    assert len(SC.__members__) == len(list(SC))


@pytest.mark.parametrize("code", list(SC), ids=lambda c: c.name)
@pytest.mark.parametrize("dnr", [False, True])
def test_every_status_round_trips(code: SC, dnr: bool) -> None:
    status = Status(code, dnr=dnr)
    field = status.encode()
    assert 0 <= field < 1 << 15
    assert field & 0xFF == status.sc == int(code) & 0xFF
    assert field >> 8 & 0x7 == status.sct == int(code) >> 8
    assert status.sct in {int(t) for t in SCT}
    assert bool(field & (1 << 14)) is dnr
    assert field & (0x3 << 11) == 0  # CRD
    assert field & STATUS_MORE == 0
    assert Status.decode(field) == status
    assert Status.decode(field).code is code
    assert status.ok is (code == SC.SUCCESS)


def test_every_status_field_round_trips_exactly() -> None:
    """All 2^15 values of the field: SC, SCT, CRD, More and DNR survive decode and encode."""
    for field in range(1 << 15):
        status = Status.decode(field)
        assert status.encode() == field, hex(field)
        assert status.sc == field & 0xFF and status.sct == field >> 8 & 0x7
        assert status.crd == field >> 11 & 0x3
        assert status.more is bool(field & STATUS_MORE)
        assert status.dnr is bool(field & STATUS_DNR)


def test_crd_and_more_are_kept() -> None:
    field = int(SC.NS_NOT_READY) | (0x2 << 11) | STATUS_MORE
    status = Status.decode(field)
    assert status == Status(SC.NS_NOT_READY, crd=2, more=True)
    assert status.code is SC.NS_NOT_READY and not status.ok


def test_decode_unknown_code_keeps_its_value() -> None:
    """A code this project has no name for stays that code (a failure, never success)."""
    status = Status.decode(0x1C3 | STATUS_DNR)
    assert int(status.code) == 0x1C3 and status.sct == 1 and status.sc == 0xC3
    assert isinstance(status.code, SC)
    assert not status.ok and status.dnr
    assert status.encode() == 0x1C3 | STATUS_DNR
    assert "sct=0x1 sc=0xc3" in str(status)
    assert Status.decode(0x0FF).code is Status.decode(0x0FF).code  # one value, one member
    assert pickle.loads(pickle.dumps(status)) == status  # as it crosses to the control plane
    assert 0x1C3 not in {int(c) for c in SC}  # unknown codes do not join the enumeration
    assert Status.decode(0).ok


@pytest.mark.parametrize("bad", [-1, 0x800])
def test_code_outside_eleven_bits_is_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        SC(bad)


@given(st.integers(0, (1 << 15) - 1))
def test_decode_never_raises_and_keeps_dnr(field: int) -> None:
    status = Status.decode(field)
    assert status.dnr is bool(field & STATUS_DNR)
    assert status.ok is (field & 0x7FF == 0)


def test_error_helper_sets_dnr_and_field() -> None:
    st_ = error(SC.INVALID_FIELD, 44)
    assert st_.dnr and st_.field == 44 and not st_.in_data and not st_.ok
    assert error(SC.CONNECT_INVALID_PARAM, 256, in_data=True).in_data
    assert not error(SC.NS_NOT_READY, dnr=False).dnr
    assert SUCCESS.ok and SUCCESS.encode() == 0


def test_str_names_the_code() -> None:
    text = str(Status(SC.ASYNC_LIMIT, dnr=True))
    assert "ASYNC_LIMIT" in text and "sct=0x1" in text and "sc=0x05" in text and "dnr" in text
