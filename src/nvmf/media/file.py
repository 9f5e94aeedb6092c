"""``file`` media: a namespace stored in a regular file, and the descriptor I/O path it shares.

:class:`DescriptorMedia` is the I/O path for anything reached through a file descriptor (this
module's regular files, :mod:`nvmf.media.block`'s block devices):

* Reads and writes are ``os.preadv``/``os.pwritev`` straight into and out of the request's staging
  buffer (zero copy), run on a small thread pool of the media's own so that many requests overlap
  and the event loop never waits for the disk.
* A read that runs past the end of the file (the file was truncated behind our back) reads zeroes
  for the missing part.
* FUA writes use ``RWF_DSYNC`` (the write returns once it is durable); a kernel without it gets an
  ``fdatasync`` after the write.  Flush is ``fdatasync``.
* Deallocate punches a hole (``fallocate(PUNCH_HOLE | KEEP_SIZE)``), so the file shrinks on disk;
  Write Zeroes uses ``fallocate(ZERO_RANGE | KEEP_SIZE)``, which keeps the blocks allocated.  When
  the filesystem supports neither, zeroes are written.
* Every ``OSError`` becomes a :class:`~nvmf.media.base.MediaError` with the same ``errno`` and a
  message naming the operation, the range and the path.

``direct=True`` opens with ``O_DIRECT`` (no page cache).  The kernel then needs offsets and lengths
aligned to the device's logical block size, and the buffer to the device's DMA alignment (which
varies, up to that block size).  Offsets and lengths are whole namespace blocks; buffers must be
aligned to the namespace block size, which holds on every device: the offload layer's staging
buffers are page-aligned ``mmap`` memory.  A writable buffer off that alignment is refused with a
``MediaError(EINVAL)`` that says so before the kernel sees it; the kernel's own ``EINVAL`` (a
read-only buffer, or a filesystem needing more alignment than the namespace blocks) comes back
with the same explanation.

``volatile_write_cache`` is True for files in both modes: buffered writes sit in the page cache,
and even ``O_DIRECT`` writes can leave a hole's new allocation in unwritten filesystem metadata
and the data in the disk's own cache until ``fdatasync``.  Only Flush or FUA make them durable.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

from nvmf.media import uring, uring_support
from nvmf.media.base import IO_ENGINES, MediaError, MediaHandle, medium_result
from nvmf.media.null import ZERO_CHUNK, ZEROES, check_geometry, check_range, zero_fill
from nvmf.media.queue import MediaQueue, ThreadQueue
from nvmf.media.uring import UringQueue

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Threads per media: enough to keep a queue of requests in flight on one file or device.
DEFAULT_IO_THREADS = 8

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_RWF_DSYNC: int = getattr(os, "RWF_DSYNC", 0)
#: The file system block size reported when the file system says nothing usable: the page size
#: the page cache works in on every Linux platform this runs on.
FALLBACK_FS_BLOCK_SIZE = 4096
#: The smallest block size worth reporting: the smallest logical block a namespace can have.
MIN_FS_BLOCK_SIZE = 512
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def _load_fallocate() -> Callable[[int, int, int, int], int]:
    """libc's ``fallocate`` (``os`` only has ``posix_fallocate``, which cannot punch holes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        func = libc.fallocate64
    except AttributeError:
        func = libc.fallocate
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_fallocate = _load_fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Call ``fallocate(2)`` with ``mode`` flags; failure raises ``OSError`` with its errno."""
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def buffer_address(buf: memoryview) -> int | None:
    """The address of ``buf``'s first byte, or None when it cannot be taken (read-only, empty)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError):
        return None


def filesystem_block_size(fd: int) -> int:
    """The block size of the file system ``fd``'s file is on: a power of two, at least 512.

    ``st_blksize`` (the preferred I/O size), else ``statvfs``'s ``f_bsize``, else its
    ``f_frsize``: some file systems answer 0 in one of them (overlayfs and FUSE file systems in
    containers do in ``st_blksize``).  A value that is not a power of two counts as the largest
    power of two dividing it (I/O aligned to it is aligned to that), and one below 512 as
    unknown; when none is usable the answer is :data:`FALLBACK_FS_BLOCK_SIZE`.
    """
    candidates = [getattr(os.fstat(fd), "st_blksize", 0)]
    try:
        vfs = os.fstatvfs(fd)
    except OSError:
        pass
    else:
        candidates += [vfs.f_bsize, vfs.f_frsize]
    for size in candidates:
        if size > 0:
            size &= -size  # the largest power of two that divides it
            if size >= MIN_FS_BLOCK_SIZE:
                return int(size)
    return FALLBACK_FS_BLOCK_SIZE


