"""What a running target is doing, as plain data: ``nvmf status`` and the metrics read this.

:func:`target_status` gathers, at the moment it is asked, the ports (with the address each is
bound to), the subsystems with their namespaces and connected controllers (host NQN and
address, keep-alive, every queue with its size, the worker serving it and its command count),
and the counters of every offload worker and of the control plane's own data path.  Worker
counters come over each worker's channel (:meth:`~nvmf.offload.workers.WorkerSet.counters`),
so the I/O path is never touched: a worker answers between two batches of commands.

The result is JSON-ready (strings, numbers, lists, dicts), so the control socket sends it as is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nvmf.control.model import DISCOVERY_NQN
from nvmf.media.base import DeviceReport
from nvmf.offload.context import NamespaceCounters, counters_as_data

if TYPE_CHECKING:
    from nvmf.control.controller import Controller
    from nvmf.control.service import TargetService
    from nvmf.control.subsystem import SubsystemRuntime

#: The ``worker`` value of what the control-plane process serves itself.
CONTROL_PLANE = "control"


async def target_status(service: TargetService) -> dict[str, Any]:
    """A snapshot of ``service``: ports, subsystems, controllers, queues, workers, counters."""
    workers: list[dict[str, Any]] = []
    if service.workers is not None:
        workers = await service.workers.counters()
    # Each handed-over queue's command count, from the worker that serves it.
    remote: dict[tuple[str, int, int], int] = {}
    for w in workers:
        for q in w.get("queues", []):
            remote[(q["subnqn"], q["cntlid"], q["qid"])] = q["commands"]
    subsystems = [
        _subsystem(service.discovery, remote),
        *(_subsystem(sub, remote) for sub in service.subsystems.values()),
    ]
    return {
        "pid": os.getpid(),
        "ports": [_port(service, port) for port in service.ports],
        "subsystems": subsystems,
        "workers": workers,
        "control_plane": {"namespaces": counters_as_data(service.counters)},
    }


def device_reports(service: TargetService) -> dict[str, Any]:
    """The devices the target's media own (``pci_devices`` on the control socket, which
    ``nvmf doctor`` asks): each :class:`~nvmf.media.base.DeviceReport` medium's report, with
    the subsystem and namespace it serves.  Only the control plane is asked: it made every
    process's queue pair and staging memory, so it knows them all without asking a worker."""
    devices = []
    for nqn, sub in service.subsystems.items():
        for nsid, ns in sorted(sub.namespaces.items()):
            if isinstance(ns.media, DeviceReport):
                devices.append({"subsystem": nqn, "nsid": nsid, **ns.media.device_report()})
    return {"pid": os.getpid(), "devices": devices}


def _port(service: TargetService, port: Any) -> dict[str, Any]:
    out = {
        "portid": port.portid,
        "trtype": port.trtype,
        "adrfam": port.adrfam,
        "traddr": port.traddr,
        "trsvcid": port.trsvcid,
        "subsystems": list(port.subsystems),
    }
    transport = service.transports.get(port.trtype)
    if transport is not None:
        try:
            addr, number = transport.bound_address(port)
        except (KeyError, OSError):
            pass
        else:
            out["traddr"], out["trsvcid"] = addr, str(number)
    return out


def _subsystem(sub: SubsystemRuntime, remote: dict[tuple[str, int, int], int]) -> dict[str, Any]:
    out: dict[str, Any] = {"nqn": sub.nqn, "discovery": sub.discovery}
    if sub.nqn != DISCOVERY_NQN:
        out["allow_any_host"] = sub.config.allow_any_host
        out["allowed_hosts"] = list(sub.config.allowed_hosts)
        out["namespaces"] = [
            {
                "nsid": nsid,
                "kind": ns.media.kind,
                "size": ns.media.size,
                "block_size": ns.block_size,
                "nsze": ns.nsze,
            }
            for nsid, ns in sorted(sub.namespaces.items())
        ]
    out["controllers"] = [_controller(ctrl, remote) for _, ctrl in sorted(sub.controllers.items())]
    return out


def _controller(ctrl: Controller, remote: dict[tuple[str, int, int], int]) -> dict[str, Any]:
    admin = ctrl.queues.get(0)
    queues = []
    for qid, session in sorted(ctrl.queues.items()):
        # Commands seen here (a handed-over queue's Connect) plus those its worker received.
        commands = session.commands
        if session.worker is not None:
            commands += remote.get((ctrl.subsystem.nqn, ctrl.cntlid, qid), 0)
        queues.append(
            {
                "qid": qid,
                "size": session.sqsize + 1,
                "worker": CONTROL_PLANE if session.worker is None else session.worker,
                "commands": commands,
            }
        )
    return {
        "cntlid": ctrl.cntlid,
        "hostnqn": ctrl.hostnqn,
        "hostid": ctrl.hostid.hex(),
        # The host's address of the admin connection (TCP queues know it as ``peer``).
        "address": str(getattr(admin.fabric, "peer", "")) if admin is not None else "",
        "portid": ctrl.port.portid,
        "kato_ms": ctrl.keep_alive.kato_ms,
        "io_queues_granted": ctrl.io_queues,
        "queues": queues,
    }


def namespace_counters(service: TargetService, nqn: str) -> dict[int, dict[str, int]]:
    """Each namespace of subsystem ``nqn`` that served I/O: its counters
    (:class:`~nvmf.offload.context.NamespaceCounters`) summed over the control plane's own data
    path and every worker slot's counter table (:mod:`nvmf.offload.tally`), which holds what
    the slot's workers counted, one that died included; no worker is asked anything."""
    sources = [service.counters]
    if service.workers is not None:
        sources += service.workers.namespace_counters()
    totals: dict[int, dict[str, int]] = {}
    for counters in sources:
        for (sub, nsid), c in counters.items():
            if sub == nqn:
                total = totals.setdefault(nsid, dict.fromkeys(NamespaceCounters.NAMES, 0))
                for name, value in c.as_dict().items():
                    total[name] += value
    return totals
