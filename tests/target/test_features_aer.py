"""Set/Get Features, Asynchronous Event Request, Abort, Keep Alive and Get Log Page over
loopback NVMe/TCP (Base 2.0 §5.14 Get Log Page, §5.15/§5.27 Get/Set Features, §5.2 AER,
§5.1 Abort, §5.16 Keep Alive; Linux drivers/nvme/target/admin-cmd.c for comparison)."""

from __future__ import annotations

import asyncio
import itertools
import select
from pathlib import Path

import pytest

from nvmf.control.admin import MAX_TRANSFER
from nvmf.control.model import DISCOVERY_NQN
from nvmf.control.status import namespace_counters
from nvmf.wire.logpage import (
    ChangedNamespaceList,
    CommandEffects,
    CommandEffectsLog,
    FirmwareSlotLog,
    LogPageId,
    SmartLog,
    decode_error_log,
)
from nvmf.wire.opcodes import AdminOpcode, FeatureId, IoOpcode
from nvmf.wire.sqe import Cqe, SglDescriptor, Sqe
from nvmf.wire.status import SC
from tests.target.conftest import (
    SUBNQN,
    RunningTarget,
    controller,
    running_target,
    with_file_namespace,
)
from tests.target.rawhost import RawHost, is_status, status_of
from tests.target.test_tcp_target import admin, io_queue, rw

SEL_CURRENT, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED = 0, 1, 2, 3
#: Get Features SEL=011b result: bit 0 saveable, bit 1 namespace specific, bit 2 changeable.
CAP_CHANGEABLE = 1 << 2
#: The fixture's Number of Queues limit (conftest.make_config max_io_queues=4), 0's based.
NQ = 3


def set_features(host: RawHost, fid: int, cdw11: int = 0, *, save: bool = False) -> Cqe:
    sqe = Sqe(opcode=AdminOpcode.SET_FEATURES, cid=host.next_cid())
    sqe.cdw10 = fid | ((1 << 31) if save else 0)
    sqe.cdw11 = cdw11
    sqe.sgl = SglDescriptor.tcp_transport(0)
    return host.command(sqe)


def get_features(host: RawHost, fid: int, sel: int = SEL_CURRENT) -> Cqe:
    sqe = Sqe(opcode=AdminOpcode.GET_FEATURES, cid=host.next_cid())
    sqe.cdw10 = fid | (sel << 8)
    sqe.sgl = SglDescriptor.tcp_transport(0)
    return host.command(sqe)


def get_log(
    host: RawHost, lid: int, length: int, *, lpo: int = 0, nsid: int = 0
) -> tuple[Cqe, bytes]:
    """Get Log Page of ``length`` bytes (a multiple of 4) at offset ``lpo``."""
    numd = length // 4 - 1
    sqe = Sqe(opcode=AdminOpcode.GET_LOG_PAGE, cid=host.next_cid(), nsid=nsid)
    sqe.cdw10 = lid | ((numd & 0xFFFF) << 16)
    sqe.cdw11 = numd >> 16
    sqe.cdw12 = lpo & 0xFFFFFFFF
    sqe.cdw13 = lpo >> 32
    sqe.sgl = SglDescriptor.tcp_transport(length)
    return host.command_data(sqe)


def simple(host: RawHost, opcode: int, cdw10: int = 0) -> Cqe:
    sqe = Sqe(opcode=opcode, cid=host.next_cid(), cdw10=cdw10)
    sqe.sgl = SglDescriptor.tcp_transport(0)
    return host.command(sqe)


def aer_sqe(host: RawHost) -> Sqe:
    sqe = Sqe(opcode=AdminOpcode.ASYNC_EVENT, cid=host.next_cid())
    sqe.sgl = SglDescriptor.tcp_transport(0)
    return sqe


def nothing_pending(host: RawHost, wait: float = 0.3) -> bool:
    readable, _, _ = select.select([host.sock], [], [], wait)
    return not readable


def sct_sc(cqe: Cqe) -> tuple[int, int]:
    field = cqe.status >> 1
    return field >> 8 & 0x7, field & 0xFF


# -- Features ----------------------------------------------------------------------------------


