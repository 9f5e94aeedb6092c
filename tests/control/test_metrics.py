"""Prometheus metrics (:mod:`nvmf.control.metrics`) scraped over HTTP from a running target,
with and without offload workers: the figures are the status snapshot's, asked at scrape time."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nvmf.control.metrics import MetricsServer, TargetCollector, threadsafe_snapshot
from nvmf.wire.opcodes import IoOpcode
from tests.target.conftest import SUBNQN, RunningTarget, running_target
from tests.target.rawhost import HOSTNQN, status_of
from tests.target.test_tcp_target import admin, io_queue, rw


@pytest.fixture(params=[0, 2], ids=["one-process", "2-workers"])
def scraped(request: pytest.FixtureRequest) -> Iterator[tuple[RunningTarget, MetricsServer]]:
    with running_target(request.param) as target:
        collector = TargetCollector(threadsafe_snapshot(target.service.status, target.loop))
        server = MetricsServer(collector, "127.0.0.1", 0)
        try:
            yield target, server
        finally:
            server.close()


def scrape(server: MetricsServer) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value)]} of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_scrape_shows_the_controller_queues_and_io_counts(
    scraped: tuple[RunningTarget, MetricsServer],
) -> None:
    target, server = scraped
    host = admin(target)
    q = io_queue(target, host)
    data = os.urandom(4096)
    for _ in range(3):
        assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 8, 4096), data)).ok
    m = scrape(server)
    assert m["nvmf_up"] == [({}, 1.0)]
    (info,) = [labels for labels, _ in m["nvmf_controller_info"]]
    assert info["subsystem"] == SUBNQN and info["host"] == HOSTNQN
    assert info["controller"] == str(host.cntlid) and info["address"].startswith("127.0.0.1:")
    sizes = {labels["queue"]: v for labels, v in m["nvmf_queue_size"]}
    assert sizes == {"0": 32.0, "1": 128.0}
    commands = {
        labels["queue"]: (labels["worker"], v) for labels, v in m["nvmf_queue_commands_total"]
    }
    worker, count = commands["1"]
    assert count == 4.0  # Connect and three writes
    writes = [
        (labels, v)
        for labels, v in m["nvmf_namespace_write_commands_total"]
        if labels["subsystem"] == SUBNQN and labels["nsid"] == "1"
    ]
    assert sum(v for _, v in writes) == 3.0
    assert {labels["worker"] for labels, v in writes if v} == {worker}
    blocks = sum(v for labels, v in m["nvmf_namespace_write_blocks_total"] if labels["nsid"] == "1")
    assert blocks == 24.0
    if target.service.workers is None:
        assert worker == "control" and "nvmf_worker_up" not in m
    else:
        assert worker in ("0", "1")
        assert sorted(labels["worker"] for labels, _ in m["nvmf_worker_up"]) == ["0", "1"]
        per_worker = {labels["worker"]: v for labels, v in m["nvmf_worker_commands_total"]}
        assert per_worker[worker] >= 3.0
        budget = {labels["worker"]: v for labels, v in m["nvmf_worker_staging_budget_bytes"]}
        assert budget == dict.fromkeys(("0", "1"), float(target.service.settings.staging_bytes))
        waits = [v for _, v in m["nvmf_worker_staging_waits_total"]]
        assert waits == [0.0, 0.0]
        in_use = [v for _, v in m["nvmf_worker_staging_in_use_bytes"]]
        assert in_use == [0.0, 0.0]
    (port,) = m["nvmf_port_info"]
    assert port[0]["trsvcid"] == str(target.addr[1])


def test_a_scrape_the_control_plane_cannot_answer_says_down() -> None:
    def broken() -> dict[str, object]:
        raise TimeoutError("control plane busy")

    server = MetricsServer(TargetCollector(broken), "127.0.0.1", 0)
    try:
        assert scrape(server)["nvmf_up"] == [({}, 0.0)]
    finally:
        server.close()
