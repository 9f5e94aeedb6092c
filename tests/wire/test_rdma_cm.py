"""NVMe/RDMA CM private data: the bytes a Linux host sends, and every reason to reject them.

The request bytes below are written out by hand from the layout (RECFMT, QID, HRQSIZE, HSQSIZE,
CNTLID, little-endian, 22 reserved bytes) with the values ``nvme_rdma_route_resolved`` puts in them:
an admin queue asks HRQSIZE 32, HSQSIZE 31; an I/O queue of 128 entries asks HRQSIZE 128,
HSQSIZE 127.
"""

from __future__ import annotations

import pytest

from nvmf.wire.rdma import (
    CmRequest,
    CmStatus,
    check_request,
    decode_accept,
    decode_reject,
    decode_request,
    encode_accept,
    encode_reject,
)

LINUX_ADMIN = bytes.fromhex("0000 0000 2000 1f00") + bytes(24)
LINUX_IO_QID3 = bytes.fromhex("0000 0300 8000 7f00") + bytes(24)
#: Linux 6.12 (NVMe/RDMA 1.0b): an I/O queue's request names its controller, CNTLID 0x0102.
LINUX_612_IO_QID3 = bytes.fromhex("0000 0300 8000 7f00 0201") + bytes(22)


def check(data: bytes) -> CmRequest | CmStatus:
    return check_request(data, max_qid=8, io_queue_depth=128)


def test_the_linux_hosts_admin_and_io_requests_are_accepted() -> None:
    admin = check(LINUX_ADMIN)
    assert admin == CmRequest(qid=0, hrqsize=32, hsqsize=31)
    assert isinstance(admin, CmRequest) and admin.queue_depth == 32
    io = check(LINUX_IO_QID3)
    assert io == CmRequest(qid=3, hrqsize=128, hsqsize=127)


def test_an_io_request_names_its_controller_in_bytes_9_8() -> None:
    req = CmRequest(qid=3, hrqsize=128, hsqsize=127, cntlid=0x0102)
    assert check(LINUX_612_IO_QID3) == req
    assert req.encode() == LINUX_612_IO_QID3
    assert CmStatus.INVALID_CNTLID == 9 and CmStatus.INVALID_CNTLID.message == (
        "invalid controller ID"
    )


def test_private_data_padded_by_the_transport_is_read_from_its_start() -> None:
    assert check(LINUX_IO_QID3 + bytes(24)) == CmRequest(qid=3, hrqsize=128, hsqsize=127)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", CmStatus.INVALID_LEN),
        (LINUX_ADMIN[:31], CmStatus.INVALID_LEN),
        (b"\x01\x00" + LINUX_ADMIN[2:], CmStatus.INVALID_RECFMT),
        (bytes.fromhex("0000 0900 8000 7f00") + bytes(24), CmStatus.INVALID_QID),
        # The admin queue is 32 entries at most; an I/O queue CAP.MQES + 1.
        (bytes.fromhex("0000 0000 2100 2000") + bytes(24), CmStatus.INVALID_HSQSIZE),
        (bytes.fromhex("0000 0100 0001 ff00") + bytes(24), CmStatus.INVALID_HSQSIZE),
        # A one-entry queue (HSQSIZE 0) does not exist in NVMe.
        (bytes.fromhex("0000 0100 0100 0000") + bytes(24), CmStatus.INVALID_HSQSIZE),
        # Fewer response buffers than commands the host may submit.
        (bytes.fromhex("0000 0100 7f00 7f00") + bytes(24), CmStatus.INVALID_HRQSIZE),
    ],
    ids=["empty", "short", "recfmt", "qid", "admin-hsqsize", "io-hsqsize", "hsqsize-0", "hrq"],
)
def test_each_bad_request_gets_its_reject_status(data: bytes, status: CmStatus) -> None:
    assert check(data) is status


def test_reject_and_accept_bytes() -> None:
    assert encode_reject(CmStatus.INVALID_HSQSIZE) == bytes.fromhex("0000 0400")
    assert decode_reject(bytes.fromhex("0000 0400")) is CmStatus.INVALID_HSQSIZE
    assert CmStatus.INVALID_HSQSIZE.message == "invalid host SQ size"
    accept = encode_accept(128)
    assert accept == bytes.fromhex("0000 8000") + bytes(28)
    assert decode_accept(accept) == 128


@pytest.mark.parametrize("data", [b"", b"\x00", bytes.fromhex("0100 0400"), b"\x00\x00\x99\x00"])
def test_a_reject_that_is_not_nvmes_has_no_status(data: bytes) -> None:
    assert decode_reject(data) is None


def test_a_bad_accept_is_an_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="32"):
        decode_accept(bytes(8))
    with pytest.raises(ValueError, match="RECFMT 1"):
        decode_accept(b"\x01\x00" + bytes(30))


def test_decode_request_does_not_judge_sizes() -> None:
    """The host side reads back what it sent; only the controller applies its limits."""
    big = CmRequest(qid=60000, hrqsize=1, hsqsize=4000)
    assert decode_request(big.encode()) == big
