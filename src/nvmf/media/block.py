"""``block`` media: a namespace on a block device, through the descriptor path of ``file``.

Reads, writes, FUA and Flush are :class:`~nvmf.media.file.DescriptorMedia`'s.  What differs:

* Geometry comes from the device: ``BLKGETSIZE64`` for the size, ``BLKSSZGET`` for the logical
  block size.  The namespace's block size is at least the device's (a 512-byte LBA format cannot
  be served from a 4Kn device), larger when the configuration asks for a larger power of two.
* Deallocate uses ``fallocate(PUNCH_HOLE | KEEP_SIZE)`` on the device, which the kernel turns into
  a Write Zeroes *with unmap allowed and no fallback*: the blocks are released and guaranteed to
  read as zeroes, as the :class:`~nvmf.media.base.Media` contract requires.  A plain
  ``BLKDISCARD`` gives no such guarantee (devices may return old data or garbage after a discard,
  which is why Linux dropped ``discard_zeroes_data``), so it is not used.  When the device cannot
  unmap-and-zero, deallocate falls back to ``BLKZEROOUT``.
* Write Zeroes is ``BLKZEROOUT``: the device zeroes the range (offloaded where it can) and keeps it
  allocated.
* ``volatile_write_cache`` is what the kernel reports in ``queue/write_cache``: "write back" means
  a volatile cache; a buffered (not ``direct``) device always has the page cache in front of it.
* The device is opened ``O_EXCL`` (an exclusive claim, as ``mount`` takes), so a mounted or
  otherwise claimed device is refused with ``EBUSY`` rather than corrupted.

The ioctl numbers use the generic Linux encoding (x86, Arm, RISC-V).
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from nvmf.media.base import MediaError
from nvmf.media.file import DEFAULT_IO_THREADS, DescriptorMedia, Geometry


def _ioc(direction: int, number: int, size: int) -> int:
    """``_IOC(dir, 0x12, nr, size)``: the block layer's ioctl type is 0x12."""
    return (direction << 30) | (size << 16) | (0x12 << 8) | number


BLKSSZGET = _ioc(0, 104, 0)  # logical block size (int)
BLKGETSIZE64 = _ioc(2, 114, 8)  # device size in bytes (u64)
BLKZEROOUT = _ioc(0, 127, 0)  # zero a range: u64[2] = {start, length}

_RANGE = struct.Struct("=QQ")
_U64 = struct.Struct("=Q")
_INT = struct.Struct("=i")


class BlockMedia(DescriptorMedia):
    """A namespace on a whole block device (or partition) at ``path``."""

    kind = "block"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        block_size: int | None = None,
        direct: bool = False,
        read_only: bool = False,
        io_threads: int = DEFAULT_IO_THREADS,
        io_engine: str = "auto",
    ) -> None:
        super().__init__(
            path,
            flags=os.O_EXCL,  # claim the device, as mount does: a claimed one fails with EBUSY
            read_only=read_only,
            direct=direct,
            geometry=lambda fd, path: _geometry(fd, path, block_size, direct),
            io_threads=io_threads,
            io_engine=io_engine,
        )

    def _copy_zeroes(self, offset: int, length: int) -> None:
        """Deallocate's fallback: ``BLKZEROOUT``, not zeroes streamed through ``pwritev``."""
        self._write_zeroes_sync(offset, length)

    def _write_zeroes_sync(self, offset: int, length: int) -> None:
        """``BLKZEROOUT``: the device zeroes the range and keeps it allocated."""
        fcntl.ioctl(self._fd, BLKZEROOUT, _RANGE.pack(offset, length))


def _geometry(fd: int, path: str, block_size: int | None, direct: bool) -> Geometry:
    """The namespace's block size, size and volatile write cache for an open device."""
    st = os.fstat(fd)
    if not stat.S_ISBLK(st.st_mode):
        raise ValueError(f"{path} is not a block device")
    try:
        device_block = _INT.unpack(fcntl.ioctl(fd, BLKSSZGET, bytes(_INT.size)))[0]
        device_size = _U64.unpack(fcntl.ioctl(fd, BLKGETSIZE64, bytes(_U64.size)))[0]
    except OSError as exc:
        raise MediaError(exc.errno, f"geometry: {exc.strerror}", path) from exc
    lba = max(block_size or device_block, device_block)
    if lba % device_block:
        raise ValueError(f"block size {lba} is not a multiple of {path}'s {device_block}")
    size = device_size // lba * lba
    if size == 0:
        raise ValueError(f"{path} holds less than one {lba}-byte block")
    return Geometry(lba, size, _write_cache(st.st_rdev) if direct else True)


def _write_cache(rdev: int) -> bool:
    """Whether the device reports a volatile write cache (``write back``); True if unknown."""
    base = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    for queue in (f"{base}/queue", f"{base}/../queue"):  # a partition's queue is its disk's
        try:
            with open(f"{queue}/write_cache") as f:
                return f.read().strip() != "write through"
        except OSError:
            continue
    return True
