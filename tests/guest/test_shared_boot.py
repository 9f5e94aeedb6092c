"""tests.guest.harness.shared_boot: scripts for the same machine share one boot, each with its
own results and exit status.  A local bash stands in for the guest launcher (the harness's
``NVMF_GUEST_RUN`` hook), so this checks the harness's bookkeeping, not a guest."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from tests.guest import harness


@pytest.fixture
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake guest launcher that logs each boot's options and runs the script here."""
    boots = tmp_path / "boots.txt"
    fake = tmp_path / "fake-guest"
    fake.write_text(
        f'#!/bin/bash\nopts=()\nwhile [ "$1" != -- ]; do opts+=("$1"); shift; done\nshift\n'
        f'echo "${{opts[*]}}" >> {boots}\nexec "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(harness, "GUEST_RUN", str(fake))
    monkeypatch.setattr(harness, "OUT_ROOT", tmp_path / "out")
    monkeypatch.setattr(harness, "_PARTS", {})
    monkeypatch.setattr(harness, "_BETWEEN_PARTS", "true")
    return boots


def test_parts_of_one_machine_share_one_boot(launcher: Path) -> None:
    first = harness.shared_boot("first", "echo one > $OUT/r.txt")
    second = harness.shared_boot("second", "echo two > $OUT/r.txt; exit 3")
    cmb = harness.shared_boot("cmb", "echo cmb > $OUT/r.txt", cmb_mb=16)
    a = first()
    # one boot, with the runtime image (every boot has it) and nothing else
    assert launcher.read_text().splitlines() == ["--runtime-image"]
    b = second()  # already ran in that boot
    assert launcher.read_text().splitlines() == ["--runtime-image"]
    assert (a.read("r.txt"), a.returncode) == ("one\n", 0)
    assert (b.read("r.txt"), b.returncode) == ("two\n", 3)
    assert a.out != b.out and a.seconds >= 0
    assert cmb().read("r.txt") == "cmb\n"
    assert launcher.read_text().splitlines() == [
        "--runtime-image",
        "--cmb-nvme 16 --runtime-image",
    ]


def test_a_part_the_boot_never_finished_fails(launcher: Path) -> None:
    harness.shared_boot("dies", "kill -9 $PPID")  # takes the whole boot script down
    late = harness.shared_boot("late", "echo never > $OUT/r.txt")
    result = late()
    assert result.returncode != 0 and result.read("r.txt") == ""


def test_a_part_that_asks_for_a_trace_gets_the_boots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boot traces what its parts asked for; each asking part finds the trace file."""
    boots = tmp_path / "boots.txt"
    fake = tmp_path / "tracing-guest"
    fake.write_text(
        '#!/bin/bash\nopts=()\nwhile [ "$1" != -- ]; do\n'
        '  [ "$1" = --trace-file ] && echo "pci_nvme_map_addr_cmb addr 0x1" > "$2"\n'
        '  opts+=("$1"); shift\ndone\nshift\n'
        f'echo "${{opts[*]}}" >> {boots}\nexec "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(harness, "GUEST_RUN", str(fake))
    monkeypatch.setattr(harness, "OUT_ROOT", tmp_path / "out")
    monkeypatch.setattr(harness, "_PARTS", {})
    monkeypatch.setattr(harness, "_BETWEEN_PARTS", "true")
    traced = harness.shared_boot("traced", "true", cmb_mb=16, trace=("pci_nvme_map_addr*",))
    plain = harness.shared_boot("plain", "true", cmb_mb=16)
    assert traced().read(harness.TRACE_FILE) == "pci_nvme_map_addr_cmb addr 0x1\n"
    assert plain().read(harness.TRACE_FILE) == ""
    (line,) = boots.read_text().splitlines()  # one boot for both
    assert line.startswith("--cmb-nvme 16 --trace pci_nvme_map_addr* --trace-file ")


def test_the_modules_are_compiled_before_a_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even where PYTHONDONTWRITEBYTECODE is set (CI), so the guest imports, not compiles."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("VALUE = 1\n")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(harness, "REPO", tmp_path)
    harness.precompile()
    assert [p.name for p in (tmp_path / "src" / "pkg" / "__pycache__").iterdir()] == [
        f"mod.{sys.implementation.cache_tag}.pyc"
    ]


def test_a_part_batches_nvmf_commands_from_arguments_or_standard_input(launcher: Path) -> None:
    """The preamble's ``batch``: one Python process for a part's consecutive nvmf commands."""
    part = harness.shared_boot(
        "batched",
        'batch "out=$OUT/a.txt rc=$OUT/r.txt tag=a gen-dhchap-key -l 32" '
        '"rc=$OUT/r.txt tag=b gen-dhchap-key -l 7"\n'
        "batch <<EOF\nout=$OUT/c.txt rc=$OUT/r.txt tag=c gen-dhchap-key -l 48\nEOF\n",
    )
    result = part()
    assert result.returncode == 0
    assert result.read("r.txt") == "a rc=0\nb rc=2\nc rc=0\n"
    assert result.read("a.txt").startswith("DHHC-1:00:") and result.read("c.txt")


def test_a_result_is_finished_only_once_its_script_wrote_done(tmp_path: Path) -> None:
    """What a guest test reads first: a script that stopped early fails with its status and the
    end of its stderr, not with a missing file further on."""
    (tmp_path / "stderr.txt").write_text("modprobe: FATAL: Module brd not found\n")
    result = harness.GuestResult(3, tmp_path, "console tail", 1.0)
    with pytest.raises(AssertionError, match=r"(?s)rc 3\).*console tail.*Module brd not found"):
        result.finished()
    (tmp_path / "done.txt").write_text("done\n")
    assert result.finished() is result
