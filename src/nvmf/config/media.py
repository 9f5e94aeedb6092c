"""Which media type serves a namespace: this project's ``nvmf.kind``, or what ``device.path`` is.

nvmetcli only knows ``device.path``; the kernel opens it as a block device or, failing that, as a
file.  This project says so explicitly with ``nvmf.kind`` (``ram`` and ``null`` need no path at
all) and otherwise infers the kind the way the kernel does: a regular file is served by the
``file`` media, a block device by ``block``.
"""

from __future__ import annotations

import os

from nvmf.config.errors import ConfigError, show
from nvmf.control.model import Namespace
from nvmf.media.factory import path_kind
from nvmf.platform.pci import BDF_RE

#: Kinds that need no backing path.
PATHLESS_KINDS = ("ram", "null")


def resolve_media_kind(ns: Namespace, *, where: str = "device.path") -> str:
    """The media kind of ``ns``: ``nvmf.kind`` when set, else what ``os.stat(device.path)`` finds.

    Raises :class:`ConfigError` (naming ``where``, the JSON path of the namespace's path) when
    the kind is not set and the path is empty, missing, or neither a regular file nor a block
    device.
    """
    if ns.media.kind is not None:
        return ns.media.kind
    problem = path_problem(ns.path, None, None)
    if problem is not None:
        raise ConfigError.at("", where, problem)
    return path_kind(ns.path) or ""


def path_problem(
    path: str, kind: str | None, size: int | None, *, check: bool = True
) -> str | None:
    """What is wrong with ``device.path`` for media ``kind`` (None: inferred), or None.

    With ``check=False`` only the path's presence is checked, not the file system.
    """
    if kind in PATHLESS_KINDS:
        return None
    if not path:
        return (
            "is required (or set nvmf.kind to ram or null)"
            if kind is None
            else f"is required for nvmf.kind {kind}"
        )
    if kind == "nvme_pci":
        return _bdf_problem(path, check)
    if not check:
        return None
    found = path_kind(path)
    if found is None:
        if kind == "file" and size:
            return None  # the file media creates it with nvmf.size bytes
        if kind == "file":
            return f"{show(path)} does not exist (set nvmf.size to create it)"
        return (
            f"{show(path)} does not exist (set nvmf.kind to ram or null, "
            "or to file with nvmf.size to create it)"
        )
    if found == "other":
        return f"{show(path)} must be a regular file or a block device"
    if kind is not None and found != kind:
        what = "a block device" if found == "block" else "a regular file"
        return f"{show(path)} is {what}, not what nvmf.kind {kind} needs"
    return None


def _bdf_problem(path: str, check: bool) -> str | None:
    """What is wrong with an ``nvme_pci`` namespace's ``device.path``: a PCI address
    ``DDDD:BB:DD.F`` as sysfs names devices (lower-case hex)."""
    if not BDF_RE.match(path):
        return (
            f"{show(path)} is not a PCI address like 0000:00:04.0 (DDDD:BB:DD.F), "
            "which nvmf.kind nvme_pci needs"
        )
    if check and not os.path.exists(f"/sys/bus/pci/devices/{path}"):
        return f"{show(path)}: no such PCI device (/sys/bus/pci/devices/{path})"
    return None
