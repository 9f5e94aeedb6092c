"""Each worker slot's namespace counters, in memory the control plane shares with the worker.

A worker counts its I/O per namespace (:class:`~nvmf.offload.context.NamespaceCounters`).  If
those counters lived in the worker's own memory, what it had counted would die with it, and
the sums the host reads in SMART / Health Information (Host Read Commands, Data Units Read...)
would go down when a worker is killed and replaced.  Instead the control plane makes one
:class:`CounterTable` per worker slot, a memfd with a row of counters per namespace, and gives
the worker its descriptor: the worker adds to its rows, the control plane reads them whenever
it likes without asking the worker, and the slot's next worker goes on adding to the same
rows.  As in the hardware, the offload context counts in memory its firmware reads.

Rows are assigned by the control plane, one per namespace (:data:`MediaKey`), the same in every
slot's table, and sent with the namespace's medium; a worker never assigns one.  Each row is
written by one process at a time (the slot's current worker) with aligned 8-byte stores; the
control plane only reads.
"""

from __future__ import annotations

import ctypes
import mmap
import os

from nvmf.offload.context import MediaKey, NamespaceCounters

#: Rows per table: namespaces counted in shared memory.  The memfd is sparse, so a row costs
#: memory only once written; a namespace past the last row counts in the worker's own memory
#: (:meth:`CounterTable.row` says so with None), as before tables existed.
ROWS = 1 << 16
ROW_BYTES = ctypes.sizeof(NamespaceCounters)


class CounterTable:
    """One worker slot's rows of :class:`NamespaceCounters`, in a memfd of :data:`ROWS` rows."""

    def __init__(self, fd: int | None = None) -> None:
        """A new table (``fd`` None: the control plane's, zeroed), or the one whose memfd the
        control plane sent (the worker's; the table owns ``fd`` from now on)."""
        if fd is None:
            fd = os.memfd_create("nvmf-counters", os.MFD_CLOEXEC)
            os.ftruncate(fd, ROWS * ROW_BYTES)
        self.fd = fd
        self._map = mmap.mmap(fd, ROWS * ROW_BYTES)

    def row(self, index: int) -> NamespaceCounters | None:
        """Row ``index``'s counters, in the shared memory (None past the last row)."""
        if not 0 <= index < ROWS:
            return None
        return NamespaceCounters.from_buffer(self._map, index * ROW_BYTES)

    def read(self, rows: dict[MediaKey, int]) -> dict[MediaKey, NamespaceCounters]:
        """A copy of each row of ``rows`` (namespace -> row), as it stands now (none once
        the table is closed)."""
        if self._map.closed:
            return {}
        return {
            key: NamespaceCounters.from_buffer_copy(self._map, i * ROW_BYTES)
            for key, i in rows.items()
            if 0 <= i < ROWS
        }

    def close(self) -> None:
        """Unmap the table and close its memfd (the control plane's, once its workers are
        gone; a worker's goes with its process)."""
        if not self._map.closed:
            self._map.close()
            os.close(self.fd)


class RowAssigner:
    """The control plane's one assignment of table rows to namespaces, kept for the target's
    life: a namespace removed and added again counts on in its row, and its old row is never
    another namespace's (a worker may still hold it)."""

    def __init__(self) -> None:
        self.rows: dict[MediaKey, int] = {}

    def row_of(self, key: MediaKey) -> int:
        """``key``'s row, assigned the first time (past :data:`ROWS`, rows are not shared)."""
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.rows)
        return row