def test_number_of_queues(target: RunningTarget) -> None:
    host = admin(target)
    cqe = set_features(host, FeatureId.NUM_QUEUES, (1 << 16) | 1)  # ask for 2 SQs, 2 CQs
    assert status_of(cqe).ok
    # NSQA in 15:0, NCQA in 31:16, both 0's based: the target grants its maximum of 4 and the
    # host uses min(asked, granted), as Linux's nvmet and nvme_set_queue_count do.
    assert cqe.dw0 == (NQ << 16) | NQ
    assert get_features(host, FeatureId.NUM_QUEUES).dw0 == (NQ << 16) | NQ
    assert get_features(host, FeatureId.NUM_QUEUES, SEL_DEFAULT).dw0 == (NQ << 16) | NQ


@pytest.mark.parametrize("cdw11", [0xFFFF, 0xFFFF << 16, 0xFFFFFFFF])
def test_number_of_queues_ffffh_is_invalid(target: RunningTarget, cdw11: int) -> None:
    host = admin(target)
    cqe = set_features(host, FeatureId.NUM_QUEUES, cdw11)
    assert is_status(cqe, SC.INVALID_FIELD)


def test_number_of_queues_after_an_io_queue_exists(target: RunningTarget) -> None:
    host = admin(target)
    q = io_queue(target, host)
    cqe = set_features(host, FeatureId.NUM_QUEUES, 0)
    assert is_status(cqe, SC.CMD_SEQ_ERROR)
    q.close()


def test_keep_alive_timer_feature(target: RunningTarget) -> None:
    host = admin(target)
    assert get_features(host, FeatureId.KATO).dw0 == 0  # Connect asked for none
    assert status_of(set_features(host, FeatureId.KATO, 120_000)).ok
    assert get_features(host, FeatureId.KATO).dw0 == 120_000
    assert get_features(host, FeatureId.KATO, SEL_DEFAULT).dw0 == 0
    # Traffic keeps the controller alive; Keep Alive itself completes.
    assert status_of(simple(host, AdminOpcode.KEEP_ALIVE)).ok


def test_async_event_configuration(target: RunningTarget) -> None:
    host = admin(target)
    assert get_features(host, FeatureId.ASYNC_EVENT).dw0 == 0
    assert status_of(set_features(host, FeatureId.ASYNC_EVENT, 1 << 8)).ok
    assert get_features(host, FeatureId.ASYNC_EVENT).dw0 == 1 << 8
    assert get_features(host, FeatureId.ASYNC_EVENT, SEL_DEFAULT).dw0 == 0


def test_volatile_write_cache_on_ram_namespaces_is_invalid(target: RunningTarget) -> None:
    """RAM media has no volatile cache, so Identify VWC is 0 and the feature does not exist."""
    host = admin(target)
    assert is_status(set_features(host, FeatureId.VOLATILE_WC, 1), SC.INVALID_FIELD)
    assert is_status(get_features(host, FeatureId.VOLATILE_WC), SC.INVALID_FIELD)
    assert is_status(get_features(host, FeatureId.VOLATILE_WC, SEL_SUPPORTED), SC.INVALID_FIELD)


@pytest.mark.parametrize("fid", [FeatureId.NUM_QUEUES, FeatureId.KATO, FeatureId.ASYNC_EVENT])
def test_save_bit_is_not_saveable(target: RunningTarget, fid: int) -> None:
    host = admin(target)
    cqe = set_features(host, fid, 1, save=True)
    assert is_status(cqe, SC.FEATURE_NOT_SAVEABLE)
    assert sct_sc(cqe) == (1, 0x0D)


@pytest.mark.parametrize("fid", [FeatureId.NUM_QUEUES, FeatureId.KATO, FeatureId.ASYNC_EVENT])
def test_supported_capabilities(target: RunningTarget, fid: int) -> None:
    host = admin(target)
    cqe = get_features(host, fid, SEL_SUPPORTED)
    assert status_of(cqe).ok
    assert cqe.dw0 == CAP_CHANGEABLE  # changeable, not saveable, not namespace specific


def test_saved_values_are_the_defaults(target: RunningTarget) -> None:
    """No feature is saveable, so a Get Features of the saved value (SEL 010b) returns the
    default, not the value Set Features made current (as QEMU's controller answers)."""
    host = admin(target)
    assert status_of(set_features(host, FeatureId.ASYNC_EVENT, 1 << 8)).ok
    assert status_of(set_features(host, FeatureId.KATO, 120_000)).ok
    assert get_features(host, FeatureId.ASYNC_EVENT, SEL_SAVED).dw0 == 0
    assert get_features(host, FeatureId.KATO, SEL_SAVED).dw0 == 0
    assert get_features(host, FeatureId.ASYNC_EVENT).dw0 == 1 << 8


