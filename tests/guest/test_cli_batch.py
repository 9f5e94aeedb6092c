"""The guest scripts' batch runner (:mod:`tests.guest.cli_batch`): lines become steps, each
step runs the real CLI with its output and status where the line says, and one failing step
does not stop the batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.guest.cli_batch import Step, parse

REPO = Path(__file__).resolve().parents[2]


def _batch(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tests.guest.cli_batch ARGS`` from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "tests.guest.cli_batch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_lines_become_steps() -> None:
    text = (
        "# a comment\n\nout=/o rc=/r discover -a 1.2.3.4 -q 'a b'\nerr=/e gen-dhchap-key\n"
        "rc=/results tag=kapply config apply x.json\n"
    )
    assert parse(text) == [
        Step(("discover", "-a", "1.2.3.4", "-q", "a b"), out=Path("/o"), rc=Path("/r")),
        Step(("gen-dhchap-key",), err=Path("/e")),
        Step(("config", "apply", "x.json"), rc=Path("/results"), tag="kapply"),
    ]


def test_a_line_with_files_and_no_command_is_refused() -> None:
    with pytest.raises(ValueError, match=r"line 2: 'out=/o rc=/r' names no command"):
        parse("gen-dhchap-key\nout=/o rc=/r\n")
    with pytest.raises(ValueError, match=r"line 1: tag=x without rc=FILE"):
        parse("tag=x gen-dhchap-key\n")


def test_each_step_gets_its_output_and_status(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    batch = tmp_path / "batch"
    batch.write_text(
        f"out={tmp_path}/bad.out err={tmp_path}/bad.err rc={tmp_path}/bad.rc "
        f"config check {missing}\n"
        f"err={tmp_path}/usage.err rc={tmp_path}/usage.rc gen-dhchap-key -l 7\n"
        f"out={tmp_path}/key.out rc={tmp_path}/key.rc gen-dhchap-key -l 32\n"
        f"out={tmp_path}/both err={tmp_path}/both gen-dhchap-key -l 32 -m 9\n"
        f"out={tmp_path}/both2 err={tmp_path}/both2 gen-dhchap-key -l 32\n"
        f"rc={tmp_path}/results.txt tag=one gen-dhchap-key -l 32\n"
        f"rc={tmp_path}/results.txt tag=two gen-dhchap-key -l 31\n"
    )
    proc = _batch(str(batch))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bad.rc").read_text() == "1\n"
    error = (tmp_path / "bad.err").read_text()
    assert error == f"{missing}: cannot read: No such file or directory\n"
    assert (tmp_path / "bad.out").read_text() == ""
    assert (tmp_path / "usage.rc").read_text() == "2\n"  # argparse's refusal; the batch goes on
    assert "-l" in (tmp_path / "usage.err").read_text()
    assert (tmp_path / "key.rc").read_text() == "0\n"
    assert (tmp_path / "key.out").read_text().startswith("DHHC-1:00:")
    assert "-m" in (tmp_path / "both").read_text()  # standard error into the shared file
    assert (tmp_path / "both2").read_text().startswith("DHHC-1:00:")  # and output
    assert (tmp_path / "results.txt").read_text() == "one rc=0\ntwo rc=2\n"


def test_another_entry_module_runs_the_lines(tmp_path: Path) -> None:
    """``--entry``: the guest's own tools (here tests.guest.profile) batch the same way."""
    (tmp_path / "xtrace.txt").write_text("+ 10.0 fio --name=a\n+ 12.5 echo done\n")
    batch = tmp_path / "batch"
    batch.write_text(f"out={tmp_path}/profile.txt rc={tmp_path}/results tag=profile {tmp_path}\n")
    proc = _batch("--entry", "tests.guest.profile", str(batch))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results").read_text() == "profile rc=0\n"
    assert "2.5 s  +    0.0  fio --name=a" in (tmp_path / "profile.txt").read_text()
