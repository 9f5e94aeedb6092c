"""Apply a configuration to the Linux kernel target (nvmet) through configfs, or clear it.

The kernel target is configured by making directories and writing attribute files under
``/sys/kernel/config/nvmet``.  configfs has rules a plain directory does not, and this module
follows them:

* ``mkdir`` of a node (``subsystems/NQN``, ``namespaces/N``, ``ports/N``) makes its attribute
  files and default groups (``namespaces/``, ``allowed_hosts/``, ``ana_groups/1``) appear;
  ``rmdir`` of a node removes them with it, but only once the user-made children are gone.
* Linking a subsystem into ``ports/N/subsystems/`` *enables* the port (it starts listening), after
  which its ``addr_*`` and ``param_*`` attributes are read-only: a port is therefore written
  completely (addresses, parameters, ANA groups, referrals) and linked last, so it goes live
  fully configured and no host ever sees a half-made port.
* A namespace's attributes are written before ``enable``, which opens ``device_path``.
* ``allow_any_host`` must be 0 before hosts are linked into ``allowed_hosts/``.

Creation runs hosts -> subsystems -> ports (what later steps link to exists first), teardown the
reverse.  :class:`ConfigFs` does the file operations; tests substitute a fake with configfs's
behaviour on a temporary directory.

``ram`` and ``null`` namespaces have no kernel equivalent (nvmet serves only block devices and
files): they are refused before anything is written; map them to a null_blk device first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nvmf.config.errors import ConfigError, Problem, show
from nvmf.config.media import PATHLESS_KINDS, resolve_media_kind
from nvmf.config.schema import ATTRS, Attr, encode
from nvmf.config.validate import validate_config
from nvmf.control.model import (
    AnaGroup,
    Host,
    Namespace,
    Passthru,
    Port,
    Referral,
    Subsystem,
    TargetConfig,
)

CONFIGFS_ROOT = "/sys/kernel/config/nvmet"
#: The ANA group every port has from birth; it cannot be made or removed.
DEFAULT_ANA_GROUP = 1


class ConfigFs:
    """File operations on an nvmet configfs tree rooted at ``root`` (paths below are relative).

    Attribute writes open the file as ``echo >`` does but without ``O_CREAT``: configfs
    attributes exist or not, and a missing one must fail rather than be created in a plain
    directory mistaken for configfs.
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, rel: str) -> str:
        """The absolute path of ``rel``."""
        return os.path.join(self.root, rel) if rel else self.root

    def is_dir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel)) and not os.path.islink(self.path(rel))

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        """Entries of a directory, sorted; empty if it does not exist."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            return []

    def read(self, rel: str) -> str:
        with open(self.path(rel), encoding="utf-8", errors="replace") as f:
            return f.read().strip()

    def mkdir(self, rel: str) -> None:
        os.mkdir(self.path(rel))

    def rmdir(self, rel: str) -> None:
        os.rmdir(self.path(rel))

    def write(self, rel: str, value: str) -> None:
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def symlink(self, target_rel: str, link_rel: str) -> None:
        os.symlink(self.path(target_rel), self.path(link_rel))

    def unlink(self, rel: str) -> None:
        os.unlink(self.path(rel))


#: configfs attributes holding a secret: an error names them, never their value.
SECRET_ATTRS = frozenset({"dhchap_key", "dhchap_ctrl_key"})


@dataclass
class _Applier:
    """One apply run: writes the tree, turns OS errors into ConfigErrors naming the JSON field."""

    fs: ConfigFs
    source: str
    #: Attributes of this configuration that this kernel does not have, skipped.
    notes: list[str] = field(default_factory=list)

    def fail(self, where: str, rel: str, e: OSError, value: str | None = None) -> ConfigError:
        if value is not None and rel.rpartition("/")[2] in SECRET_ATTRS:
            value = "the secret"  # a DH-HMAC-CHAP key is never quoted back
        elif value is not None:
            value = show(value)
        what = f"writing {value} to {rel}" if value is not None else rel
        reason = e.strerror or str(e)
        return ConfigError.at(self.source, where, f"the kernel refused {what}: {reason}")

    def mkdir(self, rel: str, where: str) -> None:
        try:
            self.fs.mkdir(rel)
        except OSError as e:
            raise self.fail(where, f"mkdir {rel}", e) from None

    def link(self, target: str, link: str, where: str) -> None:
        try:
            self.fs.symlink(target, link)
        except OSError as e:
            raise self.fail(where, f"link {link} -> {target}", e) from None

    def write(self, rel: str, value: str, where: str) -> None:
        if not self.fs.exists(rel):
            raise ConfigError.at(
                self.source, where, f"this kernel has no attribute {rel} (is it too old for it?)"
            )
        try:
            self.fs.write(rel, value)
        except UnicodeEncodeError:
            raise ConfigError.at(self.source, where, f"{show(value)} is not valid UTF-8") from None
        except OSError as e:
            raise self.fail(where, rel, e, value) from None

    def attrs(self, obj: object, node: str, path: str, skip: tuple[str, ...] = ()) -> None:
        """Write ``obj``'s modelled attributes (not ``skip``) and its nvmetcli extras."""
        cls = type(obj)
        table: tuple[Attr, ...] = ATTRS.get(cls, ())
        for attr in table:
            if attr.field in skip:
                continue
            text = encode(attr, getattr(obj, attr.field))
            if not text:
                continue  # not set: leave the kernel's default
            self.write(f"{node}/{attr.filename}", text, f"{path}.{attr.key}")
        modelled = {(a.group, a.name) for a in table}
        extra_attrs: dict[str, dict[str, str]] = getattr(obj, "extra_attrs", {})
        for group, values in extra_attrs.items():
            for name, text in values.items():
                rel = f"{node}/{group}_{name}"
                if (group, name) in modelled or text == "":
                    continue
                if not self.fs.exists(rel):
                    self.notes.append(f"{path}.{group}.{name}: this kernel has no {rel}, skipped")
                    continue
                self.write(rel, text, f"{path}.{group}.{name}")

    def host(self, host: Host, path: str) -> None:
        node = f"hosts/{host.nqn}"
        self.mkdir(node, f"{path}.nqn")
        self.attrs(host, node, path)

    def subsystem(self, sub: Subsystem, path: str) -> None:
        node = f"subsystems/{sub.nqn}"
        self.mkdir(node, f"{path}.nqn")
        # allow_any_host first: it must be 0 before allowed_hosts are linked.
        self.attrs(sub, node, path)
        for j, nqn in enumerate(sub.allowed_hosts):
            self.link(f"hosts/{nqn}", f"{node}/allowed_hosts/{nqn}", f"{path}.allowed_hosts[{j}]")
        for j, ns in enumerate(sub.namespaces):
            self.namespace(ns, node, f"{path}.namespaces[{j}]")
        if sub.passthru is not None:
            self.passthru(sub.passthru, f"{node}/passthru", f"{path}.passthru[0]")

    def namespace(self, ns: Namespace, subsystem_node: str, path: str) -> None:
        node = f"{subsystem_node}/namespaces/{ns.nsid}"
        kind = resolve_media_kind(ns, where=f"{path}.device.path")
        if kind == "file" and ns.media.size and not os.path.exists(ns.path):
            _create_file(ns.path, ns.media.size, self.source, f"{path}.device.path")
        self.mkdir(node, f"{path}.nsid")
        self.attrs(ns, node, path)
        if kind == "file" and self.fs.exists(f"{node}/buffered_io"):
            # The kernel's file backend uses O_DIRECT unless told to buffer.
            value = "0" if ns.media.direct else "1"
            self.write(f"{node}/buffered_io", value, f"{path}.nvmf.direct")
        if ns.enable:
            self.write(f"{node}/enable", "1", f"{path}.enable")

    def passthru(self, pt: Passthru, node: str, path: str) -> None:
        if not self.fs.is_dir(node):
            raise ConfigError.at(self.source, path, "this kernel has no passthru support")
        self.attrs(pt, node, path)
        for key in ("clear_ids", "admin_timeout", "io_timeout"):
            value = getattr(pt, key)
            if value is not None:
                self.write(f"{node}/{key}", str(value), f"{path}.{key}")
        if pt.enable:
            self.write(f"{node}/enable", "1", f"{path}.enable")

    def port(self, port: Port, path: str) -> None:
        node = f"ports/{port.portid}"
        self.mkdir(node, f"{path}.portid")
        self.attrs(port, node, path)
        for j, group in enumerate(port.ana_groups):
            self.ana_group(group, node, f"{path}.ana_groups[{j}]")
        for j, ref in enumerate(port.referrals):
            self.referral(ref, node, f"{path}.referrals[{j}]")
        # Last: the first link enables the port, freezing its addr_* and param_* attributes.
        for j, nqn in enumerate(port.subsystems):
            self.link(f"subsystems/{nqn}", f"{node}/subsystems/{nqn}", f"{path}.subsystems[{j}]")

    def ana_group(self, group: AnaGroup, port_node: str, path: str) -> None:
        node = f"{port_node}/ana_groups/{group.grpid}"
        if group.grpid != DEFAULT_ANA_GROUP:
            self.mkdir(node, f"{path}.grpid")
        self.attrs(group, node, path)

    def referral(self, ref: Referral, port_node: str, path: str) -> None:
        node = f"{port_node}/referrals/{ref.name}"
        self.mkdir(node, f"{path}.name")
        self.attrs(ref, node, path)
        if ref.enable:
            self.write(f"{node}/enable", "1", f"{path}.enable")


