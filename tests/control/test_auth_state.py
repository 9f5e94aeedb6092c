"""The controller's DH-HMAC-CHAP state machine (sans-IO): failure explanations for each bad
message, re-authentication, and no secret in the log."""

from __future__ import annotations

import logging

import pytest

from nvmf.control.auth import HostKeys, QueueAuth, Step, host_keys
from nvmf.control.model import Host
from nvmf.protocol.dhchap import DhchapSecret, DhGroup, HashId, generate_secret, host_response
from nvmf.wire import auth as w

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"
SUBNQN = "nqn.2024-01.io.nvmf:s"
KEY_TEXT = generate_secret(1, 32, HOSTNQN)
KEY = DhchapSecret.parse(KEY_TEXT)


def _auth(hash_id: HashId = HashId.SHA256, group: DhGroup = DhGroup.NULL) -> QueueAuth:
    return QueueAuth(HostKeys(KEY, None, hash_id, group), HOSTNQN, SUBNQN, 0)


def _negotiate(auth: QueueAuth, t_id: int = 1, **kw: object) -> None:
    fields: dict[str, object] = {"hash_ids": (1, 2, 3), "dh_group_ids": (0, 1)} | kw
    auth.send(w.Negotiate(t_id, **fields).encode())  # type: ignore[arg-type]


def _good_reply(auth: QueueAuth, challenge: w.Challenge, t_id: int = 1) -> bytes:
    hash_id = HashId(challenge.hashid)
    rval = host_response(
        hash_id, KEY.transformed(HOSTNQN), challenge.cval, challenge.seqnum, t_id, HOSTNQN, SUBNQN
    )
    return w.Reply(t_id, rval).encode()


def _failure(auth: QueueAuth) -> w.Failure:
    msg = w.Failure.decode(auth.receive())
    assert msg.auth_id == w.AuthId.FAILURE1 and msg.rescode == w.FailureReason.FAILED
    assert auth.failed and not auth.authenticated
    return msg


def test_unidirectional_success_then_reauthentication() -> None:
    auth = _auth()
    _negotiate(auth)
    ch = w.Challenge.decode(auth.receive())
    assert (ch.hashid, ch.dhgid, len(ch.cval), ch.dhv) == (1, 0, 32, b"")
    auth.send(_good_reply(auth, ch))
    assert auth.authenticated  # no controller challenge: done at the Reply
    s1 = w.Success1.decode(auth.receive())
    assert (s1.hl, s1.rval) == (32, b"") and auth.finished
    _negotiate(auth, t_id=2)  # re-authentication: the queue stays usable meanwhile
    assert auth.authenticated and auth.in_progress
    ch2 = w.Challenge.decode(auth.receive())
    assert ch2.seqnum != ch.seqnum and ch2.cval != ch.cval
    auth.send(_good_reply(auth, ch2, t_id=2))
    w.Success1.decode(auth.receive())
    assert auth.completed == 2


@pytest.mark.parametrize(
    ("negotiate", "explanation"),
    [
        ({"hash_ids": (9,)}, w.FailureExplanation.HASH_UNUSABLE),
        ({"dh_group_ids": (7,)}, w.FailureExplanation.DHGROUP_UNUSABLE),
        ({"sc_c": 1}, w.FailureExplanation.CONCAT_MISMATCH),
        ({"napd": 2}, w.FailureExplanation.INCORRECT_PAYLOAD),
        ({"authid": 2}, w.FailureExplanation.INCORRECT_PAYLOAD),
    ],
    ids=["hash", "dhgroup", "concat", "napd", "authid"],
)
def test_negotiate_failures(negotiate: dict[str, object], explanation: int) -> None:
    auth = _auth()
    _negotiate(auth, **negotiate)
    assert _failure(auth).rescode_exp == explanation


def test_falls_back_to_the_hosts_hash_and_group() -> None:
    auth = _auth(HashId.SHA512, DhGroup.FFDHE8192)
    _negotiate(auth, hash_ids=(2,), dh_group_ids=(1,))
    ch = w.Challenge.decode(auth.receive())
    assert (ch.hashid, ch.dhgid, len(ch.dhv)) == (2, 1, 256)