@pytest.mark.parametrize("sel", [4, 5, 6, 7])
def test_reserved_select_values_are_invalid_field(target: RunningTarget, sel: int) -> None:
    host = admin(target)
    assert is_status(get_features(host, FeatureId.NUM_QUEUES, sel), SC.INVALID_FIELD)


def test_every_select_value_of_the_volatile_write_cache(tmp_path: Path) -> None:
    """With a file namespace there is a volatile write cache: each Select value of its
    feature is answered, supported capabilities (changeable) included."""
    edit = with_file_namespace(tmp_path / "ns3.img", 1 << 20)
    with running_target(0, edit=edit) as target:
        host = admin(target)
        assert status_of(set_features(host, FeatureId.VOLATILE_WC, 0)).ok
        answers = [get_features(host, FeatureId.VOLATILE_WC, sel) for sel in range(4)]
        assert all(status_of(cqe).ok for cqe in answers), [status_of(c) for c in answers]
        assert [cqe.dw0 for cqe in answers] == [0, 1, 1, CAP_CHANGEABLE]


def test_host_identifier_is_not_changeable(target: RunningTarget) -> None:
    cqe = get_features(admin(target), FeatureId.HOST_ID, SEL_SUPPORTED)
    assert status_of(cqe).ok and cqe.dw0 == 0  # not saveable, changeable or per namespace


@pytest.mark.parametrize("fid", [FeatureId.ARBITRATION, FeatureId.TIMESTAMP, 0x7F])
def test_unsupported_feature_is_invalid_field(target: RunningTarget, fid: int) -> None:
    host = admin(target)
    assert is_status(set_features(host, fid, 0), SC.INVALID_FIELD)
    assert is_status(get_features(host, fid), SC.INVALID_FIELD)


def test_a_discovery_controller_has_only_keep_alive_and_event_features(
    target: RunningTarget,
) -> None:
    """A discovery controller has no I/O queues, namespace or write cache: Number of Queues,
    Volatile Write Cache and Host Identifier are Invalid Field there (as Linux's nvmet says),
    while Keep Alive Timer and Asynchronous Event Configuration work as on an I/O controller."""
    disc = RawHost(target.addr)
    disc.initialize()
    assert status_of(disc.connect(DISCOVERY_NQN)).ok
    disc.enable()
    for fid in (FeatureId.NUM_QUEUES, FeatureId.VOLATILE_WC, FeatureId.HOST_ID):
        assert is_status(set_features(disc, fid, 0x10001), SC.INVALID_FIELD), fid
        assert is_status(get_features(disc, fid), SC.INVALID_FIELD), fid
        assert is_status(get_features(disc, fid, SEL_SUPPORTED), SC.INVALID_FIELD), fid
    assert status_of(set_features(disc, FeatureId.KATO, 60000)).ok
    assert get_features(disc, FeatureId.KATO).dw0 == 60000
    assert status_of(set_features(disc, FeatureId.ASYNC_EVENT, 1 << 31)).ok
    assert get_features(disc, FeatureId.ASYNC_EVENT).dw0 == 1 << 31


def test_host_identifier_is_the_one_given_in_connect(target: RunningTarget) -> None:
    """Get Features Host Identifier (81h) returns the 128-bit Host ID of the Connect data
    (EXHID set; cleared asks for the 64-bit form, which CTRATT says we do not keep); a Set
    Features of it is a Command Sequence Error, since a fabric sets it in Connect only (as the
    Linux target answers)."""
    host = admin(target)
    sqe = Sqe(opcode=AdminOpcode.GET_FEATURES, cid=host.next_cid(), cdw10=FeatureId.HOST_ID)
    sqe.cdw11 = 1  # EXHID
    sqe.sgl = SglDescriptor.tcp_transport(16)
    cqe, data = host.command_data(sqe)
    assert status_of(cqe).ok and data == b"\x01" * 16  # RawHost.connect's hostid
    sqe.cid, sqe.cdw11 = host.next_cid(), 0
    assert is_status(host.command_data(sqe)[0], SC.INVALID_FIELD)
    assert is_status(set_features(host, FeatureId.HOST_ID, 1), SC.CMD_SEQ_ERROR)


