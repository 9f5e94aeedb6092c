"""Media that give each offload worker resources of its own (:class:`~nvmf.media.base.
WorkerShare`: an SSD queue pair and staging memory per worker): the worker set asks for them
when it sends the medium to a worker, sends every descriptor listed, and frees them when the
worker is gone (died or stopped) or the medium is removed.  The other media keep one handle for
all (:meth:`Media.share`)."""

from __future__ import annotations

from typing import Any

from nvmf.media.base import MediaHandle, WorkerShare
from nvmf.media.null import NullMedia
from nvmf.offload.workers import WorkerSet


class _Channel:
    closed = False

    def __init__(self) -> None:
        self.sent: list[tuple[tuple[Any, ...], list[int]]] = []

    def send(self, msg: tuple[Any, ...], fds: Any = ()) -> None:
        self.sent.append((msg, list(fds)))


class _PerWorker(NullMedia):
    """Null media that hands out per-worker resources and records their life."""

    def __init__(self) -> None:
        super().__init__(1 << 20, 512)
        self.live: dict[int, int] = {}
        self.made = 0

    def share_with(self, worker: int) -> tuple[MediaHandle, list[int]]:
        self.made += 1
        self.live[worker] = self.made
        return MediaHandle("per-worker", self.size, 512, False, extra=self.made), [7, 8, 9]

    def unshare(self, worker: int) -> None:
        self.live.pop(worker, None)


def _workers(count: int) -> WorkerSet:
    ws = WorkerSet(count, events=None, staging_bytes=1 << 20)  # type: ignore[arg-type]
    for w in ws.workers:
        w.channel = _Channel()  # type: ignore[assignment]
    return ws


def test_each_worker_gets_its_own_and_every_descriptor() -> None:
    ws = _workers(2)
    media = _PerWorker()
    assert isinstance(media, WorkerShare)
    ws.add_media(("nqn", 1), media)
    assert media.live == {0: 1, 1: 2}
    for w, extra in zip(ws.workers, (1, 2), strict=True):
        assert isinstance(w.channel, _Channel)
        ((msg, fds),) = w.channel.sent
        assert msg[0] == "media" and msg[2].extra == extra and fds == [7, 8, 9]
    # Other media still share one handle (and at most one descriptor) with everyone.
    ws.add_media(("nqn", 2), NullMedia(1 << 20, 512))
    assert isinstance(ws.workers[0].channel, _Channel)
    assert ws.workers[0].channel.sent[-1][1] == []


def test_a_gone_worker_frees_its_resources_and_a_removed_medium_all() -> None:
    ws = _workers(2)
    media = _PerWorker()
    ws.add_media(("nqn", 1), media)
    ws._stopping = True  # as when the target stops: no restart
    ws._on_closed(ws.workers[0])
    assert media.live == {1: 2}
    ws.remove_media(("nqn", 1))
    assert media.live == {}
