"""nvmf.media.uring: which engine a descriptor medium's queue gets, and the io_uring queue's own
behaviour beyond the MediaQueue contract (tests/media/test_media_queue_contract.py runs that
contract on both engines): a file truncated behind the target's back, a refused write, many
commands in flight at once, and a close with commands still in the kernel."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from nvmf.control.model import Namespace, NamespaceMedia
from nvmf.media import uring, uring_support
from nvmf.media.base import MediaError
from nvmf.media.factory import adopt_media, open_media
from nvmf.media.file import FileMedia
from nvmf.media.queue import FLUSH, READ, WRITE, WRITE_FAULT, MediaQueue, ThreadQueue
from nvmf.wire.status import SUCCESS, Status
from tests.media.mediatest import SIZE, Buffer

HERE = uring_support.kernel_release()
KERNEL_ALLOWS = HERE >= uring_support.MIN_KERNEL


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


#: The package index's binding uses x86-64-v3 and AVX-512 (``objdump -d``: ``shlx``, ``movbe``,
#: ``zmm`` registers): without these, setting up a ring is a SIGILL.
CPU_RUNS_BINDING = {"avx2", "bmi2", "movbe", "avx512f"} <= _cpu_flags()
ALLOWED = KERNEL_ALLOWS and CPU_RUNS_BINDING


@pytest.fixture
def fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached answer forgotten (and restored by the monkeypatch's undo)."""
    monkeypatch.setattr(uring_support, "_checked", False)
    monkeypatch.setattr(uring_support, "_problem", None)
    monkeypatch.setattr(uring_support, "_binding", None)