# -- AER, Abort, Keep Alive --------------------------------------------------------------------


def test_aer_held_and_limit(target: RunningTarget) -> None:
    host = admin(target)
    held = [aer_sqe(host) for _ in range(4)]
    for sqe in held:
        host.send(host.conn.capsule_cmd(sqe.encode()))
    assert nothing_pending(host)  # the four are held without a completion
    fifth = aer_sqe(host)
    cqe = host.command(fifth)
    assert cqe.cid == fifth.cid
    assert is_status(cqe, SC.ASYNC_LIMIT)
    assert sct_sc(cqe) == (1, 0x05)
    # Other admin commands still complete, and the held AERs stay held.
    cqe = simple(host, AdminOpcode.KEEP_ALIVE)
    assert status_of(cqe).ok and cqe.cid not in {s.cid for s in held}
    assert nothing_pending(host)


def test_aer_completes_with_a_posted_event(target: RunningTarget) -> None:
    host = admin(target)
    first, second = aer_sqe(host), aer_sqe(host)
    host.send(host.conn.capsule_cmd(first.encode()) + host.conn.capsule_cmd(second.encode()))
    assert nothing_pending(host)
    # Namespace Attribute Notices enabled, as a host that wants them does (AEC bit 8).
    assert status_of(set_features(host, FeatureId.ASYNC_EVENT, 1 << 8)).ok
    ctrl = controller(target, host.cntlid)
    dw0 = 0x02 | (LogPageId.CHANGED_NS << 16)  # notice, NS attribute changed, log 04h

    def post() -> None:
        ctrl.changed_nsids.add(2)
        ctrl.post_event(dw0)

    target.loop.call_soon_threadsafe(post)
    cqe, _ = host.wait_response()
    assert cqe.cid == first.cid and status_of(cqe).ok and cqe.dw0 == dw0
    assert nothing_pending(host)  # the second AER is still held
    # The changed namespace list names NSID 2 once, then is empty.
    _, page = get_log(host, LogPageId.CHANGED_NS, 4096)
    assert ChangedNamespaceList.decode(page).nsids == [2]
    _, page = get_log(host, LogPageId.CHANGED_NS, 4096)
    assert ChangedNamespaceList.decode(page).nsids == [] and page == bytes(4096)
    # One AER is outstanding again: three more are accepted, the next is over the limit.
    for _ in range(3):
        host.send(host.conn.capsule_cmd(aer_sqe(host).encode()))
    assert nothing_pending(host)
    assert is_status(host.command(aer_sqe(host)), SC.ASYNC_LIMIT)


def test_abort_reports_not_aborted(target: RunningTarget) -> None:
    host = admin(target)
    cqe = simple(host, AdminOpcode.ABORT, cdw10=0 | (0x1234 << 16))  # SQID 0, CID 1234h
    assert status_of(cqe).ok
    assert cqe.dw0 & 1 == 1  # bit 0 set: the command was not aborted


def test_keep_alive_completes(target: RunningTarget) -> None:
    host = admin(target)
    cqe = simple(host, AdminOpcode.KEEP_ALIVE)
    assert status_of(cqe).ok and cqe.dw0 == 0


# -- Get Log Page ------------------------------------------------------------------------------


def test_smart_log(target: RunningTarget) -> None:
    host = admin(target)
    for nsid in (0, 0xFFFFFFFF, 1):
        cqe, page = get_log(host, LogPageId.SMART, 512, nsid=nsid)
        assert status_of(cqe).ok and len(page) == 512
        smart = SmartLog.decode(page)
        assert smart.temperature == 303 and smart.avail_spare == 100 and smart.spare_thresh == 10
        assert smart.critical_warning == 0
    cqe, _ = get_log(host, LogPageId.SMART, 512, nsid=9)
    assert is_status(cqe, SC.INVALID_NS)


def smart_log(host: RawHost, nsid: int) -> SmartLog:
    cqe, page = get_log(host, LogPageId.SMART, 512, nsid=nsid)
    assert status_of(cqe).ok, status_of(cqe)
    return SmartLog.decode(page)


