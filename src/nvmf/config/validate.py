"""Check a whole :class:`TargetConfig`: every value, every cross reference, every media path.

The loader only maps JSON onto the model; this module decides whether the result is a target the
project (and the kernel) can run.  It works on the model, so configurations built in Python are
checked the same way before they are saved or applied, and reports each problem at the JSON path
the field has in nvmetcli's layout (``ports[0].addr.traddr``), using :mod:`nvmf.config.schema`.
"""

from __future__ import annotations

from typing import Any

from nvmf.config.errors import ConfigError, Problem, show
from nvmf.config.media import path_problem
from nvmf.config.schema import attr_for
from nvmf.config.values import (
    ADRFAMS,
    ANA_GRPID_MAX,
    ANA_STATES,
    BLOCK_SIZES,
    CNTLID_MAX,
    INLINE_DATA_MAX,
    MEDIA_KINDS,
    MODEL_MAX,
    NSID_MAX,
    PLACEMENTS,
    PORTID_MAX,
    QID_MAX,
    SERIAL_MAX,
    SERVED_TRTYPES,
    TREQS,
    TRTYPES,
    check_ascii,
    check_choice,
    check_nguid,
    check_nqn,
    check_range,
    check_traddr,
    check_trsvcid,
    check_uuid,
    check_version,
    nqn_format_warning,
    range_message,
)
from nvmf.control.model import (
    DISCOVERY_NQN,
    AnaGroup,
    Namespace,
    NvmfSettings,
    Passthru,
    Port,
    Referral,
    Subsystem,
    TargetConfig,
)
from nvmf.media.base import IO_ENGINES
from nvmf.protocol.dhchap import DhchapSecret, DhGroup, HashId, SecretError

#: Integer fields and their bounds: (low, high, show the bounds in hex).
INT_RANGES: dict[tuple[type, str], tuple[int, int, bool]] = {
    (Namespace, "nsid"): (1, NSID_MAX, True),
    (Namespace, "ana_grpid"): (1, ANA_GRPID_MAX, False),
    (Subsystem, "cntlid_min"): (1, CNTLID_MAX, True),
    (Subsystem, "cntlid_max"): (1, CNTLID_MAX, True),
    (Subsystem, "qid_max"): (1, QID_MAX, False),
    (Passthru, "clear_ids"): (0, 1, False),
    (Passthru, "admin_timeout"): (0, 0x7FFFFFFF, False),
    (Passthru, "io_timeout"): (0, 0x7FFFFFFF, False),
    (Port, "portid"): (0, PORTID_MAX, False),
    (Port, "inline_data_size"): (-1, INLINE_DATA_MAX, False),
    (Referral, "portid"): (0, PORTID_MAX, False),
    (AnaGroup, "grpid"): (1, ANA_GRPID_MAX, False),
    (NvmfSettings, "max_io_queues"): (1, 0xFFFF, False),
    (NvmfSettings, "queue_depth"): (2, 0x10000, False),
    # Two pages at least: MDTS follows the pool, and MDTS cannot express one page.
    (NvmfSettings, "staging_bytes"): (8192, 1 << 40, False),
    (NvmfSettings, "offload_workers"): (0, 4096, False),
    (NvmfSettings, "kato_min_ms"): (0, 0xFFFFFFFF, False),
    (NvmfSettings, "idle_timeout_ms"): (1, 0xFFFFFFFF, False),
}


def int_problem(cls: type, field: str, value: Any) -> str:
    """The message for a value of ``cls.field`` that is not an integer in its range."""
    bounds = INT_RANGES.get((cls, field))
    if bounds is None:
        return f"must be an integer, got {show(value)}"
    return range_message(value, bounds[0], bounds[1], hex_bounds=bounds[2])


def validate_config(
    cfg: TargetConfig, source: str = "<config>", *, check_paths: bool = True, kernel: bool = False
) -> list[Problem]:
    """Raise :class:`ConfigError` listing every problem of ``cfg``; else return its warnings.

    ``check_paths`` also looks at this machine's file system: each namespace's ``device.path``
    must exist and match its media kind (see :mod:`nvmf.config.media`).  Warnings are things the
    kernel target accepts but that deserve a look (a name that is not a strict NQN, a port whose
    transport this target does not serve); they never stop a configuration from loading.

    DH-HMAC-CHAP keys must be well formed (for either target).  Settings this target cannot
    honour yet (TLS, reservations) are refused
    unless ``kernel`` says the configuration is for the Linux kernel target, which has them.
    """
    validator = _Validator(check_paths)
    problems = validator.config(cfg)
    problems += dhchap_problems(cfg)
    if not kernel:
        problems += unsupported_problems(cfg)
    if problems:
        raise ConfigError(source, problems)
    return validator.warnings


