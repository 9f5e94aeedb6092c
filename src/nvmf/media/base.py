"""The namespace storage contract, shared by every media type.

A namespace's data lives in one :class:`Media`.  Offsets and lengths are in *bytes* (the command
handler has already converted SLBA/NLB with the namespace's block size and range-checked them), and
buffers are the request's staging buffer, so a media type moves payload between storage and that
buffer without another copy (``preadv``/``pwritev``, io_uring registered buffers, or the SSD's DMA).

Buffers are flat byte (format ``B``) memoryviews, writable for ``read``.  A media type may use a
buffer until its call returns, and only until then: a call whose task is cancelled still returns
only once the medium is done with the buffer, so the caller may hand the staging buffer back to
its pool as soon as the ``await`` ends, whatever ended it.  Media that bypass the page cache
(``O_DIRECT``, an SSD's DMA) need buffers aligned to ``block_size``; staging buffers are
page-aligned ``mmap`` memory, which always is.

I/O failures raise :class:`MediaError` (an ``OSError``: ``errno`` says what failed); the I/O
handler turns it into the media status the spec asks for (Write Fault, Unrecovered Read Error).
A range outside ``[0, size)`` raises ``ValueError``: the handler checks ranges first, so that is
a bug, as is anything else escaping a media call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from nvmf.media.queue import MediaQueue


T = TypeVar("T")


async def medium_result(fut: asyncio.Future[T]) -> T:
    """Await a medium's operation; if the awaiting task is cancelled, wait until the medium is
    done anyway before the cancellation goes on.  A thread (or a device) cannot be stopped in
    the middle of a transfer: the caller's staging buffer stays borrowed until the medium is
    done with it, so it is never reused under a running I/O."""
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([fut])
        if not fut.cancelled():
            fut.exception()  # retrieved: the caller asked to stop, not to hear about it
        raise


class MediaError(OSError):
    """The medium failed an operation (EIO from a file, a device error from an SSD)."""


#: How a descriptor medium's (``file``, ``block``) queues reach it: an io_uring ring, the thread
#: pool, or ``auto`` (io_uring where the kernel allows it).  A namespace's ``nvmf.io_engine``.
IO_ENGINES = ("auto", "threads", "io_uring")


@dataclass(frozen=True)
class MediaHandle:
    """How another process (an offload worker) serves the same medium: picklable, sent with at
    most one descriptor (the RAM medium's memfd, a file's or device's open descriptor), or with
    the descriptors a :class:`WorkerShare` medium lists."""

    kind: str
    size: int
    block_size: int
    volatile_write_cache: bool
    path: str = ""
    direct: bool = False
    #: How a descriptor medium's queues reach it (``auto``, ``threads``, ``io_uring``).
    io_engine: str = "auto"
    #: What else the kind needs, as plain picklable data (an SSD queue pair's layout).
    extra: Any = None


@runtime_checkable
class Media(Protocol):
    """One namespace's backing store."""

    #: Media type name as it appears in configuration (``ram``, ``file``, ``block``, ``null``).
    kind: str
    #: Logical block size in bytes (512 or 4096); the namespace's LBA format 0.
    block_size: int
    #: Capacity in bytes, a multiple of ``block_size``.
    size: int
    #: True when writes may sit in a volatile cache until Flush (Identify Controller VWC).
    volatile_write_cache: bool

    async def read(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes at ``offset``; unwritten ranges read as zeroes."""
        ...

    async def write(self, offset: int, buf: memoryview, fua: bool = False) -> None:
        """Store ``buf`` at ``offset``; with ``fua`` it is durable before this returns."""
        ...

    async def flush(self) -> None:
        """Make every completed write durable (the Flush command)."""
        ...

    async def write_zeroes(self, offset: int, length: int) -> None:
        """Make ``length`` bytes at ``offset`` read as zeroes (Write Zeroes)."""
        ...

    async def deallocate(self, offset: int, length: int) -> None:
        """Release a range (Dataset Management, AD): it reads as zeroes afterwards."""
        ...

    def open_queue(self) -> MediaQueue:
        """This process's queue on the medium (:mod:`nvmf.media.queue`): Read, Write and Flush
        without a coroutine per I/O.  Called once per data-plane process, in its event loop."""
        ...

    def share(self) -> tuple[MediaHandle, int | None]:
        """What a worker process needs to serve this medium: a handle, and the descriptor to
        send along with it (or None).  :func:`nvmf.media.factory.adopt_media` opens it there."""
        ...

    def close(self) -> None:
        """Release files, mappings and memory; the media is unusable afterwards."""
        ...


def close_descriptors(fds: Iterable[int]) -> None:
    """Close every descriptor of ``fds``, going on past any that fails: what a medium's
    adopter does with the descriptors a handle came with once it has mapped them, or on
    failure."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@runtime_checkable
class ServingCheck(Protocol):
    """A medium that can be served only in some setups (the userspace NVMe driver: not by
    offload workers yet; CMB staging not through RDMA).  The control plane asks it at start,
    before anything listens, and refuses to start with the reason it gives."""

    def serving_problem(self, workers: int, trtypes: Collection[str]) -> str | None:
        """Why this medium cannot be served with ``workers`` offload workers through ports of
        the transports ``trtypes``; None when it can."""
        ...


@runtime_checkable
class WorkerShare(Protocol):
    """A medium that gives each offload worker resources of its own (the userspace NVMe
    driver: one SSD queue pair and DMA-visible staging memory per worker), rather than one
    handle for all (:meth:`Media.share`)."""

    def share_with(self, worker: int) -> tuple[MediaHandle, list[int]]:
        """Make worker ``worker``'s resources; its handle and the descriptors to send along
        (still owned here: the caller sends them, it does not close them)."""
        ...

    def unshare(self, worker: int) -> None:
        """Worker ``worker`` is gone (stopped or dead): free what :meth:`share_with` made."""
        ...


@runtime_checkable
class DeviceReport(Protocol):
    """A medium that owns a device other tools cannot look at while the target runs (the
    userspace NVMe driver holds the SSD's VFIO group), and reports it instead: ``nvmf doctor``
    asks a running target for these facts over the control socket (``pci_devices``)."""

    def device_report(self) -> dict[str, Any]:
        """The device and how each process of the target uses it, JSON-ready (strings,
        numbers, lists, dicts)."""
        ...
