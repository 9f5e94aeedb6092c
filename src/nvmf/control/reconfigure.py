"""Apply an edited configuration to a running target without dropping its connections.

``nvmf serve`` calls :func:`reconfigure` on ``SIGHUP`` and on ``nvmf config reload`` with the
configuration it has just loaded and validated (a file that does not validate never gets
here: the running target is left as it was).  What changes:

* **Namespaces** added, removed, disabled or changed (path, size, medium, identifiers): the new
  media are opened first (a medium that cannot be opened refuses the whole reload, nothing
  changed), every offload worker is given them, every controller of the subsystem gets a new
  :class:`~nvmf.offload.context.IoContext` (here and, as an ``IoContextSpec``, in the workers
  serving its queues), and each controller is told with the Namespace Attribute Changed
  notice (:func:`nvmf.control.admin.namespaces_changed`: Changed Namespace List, log page
  04h).  A changed namespace is reopened from its new settings: a ``ram`` namespace's data
  does not survive a change of its own settings.
* **Subsystems** added or removed (a removed one's controllers are deleted); attributes of a
  kept one (``allow_any_host``, ``allowed_hosts``, serial, model, ``qid_max``) apply to the
  next Connect and Identify.  A host no longer allowed loses its controllers at once (as
  removing a host from the kernel target's ``allowed_hosts`` refuses it from then on; keeping
  its live connections would make the removal a hole).
* **Ports** added or removed; a port whose address or parameters changed is closed and
  opened again at the new address (its connections end: the host reconnects there if it
  can); a kept port's subsystem list, referrals and ANA groups change in place, and a
  controller reached through a port that no longer exports its subsystem is deleted.
  Discovery controllers that asked for it get a Discovery Log Page Change notice.
* ``"nvmf"`` settings (workers, staging memory, queue sizes...) are fixed at start: a change
  is logged and kept for the next start; the running values stay.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nvmf.control import admin, discovery
from nvmf.control.model import Namespace, Port, Subsystem, TargetConfig
from nvmf.control.namespace import NamespaceRuntime
from nvmf.control.subsystem import SubsystemRuntime
from nvmf.media.base import MediaError
from nvmf.transport.base import REGISTRY, TransportUnavailable
from nvmf.wire.fabrics import parse_version

if TYPE_CHECKING:
    from nvmf.control.service import TargetService
    from nvmf.wire.logpage import DiscoveryLogEntry

log = logging.getLogger(__name__)


def served_ports(ports: list[Port]) -> list[Port]:
    """The ports this target listens on: those of a transport it has (``REGISTRY``)."""
    return [port for port in ports if port.trtype in REGISTRY]


class ReloadError(Exception):
    """The new configuration cannot be applied (a medium or a port would not open); the
    running target is unchanged."""


@dataclass
class ReloadReport:
    """What a reload changed, for the log line and the control socket's answer."""

    subsystems_added: list[str] = field(default_factory=list)
    subsystems_removed: list[str] = field(default_factory=list)
    #: ``"NQN/NSID"`` of each namespace added, removed or changed.
    namespaces_added: list[str] = field(default_factory=list)
    namespaces_removed: list[str] = field(default_factory=list)
    namespaces_changed: list[str] = field(default_factory=list)
    ports_added: list[int] = field(default_factory=list)
    ports_removed: list[int] = field(default_factory=list)
    ports_changed: list[int] = field(default_factory=list)
    controllers_deleted: int = 0
    #: Controllers that were sent a Namespace Attribute Changed event.
    notices_sent: int = 0
    #: The discovery log's content changed (its generation counter moved on), and the
    #: discovery controllers that were sent a Discovery Log Page Change event.
    discovery_changed: bool = False
    discovery_notices_sent: int = 0
    #: Settings that need a restart, by JSON path.
    settings_kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what changed, or ``no changes``."""
        parts = []
        for name in (
            "subsystems_added",
            "subsystems_removed",
            "namespaces_added",
            "namespaces_removed",
            "namespaces_changed",
            "ports_added",
            "ports_removed",
            "ports_changed",
        ):
            values = getattr(self, name)
            if values:
                parts.append(f"{name.replace('_', ' ')} {', '.join(map(str, values))}")
        if self.controllers_deleted:
            parts.append(f"controllers deleted: {self.controllers_deleted}")
        if self.notices_sent:
            n = self.notices_sent
            parts.append(f"namespace change notice to {n} controller{'' if n == 1 else 's'}")
        if self.discovery_changed:
            n = self.discovery_notices_sent
            parts.append(f"discovery log changed, notice to {n} controller{'' if n == 1 else 's'}")
        if self.settings_kept:
            parts.append(f"restart needed for {', '.join(self.settings_kept)}")
        return "; ".join(parts) or "no changes"

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _ns_key(ns: Namespace) -> object:
    """Everything of a namespace's configuration that its runtime depends on."""
    return (ns.path, ns.uuid, ns.nguid, ns.ana_grpid, dataclasses.astuple(ns.media))