def _not_yet(what: str) -> str:
    return f"is not supported yet: {what} (the kernel target has it: nvmf config apply)"


def dhchap_problems(cfg: TargetConfig) -> list[Problem]:
    """Each host's ``dhchap`` group: a key (and the controller key) in the ``DHHC-1`` format
    with a matching CRC-32, a known hash and DH group; a controller key needs a host key.  The
    messages name the field, never the secret."""
    problems: list[Problem] = []
    for i, host in enumerate(cfg.hosts):
        group = host.extra_attrs.get("dhchap", {})
        where = f"hosts[{i}].dhchap"
        for name in ("key", "ctrl_key"):
            if group.get(name):
                try:
                    DhchapSecret.parse(group[name], f"{where}.{name}")
                except SecretError as exc:
                    problems.append(Problem(exc.field, exc.reason))
        if group.get("ctrl_key") and not group.get("key"):
            problems.append(
                Problem(f"{where}.ctrl_key", "a controller key needs a host key (dhchap.key)")
            )
        if group.get("hash"):
            try:
                HashId.from_name(group["hash"])
            except ValueError as exc:
                problems.append(Problem(f"{where}.hash", str(exc)))
        if group.get("dhgroup"):
            try:
                DhGroup.from_name(group["dhgroup"])
            except ValueError as exc:
                problems.append(Problem(f"{where}.dhgroup", str(exc)))
    return problems


def unsupported_problems(cfg: TargetConfig) -> list[Problem]:
    """Settings nvmetcli writes that this target cannot honour yet, each refused by name.

    Serving a host without the encryption or the reservations the file asks for would look
    like success and be less safe, so these are errors, not warnings.  (DH-HMAC-CHAP keys are
    honoured: :func:`dhchap_problems` checks them.)
    """
    problems: list[Problem] = []
    for i, port in enumerate(cfg.ports):
        if port.treq == "required":
            problems.append(
                Problem(f"ports[{i}].addr.treq", _not_yet("a required secure channel (TLS)"))
            )
        tsas = port.extra_attrs.get("addr", {}).get("tsas", "")
        if "tls" in tsas.lower():
            problems.append(Problem(f"ports[{i}].addr.tsas", _not_yet(f"TLS ({tsas})")))
    for i, sub in enumerate(cfg.subsystems):
        for j, ns in enumerate(sub.namespaces):
            if ns.extra_attrs.get("resv", {}).get("enable", "0") not in ("", "0"):
                where = f"subsystems[{i}].namespaces[{j}].resv.enable"
                problems.append(Problem(where, _not_yet("reservations")))
    return problems


