"""``file`` media specifics: sizing, hole punching, the FUA/Flush syscalls, fallbacks, errors."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nvmf.media.file as file_mod
from nvmf.media.base import MediaError
from nvmf.media.file import FileMedia
from tests.media.mediatest import Buffer, direct_io_dir

MiB = 1 << 20


def allocated(path: Path) -> int:
    """Bytes the filesystem has allocated to ``path``."""
    return os.stat(path).st_blocks * 512


# -- opening and sizing ---------------------------------------------------------------------------


def test_creates_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    media = FileMedia(path, size=64 * MiB)
    try:
        assert (media.kind, media.size, media.block_size) == ("file", 64 * MiB, 512)
        assert media.volatile_write_cache is True
        assert os.path.getsize(path) == 64 * MiB
        assert allocated(path) == 0
    finally:
        media.close()


def test_existing_file_size_rounds_down(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    path.write_bytes(b"\x11" * 10000)
    media = FileMedia(path, block_size=4096)
    try:
        assert media.size == 8192
        out = memoryview(bytearray(4096))
        asyncio.run(media.read(4096, out))
        assert out == b"\x11" * 4096
    finally:
        media.close()


def test_shorter_file_is_extended_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    path.write_bytes(b"\x22" * 4096)
    media = FileMedia(path, size=MiB)
    try:
        assert os.path.getsize(path) == MiB
        out = memoryview(bytearray(8192))
        asyncio.run(media.read(0, out))
        assert out == b"\x22" * 4096 + bytes(4096)
    finally:
        media.close()


def test_bad_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").touch()
    with pytest.raises(ValueError, match="less than one 512-byte block"):
        FileMedia(tmp_path / "empty")
    with pytest.raises(MediaError) as missing:
        FileMedia(tmp_path / "missing")  # no size: nothing to create
    assert missing.value.errno == errno.ENOENT
    assert missing.value.filename == str(tmp_path / "missing")
    with pytest.raises(MediaError) as directory:
        FileMedia(tmp_path)
    assert directory.value.errno == errno.EISDIR
    with pytest.raises(ValueError, match="multiple"):
        FileMedia(tmp_path / "odd", size=1000)
    assert not (tmp_path / "odd").exists()  # refused before anything was created


def test_refusals_leave_no_descriptor_open(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    path.write_bytes(bytes(8192))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(ValueError, match="block size 1000"):
            FileMedia(path, block_size=1000)
        with pytest.raises(ValueError, match="less than one"):
            FileMedia(path, block_size=16384)
    assert len(os.listdir("/proc/self/fd")) == before


# -- deallocate and write zeroes ----------------------------------------------------------------


def test_deallocate_punches_holes(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    media = FileMedia(path, size=16 * MiB)
    try:
        asyncio.run(media.write(0, memoryview(os.urandom(8 * MiB))))
        asyncio.run(media.flush())
        full = allocated(path)
        assert full >= 8 * MiB
        asyncio.run(media.deallocate(MiB, 6 * MiB))
        assert allocated(path) <= full - 6 * MiB
        out = memoryview(bytearray(6 * MiB))
        asyncio.run(media.read(MiB, out))
        assert out == bytes(6 * MiB)
    finally:
        media.close()


@pytest.mark.parametrize("op", ["deallocate", "write_zeroes"])
def test_zeroing_without_fallocate_writes_zeroes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """A filesystem without hole punching or ZERO_RANGE still gets zeroes, written out."""
    tried: list[int] = []

    def unsupported(fd: int, mode: int, offset: int, length: int) -> None:
        tried.append(mode)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(file_mod, "fallocate", unsupported)
    media = FileMedia(tmp_path / "ns.img", size=4 * MiB)
    try:
        asyncio.run(media.write(0, memoryview(b"\x33" * (3 * MiB))))
        asyncio.run(getattr(media, op)(4096, 2 * MiB + 512))
        first = len(tried)  # deallocate tries PUNCH_HOLE; write_zeroes ZERO_RANGE, then that
        assert first == (1 if op == "deallocate" else 2)
        asyncio.run(getattr(media, op)(4096, 2 * MiB + 512))
        assert len(tried) == first  # the refusal was remembered: straight to writing zeroes
        out = memoryview(bytearray(3 * MiB))
        asyncio.run(media.read(0, out))
        assert out == b"\x33" * 4096 + bytes(2 * MiB + 512) + b"\x33" * (MiB - 4608)
    finally:
        media.close()


def test_write_zeroes_prefers_zero_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = file_mod.fallocate

    def spy(fd: int, mode: int, offset: int, length: int) -> None:
        calls.append(mode)
        real(fd, mode, offset, length)

    monkeypatch.setattr(file_mod, "fallocate", spy)
    media = FileMedia(tmp_path / "ns.img", size=MiB)
    try:
        asyncio.run(media.write_zeroes(0, 8192))
        asyncio.run(media.deallocate(0, 8192))
    finally:
        media.close()
    keep = file_mod.FALLOC_FL_KEEP_SIZE
    # ZERO_RANGE may be unsupported here (then it falls back to a punched hole), never skipped.
    assert calls[0] == file_mod.FALLOC_FL_ZERO_RANGE | keep
    assert calls[-1] == file_mod.FALLOC_FL_PUNCH_HOLE | keep


# -- FUA and Flush ------------------------------------------------------------------------------


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    """Record the arguments of every ``os.<name>`` call, still making the call."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = getattr(os, name)

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, name, spy)
    return calls


