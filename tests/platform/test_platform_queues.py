"""The queue plan: what a Linux host asks, what each target grants, what the host uses."""

from __future__ import annotations

from nvmf.platform.queues import LINUX_TARGET_DEFAULT_QID_MAX, host_asks, negotiate, plan_queues


def test_host_asks_one_per_online_cpu() -> None:
    assert host_asks(64).total == 64


def test_nr_io_queues_is_capped_at_online_cpus() -> None:
    assert host_asks(4, nr_io_queues=8).total == 4
    assert host_asks(16, nr_io_queues=8).total == 8


def test_write_and_poll_queues_add_and_are_capped() -> None:
    ask = host_asks(4, nr_io_queues=2, nr_write_queues=8, nr_poll_queues=1)
    assert (ask.read_or_default, ask.write, ask.poll, ask.total) == (2, 4, 1, 7)


def test_rdma_caps_read_and_write_queues_at_completion_vectors() -> None:
    ask = host_asks(64, transport="rdma", nr_write_queues=64, nr_poll_queues=4, comp_vectors=16)
    assert (ask.read_or_default, ask.write, ask.poll) == (16, 16, 4)
    assert host_asks(64, transport="tcp", comp_vectors=16).total == 64


def test_negotiation_is_the_minimum() -> None:
    assert negotiate(256, 128) == 128
    assert negotiate(2, 128) == 2


def test_plan_defaults_linux_grant_and_ours_per_core() -> None:
    plan = plan_queues(this_machine_cpus=2)
    assert plan.linux_target_qid_max == LINUX_TARGET_DEFAULT_QID_MAX == 128
    assert plan.host.total == 2 and plan.linux_result == 2 and plan.ours_result == 2
    rows = {row.host_cpus: row for row in plan.what_if}
    assert (rows[256].asked, rows[256].linux_target, rows[256].ours) == (256, 128, 2)


def test_plan_what_if_host_and_configured_targets() -> None:
    plan = plan_queues(
        this_machine_cpus=2,
        host_cpus=96,
        nr_io_queues=8,
        linux_qid_max={"nqn.a": 16, "nqn.b": 4},
        ours_max=6,
        ours_source="--target-max-queues",
    )
    assert plan.host.cpus == 96 and plan.host.total == 8
    assert plan.linux_target_qid_max == 4 and "nqn.b=4" in plan.linux_target_source
    assert plan.linux_result == 4 and plan.ours_result == 6
    assert 96 in {row.host_cpus for row in plan.what_if}


def test_plan_rdma_line_needs_completion_vectors() -> None:
    assert plan_queues(this_machine_cpus=8).host_rdma is None
    plan = plan_queues(this_machine_cpus=8, rdma_comp_vectors=2)
    assert plan.host_rdma is not None and plan.rdma_linux_result == 2