def _port_address(port: Port) -> object:
    """What a port listens with: changing any of it means a new listener."""
    return (
        port.trtype,
        port.adrfam,
        port.traddr,
        port.trsvcid,
        port.treq,
        port.inline_data_size,
        sorted((g, sorted(v.items())) for g, v in port.extra_attrs.items()),
    )


@dataclass
class _Plan:
    """A reload worked out before anything running is touched."""

    new_subsystems: dict[str, SubsystemRuntime] = field(default_factory=dict)
    #: Per kept subsystem: the namespaces to open (new or changed), and to drop.
    opened: dict[str, dict[int, NamespaceRuntime]] = field(default_factory=dict)
    dropped: dict[str, set[int]] = field(default_factory=dict)
    changed: dict[str, set[int]] = field(default_factory=dict)

    def close_all(self) -> None:
        """Undo: close what the plan opened."""
        for sub in self.new_subsystems.values():
            sub.close()
        for namespaces in self.opened.values():
            for ns in namespaces.values():
                ns.close()


async def reconfigure(service: TargetService, new: TargetConfig) -> ReloadReport:
    """Make ``service`` run ``new`` (validated by the caller); see the module docstring.

    Raises :class:`ReloadError` when a medium or a port cannot be opened: everything this call
    opened is closed again and the target runs as before.
    """
    report = ReloadReport()
    old = service.config
    exports_before = _exports(old)  # before kept ports take their new exports in place
    logs_before = _discovery_logs(service)
    plan = _open_media(service, new, report)
    try:
        ports = await _swap_ports(service, new, report)
    except ReloadError:
        plan.close_all()
        raise
    _apply_subsystems(service, new, plan, report)
    _apply_port_exports(service, ports, report)
    for name in (f.name for f in dataclasses.fields(new.nvmf)):
        if getattr(new.nvmf, name) != getattr(old.nvmf, name):
            report.settings_kept.append(f"nvmf.{name}")
    service.config = TargetConfig(
        hosts=new.hosts,
        ports=ports,
        subsystems=new.subsystems,
        nvmf=old.nvmf,
        extra_attrs=new.extra_attrs,
    )
    if (
        report.ports_added
        or report.ports_removed
        or report.ports_changed
        or report.subsystems_added
        or report.subsystems_removed
        or exports_before != _exports(new)
    ):
        service.genctr += 1
        report.discovery_changed = True
        # Only a host whose own log page changed is told (Linux's nvmet tells the discovery
        # controllers of the port that changed).
        for cntlid, entries in _discovery_logs(service).items():
            if logs_before.get(cntlid) != entries:
                ctrl = service.discovery.controllers[cntlid]
                report.discovery_notices_sent += discovery.log_changed(ctrl)
    return report


def _discovery_logs(service: TargetService) -> dict[int, list[DiscoveryLogEntry]]:
    """The discovery log entries each connected discovery controller reads now."""
    return {
        cntlid: discovery.log_entries(service, ctrl)
        for cntlid, ctrl in service.discovery.controllers.items()
        if 0 in ctrl.queues
    }


def _exports(cfg: TargetConfig) -> object:
    """What the discovery log page is made of (exports, referrals, access lists): when it
    differs, the log's generation counter moves on and discovery controllers are told."""
    return (
        sorted((p.portid, sorted(p.subsystems), repr(p.referrals)) for p in cfg.ports),
        sorted((s.nqn, s.allow_any_host, sorted(s.allowed_hosts)) for s in cfg.subsystems),
    )


def _open_media(service: TargetService, new: TargetConfig, report: ReloadReport) -> _Plan:
    """Open every medium the new configuration adds or changes; nothing running changes."""
    plan = _Plan()
    max_io_queues = service.settings.max_io_queues
    try:
        for sub in new.subsystems:
            runtime = service.subsystems.get(sub.nqn)
            if runtime is None:
                plan.new_subsystems[sub.nqn] = SubsystemRuntime.open(sub, max_io_queues)
                continue
            old_ns = {ns.nsid: ns for ns in runtime.config.namespaces if ns.enable}
            new_ns = {ns.nsid: ns for ns in sub.namespaces if ns.enable}
            opened = plan.opened.setdefault(sub.nqn, {})
            for nsid, ns in new_ns.items():
                before = old_ns.get(nsid)
                if before is None or _ns_key(before) != _ns_key(ns):
                    opened[nsid] = NamespaceRuntime.open(ns, sub.nqn)
                    plan.changed.setdefault(sub.nqn, set()).add(nsid)
                    where = report.namespaces_changed if before else report.namespaces_added
                    where.append(f"{sub.nqn}/{nsid}")
            for nsid in old_ns.keys() - new_ns.keys():
                plan.dropped.setdefault(sub.nqn, set()).add(nsid)
                plan.changed.setdefault(sub.nqn, set()).add(nsid)
                report.namespaces_removed.append(f"{sub.nqn}/{nsid}")
    except (OSError, ValueError, MediaError) as exc:
        plan.close_all()
        raise ReloadError(f"cannot open a namespace's medium: {exc}") from exc
    return plan


