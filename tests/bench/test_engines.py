"""Section (e) of the bench suite (``bench/engines.py``): both engines' targets really serve a
file namespace with the engine asked for, and the report says why when io_uring cannot run."""

from __future__ import annotations

import engines
import pytest
from local import Workload

from nvmf.media import uring_support

SHORT = [Workload("4k randwrite QD8", "randwrite", 4096, 8)]


def test_where_io_uring_cannot_run_the_report_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        uring_support, "problem", lambda: "Linux 6.1: the liburing binding needs 6.14"
    )
    cmp = engines.compare(SHORT, 0.2, 1, None)
    assert cmp.skipped and not cmp.threads and not cmp.io_uring
    text = engines.report(cmp, "nvmf serve")
    assert "skipped: Linux 6.1: the liburing binding needs 6.14" in text


@pytest.mark.skipif(
    uring_support.problem() is not None, reason=f"io_uring: {uring_support.problem()}"
)
def test_both_engines_complete_ios_and_the_table_has_their_ratio() -> None:
    cmp = engines.compare(SHORT, 0.6, 1, 1)
    assert cmp.skipped is None
    (threads,), (ring,) = cmp.threads, cmp.io_uring
    assert not threads.error and not ring.error, (threads.error, ring.error)
    assert threads.ios > 0 and ring.ios > 0
    row = engines.report(cmp, "nvmf serve --workers 1").splitlines()[-2]
    assert row.startswith("4k randwrite QD8") and row.split("|")[-1].strip() != "nan"
