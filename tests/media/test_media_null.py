"""``null`` media: writes vanish, reads are zeroes, ranges are still checked."""

from __future__ import annotations

import asyncio

import pytest

from nvmf.media.base import Media
from nvmf.media.null import ZERO_CHUNK, NullMedia, zero_fill
from tests.media.mediatest import SIZE, Buffer


def test_writes_vanish_reads_are_zero(null_media: NullMedia, buffer: Buffer) -> None:
    assert isinstance(null_media, Media)
    assert (null_media.kind, null_media.size, null_media.volatile_write_cache) == (
        "null",
        SIZE,
        False,
    )
    data = buffer(3 * ZERO_CHUNK + 512)  # more than one zero chunk: the fill loops
    data[:] = b"\xab" * len(data)

    async def run() -> None:
        await null_media.write(0, data, fua=True)
        await null_media.flush()
        await null_media.write_zeroes(0, 4096)
        await null_media.deallocate(0, 4096)
        await null_media.read(0, data)

    asyncio.run(run())
    assert data == bytes(len(data))
    null_media.close()


def test_ranges_are_checked(null_media: NullMedia, buffer: Buffer) -> None:
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(null_media.read(SIZE - 512, buffer(1024)))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(null_media.write(SIZE, buffer(512)))
    with pytest.raises(ValueError, match="outside"):
        asyncio.run(null_media.deallocate(-512, 512))


def test_zero_fill_of_a_slice() -> None:
    buf = bytearray(b"\x01" * 10)
    zero_fill(memoryview(buf)[2:7])
    assert buf == b"\x01\x01" + bytes(5) + b"\x01\x01\x01"


def test_queue_memory_is_read_only_zeroes_that_writes_never_change(buffer: Buffer) -> None:
    """Reads are served in place from the queue's memory: it must read as the medium does
    (zeroes), cover the whole namespace, and refuse to be written, so that no Write can ever
    make a later Read return data."""
    media = NullMedia(SIZE)
    memory = media.open_queue().memory
    assert memory is not None and memory.readonly and len(memory) == SIZE
    data = buffer(8192)
    data[:] = b"\xab" * len(data)
    asyncio.run(media.write(SIZE - 8192, data))
    assert memory[SIZE - 8192 :] == bytes(8192) and memory[:4096] == bytes(4096)
    with pytest.raises(TypeError):
        memory[0:1] = b"\x01"
    assert media.open_queue().memory is memory  # one mapping for every queue of the medium


def test_without_address_space_for_the_zeroes_reads_are_staged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr("nvmf.media.null.mmap.mmap", refuse)
    assert NullMedia(SIZE).open_queue().memory is None
