"""Our target answers malformed commands as the Linux kernel target does, except where the spec
says otherwise.

The kernel target (nvmet-tcp, Linux 6.1, a loop device namespace) answers every case of
:mod:`tests.guest.status_probe` in the host-kernel-target boot (``tests/host/test_host_guest.py``);
the same cases run here against our target, in one process and with two workers.  Every answer
must agree, but for :data:`~tests.guest.status_differences.DIFFERENCES`, each with the reason
why ours is the one the specifications ask for.  (Over NVMe/RDMA the same comparison runs in
``test_rdma_target_guest.py``.)
"""

from __future__ import annotations

import json

import pytest

from tests.guest.status_differences import DIFFERENCES, unexplained
from tests.guest.status_probe import probe, tcp_opener
from tests.host.test_host_guest import host_kernel_target
from tests.target.conftest import SUBNQN, running_target


@pytest.fixture(scope="module")
def kernel_answers() -> dict[str, str]:
    result = host_kernel_target()
    result.finished()
    assert result.read("status-probe.rc").strip() == "0", result.read("status-probe.err")[-3000:]
    answers: dict[str, str] = json.loads(result.read("status-kernel.json"))
    return answers


@pytest.mark.guest
@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-workers"])
def test_our_target_answers_malformed_commands_as_the_kernel_target_does(
    kernel_answers: dict[str, str], workers: int
) -> None:
    with running_target(workers) as target:
        ours = probe(tcp_opener(target.addr), SUBNQN)
    assert set(ours) == set(kernel_answers)
    assert unexplained(kernel_answers, ours, DIFFERENCES) == {}
