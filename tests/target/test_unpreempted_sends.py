"""``nvmf.unpreempted_sends``: the target's NVMe/TCP queues send a flush of a segment or more
under SCHED_FIFO, in the control plane and in every worker (:mod:`nvmf.transport.unpreempted`;
the send queue's own tests are in ``tests/transport/test_unpreempted.py``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvmf.config.save import save_config
from nvmf.control.model import TargetConfig
from nvmf.transport import unpreempted
from nvmf.wire.opcodes import IoOpcode
from tests.serving import nvmf_serve
from tests.target.conftest import SUBNQN, RunningTarget, make_config, running_target
from tests.target.rawhost import status_of
from tests.target.test_tcp_target import admin, io_queue, rw

BLOCK = 512


def _write_then_read(target: RunningTarget, *sizes: int) -> None:
    """One admin and one I/O queue; for each size, write that many bytes and read them
    back."""
    adm = admin(target)
    q = io_queue(target, adm)
    for size in sizes:
        payload = os.urandom(size)
        nlb = size // BLOCK
        write = rw(q.next_cid(), IoOpcode.WRITE, 1, 0, nlb, size)
        cqe = q.command(write, payload, incapsule=False)
        assert status_of(cqe).ok, status_of(cqe)
        cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, nlb, size))
        assert status_of(cqe).ok and back == payload
    q.close()
    adm.close()


@pytest.fixture
def raised(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Each time a send queue raised its thread's policy: the thread, the policy it got."""
    calls: list[tuple[int, int]] = []
    enter = unpreempted.enter

    def spy() -> bool:
        ok = enter()
        calls.append((threading.get_ident(), os.sched_getscheduler(0)))
        return ok

    monkeypatch.setattr(unpreempted, "enter", spy)
    monkeypatch.setattr(unpreempted, "_usable", None)
    yield calls


@pytest.mark.parametrize("setting", [True, False])
def test_the_queue_serving_a_large_read_sends_it_unpreempted_as_configured(
    raised: list[tuple[int, int]], setting: bool
) -> None:
    """One process (no workers): the loop thread raises its policy for a 128 KiB Read's
    C2HData, not for a 4 KiB one, and never with the setting false."""

    def edit(cfg: TargetConfig) -> None:
        cfg.nvmf.unpreempted_sends = setting

    with running_target(0, edit=edit) as target:
        _write_then_read(target, 4096)
        assert raised == []
        _write_then_read(target, 128 << 10)
    if setting:
        assert raised and all(policy == os.SCHED_FIFO for _tid, policy in raised), raised
        assert {tid for tid, _ in raised} != {threading.get_ident()}  # the target's thread
    else:
        assert raised == []


@pytest.mark.parametrize("setting", [True, False])
def test_workers_take_the_setting_and_say_when_the_kernel_refuses_it(
    tmp_path: Path, setting: bool
) -> None:
    """``nvmf serve --workers 2`` without CAP_SYS_NICE: with the setting, the worker that sent
    two large Reads says once that its large sends stay preemptible; without it, nobody tries."""
    if os.geteuid() != 0:
        pytest.fail("dropping CAP_SYS_NICE for the target takes root (CI runs as root)")
    cfg = make_config()
    cfg.subsystems = cfg.subsystems[:1]  # a file names its hosts: keep the open subsystem
    cfg.ports[0].subsystems = [SUBNQN]
    cfg.ports[0].trsvcid = "4420"  # a file's port is a real one (--trsvcid 0 overrides it)
    cfg.nvmf.unpreempted_sends = setting
    path = tmp_path / "target.json"
    save_config(cfg, path)
    output: list[str] = []
    prefix = ("setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice")
    with nvmf_serve(path, 1, "--workers", "2", "-v", prefix=prefix, output=output) as bound:
        served = RunningTarget(None, None, ("127.0.0.1", bound["127.0.0.1"]))  # type: ignore[arg-type]
        _write_then_read(served, 128 << 10, 256 << 10)
    said = [line for line in output if "large sends may be preempted" in line]
    if setting:
        assert len(said) == 1 and "worker" in said[0] and "SCHED_FIFO is refused" in said[0]
    else:
        assert said == []
    assert not [line for line in output if "Traceback" in line]
