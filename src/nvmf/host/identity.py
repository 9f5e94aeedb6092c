"""The host's identity: Host NQN and Host Identifier, found the way nvme-cli finds them.

``/etc/nvme/hostnqn`` and ``/etc/nvme/hostid`` when present (nvme-cli and the kernel host read
the same files, so this host is the *same* host to a target's allowed-hosts list).  Otherwise a
UUID-based NQN, ``nqn.2014-08.org.nvmexpress:uuid:<uuid>`` (NVMe Base 2.0 §4.5, the form
``nvme gen-hostnqn`` writes), generated once per process so every connection of this process
presents one identity.  Without a hostid file the Host Identifier is the UUID of a UUID-based
Host NQN (as libnvme derives it), else a random one.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

HOSTNQN_FILE = Path("/etc/nvme/hostnqn")
HOSTID_FILE = Path("/etc/nvme/hostid")
UUID_NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"


def _read_first_line(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text.splitlines()[0].strip() if text else None


@functools.cache
def _generated_uuid() -> uuid.UUID:
    return uuid.uuid4()


def default_hostnqn() -> str:
    """``/etc/nvme/hostnqn``, or a UUID-based NQN stable for this process."""
    return _read_first_line(HOSTNQN_FILE) or f"{UUID_NQN_PREFIX}{_generated_uuid()}"


def default_hostid(hostnqn: str | None = None) -> uuid.UUID:
    """``/etc/nvme/hostid``, else the UUID inside a UUID-based ``hostnqn``, else a random one."""
    text = _read_first_line(HOSTID_FILE)
    if text:
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    nqn = hostnqn if hostnqn is not None else default_hostnqn()
    if nqn.startswith(UUID_NQN_PREFIX):
        try:
            return uuid.UUID(nqn[len(UUID_NQN_PREFIX) :])
        except ValueError:
            pass
    return _generated_uuid()