def check_io_engine(io_engine: str, path: str) -> None:
    """Refuse at open an engine that does not exist, or io_uring asked for where it cannot run
    (a ``MediaError`` naming why: the kernel, the missing package, a refused setup)."""
    if io_engine not in IO_ENGINES:
        raise ValueError(
            f"{path}: io_engine must be one of {', '.join(IO_ENGINES)}, got {io_engine!r}"
        )
    if io_engine == "io_uring" and (why := uring_support.problem()) is not None:
        raise MediaError(errno.ENOTSUP, f"io_engine io_uring: {why}", path)


class Geometry(NamedTuple):
    """What a media type learns from its open descriptor."""

    block_size: int
    size: int
    volatile_write_cache: bool


def open_descriptor(path: str, flags: int, *, read_only: bool, direct: bool) -> int:
    """``os.open`` with the access mode, ``O_CLOEXEC`` and ``O_DIRECT`` added to ``flags``.

    Failure raises a ``MediaError`` naming ``path``.
    """
    flags |= os.O_CLOEXEC | (os.O_RDONLY if read_only else os.O_RDWR)
    if direct:
        flags |= os.O_DIRECT
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        hint = ""
        if direct and exc.errno == errno.EINVAL:
            hint = " (the filesystem refuses O_DIRECT)"
        raise MediaError(exc.errno, f"open: {exc.strerror}{hint}", path) from exc