@pytest.fixture
def old_kernel(fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend Debian 12's 6.1 kernel (the guests'), with the cached answer forgotten."""
    monkeypatch.setattr(uring_support, "kernel_release", lambda release=None: (6, 1))


async def _run(queue: MediaQueue, op: int, offset: int, buf: memoryview | None) -> Status:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Status] = loop.create_future()
    now = queue.submit(op, offset, buf, False, lambda tag, st: fut.set_result(st), None)
    return now if now is not None else await asyncio.wait_for(fut, 10)


def test_kernel_release_reads_major_and_minor() -> None:
    assert uring_support.kernel_release("6.1.0-28-amd64") == (6, 1)
    assert uring_support.kernel_release("6.18.44-fc-v1045") == (6, 18)
    assert uring_support.kernel_release("6.14rc1") == (6, 14)
    assert uring_support.kernel_release("garbage") == (0, 0)
    assert uring_support.kernel_problem((6, 13)) == (
        "Linux 6.13: the liburing binding needs 6.14 or later"
    )
    assert uring_support.kernel_problem((6, 14)) is None


def test_auto_takes_io_uring_exactly_where_the_kernel_and_the_cpu_allow_it(tmp_path: Path) -> None:
    """This machine decides: with Linux 6.14 or later (the binding's floor) and a CPU with
    AVX-512 and x86-64-v3's AVX2, BMI2 and MOVBE (what the binding's code uses) the ring, else
    the thread pool with the reason in :func:`uring_support.problem`."""
    media = FileMedia(tmp_path / "ns.img", size=SIZE)

    async def run() -> MediaQueue:
        return media.open_queue()

    queue = asyncio.run(run())
    if ALLOWED:
        assert uring_support.problem() is None
        assert isinstance(queue, uring.UringQueue)
    else:
        why = "needs 6.14" if not KERNEL_ALLOWS else "does not run on this CPU (SIGILL"
        assert why in (uring_support.problem() or "")
        assert isinstance(queue, ThreadQueue)
    media.close()


def test_an_older_kernel_gets_threads_and_io_uring_asked_for_is_refused_at_open(
    tmp_path: Path, old_kernel: None
) -> None:
    assert uring_support.problem() == "Linux 6.1: the liburing binding needs 6.14 or later"
    with pytest.raises(MediaError, match=r"io_engine io_uring: Linux 6\.1") as err:
        FileMedia(tmp_path / "a.img", size=SIZE, io_engine="io_uring")
    assert err.value.errno == errno.ENOTSUP
    media = FileMedia(tmp_path / "b.img", size=SIZE)

    async def run() -> MediaQueue:
        return media.open_queue()

    assert isinstance(asyncio.run(run()), ThreadQueue)
    media.close()


def test_an_unknown_engine_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="io_engine must be one of auto, threads, io_uring"):
        FileMedia(tmp_path / "c.img", size=SIZE, io_engine="aio")


needs_ring = pytest.mark.skipif(
    not ALLOWED,
    reason=f"Linux {HERE}: io_uring needs 6.14"
    if not KERNEL_ALLOWS
    else "this CPU lacks AVX-512 or x86-64-v3, which the liburing binding's code uses",
)


@needs_ring
def test_a_read_past_a_truncated_end_reads_zeroes(tmp_path: Path, buffer: Buffer) -> None:
    path = tmp_path / "short.img"
    media = FileMedia(path, size=SIZE, io_engine="io_uring")
    data = os.urandom(4096)
    wbuf = buffer(4096)
    wbuf[:] = data

    async def run() -> None:
        queue = media.open_queue()
        assert await _run(queue, WRITE, 1 << 20, wbuf) is SUCCESS
        os.truncate(path, (1 << 20) + 1024)  # behind the target's back
        rbuf = buffer(4096)
        rbuf[:] = b"\xff" * 4096
        assert await _run(queue, READ, 1 << 20, rbuf) is SUCCESS
        assert bytes(rbuf) == data[:1024] + bytes(3072)

    asyncio.run(run())
    media.close()


@needs_ring
def test_a_refused_write_is_a_write_fault_and_the_queue_goes_on(
    tmp_path: Path, buffer: Buffer
) -> None:
    path = tmp_path / "ro.img"
    FileMedia(path, size=SIZE).close()
    media = FileMedia(path, read_only=True, io_engine="io_uring")

    async def run() -> None:
        queue = media.open_queue()
        status = await _run(queue, WRITE, 0, buffer(4096))
        assert status == WRITE_FAULT and not status.dnr  # EBADF; retryable, as the threads say
        assert await _run(queue, READ, 0, buffer(4096)) is SUCCESS

    asyncio.run(run())
    media.close()


@needs_ring
def test_many_commands_in_flight_each_complete_once_with_their_own_data(
    tmp_path: Path, buffer: Buffer
) -> None:
    """More commands than the ring has entries, submitted in one loop turn, then read back."""
    media = FileMedia(tmp_path / "many.img", size=SIZE, io_engine="io_uring")
    count = uring.RING_ENTRIES + 44
    blobs = [os.urandom(4096) for _ in range(count)]

    async def run() -> None:
        queue = media.open_queue()
        await _write_all_then_read_back(queue, buffer, blobs)
        assert await _run(queue, FLUSH, 0, None) is SUCCESS

    asyncio.run(run())
    media.close()


@needs_ring
def test_closing_with_commands_in_the_kernel_waits_for_them(tmp_path: Path, buffer: Buffer) -> None:
    """The medium's close drains its rings before the descriptor goes: nothing is written
    later into whatever reuses the number, and the writes that were in flight are there."""
    path = tmp_path / "close.img"
    media = FileMedia(path, size=SIZE, io_engine="io_uring")
    data = os.urandom(128 * 1024)
    bufs = [buffer(len(data)) for _ in range(16)]

    async def run() -> None:
        queue = media.open_queue()
        for i, wbuf in enumerate(bufs):
            wbuf[:] = data
            queue.submit(WRITE, i * len(data), wbuf, False, lambda *_: None, i)
        await asyncio.sleep(0)  # the submission happens at the end of this turn
        media.close()  # on the loop, with the completions not reaped yet

    asyncio.run(run())
    with open(path, "rb") as f:
        assert f.read(16 * len(data)) == data * 16
    media.close()  # twice is harmless


def test_the_engine_goes_with_the_namespace_to_the_workers(tmp_path: Path) -> None:
    """From the configuration through the factory, and in the handle a worker adopts."""
    ns = Namespace(1, path=str(tmp_path / "w.img"), media=NamespaceMedia(kind="file", size=SIZE))
    ns.media.io_engine = "threads"
    media = open_media(ns)
    assert isinstance(media, FileMedia) and media.io_engine == "threads"
    handle, fd = media.share()
    assert handle.io_engine == "threads" and fd is not None
    adopted = adopt_media(handle, os.dup(fd))
    assert isinstance(adopted, FileMedia) and adopted.io_engine == "threads"

    async def run() -> MediaQueue:
        return adopted.open_queue()

    assert isinstance(asyncio.run(run()), ThreadQueue)
    adopted.close()
    media.close()


class _BusyKernel:
    """The binding, except that ``io_uring_submit`` says EBUSY the first ``busy`` times (a
    kernel whose completion queue overflowed); everything else goes to the real binding."""

    def __init__(self, real: Any, busy: int) -> None:
        self._real = real
        self.busy = busy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def io_uring_submit(self, ring: Any) -> int:
        if self.busy:
            self.busy -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        return int(self._real.io_uring_submit(ring) or 0)


@needs_ring
def test_a_full_ring_and_a_busy_kernel_delay_commands_but_lose_none(
    tmp_path: Path, buffer: Buffer
) -> None:
    """A ring of 4 entries, 40 writes in one loop turn, and the kernel refusing the first
    submissions as busy: the rest wait in order and every write completes once, with its data."""
    media = FileMedia(tmp_path / "busy.img", size=SIZE, io_engine="io_uring")
    blobs = [os.urandom(4096) for _ in range(40)]

    async def run() -> None:
        queue = uring.UringQueue(media, asyncio.get_running_loop(), entries=4)
        busy = _BusyKernel(queue._L, busy=3)
        queue._L = busy
        await _write_all_then_read_back(queue, buffer, blobs)
        assert busy.busy == 0
        queue.close()

    asyncio.run(run())
    media.close()


@pytest.mark.skipif(not KERNEL_ALLOWS, reason=f"Linux {HERE}: the kernel check answers first")
def test_a_binding_that_kills_its_process_is_found_in_a_child_and_threads_serve(
    tmp_path: Path, fresh_check: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The binding's native code needs AVX-512 and x86-64-v3; on a CPU without them it is a SIGILL
    (seen in the guests' emulated CPU).  The probe dies instead of the target."""
    monkeypatch.setattr(
        uring_support, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    )
    why = uring_support.problem()
    assert why is not None and "does not run on this CPU (SIGILL" in why
    media = FileMedia(tmp_path / "ill.img", size=SIZE)

    async def run() -> MediaQueue:
        return media.open_queue()

    assert isinstance(asyncio.run(run()), ThreadQueue)
    media.close()
    with pytest.raises(MediaError, match="SIGILL"):
        FileMedia(tmp_path / "ill2.img", size=SIZE, io_engine="io_uring")


