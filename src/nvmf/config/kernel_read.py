"""Read the Linux kernel target's configuration from configfs (``nvmf config save --from-kernel``).

The reverse of :mod:`nvmf.config.kernel`, and what ``nvmetcli save`` does (``Root.dump`` in
nvmetcli's ``nvmet/nvme.py``): for every node under ``/sys/kernel/config/nvmet`` each of its
attribute groups is dumped as ``{"group": {"name": "value"}}`` from the *writable* files named
``group_name`` (read-only ones are the kernel's, not configuration), ``enable`` as an integer,
and the children by their directory names:

* ``hosts/NQN`` (group ``dhchap``), ``subsystems/NQN`` (group ``attr``; ``namespaces/NSID`` with
  groups ``device``, ``ana``, ``resv`` and the file ``ana_grpid``; ``allowed_hosts/`` links;
  ``passthru/`` with group ``device`` and ``clear_ids``, ``admin_timeout``, ``io_timeout``),
  ``ports/N`` (groups ``addr``, ``param``; ``subsystems/`` links, ``ana_groups/N`` with group
  ``ana``, ``referrals/NAME`` with group ``addr``), and the root's group ``discovery``.

The object then goes through the same parser and validator as a file
(:func:`nvmf.config.load.parse_config`), so what is saved loads again.  Two departures from
nvmetcli, both so that ``nvmf config apply FILE`` then ``nvmf config save --from-kernel``
gives FILE back: a ``passthru`` node that was never configured (no device path, disabled) is
left out rather than dumped with the kernel's defaults, and a file namespace's ``buffered_io``
(which nvmetcli does not save) comes back as this project's ``"nvmf": {"direct": true}`` when
it is 0, as ``apply`` wrote it.  Lists are sorted (NQNs, port IDs, NSIDs) where configfs
gives directory order.  Attributes the kernel has and FILE left out come back with the
kernel's values (``attr_pi_enable``, a generated ``device_uuid``...), exactly as nvmetcli
saves them.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from nvmf.config.errors import ConfigError
from nvmf.config.kernel import CONFIGFS_ROOT, ConfigFs
from nvmf.config.load import parse_config
from nvmf.control.model import TargetConfig


class _Reader:
    """One read of a configfs tree; OS errors become ConfigErrors naming the path."""

    def __init__(self, fs: ConfigFs) -> None:
        self.fs = fs

    def _read(self, rel: str) -> str:
        try:
            return self.fs.read(rel)
        except OSError as e:
            raise ConfigError(self.fs.path(rel), f"cannot read: {e.strerror or e}") from None

    def groups(self, node: str, groups: tuple[str, ...]) -> dict[str, Any]:
        """``{"group": {"name": "value"}}`` of ``node``'s writable ``group_name`` files."""
        out: dict[str, Any] = {}
        entries = self.fs.listdir(node)
        for group in groups:
            values = {}
            for entry in entries:
                if not entry.startswith(f"{group}_"):
                    continue
                rel = f"{node}/{entry}" if node else entry
                full = self.fs.path(rel)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IWUSR:
                    continue
                values[entry[len(group) + 1 :]] = self._read(rel)
            out[group] = values
        return out

    def number(self, rel: str) -> int | None:
        """An integer attribute file, or None when this kernel does not have it."""
        if not self.fs.exists(rel):
            return None
        text = self._read(rel)
        try:
            return int(text)
        except ValueError:
            raise ConfigError(self.fs.path(rel), f"not a number: {text!r}") from None

    def root(self) -> dict[str, Any]:
        groups = self.groups("", ("discovery",))
        out: dict[str, Any] = {g: v for g, v in groups.items() if v}
        out["hosts"] = [self.host(nqn) for nqn in self.fs.listdir("hosts")]
        out["subsystems"] = [self.subsystem(nqn) for nqn in self.fs.listdir("subsystems")]
        ports = sorted(self.fs.listdir("ports"), key=_numeric)
        out["ports"] = [self.port(portid) for portid in ports]
        return out

    def host(self, nqn: str) -> dict[str, Any]:
        groups = self.groups(f"hosts/{nqn}", ("dhchap",))
        return {**{g: v for g, v in groups.items() if v}, "nqn": nqn}

    def subsystem(self, nqn: str) -> dict[str, Any]:
        node = f"subsystems/{nqn}"
        out = self.groups(node, ("attr",))
        out["nqn"] = nqn
        nsids = sorted(self.fs.listdir(f"{node}/namespaces"), key=_numeric)
        out["namespaces"] = [self.namespace(f"{node}/namespaces/{nsid}") for nsid in nsids]
        out["allowed_hosts"] = self.fs.listdir(f"{node}/allowed_hosts")
        passthru = self.passthru(f"{node}/passthru")
        if passthru is not None:
            out["passthru"] = [passthru]
        return out

    def namespace(self, node: str) -> dict[str, Any]:
        out = self.groups(node, ("device", "ana", "resv"))
        if not out["resv"]:
            del out["resv"]  # kernels before 6.x have no reservations
        out["nsid"] = int(os.path.basename(node))
        out["enable"] = self.number(f"{node}/enable") or 0
        grpid = self.number(f"{node}/ana_grpid")
        out["ana_grpid"] = 1 if grpid is None else grpid
        path = out["device"].get("path", "")
        buffered = self.number(f"{node}/buffered_io")
        if buffered == 0 and path and os.path.isfile(path):
            out["nvmf"] = {"direct": True}
        return out

    def passthru(self, node: str) -> dict[str, Any] | None:
        if not self.fs.is_dir(node):
            return None
        out = self.groups(node, ("device",))
        out["enable"] = self.number(f"{node}/enable") or 0
        if not out["enable"] and not out["device"].get("path"):
            return None  # never configured: the kernel's defaults are not configuration
        for key in ("clear_ids", "admin_timeout", "io_timeout"):
            value = self.number(f"{node}/{key}")
            if value is not None:
                out[key] = value
        return out

    def port(self, portid: str) -> dict[str, Any]:
        node = f"ports/{portid}"
        out = self.groups(node, ("addr", "param"))
        out["portid"] = int(portid)
        out["subsystems"] = self.fs.listdir(f"{node}/subsystems")
        out["ana_groups"] = [
            {**self.groups(f"{node}/ana_groups/{grpid}", ("ana",)), "grpid": int(grpid)}
            for grpid in sorted(self.fs.listdir(f"{node}/ana_groups"), key=_numeric)
        ]
        out["referrals"] = [
            {
                **self.groups(f"{node}/referrals/{name}", ("addr",)),
                "name": name,
                "enable": self.number(f"{node}/referrals/{name}/enable") or 0,
            }
            for name in self.fs.listdir(f"{node}/referrals")
        ]
        return out


