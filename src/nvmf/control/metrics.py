"""Prometheus metrics of a running target (``nvmf serve --metrics-port PORT``).

A custom collector (:class:`TargetCollector`) builds every metric at scrape time from the same
snapshot ``nvmf status`` shows (:func:`nvmf.control.status.target_status`): the HTTP server's
thread asks the control plane's event loop for it, the control plane asks each worker over its
channel, and nothing is counted or sent on the I/O path for metrics' sake.

Names follow Prometheus conventions: counters end in ``_total``, sizes carry their unit, and
labels say which ``subsystem``, ``nsid``, ``controller``, ``queue`` and ``worker`` (a worker's
index, or ``control`` for what the control-plane process serves itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from nvmf.control.status import CONTROL_PLANE

log = logging.getLogger(__name__)

#: How long a scrape waits for the control plane's snapshot.
SCRAPE_TIMEOUT_S = 10.0

#: Per-namespace counters of each data-plane process: (key in the snapshot, metric, help).
NAMESPACE_COUNTERS = (
    ("read_cmds", "nvmf_namespace_read_commands", "Read commands executed"),
    ("read_blocks", "nvmf_namespace_read_blocks", "Logical blocks read"),
    ("write_cmds", "nvmf_namespace_write_commands", "Write commands executed"),
    ("write_blocks", "nvmf_namespace_write_blocks", "Logical blocks written"),
    ("flush_cmds", "nvmf_namespace_flush_commands", "Flush commands executed"),
    ("compare_cmds", "nvmf_namespace_compare_commands", "Compare commands executed"),
    ("compare_blocks", "nvmf_namespace_compare_blocks", "Logical blocks compared"),
    ("other_cmds", "nvmf_namespace_other_commands", "Write Zeroes and DSM commands executed"),
    ("errors", "nvmf_namespace_errors", "I/O commands that completed with an error"),
    ("staged_dram_bytes", "nvmf_namespace_staged_dram_bytes", "Payload bytes staged in DRAM"),
    ("staged_cmb_bytes", "nvmf_namespace_staged_cmb_bytes", "Payload bytes staged in a CMB"),
)
#: Per-worker counters: (key in the snapshot, metric, help).
WORKER_COUNTERS = (
    ("commands", "nvmf_worker_commands", "Commands received by the offload worker"),
    ("incapsule_writes", "nvmf_worker_incapsule_writes", "Writes whose data came in-capsule"),
    ("forwarded", "nvmf_worker_forwarded_commands", "Commands forwarded to the control plane"),
    ("errors", "nvmf_worker_errors", "Commands that completed with an error"),
    ("queues_attached", "nvmf_worker_queues_attached", "I/O queues handed to the worker"),
    ("restarts", "nvmf_worker_restarts", "Times the worker slot was restarted after a death"),
)
#: A worker's staging pool (``StagingPool.stats``): counters, then gauges in bytes.
STAGING_COUNTERS = (
    ("taken", "nvmf_worker_staging_buffers", "Staging buffers handed out"),
    ("waits", "nvmf_worker_staging_waits", "Times a command waited for a staging buffer"),
)
STAGING_GAUGES = (
    ("budget", "nvmf_worker_staging_budget_bytes", "Bytes of staging buffers allowed in use"),
    ("in_use", "nvmf_worker_staging_in_use_bytes", "Bytes of staging buffers in use now"),
    ("free", "nvmf_worker_staging_free_bytes", "Bytes of staging buffers free now"),
)


class TargetCollector(Collector):
    """Every metric of the target, from ``snapshot()`` (a call that returns the status dict)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.snapshot()
        except Exception as exc:  # a scrape must answer even when the target cannot
            log.warning("metrics: no status from the control plane: %s", exc)
            up = GaugeMetricFamily("nvmf_up", "Whether the control plane answered the scrape")
            up.add_metric([], 0)
            yield up
            return
        yield from metrics_of(status)


