"""``ram`` media specifics: memory is taken lazily and given back, and forked workers share it."""

from __future__ import annotations

import asyncio
import os

import pytest

from nvmf.media.ram import RamMedia

MiB = 1 << 20


def shmem_resident() -> int:
    """Bytes of shared memory this process has resident (``RssShmem``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssShmem in /proc/self/status")


def test_one_gib_costs_nothing_until_written() -> None:
    before = shmem_resident()
    media = RamMedia(1 << 30)
    try:
        buf = memoryview(bytearray(os.urandom(MiB)))
        asyncio.run(media.write(512 << 20, buf))
        grown = shmem_resident() - before
        assert MiB <= grown < 4 * MiB
        out = memoryview(bytearray(MiB))
        asyncio.run(media.read(512 << 20, out))
        assert out == buf
    finally:
        media.close()


@pytest.mark.parametrize("op", ["deallocate", "write_zeroes"])
def test_zeroing_gives_pages_back(op: str) -> None:
    media = RamMedia(64 * MiB)
    try:
        before = shmem_resident()
        asyncio.run(media.write(0, memoryview(b"\x5a" * (16 * MiB))))
        assert shmem_resident() - before >= 16 * MiB
        # An unaligned range: the whole pages inside go back, the edges are zeroed in place.
        asyncio.run(getattr(media, op)(512, 16 * MiB - 1024))
        assert shmem_resident() - before < MiB
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
