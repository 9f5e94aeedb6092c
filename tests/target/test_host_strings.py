"""Strings a host sends in Connect (issue 8): bytes that are not UTF-8 are a Connect Invalid
Parameters naming the field, and whatever a valid one contains cannot forge lines in the
target's log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from nvmf.wire import fabrics as f
from nvmf.wire.sqe import Cqe, Sqe
from nvmf.wire.status import SC
from tests.target.conftest import LOCKED_NQN, SUBNQN, RunningTarget, running_target
from tests.target.rawhost import HOSTNQN, RawHost, is_status, new_hostid, status_of

#: Not UTF-8: a lone continuation byte and an overlong encoding of "/".
NOT_UTF8 = b"nqn.2014-08.org.nvmexpress:\x80bad\xc0\xaf"
#: A valid UTF-8 host NQN full of characters that end or rewrite a log line.
EVIL_HOSTNQN = (
    HOSTNQN + "\nINFO nvmf.control.fabrics: controller 1 on nqn.forged\r\x1b[2K\x07\x7f\u2028\\"
)


def _connect_raw(host: RawHost, subsysnqn: bytes, hostnqn: bytes) -> Cqe:
    """An admin-queue Connect whose Connect data carries these NQN bytes as they are."""
    data = f.CONNECT_DATA.pack(new_hostid(), f.CNTLID_DYNAMIC, subsysnqn, hostnqn)
    cmd = f.ConnectCommand(cid=host.next_cid(), qid=0, sqsize=31)
    return host.command(Sqe.decode(cmd.encode()), data)


@pytest.mark.parametrize(
    ("subsysnqn", "hostnqn", "offset"),
    [
        (NOT_UTF8, HOSTNQN.encode(), f.CONNECT_DATA_OFF_SUBSYSNQN),
        (SUBNQN.encode(), NOT_UTF8, f.CONNECT_DATA_OFF_HOSTNQN),
    ],
    ids=["subsysnqn", "hostnqn"],
)
def test_nqn_that_is_not_utf8_is_connect_invalid_parameters(
    target: RunningTarget,
    caplog: pytest.LogCaptureFixture,
    subsysnqn: bytes,
    hostnqn: bytes,
    offset: int,
) -> None:
    caplog.set_level(logging.INFO)
    host = RawHost(target.addr)
    host.initialize()
    cqe = _connect_raw(host, subsysnqn, hostnqn)
    assert is_status(cqe, SC.CONNECT_INVALID_PARAM), status_of(cqe)
    assert cqe.dw0 == f.invalid_parameter_result(offset, in_data=True)
    # The same connection may try again with valid NQNs: nothing broke.
    assert status_of(host.connect(SUBNQN)).ok
    host.close()
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks


@pytest.fixture
def target_log() -> Iterator[tuple[RunningTarget, io.StringIO]]:
    """A one-process target whose ``nvmf`` log goes, formatted, to a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("nvmf")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with running_target(0) as running:
            yield running, out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_host_nqn_with_control_characters_cannot_forge_log_lines(
    target_log: tuple[RunningTarget, io.StringIO],
) -> None:
    target, out = target_log
    evil = EVIL_HOSTNQN.encode()
    for subsysnqn in (SUBNQN, LOCKED_NQN, "nqn.2024-01.io.nvmf:none\n\x1b]0;x\x07"):
        host = RawHost(target.addr)
        host.initialize()
        cqe = _connect_raw(host, subsysnqn.encode(), evil)
        assert is_status(cqe, SC.SUCCESS, dnr=False) == (subsysnqn == SUBNQN)
        host.close()
    lines = out.getvalue().splitlines()
    mentions = [line for line in lines if HOSTNQN in line]
    # One line each: the new controller, the refused host, the unknown subsystem.
    assert len(mentions) == 3, lines
    assert not any("nqn.forged" in line and HOSTNQN not in line for line in lines), lines
    for line in lines:
        assert line.isprintable(), repr(line)
    assert any("\\nINFO nvmf.control.fabrics" in line for line in mentions), mentions
    assert any("nqn.2024-01.io.nvmf:none\\n\\x1b]0;x\\x07" in line for line in mentions)
