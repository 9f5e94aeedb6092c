"""DH-HMAC-CHAP on the host side: authenticate one queue after its Connect (NVMe Base 2.0
§8.13.5; the Linux host's ``drivers/nvme/host/auth.c`` behaves alike).

When a queue's Connect completes with AUTHREQ.ATR set (DW0 bit 17), the controller accepts no
other command on that queue until the host authenticated.  The host then runs one transaction
of admin-style commands on the queue, the same over NVMe/TCP and NVMe/RDMA:

1. Authentication Send: AUTH_Negotiate, offering every hash (SHA-256, -384, -512) and the null
   and every ffdhe DH group, as the Linux host does;
2. Authentication Receive: DH-HMAC-CHAP_Challenge (hash, DH group, C1, S1, the controller's DH
   value), or AUTH_Failure1;
3. Authentication Send: DH-HMAC-CHAP_Reply with the response R1 (HMAC with the host secret
   transformed with the host NQN), the host's DH value and, with a controller secret, the
   challenge C2 and sequence number S2 for the controller;
4. Authentication Receive: DH-HMAC-CHAP_Success1, with R2 when the host asked, or
   AUTH_Failure1;
5. with a controller secret: the host checks R2 and sends DH-HMAC-CHAP_Success2.

When the host finds a message wrong (a hash or DH group it cannot use, a bad payload, R2 not
matching the controller secret) it sends AUTH_Failure2 with the specification's explanation, as
the Linux host does, and the queue fails.  An AUTH_Failure1 from the controller ends the
transaction with nothing more sent.  Either way :class:`AuthenticationError` says which queue
and why; neither it nor any log line of this module holds a secret, a response or a key.

:class:`Transaction` is the sans-IO half (messages in, messages out); :func:`authenticate`
moves its messages over any host queue with ``submit``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from dataclasses import dataclass, field
from typing import Protocol

from nvmf.host.errors import HostError, TransportError
from nvmf.protocol.dhchap import (
    DhchapSecret,
    DhError,
    DhExchange,
    DhGroup,
    HashId,
    augmented_challenge,
    controller_response,
    host_response,
    next_seqnum,
)
from nvmf.wire import auth as w
from nvmf.wire.opcodes import FabricsType

log = logging.getLogger(__name__)

#: What AUTH_Negotiate offers (Linux ``nvme_auth_set_dhchap_negotiate_data``): every hash and
#: every DH group, the null group first.
OFFERED_HASHES: tuple[HashId, ...] = (HashId.SHA256, HashId.SHA384, HashId.SHA512)
OFFERED_GROUPS: tuple[DhGroup, ...] = tuple(DhGroup)
#: AL of an Authentication Receive (Linux ``CHAP_BUF_SIZE``): a Challenge with an ffdhe8192
#: value (16 + 64 + 1024 bytes) fits.
RECEIVE_LENGTH = 4096


@dataclass(frozen=True)
class DhchapKeys:
    """The host's secret (nvme-cli ``--dhchap-secret``) and, for bidirectional authentication,
    the controller's (``--dhchap-ctrl-secret``)."""

    secret: DhchapSecret = field(repr=False)
    ctrl_secret: DhchapSecret | None = field(default=None, repr=False)

    @property
    def bidirectional(self) -> bool:
        return self.ctrl_secret is not None


class AuthenticationError(HostError):
    """DH-HMAC-CHAP failed on a queue.  ``explanation`` is the failure message's Reason Code
    Explanation (the controller's in its AUTH_Failure1, or the host's in its AUTH_Failure2;
    None when no failure message was exchanged)."""

    def __init__(
        self, qid: int, what: str, explanation: w.FailureExplanation | int | None = None
    ) -> None:
        super().__init__(f"DH-HMAC-CHAP failed on qid {qid}: {what}")
        self.qid = qid
        self.explanation = explanation


class _Failed(Exception):
    """The host found the controller's message wrong: answer with AUTH_Failure2."""

    def __init__(self, explanation: w.FailureExplanation, what: str) -> None:
        super().__init__(what)
        self.explanation = explanation


