"""Every read of the inspected system goes through :class:`SysRoot`.

The doctor looks at ``/sys``, ``/proc`` and ``/boot`` of a *root* directory: ``/`` for the running
machine, or a recorded tree (``tests/data/sysfs/NAME``) in tests.  Paths given to the methods here
are system paths (``/sys/bus/pci/devices``); :class:`SysRoot` maps them under its root, follows the
tree's symbolic links the way the kernel's sysfs would, and refuses to leave the root.  Every
reader returns ``None`` (or an empty list) for what is missing or unreadable, because a doctor that
dies on a missing file answers nothing: the callers decide what the absence means.
"""

from __future__ import annotations

import os
from pathlib import Path


class SysRoot:
    """A root directory to read system files from (``/`` or a recorded tree)."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(os.path.realpath(root))

    @property
    def live(self) -> bool:
        """True when this is the running system, not a recorded tree."""
        return self.root == Path("/")

    def host_path(self, path: str) -> Path:
        """Where the system path ``path`` is on this machine's filesystem."""
        return self.root / path.lstrip("/")

    def _inside(self, real: str) -> str | None:
        """The system path of the host path ``real``, or None if it lies outside the root."""
        root = str(self.root)
        if root == "/":
            return real
        if real == root:
            return "/"
        if real.startswith(root + os.sep):
            return real[len(root) :]
        return None

    def realpath(self, path: str) -> str | None:
        """``path`` with every symbolic link resolved, as a system path (None if outside root)."""
        return self._inside(os.path.realpath(self.host_path(path)))

    def exists(self, path: str) -> bool:
        """True if the system path exists (links followed)."""
        return self.host_path(path).exists()

    def is_dir(self, path: str) -> bool:
        """True if the system path is a directory."""
        return self.host_path(path).is_dir()

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted; empty when it does not exist or cannot be listed."""
        try:
            return sorted(os.listdir(self.host_path(path)))
        except OSError:
            return []

    def read_bytes(self, path: str) -> bytes | None:
        """A file's content, or None when missing or unreadable."""
        try:
            return self.host_path(path).read_bytes()
        except OSError:
            return None

    def read_text(self, path: str) -> str | None:
        """A small text attribute with surrounding white space removed; None if unreadable."""
        data = self.read_bytes(path)
        if data is None:
            return None
        return data.decode(errors="replace").strip()

    def read_int(self, path: str, base: int = 0) -> int | None:
        """An integer attribute (``0x15b3`` or ``128``); None if missing or not a number."""
        text = self.read_text(path)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            return None

    def link_name(self, path: str) -> str | None:
        """The last component of a symbolic link's target (``driver`` -> ``nvme``)."""
        try:
            return os.path.basename(os.readlink(self.host_path(path)))
        except OSError:
            return None


def parse_cpu_list(text: str) -> list[int]:
    """Expand a kernel CPU list (``0-3,8,10-11``) into CPU numbers."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


__all__ = ["SysRoot", "parse_cpu_list"]