class DescriptorMedia:
    """The shared I/O path for media reached through an open file descriptor.

    ``__init__`` opens ``path`` (``flags`` added to the access mode) and asks ``geometry`` what
    the open descriptor holds, closing it again if that fails.  Subclasses supply the flags and
    the geometry, and may override :meth:`_write_zeroes_sync` and :meth:`_copy_zeroes`.  The
    ``_*_sync`` methods run on the media's thread pool and raise ``OSError``.
    """

    kind = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flags: int,
        read_only: bool,
        direct: bool,
        geometry: Callable[[int, str], Geometry],
        io_threads: int = DEFAULT_IO_THREADS,
        io_engine: str = "auto",
    ) -> None:
        path = os.fspath(path)
        check_io_engine(io_engine, path)
        fd = open_descriptor(path, flags, read_only=read_only, direct=direct)
        try:
            self.block_size, self.size, self.volatile_write_cache = geometry(fd, path)
            check_geometry(self.size, self.block_size)
        except BaseException:
            os.close(fd)
            raise
        self._setup(fd, path, direct, io_threads, io_engine)

    def _setup(self, fd: int, path: str, direct: bool, io_threads: int, io_engine: str) -> None:
        self.path = path
        self.direct = direct
        #: How this process's queues reach the medium: ``io_uring``, ``threads``, or ``auto``
        #: (io_uring where :func:`nvmf.media.uring_support.problem` finds nothing against it).
        self.io_engine = io_engine
        self._rings: list[UringQueue] = []
        self._fd = fd
        #: Block size of the file system the file is on (a block device: its node's I/O size),
        #: never 0: see :func:`filesystem_block_size`.
        self.fs_block_size = filesystem_block_size(fd)
        self._dsync_flag = _RWF_DSYNC
        self._unsupported_modes: set[int] = set()  # fallocate modes this filesystem refused
        name = os.path.basename(path) or "media"
        self._executor = ThreadPoolExecutor(io_threads, thread_name_prefix=f"nvmf-{name}")

    # -- serving the same medium from another process -------------------------------------------

    def share(self) -> tuple[MediaHandle, int | None]:
        """The handle and this medium's descriptor: a worker given a duplicate of it (over a
        Unix socket) serves the same open file, with the same ``O_DIRECT`` and device claim."""
        handle = MediaHandle(
            self.kind,
            self.size,
            self.block_size,
            self.volatile_write_cache,
            self.path,
            self.direct,
            io_engine=self.io_engine,
        )
        return handle, self._fd

    @classmethod
    def adopt(
        cls, handle: MediaHandle, fd: int, io_threads: int = DEFAULT_IO_THREADS
    ) -> DescriptorMedia:
        """A medium on ``fd`` (received from the process that opened it); closes ``fd`` when
        closed."""
        media = cls.__new__(cls)
        media.block_size, media.size = handle.block_size, handle.size
        media.volatile_write_cache = handle.volatile_write_cache
        media._setup(fd, handle.path, handle.direct, io_threads, handle.io_engine)
        return media

    # -- the Media contract --------------------------------------------------------------------

    async def read(self, offset: int, buf: memoryview) -> None:
        """Read into ``buf`` from ``offset``; bytes past the end of the file read as zeroes."""
        check_range(self.size, offset, len(buf))
        self._check_aligned(buf)
        await self._run("read", offset, len(buf), self._read_sync, offset, buf)

    async def write(self, offset: int, buf: memoryview, fua: bool = False) -> None:
        """Write ``buf`` at ``offset``; with ``fua`` it is durable when this returns."""
        check_range(self.size, offset, len(buf))
        self._check_aligned(buf)
        await self._run("write", offset, len(buf), self._write_sync, offset, buf, fua)

    async def flush(self) -> None:
        """``fdatasync``: every completed write (data and the metadata to find it) is durable."""
        await self._run("flush", 0, self.size, os.fdatasync, self._fd)

    async def write_zeroes(self, offset: int, length: int) -> None:
        """Zero the range, keeping it allocated where the medium can."""
        check_range(self.size, offset, length)
        await self._run("write zeroes", offset, length, self._write_zeroes_sync, offset, length)

    async def deallocate(self, offset: int, length: int) -> None:
        """Release the range's storage; it reads as zeroes afterwards."""
        check_range(self.size, offset, length)
        await self._run("deallocate", offset, length, self._deallocate_sync, offset, length)

    def close(self) -> None:
        """Wait for requests in flight, then close the descriptor.  Safe to call twice."""
        if self._fd < 0:
            return
        # The pool's threads and the rings may still be using the descriptor: closing it under
        # them could make a pending write land in whatever file reuses the number.
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        self._executor.shutdown(wait=True)
        os.close(self._fd)
        self._fd = -1

    def open_queue(self) -> MediaQueue:
        """This process's queue on the medium, completing on the running event loop: an
        io_uring ring, or the thread pool (``io_engine``; ``auto`` takes the ring where the
        kernel allows it).  The log says which, and why not io_uring."""
        loop = asyncio.get_running_loop()
        if self.io_engine != "threads":
            why = uring_support.problem()
            if why is None:
                queue = UringQueue(self, loop)
                self._rings.append(queue)
                log.info("%s: io_uring queue (%d entries)", self.path, uring.RING_ENTRIES)
                return queue
            if self.io_engine == "io_uring":  # checked at start: the kernel changed under us?
                raise MediaError(errno.ENOTSUP, f"io_engine io_uring: {why}", self.path)
            log.info("%s: thread-pool queue (io_uring: %s)", self.path, why)
        else:
            log.info("%s: thread-pool queue (io_engine threads)", self.path)
        return ThreadQueue(self, loop)

    def fileno(self) -> int:
        """The open descriptor (for a queue that submits on it)."""
        return self._fd

    # -- what a ThreadQueue calls ----------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def check_io(self, offset: int, buf: memoryview) -> None:
        """The checks :meth:`read` and :meth:`write` make before the kernel sees a request."""
        check_range(self.size, offset, len(buf))
        self._check_aligned(buf)

    def read_sync(self, offset: int, buf: memoryview) -> None:
        self._read_sync(offset, buf)

    def write_sync(self, offset: int, buf: memoryview, fua: bool) -> None:
        self._write_sync(offset, buf, fua)

    def flush_sync(self) -> None:
        os.fdatasync(self._fd)

    # -- the blocking part, run on the pool ----------------------------------------------------

    def _read_sync(self, offset: int, buf: memoryview) -> None:
        done = 0
        while done < len(buf):
            n = os.preadv(self._fd, [buf[done:]], offset + done)
            if n == 0:  # end of file: what is not there reads as zeroes
                zero_fill(buf[done:])
                return
            done += n

    def _write_sync(self, offset: int, buf: memoryview, fua: bool) -> None:
        flags = self._dsync_flag if fua else 0
        try:
            self._pwrite_all(offset, buf, flags)
        except OSError as exc:
            if not (flags and exc.errno in _UNSUPPORTED):
                raise
            self._dsync_flag = flags = 0  # a kernel without RWF_DSYNC: write, then fdatasync
            self._pwrite_all(offset, buf, 0)
        if fua and not flags:
            os.fdatasync(self._fd)

    def _pwrite_all(self, offset: int, buf: memoryview, flags: int) -> None:
        done = 0
        while done < len(buf):
            done += os.pwritev(self._fd, [buf[done:]], offset + done, flags)

    def _deallocate_sync(self, offset: int, length: int) -> None:
        """Punch a hole; write zeroes where the filesystem cannot punch."""
        if not self._fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
            self._copy_zeroes(offset, length)

    def _write_zeroes_sync(self, offset: int, length: int) -> None:
        """``ZERO_RANGE`` (blocks stay allocated), else deallocate (hole, else written zeroes)."""
        if not self._fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length):
            self._deallocate_sync(offset, length)

    def _fallocate(self, mode: int, offset: int, length: int) -> bool:
        """``fallocate`` with ``mode``; False when the filesystem does not support it.

        A refusal is remembered, so later calls go straight to the caller's fallback.
        """
        if mode in self._unsupported_modes:
            return False
        try:
            fallocate(self._fd, mode, offset, length)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._unsupported_modes.add(mode)
            return False
        return True

    def _copy_zeroes(self, offset: int, length: int) -> None:
        """Write zeroes from the shared page-aligned zero mapping (valid for ``O_DIRECT`` too)."""
        done = 0
        while done < length:
            n = min(ZERO_CHUNK, length - done)
            self._pwrite_all(offset + done, ZEROES[:n], 0)
            done += n

    # -- plumbing ------------------------------------------------------------------------------

    def _check_aligned(self, buf: memoryview) -> None:
        """Refuse, before the kernel does, an ``O_DIRECT`` buffer off the block size alignment."""
        if not self.direct:
            return
        address = buffer_address(buf)
        if address is not None and address % self.block_size:
            raise MediaError(
                errno.EINVAL,
                f"O_DIRECT buffer at {address:#x} is not aligned to {self.block_size} bytes "
                "(staging buffers must be page-aligned mmap memory)",
                self.path,
            )

    async def _run(
        self, op: str, offset: int, length: int, func: Callable[..., T], *args: object
    ) -> T:
        """Run ``func(*args)`` on the pool; an ``OSError`` becomes a ``MediaError``.

        A thread cannot be interrupted in a system call, so if the caller is cancelled it still
        waits for the call to finish before the cancellation propagates: the request's staging
        buffer stays borrowed until the kernel is done with it, and cannot be reused under it.
        """
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, func, *args)
        try:
            return await medium_result(fut)
        except MediaError:
            raise
        except OSError as exc:
            raise self._error(exc, op, offset, length) from exc

    def _error(self, exc: OSError, op: str, offset: int, length: int) -> MediaError:
        code = exc.errno or errno.EIO
        reason = exc.strerror or str(exc)
        if self.direct and code == errno.EINVAL and op in ("read", "write"):
            reason += (
                " (O_DIRECT: the filesystem or device may need more alignment than the "
                f"namespace's {self.block_size}-byte blocks; the filesystem's block size is "
                f"{self.fs_block_size})"
            )
        return MediaError(code, f"{op} at {offset}+{length}: {reason}", self.path)