class _Failure1(Exception):
    """The controller sent AUTH_Failure1: the transaction is over."""

    def __init__(self, failure: w.Failure) -> None:
        super().__init__(failure.rescode_exp)
        self.failure = failure


def describe_failure(failure: w.Failure) -> str:
    """``reason 0x01 (authentication failure), explanation 0x01 (authentication failed)``."""
    reason = "authentication failure" if failure.rescode == w.FailureReason.FAILED else "unknown"
    try:
        explanation = w.FailureExplanation(failure.rescode_exp).description
    except ValueError:
        explanation = "unknown"
    return (
        f"reason {failure.rescode:#04x} ({reason}), "
        f"explanation {failure.rescode_exp:#04x} ({explanation})"
    )


class Transaction:
    """The host's half of one DH-HMAC-CHAP transaction on one queue, sans-IO.

    Call :meth:`negotiate`, then :meth:`reply` with the controller's first message, then
    :meth:`success1` with its second.  A wrong message raises :class:`_Failed` (send
    :meth:`failure2`), an AUTH_Failure1 raises :class:`_Failure1`.
    """

    def __init__(self, keys: DhchapKeys, hostnqn: str, subnqn: str, qid: int, t_id: int) -> None:
        self.keys = keys
        self.hostnqn = hostnqn
        self.subnqn = subnqn
        self.qid = qid
        self.t_id = t_id & 0xFFFF
        #: What the controller chose (known after the Challenge).
        self.hash_id: HashId | None = None
        self.dhgroup: DhGroup | None = None
        self._session_key = b""
        self._c2 = b""
        self._s2 = 0

    def negotiate(self) -> bytes:
        """AUTH_Negotiate: one DH-HMAC-CHAP descriptor, no secure channel concatenation."""
        return w.Negotiate(self.t_id, tuple(OFFERED_HASHES), tuple(OFFERED_GROUPS)).encode()

    def reply(self, data: bytes) -> bytes:
        """The DH-HMAC-CHAP_Reply to the controller's Challenge ``data``."""
        self._expect(data, w.AuthId.CHALLENGE)
        try:
            challenge = w.Challenge.decode(data)
        except w.AuthMessageError as exc:
            raise _Failed(exc.explanation, str(exc)) from None
        try:
            hash_id = HashId(challenge.hashid)
        except ValueError:
            raise _Failed(
                w.FailureExplanation.HASH_UNUSABLE, f"the Challenge names hash {challenge.hashid}"
            ) from None
        if len(challenge.cval) != hash_id.length:
            raise _Failed(
                w.FailureExplanation.HASH_UNUSABLE,
                f"the Challenge's hl {len(challenge.cval)} is not {hash_id.name}'s "
                f"{hash_id.length}",
            )
        try:
            group = DhGroup(challenge.dhgid)
        except ValueError:
            raise _Failed(
                w.FailureExplanation.DHGROUP_UNUSABLE,
                f"the Challenge names DH group {challenge.dhgid}",
            ) from None
        self.hash_id, self.dhgroup = hash_id, group
        c1, dhv = challenge.cval, b""
        if group is DhGroup.NULL:
            if challenge.dhv:
                raise _Failed(
                    w.FailureExplanation.INCORRECT_PAYLOAD, "a DH value with the null DH group"
                )
        else:
            mine = DhExchange(group)
            try:
                self._session_key = mine.shared_secret(challenge.dhv)
            except DhError as exc:
                raise _Failed(w.FailureExplanation.INCORRECT_PAYLOAD, str(exc)) from None
            dhv = mine.public_value
            c1 = augmented_challenge(hash_id, self._session_key, c1)
        rval = host_response(
            hash_id,
            self.keys.secret.transformed(self.hostnqn),
            c1,
            challenge.seqnum,
            self.t_id,
            self.hostnqn,
            self.subnqn,
        )
        if self.keys.bidirectional:
            self._c2, self._s2 = os.urandom(hash_id.length), next_seqnum()
        return w.Reply(self.t_id, rval, self._s2, self._c2, bool(self._c2), dhv).encode()

    def success1(self, data: bytes) -> bytes | None:
        """Check the controller's Success1 ``data``; the Success2 to send when the host asked
        the controller to authenticate (None: the transaction is complete)."""
        self._expect(data, w.AuthId.SUCCESS1)
        assert self.hash_id is not None
        try:
            msg = w.Success1.decode(data)
        except w.AuthMessageError as exc:
            raise _Failed(exc.explanation, str(exc)) from None
        if msg.hl != self.hash_id.length:
            raise _Failed(
                w.FailureExplanation.HASH_UNUSABLE,
                f"Success1's hl {msg.hl} is not {self.hash_id.name}'s {self.hash_id.length}",
            )
        ctrl_secret = self.keys.ctrl_secret
        if ctrl_secret is None:
            return None
        if not msg.rval:
            raise _Failed(
                w.FailureExplanation.FAILED,
                "the controller sent no response to the host's challenge (Success1 RVALID 0)",
            )
        c2 = self._c2
        if self._session_key:
            c2 = augmented_challenge(self.hash_id, self._session_key, c2)
        expected = controller_response(
            self.hash_id,
            ctrl_secret.transformed(self.subnqn),
            c2,
            self._s2,
            self.t_id,
            self.hostnqn,
            self.subnqn,
        )
        if not hmac.compare_digest(expected, msg.rval):
            raise _Failed(
                w.FailureExplanation.FAILED,
                "the controller's response does not match the controller secret "
                "(--dhchap-ctrl-secret): the controller did not prove it holds it",
            )
        return w.success2(self.t_id)

    def failure2(self, explanation: w.FailureExplanation) -> bytes:
        """AUTH_Failure2: the host ends the transaction with ``explanation``."""
        return w.Failure(self.t_id, explanation, auth_id=w.AuthId.FAILURE2).encode()

    def forget(self) -> None:
        """Drop the session key and the challenge (nothing of them outlives the transaction)."""
        self._session_key = self._c2 = b""

    def _expect(self, data: bytes, auth_id: w.AuthId) -> None:
        """``data`` is a message of this transaction with ``auth_id``, or AUTH_Failure1."""
        try:
            auth_type, got, t_id = w.message_kind(data)
        except w.AuthMessageError as exc:
            raise _Failed(exc.explanation, str(exc)) from None
        if auth_type == w.AuthType.COMMON and got == w.AuthId.FAILURE1:
            try:
                failure = w.Failure.decode(data)
            except w.AuthMessageError as exc:
                raise _Failed(exc.explanation, str(exc)) from None
            raise _Failure1(failure)
        if auth_type != w.AuthType.DHCHAP or got != auth_id:
            raise _Failed(
                w.FailureExplanation.INCORRECT_MESSAGE,
                f"expected {auth_id.name.title()}, the controller sent AUTH-Type {auth_type:#x} "
                f"AUTH-Id {got:#x}",
            )
        if t_id != self.t_id:
            raise _Failed(
                w.FailureExplanation.INCORRECT_PAYLOAD,
                f"the controller's T_ID {t_id} is not the transaction's {self.t_id}",
            )


