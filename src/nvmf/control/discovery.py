"""The discovery controller (NVMe-oF 1.1 §5): Identify, the Discovery log page, keep-alive,
features and asynchronous events, on the well-known discovery NQN of every port."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from nvmf.control import admin
from nvmf.control.command import INVALID_CDW10, INVALID_OPCODE, Context, Parsed, c2h, send_bytes
from nvmf.control.controller import AER_LIMIT, ERROR_LOG_SLOTS
from nvmf.control.model import DISCOVERY_NQN, Port
from nvmf.wire.identify import IDENTIFY_DATA_SIZE, Cns, IdentifyController
from nvmf.wire.logpage import (
    AddressFamily,
    DiscoveryLogEntry,
    LogPageId,
    SubsystemType,
    TransportType,
    Treq,
    encode_discovery_log,
    tsas_rdma,
    tsas_tcp,
)
from nvmf.wire.opcodes import AdminOpcode, FeatureId
from nvmf.wire.status import SC, Status, error

if TYPE_CHECKING:
    from nvmf.control.controller import Controller
    from nvmf.control.service import TargetService


def _tsas_none() -> bytes:
    return bytes(256)


#: The discovery log entry's Transport Specific Address Subtype, by trtype: NVMe/TCP's SECTYPE
#: (none), NVMe/RDMA's QP type, provider type and connection management (reliable connected,
#: not specified, RDMA CM: what the Linux target reports).
_TSAS: dict[str, Callable[[], bytes]] = {"tcp": tsas_tcp, "rdma": tsas_rdma}
TRTYPE = {"rdma": TransportType.RDMA, "fc": TransportType.FC, "tcp": TransportType.TCP}
ADRFAM = {
    "ipv4": AddressFamily.IPV4,
    "ipv6": AddressFamily.IPV6,
    "ib": AddressFamily.IB,
    "fc": AddressFamily.FC,
}
TREQ = {
    "not specified": Treq.NOT_SPECIFIED,
    "required": Treq.REQUIRED,
    "not required": Treq.NOT_REQUIRED,
}
#: OAES bit 31: Discovery Log Page Change notices (and AEC bit 31, which enables them).
OAES_DISC_CHANGE = 1 << 31
#: Asynchronous event: Notice, Discovery Log Page Change (F0h), log page Discovery (70h).
AEN_DISC_CHANGED = 0x02 | (0xF0 << 8) | (LogPageId.DISC << 16)


#: The features a discovery controller has: Keep Alive Timer and Asynchronous Event
#: Configuration (for the Discovery Log Page Change notice).  It has no I/O queues, no
#: namespace and no write cache, so Number of Queues and the rest are Invalid Field, as in
#: Linux's nvmet.
DISCOVERY_FEATURES = frozenset({FeatureId.KATO, FeatureId.ASYNC_EVENT})


def log_changed(ctrl: Controller) -> bool:
    """The discovery log page changed (a configuration reload): post the Discovery Log Page
    Change notice if the host enabled it (Set Features Asynchronous Event Configuration bit
    31) and none is masked: after one, no other until the host reads the log page with RAE
    clear, as Linux's nvmet.  True when posted."""
    if not ctrl.aec & OAES_DISC_CHANGE:
        return False
    return ctrl.post_notice(AEN_DISC_CHANGED)


def parse(ctx: Context) -> Parsed:
    """Admin commands a discovery controller accepts; everything else is Invalid Opcode."""
    ctrl = ctx.session.ctrl
    assert ctrl is not None
    op = ctx.req.sqe.opcode
    if op == AdminOpcode.IDENTIFY:
        if ctx.req.sqe.cdw10 & 0xFF != Cns.CTRL:
            return INVALID_CDW10
        return c2h(IDENTIFY_DATA_SIZE, send_bytes(identify(ctx, ctrl)))
    if op == AdminOpcode.GET_LOG_PAGE:
        return admin.get_log_page(ctx, ctrl, _log_page)
    if op in (AdminOpcode.SET_FEATURES, AdminOpcode.GET_FEATURES):
        if ctx.req.sqe.cdw10 & 0xFF not in DISCOVERY_FEATURES:
            return INVALID_CDW10
        if op == AdminOpcode.SET_FEATURES:
            return admin.set_features(ctx, ctrl)
        return admin.get_features(ctx, ctrl)
    if op == AdminOpcode.ASYNC_EVENT:
        return admin.async_event(ctrl)
    if op == AdminOpcode.KEEP_ALIVE:
        return admin.parse(ctx)
    return INVALID_OPCODE


