"""A target out of file descriptors (issue 8): the listener pauses instead of spinning on a
failing ``accept``, logs the shortage once, and serves again once descriptors are free."""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmf.wire import tcp as w
from tests.target.conftest import running_target

ROOT = Path(__file__).resolve().parents[2]
#: Descriptors the target has left once it listens.
SPARE = 6
#: Seconds the test holds the target at its limit.
HOLD = 2.0


class FdLimitedTarget:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc, self.addr, self.log = proc, ("127.0.0.1", port), log

    def cpu_seconds(self) -> float:
        """User plus system CPU time the target process used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


@pytest.fixture
def fd_limited(tmp_path: Path) -> Iterator[FdLimitedTarget]:
    log = tmp_path / "target.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.target.fdlimit_target", str(SPARE)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.strip().isdigit(), f"target did not start: {log.read_text()}"
        yield FdLimitedTarget(proc, int(line), log)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _initialized(sock: socket.socket, timeout: float) -> bool:
    """Whether the target answers the ICReq already sent on ``sock`` within ``timeout``."""
    sock.settimeout(timeout)
    try:
        got = b""
        while len(got) < 128:
            chunk = sock.recv(128 - len(got))
            if not chunk:
                return False
            got += chunk
        return True
    except TimeoutError:
        return False


def _open(target: FdLimitedTarget) -> socket.socket:
    sock = socket.create_connection(target.addr, timeout=5)
    sock.sendall(w.icreq())
    return sock


def test_out_of_descriptors_pauses_accepting_and_recovers(fd_limited: FdLimitedTarget) -> None:
    target = fd_limited
    served: list[socket.socket] = []
    waiting: list[socket.socket] = []
    try:
        # Connect until the target has no descriptor left for the next connection.
        for _ in range(SPARE + 64):
            sock = _open(target)
            if _initialized(sock, 2.0):
                served.append(sock)
            else:
                waiting.append(sock)
                break
        assert waiting, "the target never ran out of descriptors"
        waiting += [_open(target) for _ in range(2)]  # more in the listen backlog

        cpu = target.cpu_seconds()
        time.sleep(HOLD)
        cpu = target.cpu_seconds() - cpu
        lines = target.log_lines()
        assert cpu < 0.25 * HOLD, f"{cpu:.2f} s of CPU in {HOLD} s out of descriptors"
        shortage = [line for line in lines if "accept" in line]
        assert 1 <= len(shortage) <= 2, shortage[:10]
        assert len(lines) < 50, lines[-10:]

        # Descriptors come back: every waiting connection is served, and new ones too.
        for sock in served:
            sock.close()
        served = []
        assert all(_initialized(sock, 5.0) for sock in waiting)
        fresh = _open(target)
        waiting.append(fresh)
        assert _initialized(fresh, 5.0)
    finally:
        for sock in served + waiting:
            sock.close()
    assert target.proc.poll() is None, "the target died"


class _FailingAccept:
    """``socket.socket.accept`` failing with ``code`` while ``failing`` is set."""

    def __init__(self, code: int) -> None:
        self.code, self.failing, self.calls = code, True, 0
        self.real = socket.socket.accept

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def accept(sock: socket.socket) -> tuple[socket.socket, object]:
            if self.failing:
                self.calls += 1
                raise OSError(self.code, os.strerror(self.code))
            return self.real(sock)

        monkeypatch.setattr(socket.socket, "accept", accept)


def _accept_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "accept" in r.getMessage()]


def test_a_failure_of_one_connection_does_not_pause_the_listener(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ECONNABORTED (the connection was reset while queued) concerns that connection only."""
    caplog.set_level(logging.INFO, logger="nvmf")
    fake = _FailingAccept(errno.ECONNABORTED)
    with running_target(0) as target:
        fake.install(monkeypatch)
        sock = socket.create_connection(target.addr, timeout=5)
        try:
            sock.sendall(w.icreq())
            deadline = time.monotonic() + 5
            while fake.calls < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            fake.failing = False
            assert _initialized(sock, 0.5)  # no back-off was waiting
        finally:
            sock.close()
        monkeypatch.undo()
    assert fake.calls >= 3
    assert not _accept_lines(caplog)


def test_a_shortage_is_logged_once_and_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvmf")
    fake = _FailingAccept(errno.ENFILE)
    with running_target(0) as target:
        fake.install(monkeypatch)
        sock = socket.create_connection(target.addr, timeout=5)
        try:
            sock.sendall(w.icreq())
            time.sleep(HOLD)
            failed_calls = fake.calls
            fake.failing = False
            assert _initialized(sock, 5.0)
        finally:
            sock.close()
        monkeypatch.undo()
    # Back-off from 50 ms doubling to 1 s: a handful of tries in HOLD seconds, not thousands.
    assert 2 <= failed_calls <= 10, failed_calls
    lines = _accept_lines(caplog)
    assert len(lines) == 2, lines
    assert "cannot accept connections" in lines[0] and "Too many open files in system" in lines[0]
    assert "accepting connections again" in lines[1]
