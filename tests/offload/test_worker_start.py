"""A worker says it is ready only once it has adopted the media sent to it at spawn.

The control plane sends every medium, then ``("start",)``; the worker answers ``ready`` to
that.  Before, a worker said ready as soon as its process ran, so a queue could be handed to a
worker still mapping an ``nvme_pci`` namespace's SSD queue pair and CMB staging; under
emulation the queue's Connect then waited past the host's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nvmf.media.null import NullMedia
from nvmf.offload.channel import Channel, channel_pair
from nvmf.offload.worker import Worker


def test_ready_answers_start_after_the_media_sent_before_it() -> None:
    async def run() -> tuple[list[tuple[Any, ...]], list[bool]]:
        ours, theirs = channel_pair()
        worker = Worker(theirs, 0, 1 << 20)
        got: list[tuple[Any, ...]] = []
        adopted_at_ready: list[bool] = []
        ready = asyncio.get_running_loop().create_future()

        def on_message(msg: tuple[Any, ...], fds: list[int]) -> None:
            got.append(msg)
            if msg[0] == "ready":
                adopted_at_ready.append(("nqn", 1) in worker.media)
                ready.set_result(None)

        control = Channel(ours, on_message, lambda: None)
        handle, _fd = NullMedia(1 << 20, 512).share()
        control.send(("media", ("nqn", 1), handle, 0))
        await asyncio.sleep(0.05)
        assert got == []  # no ready before it is asked for
        control.send(("start",))
        await asyncio.wait_for(ready, 5)
        control.close()
        worker.channel.close()
        return got, adopted_at_ready

    got, adopted_at_ready = asyncio.run(run())
    assert [m[0] for m in got] == ["ready"]
    assert adopted_at_ready == [True]