class _Validator:
    def __init__(self, check_paths: bool) -> None:
        self.check_paths = check_paths
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def warn(self, path: str, warning: str | None) -> None:
        if warning is not None:
            self.warnings.append(Problem(path, warning))

    def add(self, path: str, problem: str | None) -> None:
        if problem is not None:
            self.problems.append(Problem(path, problem))

    def int_field(self, obj: Any, field: str, path: str) -> None:
        """Range-check ``obj.field`` (None is fine: "not set")."""
        value = getattr(obj, field)
        if value is None:
            return
        low, high, hex_bounds = INT_RANGES[(type(obj), field)]
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, int_problem(type(obj), field, value))
        else:
            self.add(path, check_range(value, low, high, hex_bounds=hex_bounds))

    def config(self, cfg: TargetConfig) -> list[Problem]:
        hosts = self.unique_nqns([h.nqn for h in cfg.hosts], "hosts", "host")
        subsystems = self.unique_nqns([s.nqn for s in cfg.subsystems], "subsystems", "subsystem")
        for i, sub in enumerate(cfg.subsystems):
            self.subsystem(sub, f"subsystems[{i}]", hosts)
        portids: dict[int, int] = {}
        listeners: dict[tuple[str, str, str], int] = {}
        for i, port in enumerate(cfg.ports):
            path = f"ports[{i}]"
            self.port(port, path, subsystems)
            if port.portid in portids:
                self.add(
                    f"{path}.portid",
                    f"duplicate portid {port.portid} (also ports[{portids[port.portid]}])",
                )
            portids.setdefault(port.portid, i)
            if port.trtype in ("tcp", "rdma"):
                where = (port.trtype, port.traddr, port.trsvcid)
                if where in listeners:
                    self.add(
                        f"{path}.addr.traddr",
                        f"{port.trtype} {port.traddr}:{port.trsvcid} is also ports"
                        f"[{listeners[where]}]'s address; a listener can be bound only once",
                    )
                listeners.setdefault(where, i)
        if not cfg.ports:
            self.warn("ports", "there are no ports: the target would serve nothing")
        self.settings(cfg.nvmf)
        return self.problems

    def unique_nqns(self, nqns: list[str], key: str, what: str) -> set[str]:
        """Check a list of NQNs (format, duplicates); return the set for reference checks."""
        first: dict[str, int] = {}
        for i, nqn in enumerate(nqns):
            path = f"{key}[{i}].nqn"
            problem = check_nqn(nqn)
            self.add(path, problem)
            if problem is None:
                self.warn(path, nqn_format_warning(nqn))
            if what == "subsystem" and nqn == DISCOVERY_NQN:
                self.add(path, "is the discovery NQN, which the target serves by itself")
            if nqn in first:
                self.add(path, f"duplicate {what} NQN {show(nqn)} (also {key}[{first[nqn]}])")
            first.setdefault(nqn, i)
        return set(nqns)

    def references(self, names: list[str], path: str, known: set[str], what: str) -> None:
        """Each of ``names`` must be in ``known`` and listed once."""
        seen: set[str] = set()
        for j, name in enumerate(names):
            if name not in known:
                self.add(f"{path}[{j}]", f"unknown {what} {show(name)} (not in {what}s[])")
            elif name in seen:
                self.add(f"{path}[{j}]", f"{show(name)} is listed twice")
            seen.add(name)

    def subsystem(self, sub: Subsystem, path: str, hosts: set[str]) -> None:
        def at(field: str) -> str:
            return f"{path}.{attr_for(Subsystem, field).key}"

        self.references(sub.allowed_hosts, f"{path}.allowed_hosts", hosts, "host")
        if sub.allow_any_host and sub.allowed_hosts:
            self.add(
                at("allow_any_host"),
                'must be "0" when allowed_hosts lists hosts (the kernel refuses both)',
            )
        if sub.serial:
            self.add(at("serial"), check_ascii(sub.serial, SERIAL_MAX))
        self.add(
            at("model"),
            check_ascii(sub.model, MODEL_MAX) or (None if sub.model else "must not be empty"),
        )
        self.add(at("version"), check_version(sub.version))
        for field in ("cntlid_min", "cntlid_max", "qid_max"):
            self.int_field(sub, field, at(field))
        if (
            isinstance(sub.cntlid_min, int)
            and isinstance(sub.cntlid_max, int)
            and sub.cntlid_min > sub.cntlid_max
        ):
            self.add(
                at("cntlid_min"),
                f"must be <= cntlid_max ({sub.cntlid_max}), got {sub.cntlid_min}",
            )
        nsids: dict[int, int] = {}
        for j, ns in enumerate(sub.namespaces):
            ns_path = f"{path}.namespaces[{j}]"
            self.namespace(ns, ns_path)
            if ns.nsid in nsids:
                self.add(
                    f"{ns_path}.nsid",
                    f"duplicate nsid {ns.nsid} (also {path}.namespaces[{nsids[ns.nsid]}])",
                )
            nsids.setdefault(ns.nsid, j)
        if sub.passthru is not None:
            pt_path = f"{path}.passthru[0]"
            if not sub.passthru.path:
                self.add(f"{pt_path}.device.path", "is required")
            for field in ("clear_ids", "admin_timeout", "io_timeout"):
                self.int_field(sub.passthru, field, f"{pt_path}.{field}")
            if sub.namespaces and sub.passthru.enable:
                self.add(pt_path, "cannot be enabled in a subsystem that has namespaces")

    def namespace(self, ns: Namespace, path: str) -> None:
        def at(field: str) -> str:
            return f"{path}.{attr_for(Namespace, field).key}"

        self.int_field(ns, "nsid", f"{path}.nsid")
        self.int_field(ns, "ana_grpid", f"{path}.ana_grpid")
        if ns.uuid is not None:
            self.add(at("uuid"), check_uuid(ns.uuid))
        if ns.nguid is not None:
            self.add(at("nguid"), check_nguid(ns.nguid))
        self.media(ns, path)

    def media(self, ns: Namespace, path: str) -> None:
        media = ns.media
        if media.kind is not None:
            problem = check_choice(media.kind, MEDIA_KINDS)
            self.add(f"{path}.nvmf.kind", problem)
            if problem is not None:
                return
        if media.block_size not in BLOCK_SIZES:
            self.add(
                f"{path}.nvmf.block_size", f"must be 512 or 4096, got {show(media.block_size)}"
            )
        if media.size is not None:
            if media.size <= 0:
                self.add(f"{path}.nvmf.size", f"must be more than 0 bytes, got {media.size}")
            elif media.block_size in BLOCK_SIZES and media.size % media.block_size:
                self.add(
                    f"{path}.nvmf.size",
                    f"must be a multiple of nvmf.block_size ({media.block_size}), got {media.size}",
                )
        elif media.kind in ("ram", "null"):
            self.add(f"{path}.nvmf.size", f"is required for nvmf.kind {media.kind}")
        for field in ("sq_placement", "staging_placement"):
            value = getattr(media, field)
            if media.kind == "nvme_pci":
                self.add(f"{path}.nvmf.{field}", check_choice(value, PLACEMENTS))
            elif value != "dram":
                self.add(f"{path}.nvmf.{field}", "is only for nvmf.kind nvme_pci")
        if media.io_engine != "auto":
            problem = check_choice(media.io_engine, IO_ENGINES)
            if problem is None and media.kind in ("ram", "null", "nvme_pci"):
                problem = "is only for nvmf.kind file or block"
            self.add(f"{path}.nvmf.io_engine", problem)
        self.add(
            f"{path}.device.path",
            path_problem(ns.path, media.kind, media.size, check=self.check_paths),
        )

    def address(self, obj: Port | Referral, path: str) -> None:
        """The ``addr`` group shared by ports and referrals."""
        trtype, adrfam = obj.trtype, obj.adrfam
        if not trtype:
            self.add(f"{path}.addr.trtype", f"is required (one of {', '.join(TRTYPES)})")
            return
        problem = check_choice(trtype, TRTYPES)
        self.add(f"{path}.addr.trtype", problem)
        if problem is not None:
            return
        families = {"tcp": ("ipv4", "ipv6"), "rdma": ("ipv4", "ipv6", "ib"), "fc": ("fc",)}
        wanted = families.get(trtype, ("", "loop"))
        if adrfam not in wanted:
            if not adrfam:
                self.add(
                    f"{path}.addr.adrfam", f"is required for trtype {trtype} ({', '.join(wanted)})"
                )
            elif adrfam not in ADRFAMS:
                self.add(f"{path}.addr.adrfam", check_choice(adrfam, ADRFAMS))
            else:
                shown = ", ".join(w or '""' for w in wanted)
                self.add(
                    f"{path}.addr.adrfam",
                    f"must be {shown} for trtype {trtype}, got {show(adrfam)}",
                )
            return
        if trtype != "loop" and not obj.traddr:
            self.add(f"{path}.addr.traddr", f"is required for trtype {trtype}")
        else:
            self.add(f"{path}.addr.traddr", check_traddr(adrfam, obj.traddr))
        self.add(f"{path}.addr.trsvcid", check_trsvcid(trtype, obj.trsvcid))
        self.add(f"{path}.addr.treq", check_choice(obj.treq, TREQS))

    def port(self, port: Port, path: str, subsystems: set[str]) -> None:
        self.int_field(port, "portid", f"{path}.portid")
        self.address(port, path)
        if port.trtype in TRTYPES and port.trtype not in SERVED_TRTYPES:
            self.warn(
                f"{path}.addr.trtype",
                f"this target does not serve trtype {port.trtype} (it serves "
                f"{', '.join(SERVED_TRTYPES)}); only the kernel target can use this port",
            )
        self.int_field(port, "inline_data_size", f"{path}.param.inline_data_size")
        self.references(port.subsystems, f"{path}.subsystems", subsystems, "subsystem")
        names: dict[str, int] = {}
        for j, ref in enumerate(port.referrals):
            ref_path = f"{path}.referrals[{j}]"
            if not ref.name or "/" in ref.name:
                self.add(
                    f"{ref_path}.name",
                    f"must be a non-empty name without '/', got {show(ref.name)}",
                )
            elif ref.name in names:
                self.add(
                    f"{ref_path}.name",
                    f"duplicate referral name {show(ref.name)} "
                    f"(also {path}.referrals[{names[ref.name]}])",
                )
            names.setdefault(ref.name, j)
            self.address(ref, ref_path)
            self.int_field(ref, "portid", f"{ref_path}.addr.portid")
        grpids: dict[int, int] = {}
        for j, group in enumerate(port.ana_groups):
            group_path = f"{path}.ana_groups[{j}]"
            self.int_field(group, "grpid", f"{group_path}.grpid")
            if group.grpid in grpids:
                self.add(
                    f"{group_path}.grpid",
                    f"duplicate ANA group {group.grpid} "
                    f"(also {path}.ana_groups[{grpids[group.grpid]}])",
                )
            grpids.setdefault(group.grpid, j)
            self.add(f"{group_path}.ana.state", check_choice(group.state, ANA_STATES))

    def settings(self, settings: NvmfSettings) -> None:
        for field in (
            "max_io_queues",
            "queue_depth",
            "staging_bytes",
            "offload_workers",
            "kato_min_ms",
            "idle_timeout_ms",
        ):
            self.int_field(settings, field, f"nvmf.{field}")
        if settings.cmb:
            # A setting the target cannot honour is refused, never silently ignored.
            self.add(
                "nvmf.cmb",
                "is not honoured: set it false, and give an nvme_pci namespace "
                "nvmf.sq_placement and nvmf.staging_placement cmb instead",
            )
