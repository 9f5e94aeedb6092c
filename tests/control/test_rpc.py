"""The control socket's protocol (:mod:`nvmf.control.rpc`): one JSON request per line, one
answer, errors as messages, never a traceback, and two targets never sharing one socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvmf.control.rpc import (
    ControlServer,
    ControlSocketError,
    RequestError,
    request,
)


class Served:
    """A ControlServer on its own event loop in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.loop = asyncio.new_event_loop()
        self.calls: list[dict[str, Any]] = []

        async def echo(req: dict[str, Any]) -> Any:
            self.calls.append(req)
            return {"echo": req}

        async def refuse(req: dict[str, Any]) -> Any:
            raise RequestError("subsystems[0].nqn: no such subsystem")

        async def crash(req: dict[str, Any]) -> Any:
            raise KeyError("a bug")

        self.server = ControlServer(self.path, {"echo": echo, "refuse": refuse, "crash": crash})
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.server.start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "run" / "control.sock")
    try:
        yield s
    finally:
        s.close()


def raw(path: str, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(payload)
        with sock.makefile("rb") as f:
            answer: dict[str, Any] = json.loads(f.readline())
            return answer


def test_a_request_gets_its_handlers_result(served: Served) -> None:
    assert request(served.path, "echo", file="x.json") == {"echo": {"op": "echo", "file": "x.json"}}
    assert served.calls == [{"op": "echo", "file": "x.json"}]


def test_a_refused_request_raises_with_the_targets_message(served: Served) -> None:
    with pytest.raises(RequestError, match=r"^subsystems\[0\]\.nqn: no such subsystem$"):
        request(served.path, "refuse")


def test_a_handler_bug_is_an_internal_error_not_a_dead_server(served: Served) -> None:
    with pytest.raises(RequestError, match="crash: internal error"):
        request(served.path, "crash")
    assert request(served.path, "echo") == {"echo": {"op": "echo"}}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json\n", "not JSON"),
        (b'["status"]\n', '"op" string'),
        (b'{"op": 5}\n', '"op" string'),
        (b'{"op": "shutdown"}\n', "unknown op 'shutdown' (known: crash, echo, refuse)"),
    ],
)
def test_malformed_requests_are_answered_with_what_is_wrong(
    served: Served, payload: bytes, message: str
) -> None:
    answer = raw(served.path, payload)
    assert answer["ok"] is False and message in answer["error"]


def test_the_socket_is_for_its_owner_only(served: Served) -> None:
    mode = os.stat(served.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(served.path)).st_mode) == 0o700


def test_a_second_server_on_a_live_socket_is_refused(served: Served) -> None:
    other = ControlServer(served.path, {})
    with pytest.raises(ControlSocketError, match="in use by another target"):
        served.run(other.start())
    assert request(served.path, "echo") == {"echo": {"op": "echo"}}  # the first still serves


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a target that was killed
    s = Served(path)
    try:
        assert request(str(path), "echo") == {"echo": {"op": "echo"}}
    finally:
        s.close()
    assert not path.exists()  # a closed server removes its socket


def test_no_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlSocketError, match="no target control socket at"):
        request(str(tmp_path / "none.sock"), "status")