class AuthQueue(Protocol):
    """What :func:`authenticate` needs of a host queue (NVMe/TCP's and NVMe/RDMA's have it)."""

    async def submit(
        self,
        sqe: bytearray,
        *,
        data_out: bytes | bytearray | memoryview | None = None,
        data_in: bytearray | memoryview | None = None,
        command: str = "command",
        check: bool = True,
    ) -> object: ...


def _command(fctype: int, length: int) -> bytearray:
    return bytearray(w.AuthCommand(cid=0, fctype=fctype, length=length).encode())


async def authenticate(
    queue: AuthQueue,
    keys: DhchapKeys,
    *,
    qid: int,
    t_id: int,
    hostnqn: str,
    subnqn: str,
    timeout: float,
) -> Transaction:
    """Run one DH-HMAC-CHAP transaction on ``queue`` (just connected, AUTHREQ.ATR set); each
    command waits at most ``timeout`` seconds.  Returns the finished transaction (what was
    negotiated); raises :class:`AuthenticationError`."""
    tx = Transaction(keys, hostnqn, subnqn, qid, t_id)

    async def send(message: bytes, name: str) -> None:
        async with asyncio.timeout(timeout):
            await queue.submit(
                _command(FabricsType.AUTH_SEND, len(message)),
                data_out=message,
                command=f"qid {qid}: Authentication Send ({name})",
            )

    async def receive(name: str) -> bytes:
        buf = bytearray(RECEIVE_LENGTH)
        async with asyncio.timeout(timeout):
            await queue.submit(
                _command(FabricsType.AUTH_RECEIVE, RECEIVE_LENGTH),
                data_in=buf,
                command=f"qid {qid}: Authentication Receive ({name})",
            )
        return bytes(buf)

    awaiting_success1 = False  # the host's response is out, the controller's verdict is not
    try:
        await send(tx.negotiate(), "AUTH_Negotiate")
        reply = tx.reply(await receive("DH-HMAC-CHAP_Challenge"))
        await send(reply, "DH-HMAC-CHAP_Reply")
        awaiting_success1 = True
        success1 = await receive("DH-HMAC-CHAP_Success1")
        awaiting_success1 = False
        success2 = tx.success1(success1)
        if success2 is not None:
            await send(success2, "DH-HMAC-CHAP_Success2")
    except _Failure1 as exc:
        raise AuthenticationError(
            qid,
            f"the controller sent AUTH_Failure1, {describe_failure(exc.failure)}"
            + _hint(exc.failure.rescode_exp),
            exc.failure.rescode_exp,
        ) from None
    except _Failed as exc:
        await _send_failure2(queue, tx, exc.explanation, timeout)
        raise AuthenticationError(
            qid,
            f"{exc}; the host sent AUTH_Failure2, explanation {exc.explanation:#04x} "
            f"({exc.explanation.description})",
            exc.explanation,
        ) from None
    except TimeoutError:
        raise AuthenticationError(
            qid, f"the controller did not answer within {timeout:g} s"
        ) from None
    except HostError as exc:  # a command failed or the queue ended
        if awaiting_success1 and isinstance(exc, TransportError):
            # Linux nvmet ends a controller whose host response does not match (a fatal error,
            # fabrics-cmd-auth.c) before its AUTH_Failure1 reaches the wire, so the connection
            # may close instead: the same refusal, and the host must say so.
            raise AuthenticationError(
                qid,
                f"{exc} after the host's DH-HMAC-CHAP_Reply, without a "
                "DH-HMAC-CHAP_Success1" + _hint(w.FailureExplanation.FAILED),
            ) from None
        raise AuthenticationError(qid, str(exc)) from None
    finally:
        tx.forget()
    assert tx.hash_id is not None and tx.dhgroup is not None
    log.info(
        "qid %d: authenticated with %s, DH group %s%s",
        qid,
        tx.hash_id.hmac_name,
        tx.dhgroup.config_name,
        ", controller authenticated" if keys.bidirectional else "",
    )
    return tx


def _hint(explanation: int) -> str:
    if explanation == w.FailureExplanation.FAILED:
        return (
            ": the controller did not accept the host's response (a wrong host secret, "
            "--dhchap-secret, or the controller has another key for this host NQN)"
        )
    return ""


async def _send_failure2(
    queue: AuthQueue, tx: Transaction, explanation: w.FailureExplanation, timeout: float
) -> None:
    """Tell the controller the transaction failed (best effort: a controller may end the queue
    before it completes the command)."""
    message = tx.failure2(explanation)
    try:
        async with asyncio.timeout(timeout):
            await queue.submit(
                _command(FabricsType.AUTH_SEND, len(message)),
                data_out=message,
                command=f"qid {tx.qid}: Authentication Send (AUTH_Failure2)",
                check=False,
            )
    except (HostError, TimeoutError) as exc:
        log.debug("qid %d: AUTH_Failure2 not completed: %s", tx.qid, exc)