def identify(ctx: Context, ctrl: Controller) -> bytes:
    port = ctx.session.model_port
    sub = ctrl.subsystem
    return IdentifyController(
        sn=sub.serial,
        mn=sub.config.model or "nvmf",
        fr=admin.FIRMWARE_REVISION,
        cntlid=ctrl.cntlid,
        ver=sub.vs,
        oaes=OAES_DISC_CHANGE,
        cntrltype=2,  # discovery controller
        aerl=AER_LIMIT - 1,
        lpa=1 << 2,
        elpe=ERROR_LOG_SLOTS - 1,
        kas=admin.KAS,
        maxcmd=ctrl.queue_depth,
        sgls=admin.sgls_for(port.trtype, port.inline_data_size),
        subnqn=DISCOVERY_NQN,
    ).encode()


def _log_page(ctx: Context, ctrl: Controller, lid: int, lsp: int) -> bytes | Status:
    if lid != LogPageId.DISC:
        return error(SC.INVALID_LOG_PAGE, 40)
    ctrl.notice_read(lid, bool(ctx.req.sqe.cdw10 & admin.RAE))
    return encode_discovery_log(ctx.service.genctr, log_entries(ctx.service, ctrl))


def log_entries(service: TargetService, ctrl: Controller) -> list[DiscoveryLogEntry]:
    """The entries of the discovery log page ``ctrl`` reads: its port's exports and referrals
    that its host may see, at the address the host reached."""
    admin_queue = ctrl.queues[0]
    traddr, trsvcid = admin_queue.fabric.local_address()
    return discovery_entries(service, admin_queue.model_port, ctrl.hostnqn, traddr, trsvcid)


def _entry(port: Port, subtype: int, nqn: str, traddr: str, trsvcid: str) -> DiscoveryLogEntry:
    return DiscoveryLogEntry(
        trtype=TRTYPE.get(port.trtype, TransportType.TCP),
        adrfam=ADRFAM.get(port.adrfam, AddressFamily.IPV4),
        subtype=subtype,
        # Connect may disable SQ flow control (CATTR bit 2) on every port of ours, as on
        # Linux's; nvme connect-all then asks for it, and a Read's C2HData can carry its
        # success instead of a completion capsule.
        treq=TREQ.get(port.treq, Treq.NOT_SPECIFIED) | Treq.DISABLE_SQFLOW,
        portid=port.portid,
        cntlid=0xFFFF,
        asqsz=32,
        eflags=0,
        trsvcid=trsvcid,
        subnqn=nqn,
        traddr=traddr,
        tsas=_TSAS.get(port.trtype, _tsas_none)(),
    )


def _advertised(port: Port, local_traddr: str) -> str:
    """A port bound to a wildcard address advertises the address the host reached us on."""
    try:
        if ipaddress.ip_address(port.traddr).is_unspecified:
            return local_traddr
    except ValueError:
        pass
    return port.traddr


def discovery_entries(
    service: TargetService, port: Port, hostnqn: str, local_traddr: str, local_trsvcid: str
) -> list[DiscoveryLogEntry]:
    """The entries a host sees on ``port``: the current discovery subsystem, every subsystem
    the port exports that the host may reach, then referrals (as the Linux target orders them)."""
    traddr = _advertised(port, local_traddr)
    # A port configured with service 0 listens wherever the system put it: advertise that.
    trsvcid = local_trsvcid if port.trsvcid == "0" else port.trsvcid
    entries = [_entry(port, SubsystemType.CURRENT_DISCOVERY, DISCOVERY_NQN, traddr, trsvcid)]
    for nqn in port.subsystems:
        sub = service.subsystems.get(nqn)
        if sub is not None and sub.host_allowed(hostnqn):
            entries.append(_entry(port, SubsystemType.NVME, nqn, traddr, trsvcid))
    for ref in port.referrals:
        if not ref.enable:
            continue
        ref_port = Port(
            portid=ref.portid,
            trtype=ref.trtype,
            adrfam=ref.adrfam,
            traddr=ref.traddr,
            trsvcid=ref.trsvcid,
            treq=ref.treq,
        )
        entries.append(
            _entry(ref_port, SubsystemType.DISCOVERY, DISCOVERY_NQN, ref.traddr, ref.trsvcid)
        )
    return entries