def test_a_probe_that_fails_says_its_last_words(
    fresh_check: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uring_support, "_PROBE", "raise SystemExit('ring setup: EPERM')")
    assert uring_support.probe_problem() == "the liburing probe failed: ring setup: EPERM"


async def _write_all_then_read_back(queue: MediaQueue, buffer: Buffer, blobs: list[bytes]) -> None:
    """Submit a write of each blob (4 KiB each, in turn) in one loop turn; each must complete
    exactly once with success; then each block reads back as written."""
    loop = asyncio.get_running_loop()
    calls: dict[Any, list[Status]] = {}
    futs = []
    for i, blob in enumerate(blobs):
        wbuf = buffer(4096)
        wbuf[:] = blob
        fut: asyncio.Future[None] = loop.create_future()
        futs.append(fut)

        def done(tag: Any, st: Status, fut: asyncio.Future[None] = fut) -> None:
            calls.setdefault(tag, []).append(st)
            fut.set_result(None)

        assert queue.submit(WRITE, i * 4096, wbuf, False, done, i) is None
    await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert sorted(calls) == list(range(len(blobs)))
    assert all(sts == [SUCCESS] for sts in calls.values())
    for i, blob in enumerate(blobs):
        rbuf = buffer(4096)
        assert await _run(queue, READ, i * 4096, rbuf) is SUCCESS
        assert rbuf == blob
