"""Sans-IO NVMe/TCP connection: bytes in, events out, buffers to send (DESIGN.md pattern 3).

One :class:`TcpConnection` is one side (controller or host) of one NVMe/TCP connection, i.e. one
NVMe queue.  It does no I/O.  Receiving follows :class:`asyncio.BufferedProtocol`'s shape::

    view = conn.get_buffer()      # where the next bytes must land
    n = sock.recv_into(view)
    events = conn.buffer_updated(n)

Headers land in the connection's own receive buffer.  A PDU's *data* lands where the owner says:
when a data-carrying header is complete, the connection finds the destination (the request's
staging buffer) and, for whatever did not already arrive with the header, hands that destination
out from :meth:`get_buffer`, so bulk payload is received straight into staging memory with no
copy.  In-capsule data (controller) and C2HData (host) go where the owner's
:class:`DataPlacement` says; H2CData (controller) goes into the window of its R2T, which the
connection itself keeps.

The controller's H2C bookkeeping lives here and nowhere else: :meth:`TcpConnection.open_transfer`
allocates a transfer tag (TTAG), records the R2T's window (the command's CCCID and the buffer its
data must fill) and returns the R2T PDU; each H2CData header is checked against that window
before any of its data is placed (unknown TTAG, another CCCID, an offset other than the next
byte expected, data past the window's end: fatal), so a repeated PDU never overwrites data
already placed, however many PDUs one read carries; :class:`H2CDataReceived` says when the window
is filled.  The tag stays reserved until the owner calls :meth:`TcpConnection.close_transfer`
(the command's completion has been sent): until then a repeated H2CData is out of range, never
new data for a new command.

Sending is a set of functions returning the buffers of one PDU: header bytes plus the caller's
payload memoryviews (for ``sendmsg``).

Errors split the way h11's do: a *remote* protocol violation raises :class:`TcpFatalError`
carrying the Fatal Error Status, the Fatal Error Information and the offending header; the owner
sends :meth:`TcpConnection.term_req` and closes this connection only.  A data digest mismatch is
not fatal: it is an event naming the command, which completes with Transient Transport Error.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nvmf.wire import tcp as w
from nvmf.wire.tcp import Fes, PduFlags, PduType

#: The connection's own receive buffer: PDU headers only (at most 128 bytes, plus digest and
#: padding up to PDO), a batch of them per read; data goes to the placement's buffers.  Kept
#: small because every idle connection holds one.
RECV_BUFFER_SIZE = 4096
#: The receive buffer of a connection that carries capsules with in-capsule data too large for
#: :data:`RECV_BUFFER_SIZE`: grown once, so that a read takes in a batch of such capsules (each
#: then costs no receive call of its own).
RECV_BUFFER_LARGE = 64 * 1024


class Role(enum.Enum):
    CONTROLLER = "controller"
    HOST = "host"


class TcpFatalError(Exception):
    """A fatal NVMe/TCP transport error: terminate the connection with a TermReq."""

    def __init__(self, fes: Fes, fei: int, header: bytes, reason: str) -> None:
        super().__init__(f"{fes.name}: {reason}")
        self.fes = fes
        self.fei = fei
        self.header = header
        self.reason = reason


# -- events ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ICReqReceived:
    hpda: int
    hdgst: bool
    ddgst: bool
    maxr2t: int


@dataclass(slots=True)
class ICRespReceived:
    cpda: int
    hdgst: bool
    ddgst: bool
    maxh2cdata: int


@dataclass(slots=True)
class CommandReceived:
    """A CapsuleCmd: the SQE (a private copy) and in-capsule data, if any, where placed."""

    sqe: bytes
    data: memoryview | None


@dataclass(slots=True)
class ResponseReceived:
    cqe: bytes


@dataclass(slots=True)
class H2CDataReceived:
    """An H2CData PDU's data is placed in its R2T's window (see
    :meth:`TcpConnection.open_transfer`).  ``filled``: this PDU brought the window's last byte,
    so the command's data is all in (the PDU that fills a window is the only one that may carry
    LAST_PDU; an earlier one with it is a fatal error)."""

    cccid: int
    ttag: int
    datao: int
    datal: int
    last: bool
    filled: bool


@dataclass(slots=True)
class C2HDataReceived:
    cccid: int
    datao: int
    datal: int
    last: bool
    success: bool


@dataclass(slots=True)
class R2TReceived:
    cccid: int
    ttag: int
    r2to: int
    r2tl: int


@dataclass(slots=True)
class TermReqReceived:
    fes: int
    fei: int


@dataclass(slots=True)
class DataDigestError:
    """A data PDU's DDGST did not match; the command ``cccid`` must fail (retryably).

    ``capsule`` tells a CapsuleCmd's in-capsule data from an H2CData or C2HData PDU's: a host
    may reuse a command identifier, so the identifier alone does not say which it was.
    ``ttag`` is an H2CData PDU's transfer tag (None for the others): the transfer that fails.
    ``success`` is a C2HData PDU's SUCCESS flag: no CapsuleResp follows, so the host must end
    the command now (Linux ``nvme_tcp_recv_ddgst``)."""

    cccid: int
    capsule: bool = False
    success: bool = False
    ttag: int | None = None


Event = (
    ICReqReceived
    | ICRespReceived
    | CommandReceived
    | ResponseReceived
    | H2CDataReceived
    | C2HDataReceived
    | R2TReceived
    | TermReqReceived
    | DataDigestError
)


class DataPlacement(Protocol):
    """Where received data goes; implemented by the queue that owns the requests.

    Each method returns a writable memoryview of exactly the data length, or raises
    :class:`TcpFatalError` (unknown command, offset or length out of range).  H2CData is not
    asked for: it goes into the window its R2T opened (:meth:`TcpConnection.open_transfer`).
    """

    def capsule_data(self, sqe: memoryview, length: int) -> memoryview:
        """Destination of ``length`` bytes of in-capsule data for the command ``sqe``."""
        ...

    def c2h_data(self, cccid: int, datao: int, datal: int) -> memoryview:
        """Destination of a C2HData PDU's data (host side)."""
        ...