def _numeric(name: str) -> tuple[int, str]:
    """Sort key: numbers by value, anything else after them by name."""
    return (int(name), "") if name.isdigit() else (1 << 62, name)


def dump_kernel(
    configfs_root: str = CONFIGFS_ROOT, *, fs: ConfigFs | None = None
) -> dict[str, Any]:
    """The kernel target's configuration as nvmetcli's JSON object (before validation)."""
    fs = fs or ConfigFs(configfs_root)
    if not all(fs.is_dir(d) for d in ("hosts", "subsystems", "ports")):
        raise ConfigError(
            configfs_root,
            f"{configfs_root} is not the nvmet configfs (modprobe nvmet; is configfs mounted on "
            "/sys/kernel/config?)",
        )
    return _Reader(fs).root()


def read_kernel(configfs_root: str = CONFIGFS_ROOT, *, fs: ConfigFs | None = None) -> TargetConfig:
    """The kernel target's configuration as a validated :class:`TargetConfig` (paths are not
    checked: a namespace whose device vanished is still part of the configuration).  Raises
    :class:`ConfigError` naming the configfs path or the JSON key that is wrong."""
    obj = dump_kernel(configfs_root, fs=fs)
    return parse_config(obj, configfs_root, check_paths=False, kernel=True, warnings=[])
