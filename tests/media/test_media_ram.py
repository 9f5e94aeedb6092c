"""``ram`` media specifics: memory is taken in full at start and given back, and other
processes share it."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from nvmf.media.base import MediaError
from nvmf.media.ram import RamMedia

MiB = 1 << 20


def shmem_total() -> int:
    """Bytes of shared memory in use on the machine (``Shmem`` of ``/proc/meminfo``)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem in /proc/meminfo")


def test_the_namespace_is_allocated_in_full_at_start() -> None:
    """Every page is taken when the namespace opens (a worker can never meet SIGBUS or the
    OOM killer mid-write), and given back when it closes."""
    size = 256 * MiB
    before = shmem_total()
    media = RamMedia(size)
    try:
        assert shmem_total() - before >= size * 0.9  # other processes' shmem moves a little
        buf = memoryview(bytearray(os.urandom(MiB)))
        asyncio.run(media.write(128 * MiB, buf))
        out = memoryview(bytearray(MiB))
        asyncio.run(media.read(128 * MiB, out))
        assert out == buf
    finally:
        media.close()
    assert shmem_total() - before < size * 0.1


def test_a_namespace_larger_than_memory_fails_at_start_with_a_message() -> None:
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    with pytest.raises(MediaError) as info:
        RamMedia(avail + (1 << 30))
    assert info.value.errno == errno.ENOMEM
    assert "does not fit" in str(info.value) and str(avail + (1 << 30)) in str(info.value)


@pytest.mark.parametrize("op", ["deallocate", "write_zeroes"])
def test_zeroing_gives_pages_back(op: str) -> None:
    media = RamMedia(64 * MiB)
    try:
        assert media.allocated() == 64 * MiB  # allocated in full at start
        asyncio.run(media.write(0, memoryview(b"\x5a" * (16 * MiB))))
        # An unaligned range: the whole pages inside go back, the edges are zeroed in place.
        asyncio.run(getattr(media, op)(512, 16 * MiB - 1024))
        assert media.allocated() == 48 * MiB + 2 * 4096
        out = memoryview(bytearray(16 * MiB))
        asyncio.run(media.read(0, out))
        assert out[:512] == b"\x5a" * 512
        assert out[-512:] == b"\x5a" * 512
        assert out[512:-512] == bytes(16 * MiB - 1024)
    finally:
        media.close()


def test_forked_worker_shares_the_namespace() -> None:
    """A data-plane worker forked after opening writes into the same bytes the parent reads."""
    media = RamMedia(MiB)
    try:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                asyncio.run(media.write(4096, memoryview(b"from the worker!")))
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        out = memoryview(bytearray(16))
        asyncio.run(media.read(4096, out))
        assert out == b"from the worker!"
    finally:
        media.close()


def test_properties_and_geometry() -> None:
    media = RamMedia(8 * MiB, block_size=4096)
    assert (media.kind, media.size, media.block_size) == ("ram", 8 * MiB, 4096)
    assert media.volatile_write_cache is False
    asyncio.run(media.flush())
    media.close()
    with pytest.raises(ValueError, match="block size"):
        RamMedia(MiB, block_size=1000)
    with pytest.raises(ValueError, match="multiple"):
        RamMedia(MiB + 100)
    with pytest.raises(ValueError, match="multiple"):
        RamMedia(0)
