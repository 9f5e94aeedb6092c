"""A tiny fake of the kernel target's configfs on a temporary directory.

It reproduces the configfs behaviours :mod:`nvmf.config.kernel` relies on, as Linux 6.1's
``drivers/nvme/target/configfs.c`` shows them:

* ``mkdir`` of a node makes its attribute files (with the kernel's defaults) and default
  groups; ``mkdir`` anywhere else is refused (EPERM);
* ``rmdir`` of a node takes its attribute files and default groups with it, but fails with
  ENOTEMPTY while user-made children (namespaces, links, referrals, ANA groups but 1) remain,
  and with EBUSY while a link points at it; default groups cannot be removed (EPERM);
* linking a subsystem into a port enables the port, after which its ``addr_*`` and ``param_*``
  attributes refuse writes (EACCES); a port without a transport type cannot be enabled;
* a namespace's ``device_*`` attributes refuse writes while it is enabled (EBUSY), and enabling
  it needs ``device_path`` to exist;
* ``attr_allow_any_host`` and ``allowed_hosts/`` links exclude each other (EINVAL);
* ``cntlid_min`` above ``cntlid_max`` is refused (EINVAL).

Every operation is logged (``mkdir subsystems/X``, ``write ports/1/addr_trtype=tcp``, ...) so
tests can check the order of steps.  ``fail`` makes the write or mkdir of one path fail with EIO.
"""

from __future__ import annotations

import errno
import os
import shutil

from nvmf.config.kernel import ConfigFs

