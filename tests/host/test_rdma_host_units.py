"""Unit tests of the NVMe/RDMA host's pure parts (:mod:`nvmf.host.rdma_capsule`) and of how
``-t rdma`` is chosen and refused, on any machine (no RDMA device, pyverbs or not)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from nvmf.cli.host import add_connect_options, connect_options
from nvmf.host import HostError, TransportError
from nvmf.host import commands as c
from nvmf.host.controller import ConnectOptions, Controller, connect_with, rdma_queue_class
from nvmf.host.rdma_capsule import (
    DataPath,
    choose_data_path,
    connect_request,
    rejected,
    set_incapsule_sgl,
    set_keyed_sgl,
    set_null_sgl,
)
from nvmf.wire.fabrics import Cap
from nvmf.wire.identify import IdentifyController
from nvmf.wire.opcodes import IoOpcode
from nvmf.wire.rdma import CmRequest, CmStatus, decode_request, encode_reject
from nvmf.wire.sqe import (
    SGL_INCAPSULE,
    SGL_RDMA_KEYED,
    SGL_RDMA_KEYED_INVALIDATE,
    SglDescriptor,
    Sqe,
)


def _dptr(sqe: bytearray) -> SglDescriptor:
    return SglDescriptor.decode(bytes(sqe[24:40]))


def test_keyed_sgl_carries_address_24_bit_length_key_and_subtype() -> None:
    sqe = c.rw(IoOpcode.READ, 1, 0, 256)
    sqe[1] = 0  # PSDT PRP: the builder must set SGL
    set_keyed_sgl(sqe, 0x7F00_1234_5000, 128 * 1024, 0xABCDEF01)
    assert Sqe.decode(bytes(sqe)).flags & 0xC0 == 0x40
    assert _dptr(sqe) == SglDescriptor(0x7F00_1234_5000, 128 * 1024, SGL_RDMA_KEYED, 0xABCDEF01)
    set_keyed_sgl(sqe, 0x1000, 4096, 0x55, invalidate=True)
    desc = _dptr(sqe)
    assert desc.type_byte == SGL_RDMA_KEYED_INVALIDATE == 0x4F
    assert (desc.address, desc.length, desc.key) == (0x1000, 4096, 0x55)
    with pytest.raises(ValueError, match="24 bits"):
        set_keyed_sgl(sqe, 0, 1 << 24, 1)


def test_null_and_incapsule_sgls() -> None:
    sqe = c.flush(1)
    set_null_sgl(sqe)
    assert _dptr(sqe) == SglDescriptor(0, 0, SGL_RDMA_KEYED, 0)
    sqe = c.rw(IoOpcode.WRITE, 1, 0, 8)
    set_incapsule_sgl(sqe, 4096)
    assert _dptr(sqe) == SglDescriptor(0, 4096, SGL_INCAPSULE)
    assert SGL_INCAPSULE == 0x01


@pytest.mark.parametrize(
    ("out_len", "in_len", "incapsule", "qid", "path"),
    [
        (0, 0, 4096, 1, DataPath.NONE),
        (4096, 0, 4096, 1, DataPath.INCAPSULE),
        (4097, 0, 4096, 1, DataPath.KEYED),
        (1024, 0, 8192, 0, DataPath.KEYED),  # never in-capsule on the admin queue
        (512, 0, 0, 2, DataPath.KEYED),  # IOCCSZ without room for data
        (0, 4096, 4096, 1, DataPath.KEYED),  # reads always by keyed SGL
    ],
)
def test_data_path_choice(
    out_len: int, in_len: int, incapsule: int, qid: int, path: DataPath
) -> None:
    assert (
        choose_data_path(out_length=out_len, in_length=in_len, incapsule_size=incapsule, qid=qid)
        is path
    )


def test_connect_request_sizes_follow_the_linux_host() -> None:
    # The Linux host's admin queue: HRQSIZE 32, HSQSIZE 31 (tests/guest/test_rdma_cm_guest.py).
    req = connect_request(0, 31)
    assert req == CmRequest(qid=0, hrqsize=32, hsqsize=31)
    assert decode_request(req.encode()) == req
    with pytest.raises(ValueError):
        connect_request(1, 0)


def test_an_io_queues_connect_request_names_its_controller() -> None:
    # NVMe/RDMA 1.0b: CNTLID "should" be the I/O queue's controller, and "shall" be 0 on the
    # admin queue, whose controller does not exist yet (Linux 6.12 sends both so).
    assert connect_request(2, 127, cntlid=0x0102).encode()[8:10] == b"\x02\x01"
    assert connect_request(0, 31, cntlid=0xFFFF).cntlid == 0


def test_reject_with_nvme_status_names_it() -> None:
    exc = rejected("rdma 10.0.0.1:4420 qid 0", encode_reject(CmStatus.INVALID_HSQSIZE) + bytes(144))
    assert isinstance(exc, TransportError)
    assert "NVMe/RDMA status 0x4 (invalid host SQ size)" in str(exc)
    assert "qid 0" in str(exc)
    assert "status 0x6 (resource not found)" in str(rejected("q", encode_reject(CmStatus.NO_RSC)))


def test_reject_without_nvme_data_is_no_listener() -> None:
    for data in (b"", bytes(148), b"\x01\x00\x04\x00"):  # empty, zero status, RECFMT 1
        assert "no NVMe/RDMA controller listens there" in str(rejected("q", data))


def test_transport_limits_max_transfer() -> None:
    ctrl = Controller(ConnectOptions("a", "n"), None, 1, Cap(mqes=127), "h", None)  # type: ignore[arg-type]
    ctrl.id_ctrl = IdentifyController.decode(bytes(4096))
    assert ctrl.max_transfer == 1 << 20  # MDTS 0: taken as 1 MiB
    ctrl.transport_max_transfer = 128 * 1024
    assert ctrl.max_transfer == 128 * 1024


def test_cli_transport_choice_reaches_the_options() -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_connect_options(p)
    args = p.parse_args(["-t", "rdma", "-a", "10.99.0.1", "-n", "nqn.x", "-i", "2"])
    opts = connect_options(args)
    assert (opts.trtype, opts.nr_io_queues) == ("rdma", 2)
    with pytest.raises(SystemExit):
        p.parse_args(["-t", "fc", "-a", "10.99.0.1", "-n", "nqn.x"])


def test_rdma_without_pyverbs_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyverbs", None)  # import pyverbs raises ImportError
    for name in [m for m in sys.modules if m.startswith("pyverbs.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "nvmf.host.rdma_queue", raising=False)
    with pytest.raises(HostError, match=r"python3-pyverbs.*scripts/setup"):
        rdma_queue_class()
    opts = ConnectOptions("10.99.0.1", "nqn.x", trtype="rdma", timeout=1)
    with pytest.raises(HostError, match="python3-pyverbs"):
        asyncio.run(connect_with(opts))


def test_rdma_refuses_digests_and_unknown_transports() -> None:
    with pytest.raises(ValueError, match="no header or data digests"):
        asyncio.run(connect_with(ConnectOptions("a", "n", trtype="rdma", data_digest=True)))
    with pytest.raises(ValueError, match="transport 'fc'"):
        asyncio.run(connect_with(ConnectOptions("a", "n", trtype="fc")))
