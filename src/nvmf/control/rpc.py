"""The control socket: how ``nvmf status`` and ``nvmf config reload|save`` reach a running target.

``nvmf serve`` listens on a Unix stream socket (``--control-socket PATH``; by default
:func:`default_socket_path`: ``/run/nvmf/control.sock`` for root, else
``$XDG_RUNTIME_DIR/nvmf/control.sock``, else ``/tmp/nvmf-UID/control.sock``), created mode 0600
in a directory of mode 0700: whoever can connect can reconfigure the target.

The protocol is one JSON object per line each way, one request per connection::

    -> {"op": "status"}
    <- {"ok": true, "result": {...}}
    -> {"op": "reload"}
    <- {"ok": false, "error": "config.json: subsystems[0].nqn: ..."}

Operations are whatever the server was given (:class:`ControlServer` takes a table of
handlers; ``nvmf serve`` registers ``status``, ``reload``, ``config`` and ``pci_devices``).  A
handler returns JSON-ready data or raises :class:`RequestError` with the message the client
shows; anything else it raises is logged with its traceback here and reported as an internal
error, so a bug in one request never stops the target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server runs in an event loop; the client (nvmf status) needs none
    import asyncio

log = logging.getLogger(__name__)

#: The longest request line accepted.
MAX_REQUEST = 64 << 10
#: How long a client may take to send its request.
REQUEST_TIMEOUT_S = 10.0

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class RequestError(Exception):
    """A request the target refuses, with the message for the client (no traceback)."""


class ControlSocketError(Exception):
    """The control socket cannot be reached or served (the message says which path and why)."""


def default_socket_path() -> str:
    """Where a target listens when ``--control-socket`` is not given."""
    if os.geteuid() == 0:
        return "/run/nvmf/control.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "nvmf", "control.sock")
    return f"/tmp/nvmf-{os.getuid()}/control.sock"


def _is_live(path: str) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


class ControlServer:
    """Serves the handlers on a Unix socket at ``path`` until :meth:`close`."""

    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen.  A stale socket file (no one listening) is replaced; a live one is refused
        with :class:`ControlSocketError`, so two targets never share one socket."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ControlSocketError(f"control socket {self.path}: {exc.strerror}") from None
        if os.path.lexists(self.path):
            if _is_live(self.path):
                raise ControlSocketError(
                    f"control socket {self.path} is in use by another target "
                    "(give this one its own --control-socket)"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        import asyncio  # here: asyncio costs seconds per start in the guest, the client skips it

        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, limit=MAX_REQUEST
            )
        except OSError as exc:
            raise ControlSocketError(f"control socket {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            except (TimeoutError, ValueError, ConnectionError):
                return
            answer = await self._answer(line)
            writer.write(json.dumps(answer, sort_keys=True).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"the request is not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": 'the request needs an "op" string'}
        op = request["op"]
        handler = self.handlers.get(op)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown op {op!r} (known: {known})"}
        try:
            return {"ok": True, "result": await handler(request)}
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control socket request %r failed", op)
            return {"ok": False, "error": f"{op}: internal error (see the target's log)"}


def request(path: str, op: str, *, timeout: float = 60.0, **args: Any) -> Any:
    """Send one request to the target at ``path`` and return its result.

    Raises :class:`ControlSocketError` when no target listens there and :class:`RequestError`
    when the target refused the request.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            with sock.makefile("rb") as f:
                line = f.readline()
    except FileNotFoundError:
        raise ControlSocketError(
            f"no target control socket at {path} (is nvmf serve running? give its --control-socket)"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlSocketError(
                f"no target listens on {path} (is nvmf serve running?)"
            ) from None
        raise ControlSocketError(f"control socket {path}: {exc.strerror or exc}") from None
    if not line:
        raise ControlSocketError(f"control socket {path}: the target closed without answering")
    try:
        answer = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ControlSocketError(f"control socket {path}: not a JSON answer: {exc}") from None
    if not answer.get("ok"):
        raise RequestError(str(answer.get("error", "refused")))
    return answer.get("result")