HOST_ATTRS = {"dhchap_key": "", "dhchap_ctrl_key": "", "dhchap_hash": "hmac(sha256)"}
SUBSYSTEM_ATTRS = {
    "attr_allow_any_host": "0",
    "attr_version": "1.3",
    "attr_serial": "8d7e6f5a4b3c2d1e",
    "attr_model": "Linux",
    "attr_cntlid_min": "1",
    "attr_cntlid_max": "65519",
    "attr_qid_max": "128",
    "attr_pi_enable": "0",
}
PASSTHRU_ATTRS = {
    "device_path": "",
    "enable": "0",
    "clear_ids": "1",
    "admin_timeout": "0",
    "io_timeout": "0",
}
NAMESPACE_ATTRS = {
    "device_path": "",
    "device_uuid": "00000000-0000-0000-0000-000000000000",
    "device_nguid": "00000000-0000-0000-0000-000000000000",
    "enable": "0",
    "ana_grpid": "1",
    "buffered_io": "0",
    "revalidate_size": "0",
}
ADDR_ATTRS = {
    "addr_adrfam": "",
    "addr_treq": "not specified",
    "addr_traddr": "",
    "addr_trsvcid": "",
    "addr_trtype": "",
}
PORT_ATTRS = {**ADDR_ATTRS, "param_inline_data_size": "-1", "param_pi_enable": "0"}
REFERRAL_ATTRS = {**ADDR_ATTRS, "addr_portid": "0", "enable": "0"}


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class FakeConfigFs(ConfigFs):
    """:class:`ConfigFs` on a plain directory, behaving like the nvmet configfs (see above)."""

    def __init__(self, root: str, *, fail: str | None = None) -> None:
        super().__init__(root)
        for top in ("hosts", "subsystems", "ports"):
            os.makedirs(os.path.join(root, top), exist_ok=True)
        self.log: list[str] = []
        self.fail = fail

    # -- what a path is ------------------------------------------------------------------------

    @staticmethod
    def kind(rel: str) -> str:
        """The configfs node type at ``rel`` (``other`` for anything that is not a node)."""
        parts = rel.split("/")
        shapes = {
            ("hosts", 2): "host",
            ("subsystems", 2): "subsystem",
            ("ports", 2): "port",
        }
        if (parts[0], len(parts)) in shapes:
            return shapes[(parts[0], len(parts))]
        if parts[0] == "subsystems" and len(parts) == 4 and parts[2] == "namespaces":
            return "namespace"
        if parts[0] == "ports" and len(parts) == 4 and parts[2] == "ana_groups":
            return "ana_group"
        if parts[0] == "ports" and len(parts) == 4 and parts[2] == "referrals":
            return "referral"
        return "other"

    def _put(self, rel: str, attrs: dict[str, str]) -> None:
        for name, value in attrs.items():
            with open(self.path(f"{rel}/{name}"), "w") as f:
                f.write(value + "\n")

    def _links_to(self, rel: str) -> bool:
        target = self.path(rel)
        for top, _dirs, files in os.walk(self.root):
            for name in files + _dirs:
                full = os.path.join(top, name)
                if os.path.islink(full) and os.readlink(full) == target:
                    return True
        return False

    def _port_enabled(self, port: str) -> bool:
        return bool(self.listdir(f"{port}/subsystems"))

    # -- the operations ------------------------------------------------------------------------

    def mkdir(self, rel: str) -> None:
        self.log.append(f"mkdir {rel}")
        if rel == self.fail:
            raise _oserror(errno.EIO, rel)
        kind = self.kind(rel)
        if kind == "other":
            raise _oserror(errno.EPERM, rel)
        if kind == "ana_group" and not rel.split("/")[3].isdigit():
            raise _oserror(errno.EINVAL, rel)
        if kind == "namespace" and not rel.split("/")[3].isdigit():
            raise _oserror(errno.EINVAL, rel)
        os.mkdir(self.path(rel))
        if kind == "host":
            self._put(rel, HOST_ATTRS)
        elif kind == "subsystem":
            self._put(rel, SUBSYSTEM_ATTRS)
            for group in ("namespaces", "allowed_hosts", "passthru"):
                os.mkdir(self.path(f"{rel}/{group}"))
            self._put(f"{rel}/passthru", PASSTHRU_ATTRS)
        elif kind == "namespace":
            self._put(rel, NAMESPACE_ATTRS)
        elif kind == "port":
            self._put(rel, PORT_ATTRS)
            for group in ("subsystems", "referrals", "ana_groups", "ana_groups/1"):
                os.mkdir(self.path(f"{rel}/{group}"))
            self._put(f"{rel}/ana_groups/1", {"ana_state": "optimized"})
        elif kind == "ana_group":
            self._put(rel, {"ana_state": "optimized"})
        elif kind == "referral":
            self._put(rel, REFERRAL_ATTRS)

    def rmdir(self, rel: str) -> None:
        self.log.append(f"rmdir {rel}")
        kind = self.kind(rel)
        if kind == "other" or rel.endswith("ana_groups/1"):
            raise _oserror(errno.EPERM, rel)
        if self._links_to(rel):
            raise _oserror(errno.EBUSY, rel)
        user_children = {
            "subsystem": ("namespaces", "allowed_hosts"),
            "port": ("subsystems", "referrals", "ana_groups"),
        }.get(kind, ())
        for group in user_children:
            children = [
                c for c in self.listdir(f"{rel}/{group}") if f"{group}/{c}" != "ana_groups/1"
            ]
            if children:
                raise _oserror(errno.ENOTEMPTY, rel)
        shutil.rmtree(self.path(rel))

    def write(self, rel: str, value: str) -> None:
        self.log.append(f"write {rel}={value}")
        if rel == self.fail:
            raise _oserror(errno.EIO, rel)
        node, _, name = rel.rpartition("/")
        code = self._refuses(self.kind(node), node, name, value)
        if code:
            raise _oserror(code, rel)
        super().write(rel, value)  # O_WRONLY without O_CREAT: a missing attribute fails

    def _refuses(self, kind: str, node: str, name: str, value: str) -> int:
        """The errno the kernel would refuse this write with, or 0."""
        if kind == "port" and name.startswith(("addr_", "param_")) and self._port_enabled(node):
            return errno.EACCES
        if kind == "namespace":
            enabled = self.read(f"{node}/enable") == "1"
            if name.startswith("device_") and enabled:
                return errno.EBUSY
            device = self.read(f"{node}/device_path") or "/nonexistent"
            if name == "enable" and value == "1" and not os.path.exists(device):
                return errno.ENODEV
        if kind != "subsystem":
            return 0
        if name == "attr_allow_any_host" and value == "1" and self.listdir(f"{node}/allowed_hosts"):
            return errno.EINVAL
        if name == "attr_cntlid_min" and int(value) > int(self.read(f"{node}/attr_cntlid_max")):
            return errno.EINVAL
        if name == "attr_cntlid_max" and int(value) < int(self.read(f"{node}/attr_cntlid_min")):
            return errno.EINVAL
        return 0

    def symlink(self, target_rel: str, link_rel: str) -> None:
        self.log.append(f"link {link_rel} -> {target_rel}")
        parts = link_rel.split("/")
        if not self.is_dir(target_rel):
            raise _oserror(errno.ENOENT, link_rel)
        if parts[0] == "subsystems" and parts[2] == "allowed_hosts":
            if not target_rel.startswith("hosts/"):
                raise _oserror(errno.EINVAL, link_rel)
            if self.read(f"subsystems/{parts[1]}/attr_allow_any_host") == "1":
                raise _oserror(errno.EINVAL, link_rel)
        elif parts[0] == "ports" and parts[2] == "subsystems":
            if not target_rel.startswith("subsystems/"):
                raise _oserror(errno.EINVAL, link_rel)
            if not self.read(f"ports/{parts[1]}/addr_trtype"):
                raise _oserror(errno.EINVAL, link_rel)
        else:
            raise _oserror(errno.EPERM, link_rel)
        super().symlink(target_rel, link_rel)

    def unlink(self, rel: str) -> None:
        self.log.append(f"unlink {rel}")
        super().unlink(rel)

    # -- for assertions ------------------------------------------------------------------------

    def tree(self) -> list[str]:
        """Every directory, attribute (``path=value``) and link below the root, sorted."""
        out = []
        for top, dirs, files in os.walk(self.root):
            rel_top = os.path.relpath(top, self.root)
            for name in dirs + files:
                rel = name if rel_top == "." else f"{rel_top}/{name}"
                full = self.path(rel)
                if os.path.islink(full):
                    out.append(f"{rel} -> {os.path.relpath(os.readlink(full), self.root)}")
                elif os.path.isdir(full):
                    out.append(f"{rel}/")
                else:
                    out.append(f"{rel}={self.read(rel)}")
        return sorted(out)
