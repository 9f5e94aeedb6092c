"""Fabrics commands on the target: Connect, Property Get/Set, Disconnect, Authentication
Send/Receive (NVMe-oF 1.1 §3.3; NVMe Base 2.0 §8.13 for in-band authentication)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nvmf.control.auth import HostKeys, QueueAuth
from nvmf.control.command import INVALID_OPCODE, Context, Parsed, c2h, h2c, no_data
from nvmf.control.controller import ADMIN_QUEUE_DEPTH, Controller
from nvmf.protocol.controller import CcEffect
from nvmf.protocol.dhchap import SecretError
from nvmf.protocol.request import Request
from nvmf.wire import auth as wa
from nvmf.wire import fabrics as f
from nvmf.wire.opcodes import FabricsType
from nvmf.wire.status import SC, SUCCESS, Status, error
from nvmf.wire.text import printable

if TYPE_CHECKING:
    from nvmf.control.service import TargetService

log = logging.getLogger(__name__)

#: Discovery controllers with KATO 0 get this, so stale discovery sessions end (as Linux does).
DISCOVERY_KATO_MS = 120_000


def _connect_error(code: SC, offset: int, *, in_data: bool) -> Status:
    """Connect failure with IPO/IATTR in DW0 for Invalid Parameters (NVMe-oF 1.1 Figure 21)."""
    if code == SC.CONNECT_INVALID_PARAM:
        return f.connect_invalid_parameters(offset, in_data=in_data)
    return Status(code, dnr=True, field=offset, in_data=in_data)


def parse(ctx: Context) -> Parsed:
    raw = ctx.req.sqe.encode()
    fctype = f.fctype_of(raw)
    session = ctx.session
    if fctype == FabricsType.CONNECT:
        if session.qid is not None:
            # A connected queue takes no second Connect: the Linux and SPDK targets answer
            # Invalid Opcode (no fabrics command of that type on a connected queue).
            return error(SC.INVALID_OPCODE, 4)
        cmd = f.ConnectCommand.decode(raw)
        if cmd.recfmt != 0:
            return _connect_error(SC.CONNECT_FORMAT, f.CONNECT_OFF_RECFMT, in_data=False)
        return h2c(f.CONNECT_DATA_SIZE, lambda req: _connect(ctx.service, ctx, cmd, req))
    if session.ctrl is None:
        return error(SC.CMD_SEQ_ERROR, 4)
    if fctype in (FabricsType.AUTH_SEND, FabricsType.AUTH_RECEIVE):
        return _authentication(ctx, wa.AuthCommand.decode(raw))
    if session.auth is not None and not session.auth.authenticated:
        # Only Connect and the authentication commands before the queue authenticated (the
        # Linux target's nvmet_check_auth_status).
        return error(SC.AUTH_REQUIRED, 4)
    if session.qid != 0:
        # On I/O queues only Connect (and authentication) are fabrics commands.
        return error(SC.INVALID_OPCODE, 4)
    if fctype == FabricsType.PROPERTY_GET:
        return _property_get(ctx, f.PropertyCommand.decode(raw))
    if fctype == FabricsType.PROPERTY_SET:
        return _property_set(ctx, f.PropertyCommand.decode(raw))
    if fctype == FabricsType.DISCONNECT:
        return no_data()
    return INVALID_OPCODE


async def _connect(
    service: TargetService, ctx: Context, cmd: f.ConnectCommand, req: Request
) -> Status:
    assert req.data is not None
    try:
        data = f.ConnectData.decode(req.data)
    except f.ConnectDataError as exc:  # an NQN that is not UTF-8: the host's error, not ours
        log.info("connect refused: %s", exc)
        return _connect_error(SC.CONNECT_INVALID_PARAM, exc.offset, in_data=True)
    session = ctx.session
    port = session.model_port
    # Host-sent strings reach the log only through printable(): a newline in an NQN must not
    # start a forged log line.
    hostnqn = printable(data.hostnqn)
    sub = service.find_subsystem(data.subsysnqn, port)
    if sub is None:
        log.info("connect: %s asks for unknown subsystem %s", hostnqn, printable(data.subsysnqn))
        return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_DATA_OFF_SUBSYSNQN, in_data=True)
    if not sub.host_allowed(data.hostnqn):
        log.info("connect: host %s not allowed on %s", hostnqn, printable(sub.nqn))
        return _connect_error(SC.CONNECT_INVALID_HOST, f.CONNECT_DATA_OFF_HOSTNQN, in_data=True)
    keys: HostKeys | None = None
    if not sub.discovery and not sub.config.allow_any_host:
        # As the Linux target (nvmet_setup_auth): the keys of a host the subsystem lists.
        try:
            keys = service.host_keys(data.hostnqn)
        except SecretError as exc:  # validated at load; names the field, never the secret
            log.warning("connect: %s: unusable DH-HMAC-CHAP setting: %s", hostnqn, exc)
            return Status(SC.AUTH_REQUIRED, dnr=True)
    if cmd.qid == 0:
        if data.cntlid != f.CNTLID_DYNAMIC:
            return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_DATA_OFF_CNTLID, in_data=True)
        if cmd.sqsize == 0 or cmd.sqsize >= ADMIN_QUEUE_DEPTH:
            return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_OFF_SQSIZE, in_data=False)
        cntlid = sub.alloc_cntlid()
        if cntlid is None:
            return _connect_error(SC.CONNECT_CTRL_BUSY, 0, in_data=False)
        kato = cmd.kato or (DISCOVERY_KATO_MS if sub.discovery else 0)
        ctrl = Controller(
            cntlid,
            sub,
            port,
            data.hostnqn,
            bytes(data.hostid),
            kato,
            service.settings.queue_depth,
        )
        sub.controllers[cntlid] = ctrl
        service.controller_created(ctrl)
        log.info(
            "controller %d on %s for %s (hostid %s, kato %d ms)",
            cntlid,
            printable(sub.nqn),
            hostnqn,
            data.hostid_uuid,
            kato,
        )
    else:
        found = sub.controllers.get(data.cntlid)
        if found is None or found.hostnqn != data.hostnqn:
            return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_DATA_OFF_CNTLID, in_data=True)
        ctrl = found
        if bytes(data.hostid) != ctrl.hostid:
            return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_DATA_OFF_HOSTID, in_data=True)
        if not ctrl.regs.ready:
            return error(SC.CMD_SEQ_ERROR, f.CONNECT_OFF_QID)
        if cmd.qid > ctrl.io_queues:
            return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_OFF_QID, in_data=False)
        if cmd.qid in ctrl.queues:
            return error(SC.CMD_SEQ_ERROR, f.CONNECT_OFF_QID)
        if cmd.sqsize == 0 or cmd.sqsize >= ctrl.queue_depth:
            return _connect_error(SC.CONNECT_INVALID_PARAM, f.CONNECT_OFF_SQSIZE, in_data=False)
    auth = None
    if keys is not None:
        nqn = data.hostnqn
        auth = QueueAuth(keys, nqn, sub.nqn, cmd.qid, lambda: service.host_keys(nqn))
    session.qid = cmd.qid
    session.ctrl = ctrl
    session.sqsize = cmd.sqsize
    session.sqhd_disabled = bool(cmd.cattr & f.CATTR_DISABLE_SQFLOW)
    session.auth = auth
    ctrl.queues[cmd.qid] = session
    service.queue_connected(session)
    result = f.connect_result(ctrl.cntlid)
    if auth is not None:
        result |= wa.CONNECT_AUTHREQ_ATR
        log.info("controller %d qid %d: DH-HMAC-CHAP required", ctrl.cntlid, cmd.qid)
    return Status(result=result)


def _authentication(ctx: Context, cmd: wa.AuthCommand) -> Parsed:
    """Authentication Send (the host's message, TL bytes) or Receive (the controller's next
    message, AL bytes): checked as the Linux target does, then fed to the queue's
    :class:`~nvmf.control.auth.QueueAuth`."""
    if cmd.secp != wa.SECP_DHCHAP:
        return error(SC.INVALID_FIELD, wa.AUTH_OFF_SECP)
    if cmd.spsp0 != wa.SPSP_DHCHAP:
        return error(SC.INVALID_FIELD, wa.AUTH_OFF_SPSP0)
    if cmd.spsp1 != wa.SPSP_DHCHAP:
        return error(SC.INVALID_FIELD, wa.AUTH_OFF_SPSP1)
    if cmd.length == 0:
        return error(SC.INVALID_FIELD, wa.AUTH_OFF_TL)
    auth = ctx.session.auth
    if auth is None:  # this queue was not asked to authenticate
        return error(SC.CMD_SEQ_ERROR, 4)
    service = ctx.service
    session = ctx.session
    if cmd.is_send:

        async def send(req: Request) -> Status:
            assert req.data is not None
            auth.send(bytes(req.data))
            if auth.failed:
                service.authentication_failed(session)
            return SUCCESS

        return h2c(cmd.length, send)

    async def receive(req: Request) -> Status:
        assert req.data is not None
        message = auth.receive()
        if len(message) > len(req.data):
            log.info(
                "qid %s: Authentication Receive AL %d < %d",
                session.qid,
                len(req.data),
                len(message),
            )
            service.authentication_failed(session)
            return error(SC.INVALID_FIELD, wa.AUTH_OFF_AL)
        req.data[: len(message)] = message
        req.data[len(message) :] = bytes(len(req.data) - len(message))
        if auth.failed:
            service.authentication_failed(session)
        return SUCCESS

    return c2h(cmd.length, receive)


def _property_get(ctx: Context, cmd: f.PropertyCommand) -> Parsed:
    ctrl = ctx.session.ctrl
    assert ctrl is not None
    regs = ctrl.regs
    value: int | None = None
    if cmd.size == 8:
        if cmd.offset == f.Prop.CAP:
            value = regs.cap
    elif cmd.offset == f.Prop.VS:
        value = regs.vs
    elif cmd.offset == f.Prop.CC:
        value = regs.cc
    elif cmd.offset == f.Prop.CSTS:
        value = regs.csts
    if value is None:
        return error(SC.INVALID_FIELD, 44)
    result = value

    async def execute(req: Request) -> Status:
        return Status(result=result & 0xFFFFFFFF, result_hi=result >> 32)

    return no_data(execute)


def _property_set(ctx: Context, cmd: f.PropertyCommand) -> Parsed:
    ctrl = ctx.session.ctrl
    assert ctrl is not None
    if cmd.size != 4 or cmd.offset != f.Prop.CC:
        return error(SC.INVALID_FIELD, 44)
    value = cmd.value & 0xFFFFFFFF

    async def execute(req: Request) -> Status:
        effect = ctrl.write_cc(value)
        if effect is CcEffect.ENABLE_FAILED:
            log.warning("controller %d: unsupported CC %#x, CSTS.CFS set", ctrl.cntlid, value)
        return SUCCESS

    return no_data(execute)