def test_smart_log_counts_the_io_and_the_errors(target: RunningTarget) -> None:
    """SMART counts what the namespaces served, wherever it ran (the control plane or a
    worker): Host Read/Write Commands, Data Units Read/Written in thousands of 512-byte units
    rounded up, each namespace its own (LPA bit 0), a Compare as a read and a Write Zeroes as
    nothing (NVM Command Set 1.0); and Number of Error Information Log
    Entries counts the error log's entries, as ``nvme smart-log`` shows them."""
    host = admin(target)
    q = io_queue(target, host)
    before = {nsid: smart_log(host, nsid) for nsid in (0xFFFFFFFF, 1, 2)}
    for i in range(4):  # 1000 sectors written: one data unit
        cqe = q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 250 * i, 250, 250 * 512),
                        bytes(250 * 512), incapsule=False)  # fmt: skip
        assert status_of(cqe).ok, status_of(cqe)
    for _ in range(2):  # 2000 sectors read: two
        assert status_of(q.command(rw(q.next_cid(), IoOpcode.READ, 1, 0, 1000, 1000 * 512))).ok
    assert is_status(q.command(rw(q.next_cid(), IoOpcode.READ, 1, 1 << 40, 1, 512)), SC.LBA_RANGE)
    # A Compare is a read (1000 sectors more: a third unit); Write Zeroes moves no user data.
    cqe = q.command(rw(q.next_cid(), IoOpcode.COMPARE, 1, 0, 1000, 1000 * 512),
                    bytes(1000 * 512), incapsule=False)  # fmt: skip
    assert status_of(cqe).ok, status_of(cqe)
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE_ZEROES, 1, 0, 1000, 0))).ok
    after = {nsid: smart_log(host, nsid) for nsid in (0xFFFFFFFF, 1, 2)}
    for nsid in (0xFFFFFFFF, 1):
        b, a = before[nsid], after[nsid]
        assert (a.host_writes - b.host_writes, a.host_reads - b.host_reads) == (4, 3), nsid
        assert a.data_units_written - b.data_units_written == 1, nsid
        assert a.data_units_read - b.data_units_read == 3, nsid
        assert a.num_err_log_entries - b.num_err_log_entries == 1, nsid
    assert (after[2].host_reads, after[2].host_writes) == (
        before[2].host_reads,
        before[2].host_writes,
    )
    cqe, page = get_log(host, LogPageId.ERROR, 64)
    assert decode_error_log(page)[0].error_count == after[1].num_err_log_entries


def _ns_counters(target: RunningTarget) -> dict[int, dict[str, int]]:
    """Each namespace's counters, summed over the control plane and the workers (what
    ``nvmf status`` and Prometheus show)."""

    async def counted() -> dict[int, dict[str, int]]:
        return namespace_counters(target.service, SUBNQN)

    return asyncio.run_coroutine_threadsafe(counted(), target.loop).result(10)


def test_namespace_counters_count_the_failed_io(target: RunningTarget) -> None:
    """A namespace's ``errors`` counts its I/O commands that completed with an error, in
    whichever process ran them; not those of another namespace, not admin commands."""
    host = admin(target)
    q = io_queue(target, host)
    before = _ns_counters(target)
    for _ in range(3):
        cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 1, 1 << 40, 1, 512))
        assert is_status(cqe, SC.LBA_RANGE)
    cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 2, 0, 1, 4096))
    assert status_of(cqe).ok
    cqe, _ = get_log(host, 0x7F, 512)
    assert is_status(cqe, SC.INVALID_LOG_PAGE)
    after = _ns_counters(target)
    assert after[1]["errors"] - before[1]["errors"] == 3
    assert after[2]["errors"] == before[2]["errors"]


def test_firmware_slot_log(target: RunningTarget) -> None:
    host = admin(target)
    cqe, page = get_log(host, LogPageId.FW_SLOT, 512)
    assert status_of(cqe).ok and len(page) == 512
    log = FirmwareSlotLog.decode(page)
    assert log.afi & 0x7 == 1
    assert log.frs[0] == "0.1.0" and log.frs[1:] == [""] * 6
    assert page[8:16] == b"0.1.0   "  # ASCII, space padded


