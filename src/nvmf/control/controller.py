"""A controller of the dynamic controller model: created by an admin-queue Connect, joined by
I/O-queue Connects (by cntlid, host NQN and host ID), torn down with its admin queue."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from nvmf.protocol.controller import CcEffect, ControllerRegisters, KeepAlive
from nvmf.wire.fabrics import Cap
from nvmf.wire.logpage import ErrorInformationEntry

if TYPE_CHECKING:
    from nvmf.control.model import Port
    from nvmf.control.session import ControlSession
    from nvmf.control.subsystem import SubsystemRuntime

#: Error log entries kept (Identify Controller ELPE + 1).
ERROR_LOG_SLOTS = 128
#: Asynchronous Event Requests outstanding at once (AERL + 1).
AER_LIMIT = 4
#: Admin queue entries the host may use (Connect SQSIZE for qid 0 is at most this - 1).
ADMIN_QUEUE_DEPTH = 32


class Controller:
    """Runtime state of one controller: registers, queues, features, events, error log."""

    def __init__(
        self,
        cntlid: int,
        subsystem: SubsystemRuntime,
        port: Port,
        hostnqn: str,
        hostid: bytes,
        kato_ms: int,
        queue_depth: int,
    ) -> None:
        self.cntlid = cntlid
        self.subsystem = subsystem
        self.port = port
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.queue_depth = queue_depth
        cap = Cap(mqes=queue_depth - 1, to=15, mpsmin=0, mpsmax=0)
        self.regs = ControllerRegisters(cap=cap.encode(), vs=subsystem.vs)
        self.keep_alive = KeepAlive(kato_ms, time.monotonic())
        self.queues: dict[int, ControlSession] = {}
        #: Number of Queues granted (Set Features 07h); Connect checks qid against it.
        self.io_queues = subsystem.max_io_queues
        self.aec = 0  # Asynchronous Event Configuration
        self.wce = True  # Volatile Write Cache enable
        self.errors: deque[ErrorInformationEntry] = deque(maxlen=ERROR_LOG_SLOTS)
        self.error_count = 0
        self.aers: deque[asyncio.Future[int]] = deque()
        self.events: deque[int] = deque()
        self.changed_nsids: set[int] = set()
        #: Log pages (LID) whose Notice event was posted and which the host has not read with
        #: RAE clear since: no other event of that type until it does (Base 2.0 §5.2).
        self.masked_notices: set[int] = set()
        self.deleted = False

    # -- events --------------------------------------------------------------------------------
    def post_event(self, dw0: int) -> None:
        """Complete an outstanding AER with ``dw0`` (type, info, log page), or queue it."""
        while self.aers:
            fut = self.aers.popleft()
            if not fut.done():
                fut.set_result(dw0)
                return
        self.events.append(dw0)

    def post_notice(self, dw0: int) -> bool:
        """Post the Notice event ``dw0`` unless one for the same log page (bits 23:16) is
        masked, and mask that type until the host reads the page with RAE clear
        (:meth:`notice_read`), as Linux's nvmet does with ``aen_masked``: a host that does not
        read the page is not flooded.  True when posted."""
        lid = (dw0 >> 16) & 0xFF
        if lid in self.masked_notices:
            return False
        self.masked_notices.add(lid)
        self.post_event(dw0)
        return True

    def notice_read(self, lid: int, rae: bool) -> None:
        """The host read log page ``lid``: unless it asked to Retain Asynchronous Event, the
        page's Notice events are unmasked."""
        if not rae:
            self.masked_notices.discard(lid)

    def take_aer(self) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.events:
            fut.set_result(self.events.popleft())
        else:
            self.aers.append(fut)
        return fut

    def end_events(self) -> None:
        """End every held Asynchronous Event Request (the target is stopping): each completes
        with Command Abort Requested, now, while its admin queue can still send it."""
        for fut in self.aers:
            if not fut.done():
                fut.cancel()
        self.aers.clear()

    def record_error(self, entry: ErrorInformationEntry) -> None:
        self.error_count += 1
        entry.error_count = self.error_count
        self.errors.appendleft(entry)

    # -- life cycle ----------------------------------------------------------------------------
    def write_cc(self, value: int) -> CcEffect:
        effect = self.regs.write_cc(value)
        if effect in (CcEffect.DISABLED, CcEffect.SHUTDOWN):
            self.close_io_queues("controller disabled or shut down")
        return effect

    def close_io_queues(self, reason: str) -> None:
        for qid, session in list(self.queues.items()):
            if qid:
                session.fabric.close(reason)

    def delete(self, reason: str) -> None:
        """Tear the controller down: every queue closes, AERs end, the cntlid is free again."""
        if self.deleted:
            return
        self.deleted = True
        self.subsystem.controllers.pop(self.cntlid, None)
        self.end_events()
        for session in list(self.queues.values()):
            session.fabric.close(reason)
        self.queues.clear()
