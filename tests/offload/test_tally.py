"""Counter tables: namespace counters a worker adds to and the control plane reads."""

from __future__ import annotations

import os

from nvmf.offload.tally import ROWS, CounterTable, RowAssigner


def test_a_row_counts_in_memory_both_sides_map() -> None:
    """What the worker's side adds through its mapping of the memfd is what the control
    plane's side reads, and stays there after the worker's mapping is gone."""
    control = CounterTable()
    worker = CounterTable(os.dup(control.fd))
    row = worker.row(3)
    assert row is not None
    row.read_cmds += 2
    row.read_blocks += 16
    del row, worker  # the worker is gone
    seen = control.read({("nqn", 1): 3, ("nqn", 2): 4})
    assert seen[("nqn", 1)].as_dict()["read_cmds"] == 2
    assert seen[("nqn", 1)].read_blocks == 16
    assert not any(seen[("nqn", 2)].as_dict().values())


def test_a_read_is_a_copy_and_rows_past_the_table_are_none() -> None:
    table = CounterTable()
    row = table.row(0)
    assert row is not None
    copy = table.read({("nqn", 1): 0})[("nqn", 1)]
    row.write_cmds += 1
    assert copy.write_cmds == 0 and table.read({("nqn", 1): 0})[("nqn", 1)].write_cmds == 1
    assert table.row(ROWS) is None and table.row(-1) is None
    del row  # a closed table reads as no counters
    table.close()
    assert table.read({("nqn", 1): 0}) == {}


def test_rows_are_assigned_once_per_namespace() -> None:
    rows = RowAssigner()
    assert [rows.row_of(k) for k in (("a", 1), ("a", 2), ("a", 1), ("b", 1))] == [0, 1, 0, 2]
