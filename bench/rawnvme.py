"""A raw NVMe/TCP responder: the least Python that answers the same wire exchange as ``nvmf serve``.

It exists to be measured against: the target's CPU time per I/O divided by this responder's is
what the target's NVMe machinery (codec, request state machine, command parsing, media) costs on
top of Python receiving and sending the very same PDUs.  It has no NVMe semantics on the I/O
path:

* ICReq -> ICResp (no digests, CPDA 0, MAXH2CDATA 1 MiB, as the target offers);
* admin and fabrics commands -> a successful CapsuleResp, with just enough state for a host to
  come up and go down: Connect answers CNTLID 1, Property Get answers CAP/VS/CC/CSTS (CSTS
  follows CC.EN and CC.SHN), Identify answers fixed data built with :mod:`nvmf.wire` (one
  namespace of ``size`` bytes in 512-byte blocks, the target's MDTS, IOCCSZ and queue depth),
  Set Features Number of Queues grants what is asked, Asynchronous Event Requests are held;
* Read -> one C2HData PDU with LAST_PDU carrying ``length`` bytes of the namespace from the
  command's SLBA, then a CapsuleResp -- or only the C2HData with SUCCESS when the queue's
  Connect disabled SQ flow control, exactly as the target chooses;
* Write with in-capsule data -> the data copied to the namespace at SLBA, then a CapsuleResp; a
  Write whose data is not in the capsule -> an R2T for all of it, each H2CData's data placed at
  SLBA + DATAO, then the CapsuleResp after the LAST_PDU H2CData;
* any other I/O command -> a successful CapsuleResp.

The namespace is the target's own ``ram`` medium (:class:`nvmf.media.ram.RamMedia`: a memfd,
every page allocated and mapped up front), and the data goes where the target's goes: a Read is
sent from the namespace's bytes, a Write's payload is received straight into them.  A yardstick
that dropped written data into one small, cache-hot buffer instead would count the cost of
writing to a namespace's memory (at 128 KiB sequential writes, about half the target's CPU on a
cold cache) as NVMe machinery.  Nothing is checked (no LBA range, no SGL, no data transfer
length against the blocks).  Like the target it runs on uvloop when installed, with header bytes
parsed from one receive buffer and large payloads received straight into place (no copies
through Python objects).

With ``--native``, each I/O queue, once its Connect is answered, is served by the same loop
written in C (``bench/native/rawio.c``, built on first use with the system's C compiler) in a
thread of its own; the admin queue stays in Python.  That is the yardstick for what a target in
user space reaches on a machine with no Python on the data path at all: the kernel target's
work runs in kernel threads, which switch no address space.

Run it with ``python bench/rawnvme.py [--native] PORT [SIZE [SUBNQN]]`` (prints ``listening
PORT`` once bound); SUBNQN is what Identify Controller reports (default :data:`SUBNQN`), so
that a kernel host connected to it and to ``nvmf serve`` at once sees two subsystems.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

from nvmf.media.ram import RamMedia
from nvmf.wire.fabrics import CATTR_DISABLE_SQFLOW, CC, CSTS, Cap, Prop, vs
from nvmf.wire.identify import (
    IDENTIFY_DATA_SIZE,
    Cns,
    IdentifyController,
    IdentifyNamespace,
    LbaFormat,
    encode_active_ns_list,
)

SUBNQN = "nqn.2024-01.io.nvmf:bench"
#: What the nvmf target offers: MDTS 2^8 * 4 KiB, 8 KiB in-capsule data, 128-entry queues.
MDTS = 8
INLINE_DATA = 8192
QUEUE_DEPTH = 128
MAXH2CDATA = 1 << 20
BLOCK_SIZE = 512
#: The receive buffer, and how much of it one receive may fill: a page at first, all of it once
#: capsules carry data, as the target's codec reads (``RECV_BUFFER_SIZE``, grown to
#: ``RECV_BUFFER_LARGE`` for capsules).  H2CData payload beyond what one read brought in with
#: its header is received in place, as the target does.
RX_BUFFER = 64 * 1024
RX_WINDOW = 4096

#: Common header: type, flags, hlen, pdo, plen.
CH = struct.Struct("<BBBBI")
#: The fields of a CapsuleCmd PDU the responder reads: opcode, CID, then (SQE DPTR) the SGL
#: length, then CDW10 and CDW11.
CMD = struct.Struct("<8xBxH28xI4xII")
assert CMD.size == 56
#: H2CData: flags, cccid.
H2C = struct.Struct("<xBxxIH")
#: CapsuleResp: CH then the CQE (DW0, DW1, SQHD, SQID, CID, status).
RESP = struct.Struct("<BBBBIIIHHHH")
assert RESP.size == 24
#: C2HData and R2T: CH, cccid, ttag/reserved, datao/r2to, datal/r2tl, reserved.
DATA = struct.Struct("<BBBBIHHII4x")
assert DATA.size == 24
ICRESP = struct.Struct("<BBBBIHBBI112x")
assert ICRESP.size == 128

PDU_ICREQ, PDU_H2C_TERM, PDU_CMD, PDU_H2C_DATA = 0x00, 0x02, 0x04, 0x06
FLAG_LAST, FLAG_SUCCESS = 0x04, 0x08
OP_FABRICS = 0x7F
ADMIN_IDENTIFY, ADMIN_SET_FEATURES, ADMIN_AER = 0x06, 0x09, 0x0C
FCTYPE_PROPERTY_SET, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET = 0x00, 0x01, 0x04
FID_NUM_QUEUES = 0x07


def identify_controller(subnqn: str = SUBNQN) -> bytes:
    """Identify Controller as the nvmf target answers it, in the fields a host acts on."""
    return IdentifyController(
        sn="rawnvme",
        mn="raw responder",
        fr="0.1.0",
        mdts=MDTS,
        cntlid=1,
        ver=vs(1, 3),
        cntrltype=1,
        kas=10,
        sqes=(6 << 4) | 6,
        cqes=(4 << 4) | 4,
        maxcmd=QUEUE_DEPTH,
        nn=1,
        sgls=(1 << 0) | (1 << 20),
        subnqn=subnqn,
        ioccsz=(64 + INLINE_DATA) // 16,
        iorcsz=1,
        msdbd=1,
    ).encode()


def identify_namespace(size: int) -> bytes:
    """Identify Namespace of the one namespace: ``size`` bytes in 512-byte blocks."""
    nlb = size // BLOCK_SIZE
    return IdentifyNamespace(
        nsze=nlb, ncap=nlb, nuse=nlb, lbaf=[LbaFormat(ms=0, lbads=9, rp=0)]
    ).encode()


class Responder(asyncio.BufferedProtocol):
    """One connection (one NVMe queue): PDUs in, PDUs out, see the module docstring."""

    def __init__(self, ns: memoryview, id_ctrl: bytes, id_ns: bytes) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(RX_BUFFER)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        #: Payload bytes still to receive into :attr:`dest`, and the PDU's reply when done.
        self.skip = 0
        self.after: list[bytes | memoryview] = []
        self.dest = memoryview(b"")
        self.ns = ns
        #: Byte offset in the namespace of each R2T'd Write, by its transfer tag (its CID).
        self.r2t_at: dict[int, int] = {}
        self.id_ctrl = id_ctrl
        self.id_ns = id_ns
        self.qid = 0
        self.sqsize = QUEUE_DEPTH
        self.sqhd = 0
        self.success = False
        self.cc = 0
        self.held: list[int] = []  # AERs never completed
        self.window = RX_WINDOW

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.skip:
            return self.dest
        if self.end == RX_BUFFER:  # compact: move the partial PDU to the front
            live = self.end - self.start
            self.buf[:live] = self.buf[self.start : self.end]
            self.start, self.end = 0, live
        return self.view[self.end : self.end + self.window]

    def buffer_updated(self, nbytes: int) -> None:
        transport = self.transport
        assert transport is not None
        if self.skip:
            self.skip -= nbytes
            if self.skip:
                self.dest = self.dest[nbytes:]
                return
            transport.writelines(self.after)
            return
        self.end += nbytes
        buf = self.buf
        unpack_ch = CH.unpack_from
        while self.end - self.start >= 8:
            start = self.start
            kind, _, hlen, _, plen = unpack_ch(buf, start)
            avail = self.end - start
            if avail < plen:
                if avail < hlen or (kind != PDU_H2C_DATA and plen <= RX_BUFFER):
                    if kind == PDU_CMD and plen * 4 > self.window:
                        self.window = RX_BUFFER  # capsules with data: read many at once
                    if start + plen > RX_BUFFER:  # make room before the buffer ends
                        self.buf[:avail] = self.buf[start : self.end]
                        self.start, self.end = 0, avail
                    return
                # Data still to come: answer from the header, receive the rest in place.
                if kind == PDU_H2C_DATA:
                    self.dest = self._place(start, avail)
                else:  # nothing else is this long; drop it
                    self.dest = memoryview(bytearray(plen - avail))
                out = self._pdu(kind, start, plen)
                self.start = self.end = 0
                self.skip = plen - avail
                self.after = out
                return
            self.start = start + plen
            if kind == PDU_H2C_DATA:
                self._place(start, plen)
            out = self._pdu(kind, start, plen)
            if out:
                transport.writelines(out)
        if self.start == self.end:
            self.start = self.end = 0

    def _pdu(self, kind: int, at: int, plen: int) -> list[bytes | memoryview]:
        """The PDUs that answer the one at ``at`` (sent once all of it has arrived)."""
        if kind == PDU_CMD:
            opcode, cid, length, cdw10, cdw11 = CMD.unpack_from(self.buf, at)
            sqhd = self.sqhd = (self.sqhd + 1) % self.sqsize
            if self.qid:
                offset = (cdw10 | cdw11 << 32) * BLOCK_SIZE  # SLBA
                if opcode & 3 == 2:  # controller to host data (Read)
                    header = DATA.pack(
                        0x07, FLAG_LAST | (FLAG_SUCCESS if self.success else 0), 24, 24,
                        24 + length, cid, 0, 0, length,
                    )  # fmt: skip
                    data = self.ns[offset : offset + length]
                    if self.success:
                        return [header, data]
                    return [
                        header, data,
                        RESP.pack(0x05, 0, 24, 0, 24, 0, 0, sqhd, self.qid, cid, 0),
                    ]  # fmt: skip
                if opcode & 3 == 1 and length:  # Write
                    if plen == 72:  # data not in the capsule: R2T, TTAG = CID
                        self.r2t_at[cid] = offset
                        return [DATA.pack(0x09, 0, 24, 0, 24, cid, cid, 0, length)]
                    self.ns[offset : offset + plen - 72] = self.view[at + 72 : at + plen]
                return [RESP.pack(0x05, 0, 24, 0, 24, 0, 0, sqhd, self.qid, cid, 0)]
            return self._admin(at, plen, opcode, cid, length, cdw10, cdw11, sqhd)
        if kind == PDU_H2C_DATA:
            flags, _, cccid = H2C.unpack_from(self.buf, at)
            if flags & FLAG_LAST:
                del self.r2t_at[cccid]
                sqhd = self.sqhd
                return [RESP.pack(0x05, 0, 24, 0, 24, 0, 0, sqhd, self.qid, cccid, 0)]
            return []
        if kind == PDU_ICREQ:
            return [ICRESP.pack(0x01, 0, 128, 0, 128, 0, 0, 0, MAXH2CDATA)]
        if kind == PDU_H2C_TERM and self.transport is not None:
            self.transport.close()
        return []

    def _admin(
        self,
        at: int,
        plen: int,
        opcode: int,
        cid: int,
        length: int,
        cdw10: int,
        cdw11: int,
        sqhd: int,
    ) -> list[bytes | memoryview]:
        """Fabrics and admin commands: success, with the little state a host's bring-up and
        shutdown need."""
        dw0 = dw1 = 0
        buf = self.buf
        if opcode == OP_FABRICS:
            fctype = buf[at + 12]
            if fctype == FCTYPE_CONNECT:
                self.qid, sqsize, cattr = struct.unpack_from("<HHB", buf, at + 50)
                self.sqsize = sqsize + 1
                self.sqhd = sqhd = 0
                self.success = bool(cattr & CATTR_DISABLE_SQFLOW)
                dw0 = 1  # CNTLID
            elif fctype == FCTYPE_PROPERTY_GET:
                (offset,) = struct.unpack_from("<I", buf, at + 52)
                value = self._property(offset)
                dw0, dw1 = value & 0xFFFFFFFF, value >> 32
            elif fctype == FCTYPE_PROPERTY_SET:
                offset, value = struct.unpack_from("<IQ", buf, at + 52)
                if offset == Prop.CC:
                    self.cc = value & 0xFFFFFFFF
        elif opcode == ADMIN_AER:
            self.held.append(cid)
            return []
        elif opcode == ADMIN_SET_FEATURES and cdw10 & 0xFF == FID_NUM_QUEUES:
            dw0 = cdw11
        elif opcode == ADMIN_IDENTIFY and length:
            cns = cdw10 & 0xFF
            if cns == Cns.CTRL:
                data = self.id_ctrl
            elif cns == Cns.NS:
                data = self.id_ns
            elif cns == Cns.NS_ACTIVE_LIST:
                data = encode_active_ns_list([1])
            else:
                data = bytes(IDENTIFY_DATA_SIZE)
            n = min(length, len(data))
            return [
                DATA.pack(0x07, FLAG_LAST, 24, 24, 24 + n, cid, 0, 0, n),
                data[:n],
                RESP.pack(0x05, 0, 24, 0, 24, 0, 0, sqhd, 0, cid, 0),
            ]
        elif length and plen == 72:  # controller to host data (Get Log Page ...): zeros
            return [
                DATA.pack(0x07, FLAG_LAST, 24, 24, 24 + length, cid, 0, 0, length),
                bytes(length),
                RESP.pack(0x05, 0, 24, 0, 24, 0, 0, sqhd, 0, cid, 0),
            ]
        return [RESP.pack(0x05, 0, 24, 0, 24, dw0, dw1, sqhd, 0, cid, 0)]

    def _place(self, at: int, have: int) -> memoryview:
        """An H2CData PDU at ``at`` of which ``have`` bytes arrived: copy its data that came
        with the header to the namespace, and return where the rest goes."""
        _, _, _, _, plen, _, ttag, datao, _ = DATA.unpack_from(self.buf, at)
        start = self.r2t_at[ttag] + datao
        got = have - 24
        self.ns[start : start + got] = self.view[at + 24 : at + have]
        return self.ns[start + got : start + plen - 24]

    def _property(self, offset: int) -> int:
        if offset == Prop.CAP:
            return Cap(mqes=QUEUE_DEPTH - 1, to=15).encode()
        if offset == Prop.VS:
            return vs(1, 3)
        if offset == Prop.CC:
            return self.cc
        if offset == Prop.CSTS:
            csts = CSTS.RDY if self.cc & CC.EN else 0
            if self.cc & CC.SHN_MASK:
                csts |= CSTS.SHST_CMPLT
            return csts
        return 0


#: The C I/O queue loop of ``--native``, and where it is built (gitignored).
NATIVE_SOURCE = Path(__file__).resolve().parent / "native" / "rawio.c"
NATIVE_BUILD = NATIVE_SOURCE.parent / "build"


class NativeUnavailable(RuntimeError):
    """``--native`` cannot run here: no C compiler, or it could not build the loop."""


def native_library() -> ctypes.CDLL:
    """The C I/O queue loop, loaded; built first if this version of its source never was (the
    shared object is named by the source's hash, so an edit rebuilds it)."""
    source = NATIVE_SOURCE.read_bytes()
    lib = NATIVE_BUILD / f"rawio-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if not lib.exists():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise NativeUnavailable(
                f"--native builds {NATIVE_SOURCE} and needs a C compiler (cc), which is not "
                "installed: apt-get install gcc (the Python responder needs none)"
            )
        NATIVE_BUILD.mkdir(exist_ok=True)
        partial = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        flags = ["-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror"]
        built = subprocess.run(
            [cc, *flags, "-o", str(partial), str(NATIVE_SOURCE)], capture_output=True, text=True
        )
        if built.returncode:
            partial.unlink(missing_ok=True)
            raise NativeUnavailable(f"{cc} could not build {NATIVE_SOURCE}:\n{built.stderr}")
        os.replace(partial, lib)  # atomic: a concurrent build loads one whole file or the other
    loaded = ctypes.CDLL(str(lib))
    loaded.rawio_serve.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    loaded.rawio_serve.restype = ctypes.c_long
    return loaded


