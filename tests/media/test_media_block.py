"""``block`` media specifics, on real loop devices: geometry, unmapping, zeroing, exclusivity."""

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
from nvmf.media.block import BlockMedia
from tests.media.mediatest import SIZE, Buffer

LoopDevice = Callable[..., tuple[str, Path]]
MiB = 1 << 20


def test_geometry_from_the_device(loop_device: LoopDevice) -> None:
    dev, _ = loop_device(SIZE + 512)
    media = BlockMedia(dev)
    try:
        assert (media.kind, media.size, media.block_size) == ("block", SIZE + 512, 512)
        assert media.volatile_write_cache is True  # the page cache, when not direct
    finally:
        media.close()
    media = BlockMedia(dev, block_size=4096)  # a larger LBA than the device's is fine...
    try:
        assert (media.size, media.block_size) == (SIZE, 4096)  # ...and the tail is cut off
    finally:
        media.close()


def test_device_block_size_wins_over_a_smaller_one(loop_device: LoopDevice) -> None:
    dev, _ = loop_device(SIZE, sector=4096)
    media = BlockMedia(dev, block_size=512, direct=True)
    try:
        assert media.block_size == 4096
        # A loop device reports its cache ("write back") through queue/write_cache.
        name = os.path.basename(dev)
        with open(f"/sys/block/{name}/queue/write_cache") as f:
            assert media.volatile_write_cache is (f.read().strip() != "write through")
    finally:
        media.close()


def test_deallocate_unmaps_the_backing_file(loop_device: LoopDevice, buffer: Buffer) -> None:
    """Deallocate releases the device's blocks: the loop device punches its backing file."""
    dev, backing = loop_device(SIZE)
    media = BlockMedia(dev, direct=True)
    try:
        data = buffer(8 * MiB)
        data[:] = os.urandom(len(data))
        asyncio.run(media.write(0, data))
        asyncio.run(media.flush())
        full = os.stat(backing).st_blocks * 512
        assert full >= 8 * MiB
        asyncio.run(media.deallocate(MiB, 4 * MiB))
        assert os.stat(backing).st_blocks * 512 <= full - 4 * MiB
        out = buffer(8 * MiB)
        asyncio.run(media.read(0, out))
        assert out[MiB : 5 * MiB] == bytes(4 * MiB)
        assert out[:MiB] == data[:MiB] and out[5 * MiB :] == data[5 * MiB :]
    finally:
        media.close()


def test_deallocate_falls_back_to_blkzeroout(
    loop_device: LoopDevice, buffer: Buffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device that cannot unmap-and-zero still reads zeroes after deallocate."""

    def unsupported(*args: Any) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(file_mod, "fallocate", unsupported)
    dev, _ = loop_device(SIZE)
    media = BlockMedia(dev)
    try:
        data = buffer(MiB)
        data[:] = b"\x77" * MiB
        asyncio.run(media.write(0, data))
        for _ in range(2):  # once to learn it is unsupported, once straight to BLKZEROOUT
            asyncio.run(media.deallocate(4096, 8192))
        asyncio.run(media.read(0, data))
        assert data[:4096] == b"\x77" * 4096
        assert data[4096:12288] == bytes(8192)
        assert data[12288:] == b"\x77" * (MiB - 12288)
    finally:
        media.close()


def test_write_zeroes_is_blkzeroout(loop_device: LoopDevice, buffer: Buffer) -> None:
    dev, _ = loop_device(SIZE)
    media = BlockMedia(dev)
    try:
        data = buffer(MiB)
        data[:] = b"\x66" * MiB
        asyncio.run(media.write(0, data))
        asyncio.run(media.write_zeroes(512, 3 * 512))
        asyncio.run(media.read(0, data))
        assert data[:512] == b"\x66" * 512
        assert data[512:2048] == bytes(1536)
        assert data[2048:] == b"\x66" * (MiB - 2048)
        with pytest.raises(MediaError) as err:  # BLKZEROOUT wants 512-byte multiples
            asyncio.run(media.write_zeroes(0, 100))
        assert err.value.errno == errno.EINVAL
        assert "write zeroes at 0+100" in str(err.value)
    finally:
        media.close()


def test_the_device_is_claimed_exclusively(loop_device: LoopDevice) -> None:
    dev, _ = loop_device(SIZE)
    media = BlockMedia(dev)
    try:
        with pytest.raises(MediaError) as err:
            BlockMedia(dev)
        assert err.value.errno == errno.EBUSY
        assert err.value.filename == dev
    finally:
        media.close()
    BlockMedia(dev).close()  # released on close


def test_not_a_block_device(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(bytes(4096))
    with pytest.raises(ValueError, match="not a block device"):
        BlockMedia(path)
