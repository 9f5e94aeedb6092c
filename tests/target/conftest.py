"""A target running in a background thread on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nvmf.control.model import (
    Namespace,
    NamespaceMedia,
    Port,
    Subsystem,
    TargetConfig,
)
from nvmf.control.service import TargetService
from nvmf.offload.plan import Parsed
from nvmf.offload.session import QueueSession
from nvmf.protocol.request import Request

SUBNQN = "nqn.2024-01.io.nvmf:test"
LOCKED_NQN = "nqn.2024-01.io.nvmf:locked"
ALLOWED_HOST = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000aa"


@dataclass
class RunningTarget:
    service: TargetService
    loop: asyncio.AbstractEventLoop
    addr: tuple[str, int]


def make_config(max_io_queues: int = 4, inline: int = 8192, workers: int = 0) -> TargetConfig:
    sub = Subsystem(
        nqn=SUBNQN,
        namespaces=[
            Namespace(nsid=1, media=NamespaceMedia(kind="ram", size=64 << 20)),
            Namespace(nsid=2, media=NamespaceMedia(kind="ram", size=8 << 20, block_size=4096)),
        ],
    )
    locked = Subsystem(
        nqn=LOCKED_NQN,
        allow_any_host=False,
        allowed_hosts=[ALLOWED_HOST],
        namespaces=[Namespace(nsid=1, media=NamespaceMedia(kind="ram", size=1 << 20))],
    )
    port = Port(portid=1, trsvcid="0", inline_data_size=inline, subsystems=[SUBNQN, LOCKED_NQN])
    cfg = TargetConfig(subsystems=[sub, locked], ports=[port])
    cfg.nvmf.max_io_queues = max_io_queues
    cfg.nvmf.offload_workers = workers
    return cfg


#: The namespace :func:`with_file_namespace` adds.
FILE_NSID = 3


def with_file_namespace(path: Path, size: int) -> Callable[[TargetConfig], None]:
    """A ``running_target(edit=...)`` that adds namespace :data:`FILE_NSID` of :data:`SUBNQN`,
    a ``file`` medium of ``size`` bytes at ``path``: staged I/O whose completions come later,
    from the medium's queue."""

    def edit(cfg: TargetConfig) -> None:
        media = NamespaceMedia(kind="file", size=size)
        cfg.subsystems[0].namespaces.append(Namespace(nsid=FILE_NSID, path=str(path), media=media))

    return edit


def controller(target: RunningTarget, cntlid: int) -> Any:
    """The control plane's controller ``cntlid`` of :data:`SUBNQN` (read from the test's
    thread: its queues and attributes only)."""
    return target.service.subsystems[SUBNQN].controllers[cntlid]


def fail_parse(
    monkeypatch: pytest.MonkeyPatch,
    service: TargetService,
    when: Callable[[Request], bool],
    message: str,
) -> None:
    """Make ``service``'s parse raise ``RuntimeError(message)`` for each command ``when``
    picks (a bug injected where the data path enters the control plane's code)."""
    parse = service.parse

    def faulty(queue: QueueSession, req: Request) -> Parsed:
        if when(req):
            raise RuntimeError(message)
        return parse(queue, req)

    monkeypatch.setattr(service, "parse", faulty)


@contextmanager
def running_target(
    workers: int,
    idle_timeout_ms: int | None = None,
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    staging_bytes: int | None = None,
    config: TargetConfig | None = None,
    edit: Callable[[TargetConfig], None] | None = None,
) -> Iterator[RunningTarget]:
    """A target from ``config`` (default :func:`make_config`) with ``workers`` offload workers
    (and, if given, that ``nvmf.idle_timeout_ms`` and ``nvmf.staging_bytes``, and whatever
    ``edit`` changes), its event loop (made by ``new_loop``) in a background thread."""
    loop = new_loop()
    cfg = make_config(workers=workers) if config is None else config
    cfg.nvmf.offload_workers = workers
    if edit is not None:
        edit(cfg)
    if idle_timeout_ms is not None:
        cfg.nvmf.idle_timeout_ms = idle_timeout_ms
    if staging_bytes is not None:
        cfg.nvmf.staging_bytes = staging_bytes
    service = TargetService(cfg)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(service.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    port = service.ports[0]
    addr = service.transports["tcp"].bound_address(port)
    try:
        yield RunningTarget(service, loop, addr)
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(params=[0, 2], ids=["one-process", "2-workers"])
def target(request: pytest.FixtureRequest) -> Iterator[RunningTarget]:
    """The target serving every queue itself, and with two offload workers (I/O queues handed
    over after Connect): every target test holds in both."""
    with running_target(request.param) as running:
        yield running
