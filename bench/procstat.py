"""CPU time of a process and of all its descendants, read from ``/proc`` (Linux).

``/proc/PID/stat`` fields 14-17 are ``utime``, ``stime`` (every thread of the process) and
``cutime``, ``cstime`` (children it has waited for), in clock ticks.  Live descendants are found
by their parent PID (field 4) in a scan of ``/proc/*/stat``: ``/proc/PID/task/TID/children``
needs ``CONFIG_PROC_CHILDREN``, which not every kernel has.  A child that exits during a
measurement and is reaped by its parent moves from the "children" side into the parent's
``cutime``/``cstime``: both sides are counted, so its time is kept (on the parent's side).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = 1.0 / os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds (user + system) of a process itself and of its live descendants."""

    parent: float
    children: float
    #: PID -> command name of every live descendant.
    names: dict[int, str]

    @property
    def total(self) -> float:
        return self.parent + self.children

    def __sub__(self, before: TreeCpu) -> TreeCpu:
        return TreeCpu(self.parent - before.parent, self.children - before.children, self.names)


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, CPU seconds including reaped children) of ``pid``; None once it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return parse_stat(raw)


def parse_stat(raw: str) -> tuple[str, int, float]:
    """(comm, ppid, CPU seconds including reaped children) of a ``/proc/PID/stat`` line."""
    close = raw.rindex(")")  # comm may contain spaces and parentheses
    comm = raw[raw.index("(") + 1 : close]
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14 -> fields[11]
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return comm, ppid, ticks * TICK


def process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` (with its reaped children); 0 once it is gone."""
    st = _stat(pid)
    return 0.0 if st is None else st[2]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children...)."""
    parent_of: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            parent_of[int(entry.name)] = st[1]
    found: list[int] = []
    frontier = {pid}
    while frontier:
        kids = [p for p, pp in parent_of.items() if pp in frontier]
        found += kids
        frontier = set(kids)
    return found


def tree_cpu(pid: int) -> TreeCpu:
    """CPU seconds of ``pid`` and, separately, of all its live descendants."""
    own = _stat(pid)
    if own is None:
        raise ProcessLookupError(f"process {pid} is gone")
    children = 0.0
    names: dict[int, str] = {}
    for kid in descendants(pid):
        st = _stat(kid)
        if st is not None:
            children += st[2]
            names[kid] = st[0]
    return TreeCpu(own[2], children, names)