class FileMedia(DescriptorMedia):
    """A namespace in a regular file.

    A missing file is created (sparse) when ``size`` is given; an existing file shorter than
    ``size`` is extended (sparse: existing data stays), and a longer one serves its first ``size``
    bytes.  Without ``size`` the namespace is the file's size rounded down to ``block_size``.
    ``read_only`` opens the file ``O_RDONLY``: every write then fails with ``MediaError(EBADF)``.
    """

    kind = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        size: int | None = None,
        block_size: int = 512,
        direct: bool = False,
        read_only: bool = False,
        io_threads: int = DEFAULT_IO_THREADS,
        io_engine: str = "auto",
    ) -> None:
        if size is not None:  # refuse a bad size before a file is created with it
            check_geometry(size, block_size)

        def geometry(fd: int, path: str) -> Geometry:
            return Geometry(block_size, _file_size(fd, path, size, block_size, read_only), True)

        super().__init__(
            path,
            flags=os.O_CREAT if size is not None and not read_only else 0,
            read_only=read_only,
            direct=direct,
            geometry=geometry,
            io_threads=io_threads,
            io_engine=io_engine,
        )


def _file_size(fd: int, path: str, size: int | None, block_size: int, read_only: bool) -> int:
    """The namespace size for an open file, extending the file to ``size`` when it is shorter."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if size is None:
        size = st.st_size // block_size * block_size
        if size == 0:
            raise ValueError(f"{path} holds less than one {block_size}-byte block; give a size")
        return size
    if st.st_size < size:
        if read_only:
            raise ValueError(f"{path} is {st.st_size} bytes, less than the size {size}")
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise MediaError(exc.errno, f"extend to {size} bytes: {exc.strerror}", path) from exc
    return size