class NativeResponder(Responder):
    """A :class:`Responder` whose I/O queue, once its Connect is answered, is served by the C
    loop (:func:`native_library`) in a thread of its own; an admin queue stays here."""

    def __init__(
        self, ns: memoryview, id_ctrl: bytes, id_ns: bytes, lib: ctypes.CDLL, mapped: ctypes.Array
    ) -> None:
        super().__init__(ns, id_ctrl, id_ns)
        self.lib = lib
        #: The namespace as a C array (``ns``'s bytes): referenced while a queue may use it.
        self.mapped = mapped
        self.handed_off = False

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        if not self.qid or self.handed_off:
            return
        # The Connect just answered: the host sends nothing more until it has that answer, so
        # every later byte is still in the socket when reading stops here.
        self.handed_off = True
        transport = self.transport
        assert transport is not None and self.start == self.end
        transport.pause_reading()
        fd = os.dup(transport.get_extra_info("socket").fileno())
        asyncio.get_running_loop().create_task(self._hand_off(transport, fd))

    async def _hand_off(self, transport: asyncio.Transport, fd: int) -> None:
        """Once the Connect's answer is in the kernel, leave the socket to a C thread."""
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        transport.abort()  # closes the event loop's descriptor; the socket lives on in ``fd``
        args = (
            fd,
            ctypes.addressof(self.mapped),
            len(self.ns),
            self.qid,
            self.sqsize,
            self.sqhd,
            self.success,
        )
        name = f"rawio-q{self.qid}"
        threading.Thread(target=self.lib.rawio_serve, args=args, name=name, daemon=True).start()


