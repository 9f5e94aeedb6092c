"""The control plane's channel to one worker: pickled messages with descriptors attached.

A ``SOCK_SEQPACKET`` Unix socket pair keeps message boundaries, so one ``sendmsg`` is one
message; descriptors (a handed-over queue's socket, a RAM namespace's memfd, a file's
descriptor) travel as ``SCM_RIGHTS`` with the message that names them.  Both sides are the same
program, so pickle is safe here: nothing from the network is ever unpickled.

Messages are tuples whose first item names them; :mod:`nvmf.offload.worker` lists them.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from collections.abc import Callable, Sequence
from typing import Any

#: The largest message (a queue handover with its pending bytes and context is far smaller).
MAX_MESSAGE = 1 << 20
#: Descriptors one message may carry.
MAX_FDS = 8

Handler = Callable[[tuple[Any, ...], list[int]], None]


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The control plane's end and the worker's end (the latter to pass to the child)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return a, b


class Channel:
    """One end of a worker channel, driven by an event loop.

    ``on_message(msg, fds)`` runs for each message received (it owns the descriptors);
    ``on_closed()`` once, when the other end is gone.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_message: Handler,
        on_closed: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._on_closed = on_closed
        self.closed = False
        self.loop.add_reader(sock.fileno(), self._readable)

    def send(self, msg: tuple[Any, ...], fds: Sequence[int] = ()) -> None:
        """Send one message (blocking briefly if the peer is slow: messages are control, rare)."""
        if self.closed:
            return
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.setblocking(True)
        try:
            socket.send_fds(self.sock, [data], list(fds))
        except OSError:
            self.close()
        finally:
            if not self.closed:
                self.sock.setblocking(False)

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not data:
                self.close()
                return
            self._on_message(pickle.loads(data), fds)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        self._on_closed()
