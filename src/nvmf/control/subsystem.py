"""Subsystems at run time: namespaces, controllers, host access control, cntlid allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nvmf.control.model import DISCOVERY_NQN, Subsystem
from nvmf.control.namespace import NamespaceRuntime
from nvmf.wire.fabrics import parse_version

if TYPE_CHECKING:
    from nvmf.control.controller import Controller


class SubsystemRuntime:
    """One NVM subsystem (or the discovery subsystem) while the target runs."""

    def __init__(self, config: Subsystem, *, discovery: bool = False, max_io_queues: int = 1):
        self.config = config
        self.nqn = config.nqn
        self.discovery = discovery
        self.vs = parse_version(config.version)
        self.namespaces: dict[int, NamespaceRuntime] = {}
        self.controllers: dict[int, Controller] = {}
        self.max_io_queues = 0 if discovery else (config.qid_max or max_io_queues)
        self._next_cntlid = config.cntlid_min
        self.serial = config.serial or _serial_from(config.nqn)

    @classmethod
    def open(cls, config: Subsystem, max_io_queues: int) -> SubsystemRuntime:
        sub = cls(config, max_io_queues=max_io_queues)
        try:
            for ns in config.namespaces:
                if ns.enable:
                    sub.namespaces[ns.nsid] = NamespaceRuntime.open(ns, config.nqn)
        except BaseException:
            sub.close()
            raise
        return sub

    @classmethod
    def discovery_subsystem(cls) -> SubsystemRuntime:
        return cls(Subsystem(nqn=DISCOVERY_NQN, model="nvmf"), discovery=True)

    def host_allowed(self, hostnqn: str) -> bool:
        """Host access control: ``allow_any_host`` or the host NQN in ``allowed_hosts``."""
        return self.discovery or self.config.allow_any_host or hostnqn in self.config.allowed_hosts

    def alloc_cntlid(self) -> int | None:
        """The next free controller ID in ``cntlid_min..cntlid_max``, or None when all are used."""
        lo, hi = self.config.cntlid_min, self.config.cntlid_max
        span = hi - lo + 1
        for i in range(span):
            cntlid = lo + (self._next_cntlid - lo + i) % span
            if cntlid not in self.controllers:
                self._next_cntlid = cntlid + 1 if cntlid < hi else lo
                return cntlid
        return None

    @property
    def nn(self) -> int:
        """Identify Controller NN: the largest NSID this subsystem may hold."""
        return (
            max(self.namespaces, default=0)
            if self.discovery
            else max(1024, max(self.namespaces, default=0))
        )

    @property
    def volatile_write_cache(self) -> bool:
        return any(ns.media.volatile_write_cache for ns in self.namespaces.values())

    def close(self) -> None:
        for ns in self.namespaces.values():
            ns.close()
        self.namespaces.clear()


def _serial_from(nqn: str) -> str:
    """A stable 20-character serial number when the configuration gives none."""
    import hashlib

    return hashlib.sha1(nqn.encode()).hexdigest()[:20]