def test_fua_is_rwf_dsync_and_flush_is_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = FileMedia(tmp_path / "ns.img", size=MiB)
    writes = spy_on(monkeypatch, "pwritev")
    syncs = spy_on(monkeypatch, "fdatasync")
    try:
        asyncio.run(media.write(0, memoryview(b"a" * 512)))
        asyncio.run(media.write(512, memoryview(b"b" * 512), fua=True))
        assert [w[3] for w in writes] == [0, os.RWF_DSYNC]
        assert syncs == []
        asyncio.run(media.flush())
        assert len(syncs) == 1
    finally:
        media.close()


def test_fua_without_rwf_dsync_syncs_after_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old kernel refuses RWF_DSYNC: the data is written plainly, then fdatasync'ed."""
    media = FileMedia(tmp_path / "ns.img", size=MiB)
    real = os.pwritev

    def old_kernel(fd: int, bufs: list[memoryview], offset: int, flags: int = 0) -> int:
        if flags:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real(fd, bufs, offset, flags)

    monkeypatch.setattr(os, "pwritev", old_kernel)
    syncs = spy_on(monkeypatch, "fdatasync")
    try:
        for _ in range(2):
            asyncio.run(media.write(0, memoryview(b"c" * 4096), fua=True))
        assert len(syncs) == 2
        out = memoryview(bytearray(4096))
        asyncio.run(media.read(0, out))
        assert out == b"c" * 4096
    finally:
        media.close()


# -- reads past the end, errors -----------------------------------------------------------------


def test_read_past_eof_is_zero(tmp_path: Path) -> None:
    """A file truncated under a namespace reads zeroes where its data is gone."""
    path = tmp_path / "ns.img"
    media = FileMedia(path, size=MiB)
    try:
        asyncio.run(media.write(0, memoryview(b"\x44" * 8192)))
        os.truncate(path, 4096)
        out = memoryview(bytearray(b"\xff" * 8192))
        asyncio.run(media.read(0, out))
        assert out == b"\x44" * 4096 + bytes(4096)
    finally:
        media.close()


