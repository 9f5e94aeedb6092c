"""DH-HMAC-CHAP on the controller side: a host's keys and each queue's authentication
transaction (NVMe Base 2.0 §8.13.5; the Linux target's ``fabrics-cmd-auth.c`` behaves alike).

Every queue (admin and I/O) of a host that has a ``dhchap.key`` authenticates after its Connect
(whose response sets AUTHREQ.ATR).  The host drives the transaction with Authentication Send
(AUTH_Negotiate, DH-HMAC-CHAP_Reply, DH-HMAC-CHAP_Success2, AUTH_Failure2) and Authentication
Receive (which returns DH-HMAC-CHAP_Challenge, DH-HMAC-CHAP_Success1 or AUTH_Failure1).  Until
the queue is authenticated every other command ends with Authentication Required; a transaction
that fails ends the controller (as the kernel's ``nvmet_ctrl_fatal_error``).  A new
AUTH_Negotiate on an authenticated queue starts a re-authentication; the queue stays usable
while it runs.

:class:`QueueAuth` is sans-IO: it is fed the bytes of an Authentication Send and asked for the
bytes of an Authentication Receive; the fabrics handler (:mod:`nvmf.control.fabrics`) moves them.
Nothing here logs a key, a response or a shared secret.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nvmf.control.model import Host
from nvmf.protocol.dhchap import (
    DhchapSecret,
    DhError,
    DhExchange,
    DhGroup,
    HashId,
    SecretError,
    augmented_challenge,
    controller_response,
    host_response,
)
from nvmf.wire import auth as w

log = logging.getLogger(__name__)

#: How long a transaction may hold its controller's keep-alive (the Linux target expires an
#: unfinished transaction after KATO, or 120 s without one).  The host computes its DH values
#: between the Challenge and its Reply; a slow host (ffdhe8192 on a small CPU, an emulated
#: machine) can take longer than a 5 s KATO, and that time is not the host's silence.
TRANSACTION_HOLD_S = 120.0

#: The config group and its attributes (nvmetcli's names for configfs ``dhchap_key``,
#: ``dhchap_ctrl_key``, ``dhchap_hash``, ``dhchap_dhgroup``).
DHCHAP_GROUP = "dhchap"


@dataclass(frozen=True)
class HostKeys:
    """What a host's ``dhchap`` group asks for: its key, the controller's key (bidirectional
    authentication), the hash and the DH group the controller prefers."""

    key: DhchapSecret = field(repr=False)
    ctrl_key: DhchapSecret | None = field(default=None, repr=False)
    hash_id: HashId = HashId.SHA256
    dhgroup: DhGroup = DhGroup.NULL

    @classmethod
    def of(cls, host: Host, where: str = "dhchap") -> HostKeys | None:
        """The keys of ``host`` (None without a ``dhchap.key``); :class:`SecretError` or
        ValueError name the field ``where.NAME`` that is wrong, never its value."""
        group = host.extra_attrs.get(DHCHAP_GROUP, {})
        text = group.get("key", "")
        if not text:
            return None
        key = DhchapSecret.parse(text, f"{where}.key")
        ctrl_text = group.get("ctrl_key", "")
        ctrl_key = DhchapSecret.parse(ctrl_text, f"{where}.ctrl_key") if ctrl_text else None
        try:
            hash_id = HashId.from_name(group.get("hash", "") or "hmac(sha256)")
        except ValueError as exc:
            raise SecretError(f"{where}.hash", str(exc)) from None
        try:
            dhgroup = DhGroup.from_name(group.get("dhgroup", "") or "null")
        except ValueError as exc:
            raise SecretError(f"{where}.dhgroup", str(exc)) from None
        return cls(key, ctrl_key, hash_id, dhgroup)


def host_keys(hosts: list[Host], hostnqn: str) -> HostKeys | None:
    """The keys configured for ``hostnqn`` (None: the host does not authenticate)."""
    for i, host in enumerate(hosts):
        if host.nqn == hostnqn:
            return HostKeys.of(host, f"hosts[{i}].dhchap")
    return None


class Step(enum.Enum):
    """What the transaction expects next (the kernel's ``dhchap_step``)."""

    NEGOTIATE = "negotiate"  # an AUTH_Negotiate (Send)
    CHALLENGE = "challenge"  # a Receive, answered with the Challenge
    REPLY = "reply"  # a DH-HMAC-CHAP_Reply (Send)
    SUCCESS1 = "success1"  # a Receive, answered with Success1
    SUCCESS2 = "success2"  # the host's Success2 (Send), or nothing more
    FAILURE1 = "failure1"  # a Receive, answered with AUTH_Failure1
    FAILED = "failed"  # over: the controller ends


#: Hash functions the controller offers when the configured one is not in the host's list,
#: in the order the kernel target falls back (the host's first usable one).
USABLE_HASHES = frozenset(HashId)
USABLE_GROUPS = frozenset(DhGroup)


class QueueAuth:
    """One queue's DH-HMAC-CHAP state: fed Authentication Send data, asked for Authentication
    Receive data.  ``authenticated`` says whether the queue may carry other commands;
    ``failed`` that the transaction ended in failure (the controller must end)."""

    def __init__(
        self,
        keys: HostKeys,
        hostnqn: str,
        subsysnqn: str,
        qid: int,
        refresh: Callable[[], HostKeys | None] | None = None,
    ) -> None:
        self.keys = keys
        #: Reads the host's keys again at each AUTH_Negotiate, so that a re-authentication
        #: uses the keys of a reloaded configuration (as the kernel target re-reads them).
        self.refresh = refresh
        self.hostnqn = hostnqn
        self.subsysnqn = subsysnqn
        self.qid = qid
        self.step = Step.NEGOTIATE
        self.authenticated = False
        self.failed = False
        #: Times this queue authenticated (a re-authentication adds one).
        self.completed = 0
        self.t_id = 0
        self.hash_id = keys.hash_id
        self.dhgroup = keys.dhgroup
        self.explanation = w.FailureExplanation.FAILED
        self._c1 = b""
        self._s1 = 0
        self._c2 = b""
        self._s2 = 0
        self._dh: DhExchange | None = None
        self._session_key = b""
        self.started = 0.0

    # -- Authentication Send -------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """A message from the host.  A protocol error moves the transaction to AUTH_Failure1
        (the next Receive returns it) or ends it; the command itself still succeeds, as the
        specification asks (the failure travels in the messages)."""
        try:
            auth_type, auth_id, t_id = w.message_kind(data)
        except w.AuthMessageError as exc:
            self._fail(exc.explanation, str(exc))
            return
        if auth_type == w.AuthType.COMMON and auth_id == w.AuthId.NEGOTIATE:
            self._negotiate(data)
            return
        if auth_id == w.AuthId.FAILURE2:
            self._failure2(data)
            return
        if auth_type != w.AuthType.DHCHAP:
            self._fail(w.FailureExplanation.INCORRECT_MESSAGE, f"AUTH-Type {auth_type:#x}")
            return
        expected = {Step.REPLY: w.AuthId.REPLY, Step.SUCCESS2: w.AuthId.SUCCESS2}
        if expected.get(self.step) != auth_id:
            self._fail(
                w.FailureExplanation.INCORRECT_MESSAGE,
                f"message {auth_id:#x} while expecting {self.step.value}",
                final=self.step in (Step.SUCCESS2,),
            )
            return
        if t_id != self.t_id:
            self._fail(
                w.FailureExplanation.INCORRECT_PAYLOAD,
                f"transaction {t_id} is not {self.t_id}",
            )
            return
        if auth_id == w.AuthId.REPLY:
            self._reply(data)
        else:
            self._success2()

    def _negotiate(self, data: bytes) -> None:
        reauth = self.authenticated
        try:
            msg = w.Negotiate.decode(data)
        except w.AuthMessageError as exc:
            self._fail(exc.explanation, str(exc))
            return
        self.t_id = msg.t_id
        self._forget()
        self.started = time.monotonic()
        if self.refresh is not None:
            try:
                self.keys = self.refresh() or self.keys
            except ValueError:  # validated at load: keep the keys this queue started with
                pass
        if msg.sc_c != w.SC_C_NOSC:
            self._fail(w.FailureExplanation.CONCAT_MISMATCH, "secure channel concatenation")
            return
        if msg.napd != 1 or msg.authid != w.AUTHID_DHCHAP:
            what = f"napd {msg.napd}, authid {msg.authid:#x}"
            self._fail(w.FailureExplanation.INCORRECT_PAYLOAD, what)
            return
        offered = [h for h in msg.hash_ids if h in USABLE_HASHES]
        if not offered:
            self._fail(w.FailureExplanation.HASH_UNUSABLE, "no usable hash offered")
            return
        self.hash_id = self.keys.hash_id if self.keys.hash_id in offered else HashId(offered[0])
        groups = [g for g in msg.dh_group_ids if g in USABLE_GROUPS]
        if not groups:
            self._fail(w.FailureExplanation.DHGROUP_UNUSABLE, "no usable DH group offered")
            return
        self.dhgroup = self.keys.dhgroup if self.keys.dhgroup in groups else DhGroup(groups[0])
        self.step = Step.CHALLENGE
        log.info(
            "qid %d: DH-HMAC-CHAP %s: %s, DH group %s",
            self.qid,
            "re-authentication" if reauth else "authentication",
            self.hash_id.hmac_name,
            self.dhgroup.config_name,
        )

    def _reply(self, data: bytes) -> None:
        try:
            msg = w.Reply.decode(data)
        except w.AuthMessageError as exc:
            self._fail(exc.explanation, str(exc))
            return
        hl = self.hash_id.length
        if len(msg.rval) != hl:
            self._fail(w.FailureExplanation.INCORRECT_PAYLOAD, f"hl {len(msg.rval)} is not {hl}")
            return
        challenge = self._c1
        if self._dh is not None:
            try:
                self._session_key = self._dh.shared_secret(msg.dhv)
            except DhError as exc:
                self._fail(w.FailureExplanation.DHGROUP_UNUSABLE, str(exc))
                return
            challenge = augmented_challenge(self.hash_id, self._session_key, self._c1)
        elif msg.dhv:
            self._fail(w.FailureExplanation.INCORRECT_PAYLOAD, "a DH value in the null group")
            return
        expected = host_response(
            self.hash_id,
            self.keys.key.transformed(self.hostnqn),
            challenge,
            self._s1,
            self.t_id,
            self.hostnqn,
            self.subsysnqn,
        )
        if not _same(expected, msg.rval):
            self._fail(w.FailureExplanation.FAILED, "the host's response does not match")
            return
        if msg.cvalid and msg.seqnum:
            self._c2, self._s2 = msg.cval, msg.seqnum
        else:
            self._c2, self._s2 = b"", 0
            self._authenticated()
        self.step = Step.SUCCESS1

    def _success2(self) -> None:
        self._authenticated()
        self.step = Step.NEGOTIATE
        self._forget()

    def _failure2(self, data: bytes) -> None:
        try:
            msg = w.Failure.decode(data)
            what = f"the host failed the controller's response ({msg.rescode_exp:#x})"
        except w.AuthMessageError as exc:
            what = str(exc)
        self._fail(w.FailureExplanation.FAILED, what, final=True)

    # -- Authentication Receive ----------------------------------------------------------------
    def receive(self) -> bytes:
        """The controller's next message: the Challenge, Success1 or AUTH_Failure1."""
        if self.step is Step.CHALLENGE:
            return self._challenge()
        if self.step is Step.SUCCESS1:
            return self._success1()
        if self.step is not Step.FAILURE1:
            self._fail(
                w.FailureExplanation.INCORRECT_MESSAGE,
                f"Authentication Receive while expecting {self.step.value}",
            )
        self.step = Step.FAILED
        self.failed = True
        self.authenticated = False
        self._forget()
        return w.Failure(self.t_id, self.explanation).encode()

    def _challenge(self) -> bytes:
        self._c1 = os.urandom(self.hash_id.length)
        self._s1 = _next_seqnum()
        dhv = b""
        if self.dhgroup is not DhGroup.NULL:
            self._dh = DhExchange(self.dhgroup)
            dhv = self._dh.public_value
        self.step = Step.REPLY
        message = w.Challenge(self.t_id, self.hash_id, self.dhgroup, self._s1, self._c1, dhv)
        return message.encode()

    def _success1(self) -> bytes:
        hl = self.hash_id.length
        rval = b""
        if self._c2:
            if self.keys.ctrl_key is None:
                self._fail(w.FailureExplanation.FAILED, "the host asks for a controller key")
                return self.receive()
            challenge = self._c2
            if self._dh is not None:
                challenge = augmented_challenge(self.hash_id, self._session_key, self._c2)
            rval = controller_response(
                self.hash_id,
                self.keys.ctrl_key.transformed(self.subsysnqn),
                challenge,
                self._s2,
                self.t_id,
                self.hostnqn,
                self.subsysnqn,
            )
            self.step = Step.SUCCESS2
        else:
            self.step = Step.NEGOTIATE
            self._forget()
        return w.Success1(self.t_id, hl, rval).encode()

    # -- helpers -------------------------------------------------------------------------------
    @property
    def in_progress(self) -> bool:
        """A transaction runs (after its AUTH_Negotiate, before its end)."""
        return self.step not in (Step.NEGOTIATE, Step.FAILED)

    def holds_keep_alive(self, now: float) -> bool:
        """A transaction in progress, started less than :data:`TRANSACTION_HOLD_S` ago: the
        host is busy with it, not silent."""
        return self.in_progress and now - self.started < TRANSACTION_HOLD_S

    @property
    def finished(self) -> bool:
        """The last command of a successful transaction just completed: nothing more of it is
        due (a hand-over may go ahead)."""
        return self.authenticated and self.step is Step.NEGOTIATE

    def _authenticated(self) -> None:
        self.authenticated = True
        self.completed += 1
        log.info("qid %d: host authenticated (DH-HMAC-CHAP)", self.qid)

    def _fail(self, explanation: w.FailureExplanation, what: str, *, final: bool = False) -> None:
        """The transaction failed: the next Receive returns AUTH_Failure1 (or, after the
        host's own failure message, it is over at once)."""
        log.warning(
            "qid %d: DH-HMAC-CHAP failed: %s (%s)", self.qid, what, explanation.name.lower()
        )
        self.explanation = explanation
        self.authenticated = False
        self._forget()
        if final:
            self.step = Step.FAILED
            self.failed = True
        else:
            self.step = Step.FAILURE1

    def _forget(self) -> None:
        self._c1 = self._c2 = self._session_key = b""
        self._s2 = 0
        self._dh = None


def _same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of a response."""
    return hmac.compare_digest(a, b)


_seqnum = 0


def _next_seqnum() -> int:
    """Sequence numbers: random start, then increasing, never 0 (as Linux
    ``nvme_auth_get_seqnum``)."""
    global _seqnum
    if not _seqnum:
        _seqnum = int.from_bytes(os.urandom(4), "little") or 1
    else:
        _seqnum = (_seqnum + 1) & 0xFFFFFFFF or 1
    return _seqnum