class _Transfer:
    """One R2T's window on the controller: H2CData PDUs tagged with its TTAG must carry the
    command ``cccid``'s data at offsets ``r2to`` to ``r2to + len(dest)``, in order, into
    ``dest``.  ``received`` counts the bytes of the window already claimed by a parsed header
    (the data itself may still be arriving)."""

    __slots__ = ("cccid", "dest", "r2to", "received")

    def __init__(self, cccid: int, dest: memoryview, r2to: int) -> None:
        self.cccid = cccid
        self.dest = dest
        self.r2to = r2to
        self.received = 0


class _Phase(enum.Enum):
    CH = 0
    HEADER = 1
    DATA = 2
    DDGST = 3


# The phases, the H2CData type and the controller role as module names: on Python 3.11 an Enum
# class attribute goes through the metaclass's __getattr__ hook (about 60 ns against 10 for a
# global), and the parser reads them several times per PDU.
_IN_CH, _IN_HEADER, _IN_DATA, _IN_DDGST = _Phase.CH, _Phase.HEADER, _Phase.DATA, _Phase.DDGST
_H2C_DATA_TYPE = PduType.H2C_DATA
_CONTROLLER = Role.CONTROLLER


Buffers = list[bytes | memoryview]
#: Where a controller's parsed commands go at once (see :class:`TcpConnection`): the 64-byte SQE
#: (a view valid only during the call) and the in-capsule data, placed, if any.
CommandSink = Callable[[memoryview | bytes, memoryview | None], None]