def test_wrong_response_fails() -> None:
    auth = _auth()
    _negotiate(auth)
    auth.receive()
    auth.send(w.Reply(1, b"\0" * 32).encode())
    assert _failure(auth).rescode_exp == w.FailureExplanation.FAILED


def test_wrong_transaction_id_and_message_order() -> None:
    auth = _auth()
    _negotiate(auth, t_id=5)
    ch = w.Challenge.decode(auth.receive())
    auth.send(_good_reply(auth, ch, t_id=6))
    assert _failure(auth).rescode_exp == w.FailureExplanation.INCORRECT_PAYLOAD
    auth = _auth()
    auth.send(w.success2(1))  # Success2 before anything
    assert _failure(auth).rescode_exp == w.FailureExplanation.INCORRECT_MESSAGE
    auth = _auth()
    _negotiate(auth)
    auth.send(w.Reply(1, b"\0" * 32).encode())  # a Reply before the Challenge was read
    assert _failure(auth).rescode_exp == w.FailureExplanation.INCORRECT_MESSAGE


def test_truncated_and_bad_dh_values() -> None:
    auth = _auth()
    _negotiate(auth)
    auth.send(b"\x00")
    assert _failure(auth).rescode_exp == w.FailureExplanation.INCORRECT_PAYLOAD
    auth = _auth(group=DhGroup.FFDHE2048)
    _negotiate(auth)
    ch = w.Challenge.decode(auth.receive())
    assert len(ch.dhv) == 256
    auth.send(w.Reply(1, b"\0" * 32, dhv=b"\x01" * 10).encode())
    assert _failure(auth).rescode_exp == w.FailureExplanation.DHGROUP_UNUSABLE


def test_bidirectional_without_a_controller_key_fails() -> None:
    auth = _auth()
    _negotiate(auth)
    ch = w.Challenge.decode(auth.receive())
    good = w.Reply.decode(_good_reply(auth, ch))
    auth.send(w.Reply(1, good.rval, seqnum=3, cval=b"\x05" * 32, cvalid=True).encode())
    assert not auth.authenticated  # waits for the controller's side
    assert _failure(auth).rescode_exp == w.FailureExplanation.FAILED


def test_host_failure2_ends_at_once() -> None:
    auth = _auth()
    _negotiate(auth)
    auth.send(w.Failure(1, 1, auth_id=w.AuthId.FAILURE2).encode())
    assert auth.failed and auth.step is Step.FAILED


def test_no_secret_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = _auth(group=DhGroup.FFDHE2048)
    _negotiate(auth)
    auth.receive()
    auth.send(w.Reply(1, b"\0" * 32, dhv=b"\x02" * 256).encode())
    auth.receive()
    text = caplog.text
    assert "DH-HMAC-CHAP failed" in text
    assert KEY_TEXT.split(":")[2] not in text and KEY.key.hex() not in text
    assert repr(KEY) not in text or "bytes>" in repr(KEY)


def test_host_keys_from_the_config_name_the_field() -> None:
    good = Host(HOSTNQN, extra_attrs={"dhchap": {"key": KEY_TEXT, "hash": "hmac(sha384)"}})
    keys = host_keys([good], HOSTNQN)
    assert keys is not None and keys.hash_id is HashId.SHA384 and keys.dhgroup is DhGroup.NULL
    assert host_keys([good], "nqn.other") is None
    assert host_keys([Host(HOSTNQN)], HOSTNQN) is None
    bad = Host(HOSTNQN, extra_attrs={"dhchap": {"key": KEY_TEXT[:-6] + "AAAA:"}})
    with pytest.raises(ValueError) as info:
        host_keys([bad], HOSTNQN)
    assert str(info.value).startswith("hosts[0].dhchap.key: ")
    assert KEY_TEXT.split(":")[2][:20] not in str(info.value)