def test_write_to_a_read_only_file_is_a_media_error(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    path.write_bytes(bytes(MiB))
    media = FileMedia(path, read_only=True)
    try:
        with pytest.raises(MediaError) as err:
            asyncio.run(media.write(0, memoryview(b"x" * 512)))
        assert err.value.errno == errno.EBADF
        assert err.value.filename == str(path)
        assert "write at 0+512" in str(err.value)
        out = memoryview(bytearray(512))
        asyncio.run(media.read(0, out))  # reading still works
    finally:
        media.close()
    with pytest.raises(ValueError, match="less than the size"):
        FileMedia(path, size=2 * MiB, read_only=True)


def test_io_error_becomes_media_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    media = FileMedia(tmp_path / "ns.img", size=MiB)

    def failing(*args: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "preadv", failing)
    try:
        with pytest.raises(MediaError) as err:
            asyncio.run(media.read(4096, memoryview(bytearray(512))))
        assert err.value.errno == errno.EIO
        assert "read at 4096+512" in str(err.value)
    finally:
        media.close()


def test_cancelled_request_waits_for_its_syscall(tmp_path: Path) -> None:
    """A cancelled request still owns its buffer until the kernel is done with it."""
    media = FileMedia(tmp_path / "ns.img", size=16 * MiB, io_threads=1)
    data = os.urandom(8 * MiB)

    async def run() -> None:
        task = asyncio.create_task(media.write(0, memoryview(data)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out = memoryview(bytearray(8 * MiB))
        await media.read(0, out)
        assert out == data  # the write had finished when the cancellation came out

    try:
        asyncio.run(run())
    finally:
        media.close()
        media.close()  # closing twice is harmless


# -- O_DIRECT ---------------------------------------------------------------------------------


def test_direct_io_with_aligned_buffers(tmp_path: Path, buffer: Buffer) -> None:
    where = direct_io_dir(tmp_path)
    if where is None:  # no filesystem here does O_DIRECT: the refusal must say why
        with pytest.raises(MediaError, match="O_DIRECT"):
            FileMedia(tmp_path / "ns.img", size=MiB, direct=True)
        return
    path = where / f"direct-{os.getpid()}.img"
    media = FileMedia(path, size=4 * MiB, direct=True)
    try:
        wbuf, rbuf = buffer(MiB), buffer(MiB)
        wbuf[:] = os.urandom(MiB)
        asyncio.run(media.write(4096, wbuf, fua=True))
        asyncio.run(media.read(4096, rbuf))
        assert rbuf == wbuf
        asyncio.run(media.write_zeroes(4096, 8192))
        asyncio.run(media.deallocate(3 * MiB, MiB))
        asyncio.run(media.read(4096, rbuf))
        assert rbuf[:8192] == bytes(8192)
        assert rbuf[8192:] == wbuf[8192:]

        # A buffer off the alignment is refused with a message saying what is wrong.
        unaligned = buffer(MiB + 4096)[1 : 1 + 4096]
        with pytest.raises(MediaError, match="not aligned to 512 bytes") as err:
            asyncio.run(media.read(0, unaligned))
        assert err.value.errno == errno.EINVAL
        with pytest.raises(MediaError, match="page-aligned mmap"):
            asyncio.run(media.write(0, unaligned))
    finally:
        media.close()
        if where != tmp_path:
            path.unlink()


def test_direct_io_refused_by_the_kernel_explains_alignment(
    tmp_path: Path, buffer: Buffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the kernel says EINVAL to O_DIRECT I/O, the error says alignment is the likely cause.

    Read-only buffers cannot be checked up front, and what the kernel accepts depends on the
    device's DMA alignment, so the kernel's refusal is simulated.
    """
    where = direct_io_dir(tmp_path)
    if where is None:
        pytest.fail("no directory here accepts O_DIRECT")
    path = where / f"direct-einval-{os.getpid()}.img"
    media = FileMedia(path, size=MiB, direct=True)

    def refuse(*args: Any) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "pwritev", refuse)
    try:
        data = memoryview(b"\x01" * 513)[1:]  # 512 bytes at an odd address, read-only
        with pytest.raises(MediaError, match="O_DIRECT: the filesystem or device") as err:
            asyncio.run(media.write(0, data))
        assert err.value.errno == errno.EINVAL
    finally:
        media.close()
        if where != tmp_path:
            path.unlink()


# -- the file system's block size -----------------------------------------------------------------


class _Stat:
    """``os.fstat``'s answer with another ``st_blksize`` (as overlayfs and some FUSE file
    systems give: 0)."""

    def __init__(self, real: os.stat_result, blksize: int) -> None:
        self._real, self.st_blksize = real, blksize

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _pretend_filesystem(
    monkeypatch: pytest.MonkeyPatch, blksize: int, bsize: int | None, frsize: int
) -> None:
    """Make the file system report these sizes (``bsize`` None: ``fstatvfs`` fails)."""
    real_fstat, real_fstatvfs = os.fstat, os.fstatvfs

    def fstat(fd: int) -> Any:
        return _Stat(real_fstat(fd), blksize)

    def fstatvfs(fd: int) -> Any:
        if bsize is None:
            raise OSError(errno.ENOSYS, "Function not implemented")
        real = real_fstatvfs(fd)
        return type("Vfs", (), {"f_bsize": bsize, "f_frsize": frsize, "f_blocks": real.f_blocks})

    monkeypatch.setattr(os, "fstat", fstat)
    monkeypatch.setattr(os, "fstatvfs", fstatvfs)


def test_reports_the_filesystem_block_size(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    media = FileMedia(path, size=MiB)
    try:
        expected = os.stat(path).st_blksize
        if expected < 512 or expected & (expected - 1):
            expected = os.statvfs(path).f_bsize
        assert media.fs_block_size == expected
    finally:
        media.close()


@pytest.mark.parametrize(
    ("blksize", "bsize", "frsize", "expected"),
    [
        (0, 4096, 4096, 4096),  # overlayfs: st_blksize 0, statvfs knows
        (0, 0, 1024, 1024),  # only the fragment size is given
        (256, 65536, 0, 65536),  # below 512: not a block size a namespace can use
        (12288, 0, 0, 4096),  # not a power of two: the largest one that divides it
        (1000, 0, 0, file_mod.FALLBACK_FS_BLOCK_SIZE),  # 8 divides it: too small
        (0, 0, 0, file_mod.FALLBACK_FS_BLOCK_SIZE),  # nothing known
        (0, None, 0, file_mod.FALLBACK_FS_BLOCK_SIZE),  # fstatvfs fails
    ],
)
def test_filesystem_block_size_fallbacks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    blksize: int,
    bsize: int | None,
    frsize: int,
    expected: int,
) -> None:
    path = tmp_path / "ns.img"
    _pretend_filesystem(monkeypatch, blksize, bsize, frsize)
    media = FileMedia(path, size=MiB)
    try:
        assert media.fs_block_size == expected
        assert media.fs_block_size >= 512 and media.fs_block_size & (media.fs_block_size - 1) == 0
    finally:
        media.close()


def test_a_worker_s_medium_reports_the_same_block_size(tmp_path: Path) -> None:
    media = FileMedia(tmp_path / "ns.img", size=MiB)
    handle, fd = media.share()
    assert fd is not None
    theirs = FileMedia.adopt(handle, os.dup(fd))
    try:
        assert theirs.fs_block_size == media.fs_block_size
    finally:
        theirs.close()
        media.close()