class TcpConnection:
    """One side of an NVMe/TCP connection; see the module docstring."""

    def __init__(
        self,
        role: Role,
        placement: DataPlacement,
        *,
        max_incapsule: int = 8192,
        maxh2cdata: int = 1 << 20,
        on_command: CommandSink | None = None,
        on_filled: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.role = role
        self.placement = placement
        #: With a sink, a controller's CapsuleCmds are not events: each goes to the sink as soon
        #: as it is parsed, before the events of the same read are returned, and a complete
        #: capsule without digests is taken straight from the receive buffer (the target's hot
        #: path: no event object, one call).
        self.on_command = on_command
        #: With it, a controller's H2CData PDUs are not events either, and are told in the
        #: order they arrive: the one that fills its R2T's window calls ``on_filled(ttag,
        #: True)`` once its data (and digest) is in, one whose data digest does not match
        #: ``on_filled(ttag, False)`` (the transfer failed), the others nothing.
        self.on_filled = on_filled
        self._plain = False  # an established connection without digests, and a sink
        self._grow = False  # the receive buffer is to grow (see RECV_BUFFER_LARGE)
        #: Negotiated by ICReq/ICResp.
        self.hdgst = False
        self.ddgst = False
        self.hpda = 0  # alignment of C2H data (asked for by the host)
        self.cpda = 0  # alignment of H2C data (asked for by the controller)
        self.maxh2cdata = maxh2cdata
        self.maxr2t = 0
        self.max_incapsule = max_incapsule
        self.established = False
        #: How many more CapsuleCmd PDUs may be parsed.  At zero, parsing stops in front of the
        #: next capsule (its bytes stay buffered) until the owner raises the credit again and
        #: calls :meth:`take_events`: the owner's bound on commands in flight (backpressure).
        self.capsule_credit = 1 << 62

        self._buf = bytearray(RECV_BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._phase = _IN_CH
        self._type = PduType.ICREQ
        self._flags = 0
        self._hlen = 0
        self._pdo = 0
        self._plen = 0
        self._header_len = 0  # hlen + header digest
        self._pad = 0
        self._datal = 0
        self._data_dgst = 0
        self._pending: Event | None = None  # the event a data PDU emits once its data is in
        self._dest: memoryview | None = None
        self._dest_filled = 0
        self._direct = False
        #: Controller: the R2T windows open, by TTAG (see :meth:`open_transfer`).
        self._transfers: dict[int, _Transfer] = {}
        self._next_ttag = 0

    # -- receive -------------------------------------------------------------------------------
    @property
    def capsule_held(self) -> bool:
        """Parsing stopped in front of a CapsuleCmd for lack of :attr:`capsule_credit`: the
        owner stops reading until it raises the credit.

        Credit at zero alone is no reason to stop reading: when the commands holding it are
        Writes waiting for their R2Ts' data, the host sends that H2CData next, and only that
        data lets them complete and return credit."""
        return (
            self.capsule_credit <= 0
            and self._phase is _IN_CH
            and not self._direct
            and self._end > self._start
            and self._buf[self._start] == _CMD
        )

    def get_buffer(self) -> memoryview:
        """The buffer the next received bytes must be written into (never empty, unless
        parsing is held for lack of :attr:`capsule_credit` and the buffer is full: the owner
        does not read then)."""
        if self._direct:
            assert self._dest is not None
            return self._dest[self._dest_filled :]
        if self._end == len(self._buf):
            self._compact()
        if self._grow:
            self._grow = False
            live = self._buf[self._start : self._end]
            self._buf = bytearray(RECV_BUFFER_LARGE)
            self._view = memoryview(self._buf)
            self._buf[: len(live)] = live
            self._start, self._end = 0, len(live)
        return self._view[self._end :]

    def _compact(self) -> None:
        live = self._end - self._start
        self._buf[:live] = self._buf[self._start : self._end]
        self._start, self._end = 0, live

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """``nbytes`` were written into the last :meth:`get_buffer`; parse what is complete."""
        events: list[Event] = []
        if self._direct:
            self._dest_filled += nbytes
            assert self._dest is not None
            if self._dest_filled < len(self._dest):
                return events
            self._direct = False
            if self._data_dgst:  # as _data_done, inline: this ends every large data PDU
                self._phase = _IN_DDGST
            else:
                self._finish_pdu(events)
                if self._start == self._end:  # the data was the last byte read: nothing to parse
                    return events
        else:
            self._end += nbytes
        self._parse(events)
        return events

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (tests, and transports that are handed bytes): copies through buffers."""
        events: list[Event] = []
        mv = memoryview(data)
        while mv:
            target = self.get_buffer()
            n = min(len(target), len(mv))
            target[:n] = mv[:n]
            mv = mv[n:]
            events.extend(self.buffer_updated(n))
        return events

    def _header_bytes(self) -> bytes:
        """The offending PDU's header as far as it arrived (never an earlier PDU's bytes)."""
        have = self._end - self._start
        return bytes(self._buf[self._start : self._start + min(self._hlen or 8, 128, have)])

    def _fatal(self, fes: Fes, fei: int, reason: str) -> TcpFatalError:
        return TcpFatalError(fes, fei, self._header_bytes(), reason)

    def _parse(self, events: list[Event]) -> None:
        buf = self._buf
        while True:
            avail = self._end - self._start
            phase = self._phase
            if phase is _IN_CH:
                if avail < w.CH.size:
                    return
                start = self._start
                if buf[start] == _CMD:
                    if self.capsule_credit <= 0:
                        return
                    # A whole capsule, no digests, flags and hlen as they must be: take it here.
                    if self._plain and buf[start + 1] == 0 and buf[start + 2] == _CMD_HLEN:
                        plen = _PLEN.unpack_from(buf, start + 4)[0]
                        pdo = buf[start + 3]
                        if (pdo == 0 and plen == _CMD_HLEN) or (
                            pdo == _CMD_HLEN and pdo < plen <= pdo + self.max_incapsule
                        ):
                            if avail >= plen:
                                self._fast_capsule(start, plen)
                                continue
                            if len(buf) < plen * 4 and len(buf) < RECV_BUFFER_LARGE:
                                self._grow = True
                elif (
                    buf[start] == _H2C_DATA
                    and self._plain
                    and avail >= _DATA_HLEN
                    and buf[start + 2] == _DATA_HLEN
                    and buf[start + 3] == _DATA_HLEN
                    and not buf[start + 1] & ~_DATA_LAST
                    and self._fast_h2c(start)
                ):
                    phase = _IN_DATA
                    avail = self._end - self._start
                if phase is _IN_CH:
                    self._parse_ch()
                    phase = self._phase = _IN_HEADER
            if phase is _IN_HEADER:
                if avail < self._header_len + self._pad:
                    return
                self._parse_header(events)
                self._start += self._header_len + self._pad
                if self._datal == 0:
                    self._finish_pdu(events)
                    continue
                phase = self._phase = _IN_DATA
                avail = self._end - self._start
            if phase is _IN_DATA:
                assert self._dest is not None
                have = min(avail, len(self._dest) - self._dest_filled)
                if have:
                    self._dest[self._dest_filled : self._dest_filled + have] = self._view[
                        self._start : self._start + have
                    ]
                    self._dest_filled += have
                    self._start += have
                if self._dest_filled < len(self._dest):
                    if self._start == self._end:
                        self._start = self._end = 0
                    self._direct = True
                    return
                self._data_done(events)
                continue
            if phase is _IN_DDGST:
                if avail < w.DIGEST_LEN:
                    return
                (received,) = w.DIGEST.unpack_from(self._buf, self._start)
                self._start += w.DIGEST_LEN
                assert self._dest is not None
                if received != w.crc32c(self._dest):
                    pending = self._pending
                    if isinstance(pending, CommandReceived):
                        cid = int.from_bytes(pending.sqe[2:4], "little")
                        events.append(DataDigestError(cid, capsule=True))
                    elif isinstance(pending, C2HDataReceived):
                        events.append(DataDigestError(pending.cccid, success=pending.success))
                    elif isinstance(pending, H2CDataReceived):
                        if self.on_filled is not None:
                            self.on_filled(pending.ttag, False)
                        else:
                            events.append(DataDigestError(pending.cccid, ttag=pending.ttag))
                    else:
                        events.append(DataDigestError(getattr(pending, "cccid", 0)))
                    self._pending = None
                    self._reset_pdu()
                    continue
                self._finish_pdu(events)

    def _fast_capsule(self, start: int, plen: int) -> None:
        """A complete capsule without digests at ``start``: place its data and deliver it."""
        view = self._view
        sqe = view[start + 8 : start + _CMD_HLEN]
        self.capsule_credit -= 1
        data = None
        if plen > _CMD_HLEN:
            data = self.placement.capsule_data(sqe, plen - _CMD_HLEN)
            data[:] = view[start + _CMD_HLEN : start + plen]
        end = start + plen
        self._start = end
        if end == self._end:
            self._start = self._end = 0
        assert self.on_command is not None
        self.on_command(sqe, data)

    def _fast_h2c(self, start: int) -> bool:
        """An H2CData header without digests or padding at ``start`` (flags, HLEN and PDO
        checked by the caller): place its data and go on to receive it, as
        :meth:`_parse_ch` and :meth:`_parse_header_fields` would, in one call.  False leaves
        a PDU whose lengths are wrong to them, for the error they report."""
        _, flags, _, _, plen, cccid, ttag, datao, dlen = _DATA.unpack_from(self._buf, start)
        if dlen != plen - _DATA_HLEN or not 0 < dlen <= self.maxh2cdata:
            return False
        self._type = _H2C_DATA_TYPE
        self._flags, self._hlen, self._pdo, self._plen = flags, _DATA_HLEN, _DATA_HLEN, plen
        self._header_len = _DATA_HLEN
        self._pad = self._data_dgst = 0
        self._datal = dlen
        last = bool(flags & _DATA_LAST)
        self._dest, filled = self._h2c_window(cccid, ttag, datao, dlen, last)
        self._pending = H2CDataReceived(cccid, ttag, datao, dlen, last, filled)
        self._start = start + _DATA_HLEN
        self._phase = _IN_DATA
        return True

    def _data_done(self, events: list[Event]) -> None:
        """All data bytes are in: verify the digest next, or finish."""
        if self._data_dgst:
            self._phase = _IN_DDGST
        else:
            self._finish_pdu(events)

    def _finish_pdu(self, events: list[Event]) -> None:
        pending = self._pending
        self._reset_pdu()
        if pending is not None:
            if self.on_command is not None and type(pending) is CommandReceived:
                self.on_command(pending.sqe, pending.data)
            elif self.on_filled is not None and type(pending) is H2CDataReceived:
                if pending.filled:
                    self.on_filled(pending.ttag, True)
            else:
                events.append(pending)

    def _reset_pdu(self) -> None:
        self._pending = None
        self._dest = None
        self._dest_filled = 0
        self._datal = 0
        self._phase = _IN_CH
        if self._start == self._end:
            self._start = self._end = 0

    def _parse_ch(self) -> None:
        ptype, flags, hlen, pdo, plen = w.CH.unpack_from(self._buf, self._start)
        self._flags, self._hlen, self._pdo, self._plen = flags, hlen, pdo, plen
        pdu_type = _PDU_TYPES.get(ptype)
        if pdu_type is None:
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_TYPE, f"unknown PDU type {ptype:#x}")
        self._type = pdu_type
        allowed = self._allowed_types()
        if self._type not in allowed:
            raise self._fatal(
                Fes.PDU_SEQ_ERR,
                w.OFF_TYPE,
                f"{self._type.name} PDU not expected by the {self.role.value} "
                f"{'after' if self.established else 'before'} connection initialization",
            )
        if hlen != w.HLEN[self._type]:
            raise self._fatal(
                Fes.INVALID_PDU_HDR, w.OFF_HLEN, f"{self._type.name} hlen {hlen} is invalid"
            )
        hd = 0
        if self._type in w.HAS_HDGST:
            if bool(flags & _HDGSTF) != self.hdgst:
                raise self._fatal(
                    Fes.INVALID_PDU_HDR, w.OFF_FLAGS, "HDGSTF flag disagrees with negotiation"
                )
            hd = w.DIGEST_LEN if self.hdgst else 0
        self._header_len = hlen + hd
        self._pad = 0
        self._datal = 0
        self._data_dgst = 0
        if self._type in (PduType.ICREQ, PduType.ICRESP):
            if plen != 128:
                raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_PLEN, f"IC plen {plen} is not 128")
            return
        if self._type in (PduType.H2C_TERM, PduType.C2H_TERM):
            if not w.TERM.size <= plen <= w.MAX_TERM_PLEN:
                raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_PLEN, f"TermReq plen {plen}")
            self._pad = plen - w.TERM.size  # the offending header that follows: skipped
            return
        if plen < self._header_len:
            raise self._fatal(
                Fes.INVALID_PDU_HDR, w.OFF_PLEN, f"plen {plen} shorter than the header"
            )
        if self._type not in w.HAS_DATA:
            if plen != self._header_len:
                raise self._fatal(
                    Fes.INVALID_PDU_HDR, w.OFF_PLEN, f"{self._type.name} plen {plen} carries data"
                )
            return
        if plen == self._header_len:
            if self._type is not PduType.CMD:
                raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_PLEN, "data PDU without data")
            return  # a capsule with no in-capsule data
        if bool(flags & _DDGSTF) != self.ddgst:
            raise self._fatal(
                Fes.INVALID_PDU_HDR, w.OFF_FLAGS, "DDGSTF flag disagrees with negotiation"
            )
        pda = self.cpda if self.role is _CONTROLLER else self.hpda
        if pdo < self._header_len or pdo != w.pad_to(pdo, pda) or pdo >= plen:
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_PDO, f"pdo {pdo} is invalid")
        self._data_dgst = w.DIGEST_LEN if self.ddgst else 0
        self._pad = pdo - self._header_len
        datal = plen - pdo - self._data_dgst
        if datal <= 0:
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_PLEN, f"plen {plen} leaves no data")
        self._datal = datal

    def _allowed_types(self) -> frozenset[PduType]:
        if self.role is _CONTROLLER:
            if not self.established:
                return _BEFORE_IC_CTRL
            return _AFTER_IC_CTRL
        if not self.established:
            return _BEFORE_IC_HOST
        return _AFTER_IC_HOST

    def _parse_header(self, events: list[Event]) -> None:
        try:
            self._parse_header_fields()
        except TcpFatalError as err:
            if not err.header:  # raised by the placement: attach the offending header
                err.header = self._header_bytes()
            raise

    def _parse_header_fields(self) -> None:
        start = self._start
        buf = self._buf
        if self._header_len != self._hlen:
            (received,) = w.DIGEST.unpack_from(buf, start + self._hlen)
            if received != w.crc32c(self._view[start : start + self._hlen]):
                raise self._fatal(Fes.HDR_DIGEST_ERR, 0, "header digest mismatch")
        ptype = self._type
        datal = self._datal
        if ptype is PduType.CMD:
            self.capsule_credit -= 1
            sqe = self._view[start + 8 : start + 72]
            if datal:
                if datal > self.max_incapsule:
                    raise self._fatal(
                        Fes.R2T_LIMIT_EXCEEDED,
                        w.OFF_PLEN,
                        f"{datal} bytes of in-capsule data exceed {self.max_incapsule}",
                    )
                self._dest = self.placement.capsule_data(sqe, datal)
                self._pending = CommandReceived(bytes(sqe), self._dest)
            else:
                self._pending = CommandReceived(bytes(sqe), None)
        elif ptype is PduType.H2C_DATA:
            _, _, _, _, _, cccid, ttag, datao, dlen = w.DATA.unpack_from(buf, start)
            self._check_datal(dlen, datal)
            if dlen > self.maxh2cdata:
                raise self._fatal(
                    Fes.R2T_LIMIT_EXCEEDED,
                    w.OFF_DATA_DATAL,
                    f"H2CData datal {dlen} exceeds MAXH2CDATA {self.maxh2cdata}",
                )
            last = bool(self._flags & _DATA_LAST)
            self._dest, filled = self._h2c_window(cccid, ttag, datao, dlen, last)
            self._pending = H2CDataReceived(cccid, ttag, datao, dlen, last, filled)
        elif ptype is PduType.C2H_DATA:
            _, _, _, _, _, cccid, _, datao, dlen = w.DATA.unpack_from(buf, start)
            self._check_datal(dlen, datal)
            flags = self._flags
            if flags & PduFlags.DATA_SUCCESS and not flags & PduFlags.DATA_LAST:
                raise self._fatal(
                    Fes.INVALID_PDU_HDR, w.OFF_FLAGS, "C2HData SUCCESS without LAST_PDU"
                )
            self._dest = self.placement.c2h_data(cccid, datao, dlen)
            self._pending = C2HDataReceived(
                cccid,
                datao,
                dlen,
                bool(flags & PduFlags.DATA_LAST),
                bool(flags & PduFlags.DATA_SUCCESS),
            )
        elif ptype is PduType.RSP:
            self._pending = ResponseReceived(bytes(self._view[start + 8 : start + 24]))
        elif ptype is PduType.R2T:
            _, _, _, _, _, cccid, ttag, r2to, r2tl = w.R2T.unpack_from(buf, start)
            self._pending = R2TReceived(cccid, ttag, r2to, r2tl)
        elif ptype is PduType.ICREQ:
            self._pending = self._parse_icreq()
        elif ptype is PduType.ICRESP:
            self._pending = self._parse_icresp()
        else:  # TermReq
            _, _, _, _, _, fes, fei = w.TERM.unpack_from(buf, start)
            self._pending = TermReqReceived(fes, fei)
        if self._dest is not None and len(self._dest) != datal:
            raise AssertionError("placement returned a buffer of the wrong length")

    def _h2c_window(
        self, cccid: int, ttag: int, datao: int, datal: int, last: bool
    ) -> tuple[memoryview, bool]:
        """Where an H2CData PDU's data goes, and whether it fills its R2T's window.

        Checked and advanced here, as each header is parsed, not when its event is handled:
        several PDUs of one R2T may arrive in one read, and a PDU covering bytes already
        claimed (a duplicate) must never be placed over them."""
        xfer = self._transfers.get(ttag)
        if xfer is None:
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_DATA_TTAG, f"unknown ttag {ttag}")
        if xfer.cccid != cccid:
            raise self._fatal(
                Fes.INVALID_PDU_HDR, w.OFF_DATA_CCCID, f"cccid {cccid} != {xfer.cccid}"
            )
        start = datao - xfer.r2to
        size = len(xfer.dest)
        if start != xfer.received or start + datal > size:
            raise self._fatal(
                Fes.DATA_OUT_OF_RANGE,
                w.OFF_DATA_DATAO,
                f"H2CData offset {datao}+{datal} outside the R2T window "
                f"(expected offset {xfer.r2to + xfer.received} of {xfer.r2to}+{size})",
            )
        end = start + datal
        xfer.received = end
        filled = end == size
        if last and not filled:
            raise self._fatal(Fes.PDU_SEQ_ERR, 0, "last H2CData before the R2T was filled")
        return xfer.dest[start:end], filled

    def _check_datal(self, dlen: int, datal: int) -> None:
        if dlen != datal:
            raise self._fatal(
                Fes.INVALID_PDU_HDR,
                w.OFF_DATA_DATAL,
                f"datal {dlen} disagrees with plen/pdo ({datal} data bytes)",
            )

    def _parse_icreq(self) -> ICReqReceived:
        _, _, _, _, _, pfv, hpda, dgst, maxr2t = w.ICREQ.unpack_from(self._buf, self._start)
        if pfv != w.PFV_1_0:
            raise self._fatal(Fes.UNSUPPORTED_PARAM, w.OFF_ICREQ_PFV, f"PFV {pfv} unsupported")
        if hpda > 31:
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_ICREQ_HPDA, f"HPDA {hpda} > 31")
        if dgst & ~(w.DGST_HDR | w.DGST_DATA):
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_ICREQ_DGST, f"DGST {dgst:#x}")
        return ICReqReceived(hpda, bool(dgst & w.DGST_HDR), bool(dgst & w.DGST_DATA), maxr2t)

    def _parse_icresp(self) -> ICRespReceived:
        _, _, _, _, _, pfv, cpda, dgst, maxdata = w.ICRESP.unpack_from(self._buf, self._start)
        if pfv != w.PFV_1_0:
            raise self._fatal(Fes.UNSUPPORTED_PARAM, w.OFF_ICREQ_PFV, f"PFV {pfv} unsupported")
        if cpda > 31:
            raise self._fatal(Fes.INVALID_PDU_HDR, w.OFF_ICREQ_HPDA, f"CPDA {cpda} > 31")
        if maxdata < w.MIN_MAXH2CDATA or maxdata % 4:
            raise self._fatal(
                Fes.INVALID_PDU_HDR, w.OFF_ICREQ_MAXR2T, f"MAXH2CDATA {maxdata} invalid"
            )
        return ICRespReceived(cpda, bool(dgst & w.DGST_HDR), bool(dgst & w.DGST_DATA), maxdata)

    @property
    def mid_pdu(self) -> bool:
        """Part of a PDU (header or data) has arrived and the rest has not."""
        return self._phase is not _IN_CH or self._direct or self._start != self._end

    # -- moving to another process --------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """What another process needs to go on with this connection (picklable): the negotiated
        parameters and the bytes received past the last complete PDU.  Only between PDUs."""
        if self._phase not in (_IN_CH, _IN_HEADER) or self._direct:
            raise RuntimeError("a connection can only be handed over between PDUs")
        if any(x.received < len(x.dest) for x in self._transfers.values()):
            raise RuntimeError("a connection still receiving H2CData cannot be handed over")
        return {
            "established": self.established,
            "hdgst": self.hdgst,
            "ddgst": self.ddgst,
            "hpda": self.hpda,
            "cpda": self.cpda,
            "maxh2cdata": self.maxh2cdata,
            "maxr2t": self.maxr2t,
            "pending": bytes(self._buf[self._start : self._end]),
        }

    def import_state(self, state: dict[str, Any]) -> None:
        """Take over a connection :meth:`export_state` described (a fresh connection only)."""
        for name in ("established", "hdgst", "ddgst", "hpda", "cpda", "maxh2cdata", "maxr2t"):
            setattr(self, name, state[name])
        pending = state["pending"]
        if len(pending) > len(self._buf):  # more held back than one buffer: make room
            self._buf = bytearray(len(pending))
            self._view = memoryview(self._buf)
        self._buf[: len(pending)] = pending
        self._start, self._end = 0, len(pending)
        self._update_plain()

    def _update_plain(self) -> None:
        self._plain = (
            self.on_command is not None
            and self.role is _CONTROLLER
            and self.established
            and not self.hdgst
            and not self.ddgst
            and self.cpda == 0
        )

    def take_events(self) -> list[Event]:
        """Events complete in bytes already received (after :meth:`import_state`)."""
        events: list[Event] = []
        self._parse(events)
        return events

    # -- initialization ------------------------------------------------------------------------
    def accept_icreq(self, ev: ICReqReceived, *, hdgst: bool, ddgst: bool) -> bytes:
        """Controller: answer an ICReq; digests are on where the host asked and we allow."""
        self.hpda = ev.hpda
        self.maxr2t = ev.maxr2t
        self.hdgst = ev.hdgst and hdgst
        self.ddgst = ev.ddgst and ddgst
        self.established = True
        self._update_plain()
        return w.icresp(
            cpda=self.cpda, hdgst=self.hdgst, ddgst=self.ddgst, maxh2cdata=self.maxh2cdata
        )

    def start_icreq(self, *, hdgst: bool, ddgst: bool, hpda: int = 0) -> bytes:
        """Host: the ICReq to send first."""
        self.hpda = hpda
        return w.icreq(hpda=hpda, hdgst=hdgst, ddgst=ddgst, maxr2t=0)

    def accept_icresp(self, ev: ICRespReceived) -> None:
        """Host: adopt the controller's answer."""
        self.cpda = ev.cpda
        self.hdgst = ev.hdgst
        self.ddgst = ev.ddgst
        self.maxh2cdata = ev.maxh2cdata
        self.established = True

    # -- send ----------------------------------------------------------------------------------
    def _hflags(self) -> int:
        return PduFlags.HDGSTF if self.hdgst else 0

    def _with_hdgst(self, header: bytes) -> bytes:
        return header + w.digest(header) if self.hdgst else header

    def capsule_resp(self, cqe: bytes) -> bytes:
        """Controller: a CapsuleResp PDU carrying ``cqe`` (its common header prebuilt)."""
        if self.hdgst:
            header = _RSP_CH_HDGST + cqe
            return header + w.digest(header)
        return _RSP_CH + cqe

    # -- R2T windows (controller) ----------------------------------------------------------------
    def open_transfer(self, cccid: int, dest: memoryview, *, r2to: int = 0) -> tuple[int, bytes]:
        """Controller: ask the host for the command ``cccid``'s data at offsets ``r2to`` to
        ``r2to + len(dest)``, to be placed in ``dest``.

        Allocates a transfer tag (TTAG) not in use (never FFFFh, which the spec reserves),
        records the window and returns the tag and the R2T PDU to send.  The H2CData PDUs
        answering it are placed straight into ``dest``, checked as :class:`H2CDataReceived`
        says; the tag stays reserved until :meth:`close_transfer`."""
        if self.role is not _CONTROLLER:
            raise RuntimeError("only a controller sends R2T")
        if not dest:
            raise ValueError("an R2T asks for at least one byte")
        transfers = self._transfers
        ttag = self._next_ttag
        if ttag == 0xFFFF or ttag in transfers:
            ttag = self._alloc_ttag()
        else:  # the usual case, in line: the next tag round robin is free
            self._next_ttag = ttag + 1
        transfers[ttag] = _Transfer(cccid, dest, r2to)
        r2tl = len(dest)
        if not self.hdgst:
            return ttag, _R2T_PACK(_R2T, 0, 24, 0, 24, cccid, ttag, r2to, r2tl)
        header = _R2T_PACK(_R2T, _HDGSTF, 24, 0, 24 + w.DIGEST_LEN, cccid, ttag, r2to, r2tl)
        return ttag, header + w.digest(header)

    def close_transfer(self, ttag: int) -> None:
        """Controller: the command of transfer ``ttag`` is over (its completion has been sent,
        or its queue is closing): the tag is free for another R2T and its window forgotten.
        A tag not open is ignored.

        Until then the tag stays reserved, so that an H2CData PDU repeating data already
        received is out of range (a fatal error), never taken as data of a new command.  If
        one of the transfer's PDUs is still arriving (a command that failed early, after a
        data digest error), the rest of its data is received into a scratch buffer: the
        window's memory no longer belongs to the command."""
        xfer = self._transfers.pop(ttag, None)
        if xfer is None:
            return
        pending = self._pending
        dest = self._dest
        if dest is not None and type(pending) is H2CDataReceived and pending.ttag == ttag:
            self._dest = memoryview(bytearray(len(dest)))

    def _alloc_ttag(self) -> int:
        """The next transfer tag not in use, round robin (a tag just freed is reused last)."""
        transfers = self._transfers
        for _ in range(0x10000):
            ttag = self._next_ttag
            self._next_ttag = (ttag + 1) & 0xFFFF
            if ttag != 0xFFFF and ttag not in transfers:
                return ttag
        raise RuntimeError("no free transfer tag")

    def _data_pdu(
        self,
        ptype: PduType,
        flags: int,
        cccid: int,
        ttag: int,
        datao: int,
        data: memoryview,
        pda: int,
    ) -> Buffers:
        hdgst, ddgst = self.hdgst, self.ddgst
        datal = len(data)
        if not (hdgst or ddgst or pda):  # the common case: no digest, no padding
            return [w.DATA.pack(ptype, flags, 24, 24, 24 + datal, cccid, ttag, datao, datal), data]
        hd = w.DIGEST_LEN if hdgst else 0
        dd = w.DIGEST_LEN if ddgst else 0
        pdo = w.pad_to(24 + hd, pda)
        plen = pdo + datal + dd
        flags |= (_HDGSTF if hdgst else 0) | (_DDGSTF if ddgst else 0)
        header = w.DATA.pack(ptype, flags, 24, pdo, plen, cccid, ttag, datao, datal)
        if hdgst:
            header += w.digest(header)
        if pdo > 24 + hd:
            header += bytes(pdo - 24 - hd)
        out: Buffers = [header, data]
        if dd:
            out.append(w.digest(data))
        return out

    def c2h_response(self, cccid: int, data: memoryview, cqe: bytes | None) -> Buffers:
        """Controller: a command's whole answer, ``data`` in one C2HData PDU and then the
        CapsuleResp ``cqe``, or (``cqe`` None) the C2HData alone with LAST_PDU and SUCCESS, when
        SQ flow control is off and the completion is a success (NVMe/TCP 1.0 §3.3.2)."""
        if not (self.hdgst or self.ddgst or self.hpda):  # the common case, in one call
            datal = len(data)
            if cqe is None:
                return [_DATA.pack(_C2H_DATA, _LAST_SUCCESS, 24, 24, 24 + datal, cccid, 0, 0,
                                   datal), data]  # fmt: skip
            return [
                _DATA.pack(_C2H_DATA, _DATA_LAST, 24, 24, 24 + datal, cccid, 0, 0, datal),
                data,
                _RSP_CH + cqe,
            ]
        bufs = self.c2h_data(cccid, 0, data, last=True, success=cqe is None)
        if cqe is not None:
            bufs.append(self.capsule_resp(cqe))
        return bufs

    def c2h_data(
        self, cccid: int, datao: int, data: memoryview, *, last: bool, success: bool = False
    ) -> Buffers:
        """Controller: one C2HData PDU; ``success`` (with ``last``) replaces the CapsuleResp."""
        flags = (_DATA_LAST if last else 0) | (_DATA_SUCCESS if success else 0)
        return self._data_pdu(PduType.C2H_DATA, flags, cccid, 0, datao, data, self.hpda)

    def h2c_data(
        self, cccid: int, ttag: int, datao: int, data: memoryview, *, last: bool
    ) -> Buffers:
        """Host: one H2CData PDU answering an R2T."""
        flags = PduFlags.DATA_LAST if last else 0
        return self._data_pdu(PduType.H2C_DATA, flags, cccid, ttag, datao, data, self.cpda)

    def capsule_cmd(self, sqe: bytes, data: memoryview | None = None) -> Buffers:
        """Host: a CapsuleCmd with optional in-capsule data."""
        hd = w.DIGEST_LEN if self.hdgst else 0
        flags = self._hflags()
        if data is None or len(data) == 0:
            header = w.CH.pack(PduType.CMD, flags, 72, 0, 72 + hd) + sqe
            return [self._with_hdgst(header)]
        dd = w.DIGEST_LEN if self.ddgst else 0
        pdo = w.pad_to(72 + hd, self.cpda)
        flags |= PduFlags.DDGSTF if self.ddgst else 0
        header = w.CH.pack(PduType.CMD, flags, 72, pdo, pdo + len(data) + dd) + sqe
        header = self._with_hdgst(header)
        if pdo > 72 + hd:
            header += bytes(pdo - 72 - hd)
        out: Buffers = [header, data]
        if dd:
            out.append(w.digest(data))
        return out

    def term_req(self, err: TcpFatalError) -> bytes:
        """The TermReq this side sends for ``err`` (C2H from a controller, H2C from a host)."""
        ptype = PduType.C2H_TERM if self.role is _CONTROLLER else PduType.H2C_TERM
        return w.term_req(ptype, err.fes, err.fei, err.header)


_CMD = int(PduType.CMD)
_CMD_HLEN = w.CAPSULE_CMD_HLEN
#: The common header's PLEN (at offset 4).
_PLEN = struct.Struct("<I")
_DATA = w.DATA
#: PDU type byte -> PduType, without an enum call per PDU.
_PDU_TYPES: dict[int, PduType] = {int(t): t for t in PduType}
_HDGSTF = int(PduFlags.HDGSTF)
_DDGSTF = int(PduFlags.DDGSTF)
_DATA_LAST = int(PduFlags.DATA_LAST)
_DATA_SUCCESS = int(PduFlags.DATA_SUCCESS)
_C2H_DATA = int(PduType.C2H_DATA)
_H2C_DATA = int(PduType.H2C_DATA)
_DATA_HLEN = w.HLEN[PduType.H2C_DATA]
_R2T = int(PduType.R2T)
_R2T_PACK = w.R2T.pack
_LAST_SUCCESS = _DATA_LAST | _DATA_SUCCESS
#: The common header of a CapsuleResp, without and with a header digest.
_RSP_CH = w.CH.pack(PduType.RSP, 0, 24, 0, 24)
_RSP_CH_HDGST = w.CH.pack(PduType.RSP, _HDGSTF, 24, 0, 24 + w.DIGEST_LEN)

_BEFORE_IC_CTRL = frozenset({PduType.ICREQ, PduType.H2C_TERM})
_AFTER_IC_CTRL = frozenset({PduType.CMD, PduType.H2C_DATA, PduType.H2C_TERM})
_BEFORE_IC_HOST = frozenset({PduType.ICRESP, PduType.C2H_TERM})
_AFTER_IC_HOST = frozenset({PduType.RSP, PduType.C2H_DATA, PduType.R2T, PduType.C2H_TERM})
