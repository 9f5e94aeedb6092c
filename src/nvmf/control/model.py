"""The target's configuration model: hosts, ports, subsystems, namespaces, ANA groups, referrals.

These are plain data, in nvmetcli's vocabulary (``allow_any_host``, ``traddr``, ``trsvcid``,
``inline_data_size`` ...), so ``nvmf.config`` maps nvmetcli's JSON onto them field for field and
back.  This project's own settings live in :class:`NvmfSettings` (the JSON's ``"nvmf"`` key) and
:class:`NamespaceMedia` (a namespace's ``"nvmf"`` key).  The runtime (controllers, queues) lives
elsewhere and only reads these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"


@dataclass
class NamespaceMedia:
    """How a namespace stores its data (this project's key; nvmetcli only knows ``device.path``).

    ``kind``: ``ram``, ``file``, ``block``, ``null``, ``nvme_pci``; ``None`` means "infer from
    device.path": a regular file uses ``file``, a block device ``block``.  ``size`` is in bytes
    (for ``ram``, ``null``, and for creating a missing ``file``).  ``direct`` opens files with
    O_DIRECT.  ``sq_placement`` and ``staging_placement`` (``nvme_pci`` only; ``dram`` or
    ``cmb``): where the SSD's submission queues and the staging buffers of this namespace live.
    ``io_engine`` (``file`` and ``block`` only): how each process's queue reaches the medium,
    ``io_uring``, ``threads``, or ``auto`` (io_uring where the kernel allows it, else threads).
    """

    kind: str | None = None
    size: int | None = None
    block_size: int = 512
    direct: bool = False
    sq_placement: str = "dram"
    staging_placement: str = "dram"
    io_engine: str = "auto"


@dataclass
class Namespace:
    """One namespace of a subsystem (nvmetcli ``namespaces[]``)."""

    nsid: int
    path: str = ""
    enable: bool = True
    uuid: str | None = None
    nguid: str | None = None
    ana_grpid: int = 1
    media: NamespaceMedia = field(default_factory=NamespaceMedia)
    #: nvmetcli attributes this model has no field for, by group: ``{"resv": {"enable": "0"}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Passthru:
    """An NVMe controller a subsystem passes through whole (nvmetcli ``subsystems[].passthru[0]``).

    Only the Linux kernel target implements passthru; this project keeps it so that an nvmetcli
    configuration survives a load -> save round trip and can be applied to the kernel.  ``path``
    is the controller's character device (``/dev/nvme0``); the timeouts are in seconds, None
    meaning the kernel's default.
    """

    path: str = ""
    enable: bool = True
    clear_ids: int | None = None
    admin_timeout: int | None = None
    io_timeout: int | None = None
    #: nvmetcli attributes this model has no field for, by group: ``{"device": {...}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Subsystem:
    """An NVM subsystem (nvmetcli ``subsystems[]``)."""

    nqn: str
    allow_any_host: bool = True
    allowed_hosts: list[str] = field(default_factory=list)
    serial: str = ""
    model: str = "nvmf"
    version: str = "1.3"
    cntlid_min: int = 1
    cntlid_max: int = 0xFFEF
    #: Most I/O queues a controller may create (nvmetcli ``attr.qid_max``); None: the target's.
    qid_max: int | None = None
    namespaces: list[Namespace] = field(default_factory=list)
    #: A passthru controller (nvmetcli ``passthru[0]``; the kernel target only), or None.
    passthru: Passthru | None = None
    #: nvmetcli attributes this model has no field for, by group: ``{"attr": {"pi_enable": "0"}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Referral:
    """A discovery referral to another discovery controller (nvmetcli ``referrals[]``)."""

    name: str
    trtype: str
    adrfam: str
    traddr: str
    trsvcid: str
    portid: int = 0
    treq: str = "not specified"
    enable: bool = True
    #: nvmetcli attributes this model has no field for, by group: ``{"addr": {...}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class AnaGroup:
    """An ANA group's state on a port (nvmetcli ``ana_groups[]``)."""

    grpid: int
    state: str = "optimized"
    #: nvmetcli attributes this model has no field for, by group: ``{"ana": {...}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Port:
    """A fabric port the target listens on (nvmetcli ``ports[]``)."""

    portid: int
    trtype: str = "tcp"
    adrfam: str = "ipv4"
    traddr: str = "127.0.0.1"
    trsvcid: str = "4420"
    treq: str = "not specified"
    #: In-capsule data size the port offers (nvmetcli ``param.inline_data_size``); IOCCSZ follows.
    inline_data_size: int = 8192
    subsystems: list[str] = field(default_factory=list)
    referrals: list[Referral] = field(default_factory=list)
    ana_groups: list[AnaGroup] = field(default_factory=lambda: [AnaGroup(1)])
    #: nvmetcli attributes this model has no field for, by group: ``{"param": {"mdts": "-1"}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Host:
    """A host NQN the target knows (nvmetcli ``hosts[]``)."""

    nqn: str
    #: nvmetcli attributes this model has no field for, by group: ``{"dhchap": {"hash": "none"}}``.
    #: Strings, kept so that load -> save loses nothing; ``apply`` writes them to configfs.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


def online_cores() -> int:
    """The cores this process may run on (the default number of offload workers)."""
    return len(os.sched_getaffinity(0)) or 1


@dataclass
class NvmfSettings:
    """This project's target settings (top-level ``"nvmf"`` key, ignored by nvmetcli).

    ``max_io_queues``: the Number of Queues grant; default: one per core of this machine.
    ``queue_depth``: entries per I/O queue (CAP.MQES + 1).  ``staging_bytes``: the staging
    buffer pool of each data-plane process (each offload worker, and the control plane for the
    queues it serves itself).  ``offload_workers``: data-plane worker processes; default: one
    per online core; 0 serves every queue in the control-plane process (for debugging).
    ``cmb``: not honoured (refused when true): an ``nvme_pci`` namespace says where its queues
    and staging buffers go (``sq_placement``, ``staging_placement``).  ``kato_min_ms``: the
    least Keep Alive Timeout granted.
    ``idle_timeout_ms``: how long a connection may wait for its ICReq, for its Connect, for
    the rest of a PDU it started or for the data of its R2Ts, or leave unread what the target
    sends it, before it is closed.
    ``unpreempted_sends``: an NVMe/TCP queue sends 64 KiB or more at once under
    ``SCHED_FIFO`` (needs ``CAP_SYS_NICE``), so that a host on this machine, woken by each
    segment, does not preempt it part way (:mod:`nvmf.transport.unpreempted`).
    """

    max_io_queues: int = field(default_factory=lambda: os.cpu_count() or 1)
    queue_depth: int = 128
    staging_bytes: int = 32 << 20
    offload_workers: int = field(default_factory=online_cores)
    cmb: bool = False
    kato_min_ms: int = 0
    idle_timeout_ms: int = 30_000
    unpreempted_sends: bool = True


@dataclass
class TargetConfig:
    """A whole target: what ``nvmf serve --config FILE`` runs and ``nvmf config save`` writes."""

    hosts: list[Host] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    subsystems: list[Subsystem] = field(default_factory=list)
    nvmf: NvmfSettings = field(default_factory=NvmfSettings)
    #: nvmetcli's top-level attribute groups (``"discovery": {"nqn": ...}`` on 6.12), kept
    #: verbatim so that saving gives them back; ``nvmetcli restore`` does not apply them either.
    extra_attrs: dict[str, dict[str, str]] = field(default_factory=dict)


DEFAULT_SUBSYSTEM_NQN = "nqn.2024-01.io.nvmf:default"


def default_config() -> TargetConfig:
    """The embedded default: one subsystem, a 1 GiB RAM namespace, NVMe/TCP on 127.0.0.1:4420."""
    ns = Namespace(nsid=1, media=NamespaceMedia(kind="ram", size=1 << 30))
    sub = Subsystem(nqn=DEFAULT_SUBSYSTEM_NQN, serial="nvmf0000000001", namespaces=[ns])
    port = Port(portid=1, subsystems=[sub.nqn])
    return TargetConfig(ports=[port], subsystems=[sub])
