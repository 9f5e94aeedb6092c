"""The host's DH-HMAC-CHAP (:mod:`nvmf.host.auth`): in memory against the controller's own
state machine, then end to end over loopback NVMe/TCP against this project's target, and
through the CLI.

In memory, every message the host's :class:`Transaction` makes is fed to the target's
:class:`~nvmf.control.auth.QueueAuth` and back: every hash and DH group, both directions, and
the messages a host must refuse.  Over TCP, :func:`nvmf.host.connect` with the right secrets
authenticates the admin queue and every I/O queue and does I/O; wrong, missing and wrong
controller secrets fail with an error that names the queue and the reason.  No secret appears
in an error, in the log (the target runs in this process, so its log lines are in ``caplog``
too) or in the CLI's output.

NVMe/RDMA: the target here refuses authentication over RDMA (docs/authentication.md), so the
host's RDMA path is proven against the Linux target in tests/guest/test_auth_guest.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from nvmf.control.auth import HostKeys, QueueAuth
from nvmf.control.model import Host, Namespace, NamespaceMedia, Port, Subsystem, TargetConfig
from nvmf.host import AuthenticationError, connect, discover
from nvmf.host.auth import (
    OFFERED_GROUPS,
    OFFERED_HASHES,
    DhchapKeys,
    Transaction,
    _Failed,
    _Failure1,
    authenticate,
)
from nvmf.host.errors import TransportError
from nvmf.protocol.dhchap import DhchapSecret, DhGroup, HashId, generate_secret
from nvmf.wire import auth as w
from tests.target.conftest import RunningTarget, running_target

T = TypeVar("T")
SUBNQN = "nqn.2024-01.io.nvmf:host-auth"
#: One host with a controller key (bidirectional) and one without.
BI_NQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000ba001"
UNI_NQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000ba002"
BI_KEY = generate_secret(2, 48, BI_NQN)
BI_CTRL_KEY = generate_secret(0, 32)
UNI_KEY = generate_secret(1, 32, UNI_NQN)
#: A well-formed secret nobody configured.
STRANGER = generate_secret(0, 32)
ALL_SECRETS = (BI_KEY, BI_CTRL_KEY, UNI_KEY, STRANGER)


def _b64(secret: str) -> str:
    return secret.split(":")[2]


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in ALL_SECRETS:
            assert _b64(secret) not in text


# -- in memory: the host's transaction against the controller's ---------------------------------


def _pair(
    hash_id: HashId,
    group: DhGroup,
    *,
    bidirectional: bool,
    host_key: str = BI_KEY,
    host_ctrl_key: str = BI_CTRL_KEY,
    t_id: int = 7,
) -> tuple[Transaction, QueueAuth]:
    target_keys = HostKeys(
        DhchapSecret.parse(BI_KEY), DhchapSecret.parse(BI_CTRL_KEY), hash_id, group
    )
    qa = QueueAuth(target_keys, BI_NQN, SUBNQN, qid=0)
    keys = DhchapKeys(
        DhchapSecret.parse(host_key),
        DhchapSecret.parse(host_ctrl_key) if bidirectional else None,
    )
    return Transaction(keys, BI_NQN, SUBNQN, qid=0, t_id=t_id), qa


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("group", [DhGroup.NULL, DhGroup.FFDHE2048, DhGroup.FFDHE4096])
@pytest.mark.parametrize("hash_id", list(HashId))
def test_transaction_against_the_controller(
    hash_id: HashId, group: DhGroup, bidirectional: bool
) -> None:
    tx, qa = _pair(hash_id, group, bidirectional=bidirectional)
    negotiate = w.Negotiate.decode(tx.negotiate())
    # As the Linux host: every hash, the null group and every ffdhe group.
    assert negotiate.hash_ids == (1, 2, 3) == tuple(OFFERED_HASHES)
    assert negotiate.dh_group_ids == (0, 1, 2, 3, 4, 5) == tuple(OFFERED_GROUPS)
    assert negotiate.sc_c == w.SC_C_NOSC and negotiate.t_id == 7
    qa.send(tx.negotiate())
    reply = tx.reply(qa.receive())
    assert (tx.hash_id, tx.dhgroup) == (hash_id, group)
    assert w.Reply.decode(reply).cvalid == bidirectional
    qa.send(reply)
    success2 = tx.success1(qa.receive())
    assert qa.authenticated != bidirectional  # bidirectional: once the host's Success2 came
    if bidirectional:
        assert success2 == w.success2(7)
        qa.send(success2)
        assert qa.authenticated and not qa.failed and not qa.in_progress
    else:
        assert success2 is None


def test_wrong_host_secret_gets_failure1() -> None:
    tx, qa = _pair(HashId.SHA256, DhGroup.NULL, bidirectional=False, host_key=STRANGER)
    qa.send(tx.negotiate())
    qa.send(tx.reply(qa.receive()))
    with pytest.raises(_Failure1) as info:
        tx.success1(qa.receive())
    assert info.value.failure.rescode_exp == w.FailureExplanation.FAILED


def test_wrong_controller_secret_is_refused_with_failure2() -> None:
    tx, qa = _pair(HashId.SHA384, DhGroup.FFDHE2048, bidirectional=True, host_ctrl_key=STRANGER)
    qa.send(tx.negotiate())
    qa.send(tx.reply(qa.receive()))
    with pytest.raises(_Failed) as info:
        tx.success1(qa.receive())
    assert info.value.explanation == w.FailureExplanation.FAILED
    assert "controller secret" in str(info.value)
    qa.send(tx.failure2(info.value.explanation))
    assert qa.failed and not qa.authenticated  # the controller ends, as the spec says


def _challenge(**fields: object) -> bytes:
    values: dict[str, object] = {
        "t_id": 7,
        "hashid": HashId.SHA256,
        "dhgid": DhGroup.NULL,
        "seqnum": 1,
        "cval": bytes(32),
        "dhv": b"",
    }
    values.update(fields)
    return w.Challenge(**values).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "explanation"),
    [
        (_challenge(hashid=9), w.FailureExplanation.HASH_UNUSABLE),
        (_challenge(cval=bytes(48)), w.FailureExplanation.HASH_UNUSABLE),
        (_challenge(dhgid=9), w.FailureExplanation.DHGROUP_UNUSABLE),
        (_challenge(dhv=b"\1" * 8), w.FailureExplanation.INCORRECT_PAYLOAD),
        (
            _challenge(dhgid=DhGroup.FFDHE2048, dhv=b"\2" * 8),
            w.FailureExplanation.INCORRECT_PAYLOAD,
        ),
        (_challenge(t_id=8), w.FailureExplanation.INCORRECT_PAYLOAD),
        (w.Success1(7, 32).encode(), w.FailureExplanation.INCORRECT_MESSAGE),
        (b"\1\1", w.FailureExplanation.INCORRECT_PAYLOAD),
    ],
    ids=["hash", "hl", "group", "null-dhv", "short-dhv", "t_id", "not-challenge", "short"],
)
def test_a_bad_challenge_is_answered_with_failure2(
    message: bytes, explanation: w.FailureExplanation
) -> None:
    tx, _ = _pair(HashId.SHA256, DhGroup.NULL, bidirectional=False)
    with pytest.raises(_Failed) as info:
        tx.reply(message)
    assert info.value.explanation == explanation


def test_success1_without_the_controllers_response_fails_a_bidirectional_host() -> None:
    tx, qa = _pair(HashId.SHA256, DhGroup.NULL, bidirectional=True)
    qa.send(tx.negotiate())
    tx.reply(qa.receive())
    with pytest.raises(_Failed) as info:
        tx.success1(w.Success1(7, 32).encode())  # RVALID 0
    assert info.value.explanation == w.FailureExplanation.FAILED


class _ClosingAfterReply:
    """A host queue whose controller is this project's :class:`QueueAuth`, but whose
    connection closes once the host's DH-HMAC-CHAP_Reply is in and refused, as Linux nvmet's
    can (its fatal error races the AUTH_Failure1 it queued)."""

    def __init__(self, qa: QueueAuth) -> None:
        self.qa = qa
        self.sent: list[int] = []  # the AUTH-Id of each message the host sent

    async def submit(
        self,
        sqe: bytearray,
        *,
        data_out: bytes | bytearray | memoryview | None = None,
        data_in: bytearray | memoryview | None = None,
        command: str = "command",
        check: bool = True,
    ) -> object:
        if w.AuthId.REPLY in self.sent:
            raise TransportError("10.0.0.1:4420 qid 0: the controller closed the connection")
        if data_out is not None:
            self.sent.append(data_out[1])
            self.qa.send(bytes(data_out))
        if data_in is not None:
            message = self.qa.receive()
            data_in[: len(message)] = message
        return None


def test_a_connection_closed_after_a_refused_reply_is_named_a_refusal() -> None:
    _, qa = _pair(HashId.SHA256, DhGroup.NULL, bidirectional=False)
    keys = DhchapKeys(DhchapSecret.parse(STRANGER), None)
    with pytest.raises(AuthenticationError) as info:
        run(
            authenticate(
                _ClosingAfterReply(qa),
                keys,
                qid=0,
                t_id=7,
                hostnqn=BI_NQN,
                subnqn=SUBNQN,
                timeout=5,
            )
        )
    assert str(info.value) == (
        "DH-HMAC-CHAP failed on qid 0: 10.0.0.1:4420 qid 0: the controller closed the "
        "connection after the host's DH-HMAC-CHAP_Reply, without a DH-HMAC-CHAP_Success1: the "
        "controller did not accept the host's response (a wrong host secret, --dhchap-secret, "
        "or the controller has another key for this host NQN)"
    )
    _assert_no_secret(str(info.value))
    assert qa.explanation == w.FailureExplanation.FAILED  # the controller refused the reply


def test_keys_hide_the_secret() -> None:
    keys = DhchapKeys(DhchapSecret.parse(BI_KEY), DhchapSecret.parse(BI_CTRL_KEY))
    _assert_no_secret(repr(keys), str(keys))


# -- over loopback NVMe/TCP against this project's target ---------------------------------------


@contextmanager
def auth_target(
    hash_name: str = "hmac(sha256)", dhgroup: str = "null", workers: int = 0
) -> Iterator[RunningTarget]:
    """A subsystem allowing two hosts: BI_NQN with a controller key, UNI_NQN without."""
    hosts = [
        Host(
            BI_NQN,
            extra_attrs={
                "dhchap": {
                    "key": BI_KEY,
                    "ctrl_key": BI_CTRL_KEY,
                    "hash": hash_name,
                    "dhgroup": dhgroup,
                }
            },
        ),
        Host(UNI_NQN, extra_attrs={"dhchap": {"key": UNI_KEY, "hash": hash_name}}),
    ]
    sub = Subsystem(
        nqn=SUBNQN,
        allow_any_host=False,
        allowed_hosts=[BI_NQN, UNI_NQN],
        namespaces=[Namespace(nsid=1, media=NamespaceMedia(kind="ram", size=4 << 20))],
    )
    cfg = TargetConfig(
        hosts=hosts, subsystems=[sub], ports=[Port(portid=1, trsvcid="0", subsystems=[SUBNQN])]
    )
    cfg.nvmf.max_io_queues = 2
    with running_target(workers, config=cfg) as running:
        yield running


def _hostid(nqn: str) -> uuid.UUID:
    return uuid.UUID(nqn.rsplit(":", 1)[1])


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _connect_and_verify(
    target: RunningTarget, hostnqn: str, secret: str | None, ctrl_secret: str | None
) -> int:
    addr = target.addr
    async with await connect(
        addr[0],
        SUBNQN,
        trsvcid=addr[1],
        hostnqn=hostnqn,
        hostid=_hostid(hostnqn),
        nr_io_queues=2,
        dhchap_secret=secret,
        dhchap_ctrl_secret=ctrl_secret,
    ) as ctrl:
        for i in range(len(ctrl.io_queues)):
            data = os.urandom(4096)
            await ctrl.write(1, i * 8, 8, data, queue=i)
            assert await ctrl.read(1, i * 8, 8, queue=i) == data
        return len(ctrl.io_queues)


@pytest.mark.parametrize(
    ("hash_name", "dhgroup", "bidirectional", "workers"),
    [
        ("hmac(sha256)", "null", False, 0),
        ("hmac(sha384)", "ffdhe2048", True, 0),
        ("hmac(sha512)", "ffdhe3072", True, 2),
    ],
    ids=["sha256-null-uni", "sha384-ffdhe2048-bi", "sha512-ffdhe3072-bi-workers"],
)
def test_right_secrets_authenticate_every_queue_and_do_io(
    caplog: pytest.LogCaptureFixture,
    hash_name: str,
    dhgroup: str,
    bidirectional: bool,
    workers: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    with auth_target(hash_name, dhgroup, workers) as target:
        if bidirectional:
            queues = run(_connect_and_verify(target, BI_NQN, BI_KEY, BI_CTRL_KEY))
        else:
            queues = run(_connect_and_verify(target, UNI_NQN, UNI_KEY, None))
    assert queues == 2
    host_lines = [r.getMessage() for r in caplog.records if r.name == "nvmf.host.auth"]
    expected = f"authenticated with {hash_name}, DH group {dhgroup}"
    assert sum(expected in line for line in host_lines) == 3, host_lines  # admin + 2 I/O
    assert all(("controller authenticated" in line) == bidirectional for line in host_lines)
    target_lines = [r.getMessage() for r in caplog.records if "host authenticated" in r.message]
    assert len(target_lines) >= 3
    _assert_no_secret(caplog.text)


def _refused(
    target: RunningTarget, hostnqn: str, secret: str | None, ctrl_secret: str | None = None
) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        run(_connect_and_verify(target, hostnqn, secret, ctrl_secret))
    return info.value


def _no_controllers_left(target: RunningTarget) -> None:
    for _ in range(100):
        if not target.service.subsystems[SUBNQN].controllers:
            return
        asyncio.run(asyncio.sleep(0.05))
    raise AssertionError("the target kept a controller of a refused host")


def test_wrong_secret_fails_with_the_controllers_failure1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with auth_target() as target:
        exc = _refused(target, UNI_NQN, STRANGER)
        _no_controllers_left(target)
    text = str(exc)
    assert text.startswith("DH-HMAC-CHAP failed on qid 0: the controller sent AUTH_Failure1")
    assert "explanation 0x01 (authentication failed)" in text
    assert exc.qid == 0 and exc.explanation == w.FailureExplanation.FAILED
    _assert_no_secret(text, caplog.text)


def test_missing_secret_fails_before_any_authentication_command() -> None:
    with auth_target() as target:
        exc = _refused(target, UNI_NQN, None)
    assert "requires authentication (Connect AUTHREQ.ATR)" in str(exc)
    assert "no host secret was given (--dhchap-secret)" in str(exc)


def test_wrong_controller_secret_fails_and_sends_failure2(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with auth_target("hmac(sha384)", "ffdhe2048") as target:
        exc = _refused(target, BI_NQN, BI_KEY, STRANGER)
        _no_controllers_left(target)  # the target got AUTH_Failure2 and ended the controller
    text = str(exc)
    assert "the controller's response does not match the controller secret" in text
    assert "the host sent AUTH_Failure2, explanation 0x01 (authentication failed)" in text
    assert "the host failed the controller's response" in caplog.text  # the target's side
    _assert_no_secret(text, caplog.text)


def test_controller_secret_the_target_does_not_have_fails() -> None:
    with auth_target() as target:
        exc = _refused(target, UNI_NQN, UNI_KEY, BI_CTRL_KEY)
    assert "AUTH_Failure1" in str(exc)


def test_secrets_are_checked_before_connecting() -> None:
    with pytest.raises(ValueError, match=r"^dhchap_secret: ") as info:
        run(connect("127.0.0.1", SUBNQN, trsvcid=9, dhchap_secret=BI_KEY[:-6] + "AAAA:"))
    _assert_no_secret(str(info.value))
    with pytest.raises(ValueError, match="needs the host's own secret"):
        run(connect("127.0.0.1", SUBNQN, trsvcid=9, dhchap_ctrl_secret=BI_CTRL_KEY))


def test_discovery_needs_no_secret_and_ignores_one() -> None:
    with auth_target() as target:
        log = run(discover(*target.addr, UNI_NQN, dhchap_secret=UNI_KEY))
    assert SUBNQN in [e.subnqn for e in log.entries]


# -- the CLI --------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cli_bytes(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def _connection(target: RunningTarget, hostnqn: str) -> list[str]:
    host, port = target.addr
    return ["-a", host, "-s", str(port), "-n", SUBNQN, "-q", hostnqn, "-I", str(_hostid(hostnqn))]


def test_cli_identify_write_read_with_secrets() -> None:
    with auth_target("hmac(sha384)", "ffdhe2048") as target:
        conn = _connection(target, BI_NQN)
        identify = _cli("identify", *conn, "-S", BI_KEY, "-C", BI_CTRL_KEY)
        write = _cli_bytes(
            "write", *conn, "--slba", "64", "--dhchap-secret", BI_KEY, "--dhchap-ctrl-secret",
            BI_CTRL_KEY, stdin=b"\x5a" * 4096,
        )  # fmt: skip
        read = _cli_bytes("read", *conn, "--slba", "64", "--nlb", "8", f"--dhchap-secret={BI_KEY}")
        bench = _cli(
            "bench", *conn, "-S", BI_KEY, "--runtime", "1", "--size", "1m", "--json", "--eta",
            "never", "--iodepth", "4",
        )  # fmt: skip
        wrong = _cli("identify", *conn, "-S", BI_KEY, "-C", STRANGER)
        missing = _cli("list", *conn)
    assert identify.returncode == 0, identify.stderr
    assert f"of {SUBNQN}" in identify.stdout
    assert write.returncode == 0, write.stderr
    assert read.returncode == 0, read.stderr
    assert read.stdout == b"\x5a" * 4096
    assert bench.returncode == 0, bench.stderr
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("nvmf identify: DH-HMAC-CHAP failed on qid 0: ")
    assert len(wrong.stderr.splitlines()) == 1
    assert missing.returncode == 1 and "no host secret was given" in missing.stderr
    for proc in (identify, bench, wrong, missing):
        _assert_no_secret(proc.stdout, proc.stderr)
    for raw in (write, read):
        _assert_no_secret(raw.stderr.decode())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-S", "DHHC-1:01:bm90IGEga2V5:"], "argument -S/--dhchap-secret: the key must be"),
        (["-S", UNI_KEY[:-8] + "AAAAAAA:"], "argument -S/--dhchap-secret: the key"),
        (["-S", UNI_KEY, "-C", "nonsense"], "argument -C/--dhchap-ctrl-secret: not a DH-HMAC"),
        (["-C", UNI_KEY], "needs the host's own secret (--dhchap-secret)"),
        (["-S", UNI_KEY, f"--dhchap-secrt={STRANGER}x"], "arguments: --dhchap-secrt=DHHC-1:<"),
    ],
    ids=["short", "crc", "ctrl-format", "ctrl-alone", "typo"],
)
def test_cli_bad_secrets_are_named_never_shown(argv: list[str], message: str) -> None:
    proc = _cli("identify", "-a", "127.0.0.1", "-s", "9", "-n", SUBNQN, *argv)
    assert proc.returncode == 2
    assert message in proc.stderr
    _assert_no_secret(proc.stdout, proc.stderr)
    assert "bm90IGEga2V5" not in proc.stderr


@pytest.mark.parametrize("command", ["discover", "identify", "read", "write", "list", "bench"])
def test_every_connecting_command_takes_the_secrets(command: str) -> None:
    text = _cli(command, "--help").stdout
    assert "-S DHHC-1:XX:KEY:, --dhchap-secret DHHC-1:XX:KEY:" in text
    assert "-C DHHC-1:XX:KEY:, --dhchap-ctrl-secret DHHC-1:XX:KEY:" in text
