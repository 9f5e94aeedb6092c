"""The control plane's side of the offload workers: spawn, hand queues over, restart, stop.

:class:`WorkerSet` starts ``count`` worker processes (:mod:`nvmf.offload.worker`), each pinned
to a core, and keeps a :class:`~nvmf.offload.channel.Channel` to each.  Every medium the control
plane opened is shared with every worker (:meth:`WorkerSet.add_media`), so a worker started
later (a replacement for one that died) gets the same set.  After an I/O queue's Connect the
control plane calls :meth:`WorkerSet.attach`: the queue goes to the worker serving the fewest
queues, so one host's queues spread across workers, and the control plane closes its own
descriptor of it.

What workers report comes back through :class:`WorkerEvents`.  A worker that dies takes only
its own queues down: the control plane is told which (:meth:`WorkerEvents.worker_queue_closed`),
logs it, and starts a replacement in the same slot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nvmf.media.base import Media, WorkerShare
from nvmf.offload.channel import Channel, channel_pair
from nvmf.offload.context import IoContextSpec, MediaKey, NamespaceCounters, counters_as_data
from nvmf.offload.tally import CounterTable, RowAssigner
from nvmf.offload.worker import CtrlKey, Handover
from nvmf.transport.base import Placement, PortInfo
from nvmf.wire.sqe import Sqe
from nvmf.wire.status import SC, Status

log = logging.getLogger(__name__)

#: How long a new worker may take to say it is ready (a Python start under emulation is slow).
START_TIMEOUT_S = 180.0
#: How long a worker may take to make a placed queue (an RDMA QP) and answer.
PLACE_TIMEOUT_S = 30.0
#: How long a worker may take to count a controller's commands (:meth:`WorkerSet.traffic`).
TRAFFIC_TIMEOUT_S = 5.0
#: How long a stopping worker may take to finish its commands and exit.
STOP_TIMEOUT_S = 15.0
#: A worker that keeps dying before it is ready is restarted after 0.5 s, 1 s, 2 s, ... at most
#: this long: a broken installation must not become a crash loop that floods the log.
RESTART_BACKOFF_MAX_S = 30.0


class WorkerEvents(Protocol):
    """What the control plane hears from its workers."""

    def worker_queue_closed(self, ctrl_key: CtrlKey, qid: int, reason: str) -> None:
        """A handed-over queue is gone (host closed it, fatal error, or its worker died)."""
        ...

    async def forwarded(self, ctrl_key: CtrlKey, qid: int, sqe: Sqe) -> Status:
        """The status of a command the data plane does not execute."""
        ...

    async def forwarded_data(
        self, ctrl_key: CtrlKey, qid: int, sqe: Sqe, data: bytes | None
    ) -> tuple[Status, bytes]:
        """The same for a command with data (Authentication Send brings its ``data``;
        Receive's data comes back with the status)."""
        ...

    def worker_command_failed(
        self, ctrl_key: CtrlKey, qid: int, cid: int, opcode: int, nsid: int, status: Status
    ) -> None:
        """A command on a handed-over queue failed (for the controller's error log)."""
        ...

    async def placed_command(
        self, worker: int, key: int, port: PortInfo, raw: bytes, data: bytes
    ) -> tuple[bytes, Handover | None]:
        """Execute a command of a queue placed in ``worker`` before its Connect attached it
        (the Connect itself): its completion, and after a successful Connect what the worker
        needs to serve the queue (the CQE is in it too)."""
        ...


@dataclass(eq=False)
class WorkerHandle:
    """One worker slot: its process, channel and the queues it serves."""

    index: int
    cpu: int
    proc: subprocess.Popen[bytes] | None = None
    channel: Channel | None = None
    pid: int = 0
    ready: asyncio.Future[None] | None = None
    queues: set[tuple[CtrlKey, int]] = field(default_factory=set)
    counter_waits: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    traffic_waits: dict[int, asyncio.Future[int]] = field(default_factory=dict)
    stopping: bool = False
    #: Queues placed in this worker before their Connect (NVMe/RDMA), by key: what to call
    #: when one ends; and the placements not answered yet.
    placed: dict[int, tuple[Callable[[str], None], PortInfo]] = field(default_factory=dict)
    placing: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    restarts: int = 0
    #: Deaths in a row before the worker was ready (the restart backoff's exponent).
    failed_starts: int = 0
    #: The slot's namespace counters, shared with each worker it runs in turn.
    table: CounterTable = field(default_factory=CounterTable)

    def serves(self, ctrl_key: CtrlKey, qid: int | None = None) -> bool:
        """Whether this worker serves a queue of ``ctrl_key`` (queue ``qid``, if given)."""
        if qid is not None:
            return (ctrl_key, qid) in self.queues
        return any(k == ctrl_key for k, _ in self.queues)

    def queues_of(self) -> list[tuple[str, int]]:
        """(subsystem NQN, qid) of each queue this worker serves, sorted."""
        return sorted((key[0], qid) for key, qid in self.queues)


class WorkerSet:
    """``count`` offload workers and the queues handed to them."""

    def __init__(
        self,
        count: int,
        events: WorkerEvents,
        *,
        staging_bytes: int,
        transports: list[str] | None = None,
        idle_timeout: float = 30.0,
        unpreempted_sends: bool = True,
        log_level: int = logging.WARNING,
    ) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.workers = [WorkerHandle(i, cpus[i % len(cpus)]) for i in range(count)]
        self.events = events
        self.staging_bytes = staging_bytes
        #: Fabric types a worker loads before it says it is ready (not on its first queue).
        self.transports = transports or []
        self.idle_timeout = idle_timeout
        self.unpreempted_sends = unpreempted_sends
        self.log_level = log_level
        self._media: dict[MediaKey, Media] = {}
        #: Each namespace's row in every slot's counter table.
        self._rows = RowAssigner()
        self._token = 0
        self._stopping = False
        self._started = False

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every worker and wait until each is ready."""
        for w in self.workers:
            self._spawn(w)
        await asyncio.gather(*(self._wait_ready(w) for w in self.workers))
        self._started = True

    def _spawn(self, w: WorkerHandle) -> None:
        ours, theirs = channel_pair()
        cmd = [
            sys.executable,
            "-m",
            "nvmf.offload.worker",
            "--channel",
            str(theirs.fileno()),
            "--index",
            str(w.index),
            "--cpu",
            str(w.cpu),
            "--parent",
            str(os.getpid()),
            "--staging-bytes",
            str(self.staging_bytes),
            "--log-level",
            str(self.log_level),
            f"--idle-timeout={self.idle_timeout}",
            *([] if self.unpreempted_sends else ["--preemptible-sends"]),
            *(f"--transport={t}" for t in self.transports),
        ]
        w.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        w.pid = w.proc.pid
        w.stopping = False
        w.ready = asyncio.get_running_loop().create_future()
        w.channel = Channel(
            ours, functools.partial(self._on_message, w), functools.partial(self._on_closed, w)
        )
        w.channel.send(("tally",), [w.table.fd])
        for key, media in self._media.items():
            self._send_media(w, key, media)
        w.channel.send(("start",))  # answered once the media above are adopted

    async def _wait_ready(self, w: WorkerHandle) -> None:
        assert w.ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(w.ready), START_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"offload worker {w.index} did not start") from None

    def stop_replacing(self) -> None:
        """The target is stopping: a worker that dies from now on is not replaced (its queues
        still end).  Called before the control plane drains, so that a death in that window
        does not start a worker only to stop it."""
        self._stopping = True

    async def stop(self) -> None:
        """Graceful: each worker completes its commands in flight, closes its queues, exits."""
        self._stopping = True
        for w in self.workers:
            if w.channel is not None and not w.channel.closed:
                w.stopping = True
                w.channel.send(("stop",))
        loop = asyncio.get_running_loop()
        for w in self.workers:
            proc = w.proc
            if proc is None:
                continue
            try:
                await asyncio.wait_for(loop.run_in_executor(None, proc.wait), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("offload worker %d did not stop in time: killed", w.index)
                proc.kill()
                await loop.run_in_executor(None, proc.wait)
            if w.channel is not None:
                w.channel.close()
        for w in self.workers:
            w.table.close()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    # -- media and queues ----------------------------------------------------------------------
    def add_media(self, key: MediaKey, media: Media) -> None:
        """Share ``media`` with every worker, now and after any restart."""
        self._media[key] = media
        for w in self.workers:
            if w.channel is not None:
                self._send_media(w, key, media)

    def remove_media(self, key: MediaKey) -> None:
        media = self._media.pop(key, None)
        if media is not None:
            for w in self.workers:
                if w.channel is not None:
                    w.channel.send(("media_close", key))
                if isinstance(media, WorkerShare):
                    media.unshare(w.index)

    def _send_media(self, w: WorkerHandle, key: MediaKey, media: Media) -> None:
        assert w.channel is not None
        row = self._rows.row_of(key)
        if isinstance(media, WorkerShare):
            handle, fds = media.share_with(w.index)
            w.channel.send(("media", key, handle, row), fds)
            return
        handle, fd = media.share()
        w.channel.send(("media", key, handle, row), [] if fd is None else [fd])

    def _unshare(self, w: WorkerHandle) -> None:
        """Worker ``w`` is gone: media that gave it resources of its own free them."""
        for key, media in self._media.items():
            if isinstance(media, WorkerShare):
                try:
                    media.unshare(w.index)
                except Exception:  # the rest of the clean-up must still run
                    log.exception("offload worker %d: releasing %s failed", w.index, key)

    def attach(self, handover: Handover, fd: int) -> int:
        """Hand a queue over to the least busy worker; ``fd`` is closed here.  The index of the
        worker that serves it."""
        try:
            live = self.ready_workers()
            if not live:
                raise RuntimeError("no offload worker is ready")
            w = min(live, key=lambda w: (len(w.queues), w.index))
            assert w.channel is not None
            w.queues.add((handover.ctrl_key, handover.qid))
            w.channel.send(("attach", handover), [fd])
            return w.index
        finally:
            os.close(fd)

    async def place(
        self, placement: Placement, ended: Callable[[str], None]
    ) -> tuple[int, int, dict[str, Any]]:
        """:class:`~nvmf.transport.base.QueuePlacer`: the least busy worker makes the queue."""
        live = self.ready_workers()
        if not live:
            raise RuntimeError("no offload worker is ready")
        w = min(live, key=lambda w: (len(w.queues) + len(w.placed), w.index))
        assert w.channel is not None
        self._token += 1
        key = self._token
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        w.placing[key] = answer
        w.placed[key] = (ended, placement.port)
        w.channel.send(("place", key, placement))
        try:
            result = await asyncio.wait_for(answer, PLACE_TIMEOUT_S)
        except TimeoutError:
            w.placed.pop(key, None)
            self.end(w.index, key, "the worker did not answer in time")
            raise RuntimeError(f"offload worker {w.index} did not make the queue") from None
        finally:
            w.placing.pop(key, None)
        if isinstance(result, str):
            w.placed.pop(key, None)
            raise RuntimeError(result)
        return w.index, key, result

    def end(self, worker: int, key: int, reason: str) -> None:
        """:class:`~nvmf.transport.base.QueuePlacer`: close a placed queue in its worker."""
        w = self.workers[worker]
        if w.placed.pop(key, None) is not None and w.channel is not None:
            w.channel.send(("unplace", key, reason))

    def ready_workers(self) -> list[WorkerHandle]:
        """Workers that said they are ready and still run.  A replacement still starting is
        left out: a queue handed to it would wait for its start (a minute, under emulation)
        with its Connect unanswered."""
        return [
            w
            for w in self.workers
            if w.channel is not None
            and not w.channel.closed
            and w.ready is not None
            and w.ready.done()
            and not w.ready.cancelled()
        ]

    def update_context(self, ctrl_key: CtrlKey, spec: IoContextSpec) -> None:
        """A controller's I/O context changed: every worker serving its queues gets the new one."""
        for w in self.workers:
            if w.channel is not None and w.serves(ctrl_key):
                w.channel.send(("context", ctrl_key, spec))

    def detach(self, ctrl_key: CtrlKey, qid: int | None, reason: str) -> None:
        """Close a controller's handed-over queues (all, or ``qid``)."""
        for w in self.workers:
            if w.channel is not None and w.serves(ctrl_key, qid):
                w.channel.send(("detach", ctrl_key, qid, reason))

    def authenticated(self, ctrl_key: CtrlKey, qid: int) -> None:
        """A queue born in a worker (NVMe/RDMA) finished its authentication: its worker stops
        forwarding every command on it and serves it (before the last command's answer)."""
        for w in self.workers:
            if w.channel is not None and w.serves(ctrl_key, qid):
                w.channel.send(("authenticated", ctrl_key, qid))

    def namespace_counters(self) -> list[dict[MediaKey, NamespaceCounters]]:
        """Each slot's namespace counters as they stand, read from its table: whatever its
        workers counted, the dead ones' included, and without asking a worker anything."""
        return [w.table.read(self._rows.rows) for w in self.workers]

    async def counters(self) -> list[dict[str, Any]]:
        """Every live worker's counters (asked over the channel; the I/O path is not touched);
        the per-namespace ones from the slots' tables (:meth:`namespace_counters`)."""
        loop = asyncio.get_running_loop()
        waits = []
        for w in self.workers:
            if w.channel is None or w.channel.closed:
                continue
            self._token += 1
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            w.counter_waits[self._token] = fut
            w.channel.send(("counters", self._token))
            waits.append(fut)
        results = await asyncio.wait_for(asyncio.gather(*waits), 5.0)
        return list(results)

    async def traffic(self, ctrl_key: CtrlKey) -> int | None:
        """How many commands the workers have received on ``ctrl_key``'s queues, summed over
        the queues they serve now (so the figure may fall when a queue closes); None when a
        worker did not answer within :data:`TRAFFIC_TIMEOUT_S`.  The control plane asks when
        the controller's Keep Alive Timer runs out for what it saw itself (traffic-based
        keep-alive): one message per worker and timeout, nothing on the I/O path."""
        loop = asyncio.get_running_loop()
        asked: list[tuple[WorkerHandle, int]] = []
        for w in self.workers:
            if w.channel is None or w.channel.closed or not w.serves(ctrl_key):
                continue
            self._token += 1
            w.traffic_waits[self._token] = loop.create_future()
            w.channel.send(("traffic", self._token, ctrl_key))
            asked.append((w, self._token))
        waits = [w.traffic_waits[token] for w, token in asked]
        try:
            return sum(await asyncio.wait_for(asyncio.gather(*waits), TRAFFIC_TIMEOUT_S))
        except TimeoutError:
            return None
        finally:
            for w, token in asked:  # answered, or never to be waited for again
                w.traffic_waits.pop(token, None)

    # -- from the workers ----------------------------------------------------------------------
    def _on_message(self, w: WorkerHandle, msg: tuple[Any, ...], fds: list[int]) -> None:
        for fd in fds:  # workers send no descriptors
            os.close(fd)
        kind = msg[0]
        if kind == "ready":
            if w.ready is not None and not w.ready.done():
                w.ready.set_result(None)
        elif kind == "closed":
            _, ctrl_key, qid, reason = msg
            w.queues.discard((ctrl_key, qid))
            self.events.worker_queue_closed(ctrl_key, qid, reason)
        elif kind == "forward":
            _, token, ctrl_key, qid, raw = msg
            asyncio.get_running_loop().create_task(self._answer(w, token, ctrl_key, qid, raw))
        elif kind == "forward_data":
            _, token, ctrl_key, qid, raw, data = msg
            asyncio.get_running_loop().create_task(
                self._answer_data(w, token, ctrl_key, qid, raw, data)
            )
        elif kind == "placed":
            fut = w.placing.get(msg[1])
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "place_ended":
            entry = w.placed.pop(msg[1], None)
            if entry is not None:
                entry[0](msg[2])
        elif kind == "placed_command":
            _, token, key, raw, data = msg
            asyncio.get_running_loop().create_task(self._execute_placed(w, token, key, raw, data))
        elif kind == "error":
            _, ctrl_key, qid, cid, opcode, nsid, status = msg
            self.events.worker_command_failed(ctrl_key, qid, cid, opcode, nsid, status)
        elif kind == "traffic":
            seen = w.traffic_waits.pop(msg[1], None)
            if seen is not None and not seen.done():
                seen.set_result(msg[2])
        elif kind == "counters":
            fut = w.counter_waits.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(
                    {
                        "worker": w.index,
                        "pid": w.pid,
                        "cpu": w.cpu,
                        "restarts": w.restarts,
                        **msg[2],
                        "namespaces": counters_as_data(w.table.read(self._rows.rows)),
                    }
                )
        else:
            log.error("offload worker %d sent an unknown message %r", w.index, kind)

    async def _answer(
        self, w: WorkerHandle, token: int, ctrl_key: CtrlKey, qid: int, raw: bytes
    ) -> None:
        try:
            status = await self.events.forwarded(ctrl_key, qid, Sqe.decode(raw))
        except Exception:
            log.exception("forwarded command on %s qid %d", ctrl_key, qid)
            status = Status(SC.INTERNAL, dnr=False)
        if w.channel is not None:
            w.channel.send(("status", token, status))

    async def _answer_data(
        self,
        w: WorkerHandle,
        token: int,
        ctrl_key: CtrlKey,
        qid: int,
        raw: bytes,
        data: bytes | None,
    ) -> None:
        try:
            status, payload = await self.events.forwarded_data(ctrl_key, qid, Sqe.decode(raw), data)
        except Exception:
            log.exception("forwarded command on %s qid %d", ctrl_key, qid)
            status, payload = Status(SC.INTERNAL, dnr=False), b""
        if w.channel is not None:
            w.channel.send(("status_data", token, status, payload))

    async def _execute_placed(
        self, w: WorkerHandle, token: int, key: int, raw: bytes, data: bytes
    ) -> None:
        entry = w.placed.get(key)
        if entry is None:  # the queue ended meanwhile: its command goes unanswered with it
            return
        cqe, handover = await self.events.placed_command(w.index, key, entry[1], raw, data)
        if handover is not None:
            w.queues.add((handover.ctrl_key, handover.qid))
        if w.channel is not None:
            w.channel.send(("connected", token, cqe, handover))

    def _on_closed(self, w: WorkerHandle) -> None:
        """A worker's channel closed: it exited or died.  Its queues are gone with it."""
        lost, w.queues = w.queues, set()
        placed, w.placed = w.placed, {}
        for fut in w.placing.values():
            if not fut.done():
                fut.set_result(f"offload worker {w.index} exited")
        for ended, _port in placed.values():
            ended(f"offload worker {w.index} exited")
        for fut in w.counter_waits.values():
            if not fut.done():
                fut.set_result(
                    {
                        "worker": w.index,
                        "pid": w.pid,
                        "cpu": w.cpu,
                        "restarts": w.restarts,
                        "dead": True,
                    }
                )
        w.counter_waits.clear()
        for seen in w.traffic_waits.values():  # its queues are gone, and their commands
            if not seen.done():
                seen.set_result(0)
        w.traffic_waits.clear()
        for ctrl_key, qid in lost:
            self.events.worker_queue_closed(ctrl_key, qid, f"offload worker {w.index} exited")
        self._unshare(w)
        if self._stopping or w.stopping:
            return
        code = w.proc.poll() if w.proc is not None else None
        if w.ready is not None and not w.ready.done():  # died before it was ready
            w.ready.set_exception(
                RuntimeError(
                    f"offload worker {w.index} (pid {w.pid}) exited before it was ready "
                    f"(exit status {code}); its messages are above"
                )
            )
            if not self._started:
                return  # start() fails with that error: nothing to restart
            w.failed_starts += 1
            died = None
        else:
            w.failed_starts = 0
            died = len(lost)
        asyncio.get_running_loop().create_task(self._restart(w, died))

    async def _restart(self, w: WorkerHandle, died_with: int | None) -> None:
        """Reap ``w``'s process, say how it ended (with ``died_with`` queues, for a worker
        that was serving: its channel closes before the kernel has its exit status, so the
        status is known only here), then start another."""
        pid = w.pid
        code = None
        if w.proc is not None:
            code = await asyncio.get_running_loop().run_in_executor(None, w.proc.wait)
        if died_with is not None:
            log.error(
                "offload worker %d (pid %d) died (%s) with %d queues; starting another",
                w.index,
                pid,
                _how_ended(code),
                died_with,
            )
        if w.failed_starts:
            delay = min(RESTART_BACKOFF_MAX_S, 0.5 * 2 ** (w.failed_starts - 1))
            log.error(
                "offload worker %d failed to start %d time(s) in a row; next try in %.1f s",
                w.index,
                w.failed_starts,
                delay,
            )
            await asyncio.sleep(delay)
        if self._stopping:
            return
        w.restarts += 1
        self._spawn(w)
        try:
            await self._wait_ready(w)
        except RuntimeError as exc:
            log.error("%s", exc)


def _how_ended(code: int | None) -> str:
    """A worker's exit status as a person reads it: ``killed by SIGKILL``, ``exit status 1``."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