def _create_file(path: str, size: int, source: str, where: str) -> None:
    """Create the missing backing file of a ``file`` namespace, sparse, ``size`` bytes long."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    except OSError as e:
        raise ConfigError.at(source, where, f"cannot create {show(path)}: {e.strerror}") from None


def kernel_problems(cfg: TargetConfig) -> list[Problem]:
    """What of ``cfg`` the kernel target cannot express: ``ram``/``null`` media, relative paths."""
    problems = []
    for i, sub in enumerate(cfg.subsystems):
        for j, ns in enumerate(sub.namespaces):
            where = f"subsystems[{i}].namespaces[{j}]"
            if ns.media.kind not in PATHLESS_KINDS and not os.path.isabs(ns.path):
                problems.append(
                    Problem(
                        f"{where}.device.path",
                        f"must be an absolute path for the kernel target, got {show(ns.path)}",
                    )
                )
            if ns.media.kind in PATHLESS_KINDS:
                problems.append(
                    Problem(
                        f"{where}.nvmf.kind",
                        f"{ns.media.kind} namespaces (nsid {ns.nsid} of {sub.nqn}) have no "
                        "kernel target equivalent; give them a block device such as null_blk's "
                        "/dev/nullb0 first",
                    )
                )
    return problems


def _open(configfs_root: str, fs: ConfigFs | None, source: str) -> ConfigFs:
    fs = fs or ConfigFs(configfs_root)
    if not all(fs.is_dir(d) for d in ("hosts", "subsystems", "ports")):
        raise ConfigError(
            source,
            f"{configfs_root} is not the nvmet configfs (modprobe nvmet; is configfs mounted on "
            "/sys/kernel/config?)",
        )
    return fs


def apply_to_kernel(
    cfg: TargetConfig,
    configfs_root: str = CONFIGFS_ROOT,
    *,
    clear_existing: bool = False,
    check_paths: bool = True,
    source: str = "<config>",
    fs: ConfigFs | None = None,
) -> list[str]:
    """Create ``cfg`` in the kernel target: hosts, then subsystems, then ports.

    The configuration is validated and checked for what the kernel cannot express before
    anything is written.  An existing kernel configuration is refused unless ``clear_existing``
    (then it is cleared first).  If the kernel refuses a step, what was made is torn down again
    and the :class:`ConfigError` names the JSON field and the kernel's reason.  Returns notes
    on nvmetcli attributes this kernel does not have, which were skipped (as nvmetcli does).
    """
    validate_config(cfg, source, check_paths=check_paths, kernel=True)
    problems = kernel_problems(cfg)
    if problems:
        raise ConfigError(source, problems)
    fs = _open(configfs_root, fs, source)
    existing = [f"{d}/{n}" for d in ("hosts", "subsystems", "ports") for n in fs.listdir(d)]
    if existing and not clear_existing:
        shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise ConfigError(
            source,
            f"the kernel target already has a configuration ({shown}); clear it first "
            "(nvmf config clear) or apply with --clear",
        )
    if existing:
        clear_kernel(configfs_root, fs=fs)
    applier = _Applier(fs, source)
    try:
        for i, host in enumerate(cfg.hosts):
            applier.host(host, f"hosts[{i}]")
        for i, sub in enumerate(cfg.subsystems):
            applier.subsystem(sub, f"subsystems[{i}]")
        for i, port in enumerate(cfg.ports):
            applier.port(port, f"ports[{i}]")
    except ConfigError:
        try:
            clear_kernel(configfs_root, fs=fs)
        except (ConfigError, OSError):
            pass  # the first error is the one worth reporting
        raise
    return applier.notes


def clear_kernel(configfs_root: str = CONFIGFS_ROOT, *, fs: ConfigFs | None = None) -> None:
    """Remove the whole kernel target configuration: ports, then subsystems, then hosts.

    Each node is emptied of what was made in it (links, namespaces, referrals, ANA groups)
    before it is removed, as configfs requires.  Raises :class:`ConfigError` naming the
    configfs path the kernel refused to remove.
    """
    fs = _open(configfs_root, fs, configfs_root)

    def remove(rel: str, op: str = "rmdir") -> None:
        try:
            if op == "unlink":
                fs.unlink(rel)
            else:
                fs.rmdir(rel)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ConfigError(fs.path(rel), f"cannot {op}: {e.strerror or e}") from None

    for portid in fs.listdir("ports"):
        node = f"ports/{portid}"
        for nqn in fs.listdir(f"{node}/subsystems"):
            remove(f"{node}/subsystems/{nqn}", "unlink")
        for name in fs.listdir(f"{node}/referrals"):
            remove(f"{node}/referrals/{name}")
        for grpid in fs.listdir(f"{node}/ana_groups"):
            if grpid != str(DEFAULT_ANA_GROUP):
                remove(f"{node}/ana_groups/{grpid}")
        remove(node)
    for nqn in fs.listdir("subsystems"):
        node = f"subsystems/{nqn}"
        for nsid in fs.listdir(f"{node}/namespaces"):
            remove(f"{node}/namespaces/{nsid}")
        for host in fs.listdir(f"{node}/allowed_hosts"):
            remove(f"{node}/allowed_hosts/{host}", "unlink")
        if fs.exists(f"{node}/passthru/enable") and fs.read(f"{node}/passthru/enable") == "1":
            try:
                fs.write(f"{node}/passthru/enable", "0")
            except OSError as e:
                raise ConfigError(fs.path(f"{node}/passthru"), f"cannot disable: {e}") from None
        remove(node)
    for nqn in fs.listdir("hosts"):
        remove(f"hosts/{nqn}")


__all__ = ["CONFIGFS_ROOT", "ConfigFs", "apply_to_kernel", "clear_kernel", "kernel_problems"]