def test_command_effects_log(target: RunningTarget) -> None:
    host = admin(target)
    cqe, page = get_log(host, LogPageId.CMD_EFFECTS, 4096)
    assert status_of(cqe).ok
    log = CommandEffectsLog.decode(page)
    csupp, lbcc = CommandEffects.CSUPP, CommandEffects.LBCC
    for op in (IoOpcode.WRITE, IoOpcode.WRITE_ZEROES, IoOpcode.DSM):
        assert log.iocs[op] == csupp | lbcc, op.name
    for op in (IoOpcode.READ, IoOpcode.FLUSH, IoOpcode.COMPARE):
        assert log.iocs[op] == csupp, op.name
    for aop in (AdminOpcode.IDENTIFY, AdminOpcode.GET_LOG_PAGE, AdminOpcode.KEEP_ALIVE):
        assert log.acs[aop] & csupp and not log.acs[aop] & lbcc
    assert log.acs[AdminOpcode.FORMAT_NVM] == 0 and log.iocs[0x7E] == 0
    # The page on the wire: ACS at 0 (4 bytes per opcode), IOCS at 1024.
    assert page[1024 + 4 * IoOpcode.WRITE] == 0x03


def test_changed_namespace_list_empty(target: RunningTarget) -> None:
    host = admin(target)
    cqe, page = get_log(host, LogPageId.CHANGED_NS, 4096)
    assert status_of(cqe).ok and page == bytes(4096)


@pytest.mark.parametrize("lid", [0x0D, 0x7F, 0xC0, 0xFF])
def test_unknown_log_page(target: RunningTarget, lid: int) -> None:
    host = admin(target)
    cqe, _ = get_log(host, lid, 512)
    assert is_status(cqe, SC.INVALID_LOG_PAGE)
    assert sct_sc(cqe) == (1, 0x09)


@pytest.mark.parametrize("lpo", [1, 2, 3, 510])
def test_log_page_offset_not_dword_aligned(target: RunningTarget, lpo: int) -> None:
    host = admin(target)
    cqe, _ = get_log(host, LogPageId.SMART, 256, lpo=lpo)
    assert is_status(cqe, SC.INVALID_FIELD)


def test_log_page_offset_beyond_the_page(target: RunningTarget) -> None:
    host = admin(target)
    cqe, _ = get_log(host, LogPageId.SMART, 4, lpo=1 << 32)
    assert is_status(cqe, SC.INVALID_FIELD)


@pytest.mark.parametrize(
    ("lid", "size", "cuts"),
    [
        (LogPageId.CMD_EFFECTS, 4096, [2048]),
        (LogPageId.CMD_EFFECTS, 4096, [4, 1024, 1028, 4092]),
        (LogPageId.SMART, 512, [256]),
        (LogPageId.FW_SLOT, 512, [8, 12]),
    ],
)
def test_log_page_in_pieces_equals_whole(
    target: RunningTarget, lid: int, size: int, cuts: list[int]
) -> None:
    host = admin(target)
    cqe, whole = get_log(host, lid, size)
    assert status_of(cqe).ok and len(whole) == size
    bounds = [0, *cuts, size]
    pieces = b""
    for lo, hi in itertools.pairwise(bounds):
        cqe, part = get_log(host, lid, hi - lo, lpo=lo)
        assert status_of(cqe).ok and len(part) == hi - lo
        pieces += part
    assert pieces == whole


def test_log_page_beyond_mdts_is_invalid_field(target: RunningTarget) -> None:
    """Identify Controller MDTS (Base 2.0): "If a command is submitted that exceeds this
    transfer size, then the command is aborted with a status code of Invalid Field in Command".
    The I/O path enforces it (test_io_errors_are_nvme_statuses); a Get Log Page must too, or
    one command makes the target map and zero-fill a staging buffer of up to 4 GiB."""
    host = admin(target)
    cqe, _ = get_log(host, LogPageId.SMART, MAX_TRANSFER + 4096)
    assert is_status(cqe, SC.INVALID_FIELD)
    cqe, data = get_log(host, LogPageId.SMART, MAX_TRANSFER)  # exactly MDTS is fine
    assert status_of(cqe).ok and len(data) == MAX_TRANSFER


def test_log_page_longer_than_the_page_is_zero_filled(target: RunningTarget) -> None:
    host = admin(target)
    cqe, data = get_log(host, LogPageId.SMART, 1024)
    assert status_of(cqe).ok and len(data) == 1024
    assert data[512:] == bytes(512)
    _, page = get_log(host, LogPageId.SMART, 512)
    assert data[:512] == page