async def serve(
    port: int,
    size: int = 256 << 20,
    host: str = "127.0.0.1",
    subnqn: str = SUBNQN,
    native: bool = False,
) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port); the one namespace has ``size`` bytes;
    ``native``: I/O queues in C (:class:`NativeResponder`)."""
    loop = asyncio.get_running_loop()
    # The target's own RAM medium: the same memfd, allocation and mapping as a namespace's.
    ns = RamMedia(size).open_queue().memory
    assert ns is not None
    id_ctrl = identify_controller(subnqn)
    id_ns = identify_namespace(size)
    if not native:
        return await loop.create_server(lambda: Responder(ns, id_ctrl, id_ns), host, port)
    lib = native_library()
    mapped = (ctypes.c_char * len(ns)).from_buffer(ns)  # the same bytes, for C
    return await loop.create_server(
        lambda: NativeResponder(ns, id_ctrl, id_ns, lib, mapped), host, port
    )


async def _main(port: int, size: int, subnqn: str, native: bool) -> None:
    server = await serve(port, size, subnqn=subnqn, native=native)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--native", action="store_true", help="serve I/O queues in C")
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("size", type=int, nargs="?", default=256 << 20)
    parser.add_argument("subnqn", nargs="?", default=SUBNQN)
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    try:
        # serve() loads the C loop before it listens: a missing compiler says so first
        run(_main(args.port, args.size, args.subnqn, args.native))
    except NativeUnavailable as exc:
        sys.exit(f"rawnvme: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