def metrics_of(status: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one status snapshot."""
    up = GaugeMetricFamily("nvmf_up", "Whether the control plane answered the scrape")
    up.add_metric([], 1)
    yield up
    port = GaugeMetricFamily(
        "nvmf_port_info",
        "A port the target listens on",
        labels=["portid", "trtype", "traddr", "trsvcid"],
    )
    for p in status["ports"]:
        port.add_metric([str(p["portid"]), p["trtype"], p["traddr"], str(p["trsvcid"])], 1)
    yield port

    ns_size = GaugeMetricFamily(
        "nvmf_namespace_size_bytes", "Namespace size", labels=["subsystem", "nsid"]
    )
    ctrl_info = GaugeMetricFamily(
        "nvmf_controller_info",
        "A connected controller and its host",
        labels=["subsystem", "controller", "host", "address", "portid"],
    )
    kato = GaugeMetricFamily(
        "nvmf_controller_keep_alive_timeout_seconds",
        "Keep Alive Timeout the host set (0: disabled)",
        labels=["subsystem", "controller"],
    )
    queue_size = GaugeMetricFamily(
        "nvmf_queue_size",
        "Entries of a queue (Connect SQSIZE + 1)",
        labels=["subsystem", "controller", "queue", "worker"],
    )
    queue_cmds = CounterMetricFamily(
        "nvmf_queue_commands",
        "Commands received on a queue",
        labels=["subsystem", "controller", "queue", "worker"],
    )
    controllers = GaugeMetricFamily(
        "nvmf_controllers", "Connected controllers", labels=["subsystem"]
    )
    for sub in status["subsystems"]:
        nqn = sub["nqn"]
        controllers.add_metric([nqn], len(sub["controllers"]))
        for ns in sub.get("namespaces", []):
            ns_size.add_metric([nqn, str(ns["nsid"])], ns["size"])
        for ctrl in sub["controllers"]:
            cntlid = str(ctrl["cntlid"])
            ctrl_info.add_metric(
                [nqn, cntlid, ctrl["hostnqn"], ctrl["address"], str(ctrl["portid"])], 1
            )
            kato.add_metric([nqn, cntlid], ctrl["kato_ms"] / 1000)
            for q in ctrl["queues"]:
                labels = [nqn, cntlid, str(q["qid"]), str(q["worker"])]
                queue_size.add_metric(labels, q["size"])
                queue_cmds.add_metric(labels, q["commands"])
    yield from (controllers, ns_size, ctrl_info, kato, queue_size, queue_cmds)

    namespace_families = {
        key: CounterMetricFamily(name, text, labels=["subsystem", "nsid", "worker"])
        for key, name, text in NAMESPACE_COUNTERS
    }
    sources = [(CONTROL_PLANE, status["control_plane"]["namespaces"])]
    sources += [(str(w["worker"]), w.get("namespaces", {})) for w in status["workers"]]
    for worker, namespaces in sources:
        for key, counters in namespaces.items():
            nqn, _, nsid = key.rpartition("/")
            for name, family in namespace_families.items():
                family.add_metric([nqn, nsid, worker], counters.get(name, 0))
    yield from namespace_families.values()

    worker_families = {
        key: CounterMetricFamily(name, text, labels=["worker"])
        for key, name, text in WORKER_COUNTERS
    }
    worker_queues = GaugeMetricFamily(
        "nvmf_worker_queues", "I/O queues the worker serves now", labels=["worker"]
    )
    worker_up = GaugeMetricFamily(
        "nvmf_worker_up", "Whether the worker answered the scrape", labels=["worker"]
    )
    staging_counters = {
        key: CounterMetricFamily(name, text, labels=["worker"])
        for key, name, text in STAGING_COUNTERS
    }
    staging_gauges = {
        key: GaugeMetricFamily(name, text, labels=["worker"]) for key, name, text in STAGING_GAUGES
    }
    for w in status["workers"]:
        index = str(w["worker"])
        worker_up.add_metric([index], 0 if w.get("dead") else 1)
        worker_queues.add_metric([index], len(w.get("queues", [])))
        for key, family in worker_families.items():
            if key in w:
                family.add_metric([index], w[key])
        staging = w.get("staging", {})
        for key, counter in staging_counters.items():
            if key in staging:
                counter.add_metric([index], staging[key])
        for key, gauge in staging_gauges.items():
            if key in staging:
                gauge.add_metric([index], staging[key])
    yield from (worker_up, worker_queues, *worker_families.values())
    yield from (*staging_counters.values(), *staging_gauges.values())


def threadsafe_snapshot(
    status: Callable[[], Any], loop: asyncio.AbstractEventLoop
) -> Callable[[], dict[str, Any]]:
    """A blocking call, for the HTTP server's thread, that runs the coroutine ``status()`` on
    the control plane's event loop and waits for its result."""

    def snapshot() -> dict[str, Any]:
        future = asyncio.run_coroutine_threadsafe(status(), loop)
        result: dict[str, Any] = future.result(SCRAPE_TIMEOUT_S)
        return result

    return snapshot


class MetricsServer:
    """The HTTP endpoint (``/metrics``) on ``address:port`` (port 0: any free one)."""

    def __init__(self, collector: Collector, address: str, port: int) -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._httpd, self._thread = start_http_server(port, addr=address, registry=self.registry)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