async def _swap_ports(
    service: TargetService, new: TargetConfig, report: ReloadReport
) -> list[Port]:
    """Close removed and changed ports, open added and changed ones; the live port list.

    On a failure every step taken is undone (old ports listen again) and ReloadError raised.
    """
    current = {p.portid: p for p in service.ports}
    wanted = {p.portid: p for p in served_ports(new.ports)}  # others: the kernel's
    closed: list[Port] = []
    opened: list[Port] = []
    try:
        for portid, port in current.items():
            if portid not in wanted or _port_address(port) != _port_address(wanted[portid]):
                await service.transports[port.trtype].remove_port(port)
                closed.append(port)
        for portid, port in wanted.items():
            if portid in current and current[portid] not in closed:
                continue
            transport = service.transports.get(port.trtype)
            if transport is None:
                transport = service.new_transport(port.trtype)
                service.transports[port.trtype] = transport
            await transport.add_port(port, service)
            opened.append(port)
    except (OSError, TransportUnavailable) as exc:
        for port in opened:
            await service.transports[port.trtype].remove_port(port)
        for port in closed:
            try:
                await service.transports[port.trtype].add_port(port, service)
            except OSError as again:
                log.error("port %d could not listen again: %s", port.portid, again)
        raise ReloadError(str(exc)) from exc
    for port in closed:
        (report.ports_changed if port.portid in wanted else report.ports_removed).append(
            port.portid
        )
    report.ports_added.extend(p.portid for p in opened if p.portid not in current)
    live = []
    for portid, port in wanted.items():
        kept = current.get(portid)
        if kept is not None and kept not in closed:
            # Same listener: the Port object its queues hold takes the new exports.
            kept.subsystems = list(port.subsystems)
            kept.referrals = port.referrals
            kept.ana_groups = port.ana_groups
            live.append(kept)
        else:
            live.append(port)
    service.ports[:] = live
    return live


def _apply_subsystems(
    service: TargetService, new: TargetConfig, plan: _Plan, report: ReloadReport
) -> None:
    """Commit the subsystem and namespace changes (nothing here can fail)."""
    wanted = {sub.nqn: sub for sub in new.subsystems}
    for nqn in [n for n in service.subsystems if n not in wanted]:
        runtime = service.subsystems.pop(nqn)
        for ctrl in list(runtime.controllers.values()):
            service.delete_controller(ctrl, "subsystem removed by a configuration reload")
            report.controllers_deleted += 1
        for nsid in list(runtime.namespaces):
            service.namespace_closed(nqn, nsid)
        runtime.close()
        report.subsystems_removed.append(nqn)
    for nqn, runtime in plan.new_subsystems.items():
        service.subsystems[nqn] = runtime
        for nsid, ns in runtime.namespaces.items():
            service.namespace_opened(nqn, nsid, ns)
        report.subsystems_added.append(nqn)
    for nqn, sub in wanted.items():
        if nqn in plan.new_subsystems:
            continue
        runtime = service.subsystems[nqn]
        _update_attributes(runtime, sub)
        changed = plan.changed.get(nqn, set())
        if changed:
            _swap_namespaces(service, runtime, plan.opened.get(nqn, {}), changed)
        for ctrl in list(runtime.controllers.values()):
            if not runtime.host_allowed(ctrl.hostnqn):
                service.delete_controller(ctrl, "host no longer allowed by a configuration reload")
                report.controllers_deleted += 1
            elif changed and admin.namespaces_changed(ctrl, changed):
                report.notices_sent += 1


def _update_attributes(runtime: SubsystemRuntime, sub: Subsystem) -> None:
    runtime.config = sub
    runtime.vs = parse_version(sub.version)
    runtime.serial = sub.serial or runtime.serial
    runtime.max_io_queues = sub.qid_max or runtime.max_io_queues


def _swap_namespaces(
    service: TargetService,
    runtime: SubsystemRuntime,
    opened: dict[int, NamespaceRuntime],
    changed: set[int],
) -> None:
    """Replace the changed namespaces of a kept subsystem, so that no I/O context ever names
    a closed medium: first every context without them, then the media, then the new contexts."""
    nqn = runtime.nqn
    gone = {nsid: runtime.namespaces.pop(nsid) for nsid in changed if nsid in runtime.namespaces}
    for ctrl in runtime.controllers.values():
        service.context_changed(ctrl)
    for nsid, ns in gone.items():
        service.namespace_closed(nqn, nsid)
        ns.close()
    for nsid, ns in opened.items():
        runtime.namespaces[nsid] = ns
        service.namespace_opened(nqn, nsid, ns)
    runtime.namespaces = dict(sorted(runtime.namespaces.items()))
    if opened:
        for ctrl in runtime.controllers.values():
            service.context_changed(ctrl)


def _apply_port_exports(service: TargetService, ports: list[Port], report: ReloadReport) -> None:
    """Delete controllers reached through a port that no longer exports their subsystem."""
    for sub in service.subsystems.values():
        for ctrl in list(sub.controllers.values()):
            port = ctrl.port
            if not any(port is live for live in ports) or sub.nqn not in port.subsystems:
                service.delete_controller(ctrl, "subsystem no longer exported on its port")
                report.controllers_deleted += 1
