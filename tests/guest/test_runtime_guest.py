"""The guest reads the project's Python runtime from its image (tests/vm/runtime_image.py), at
the paths it has here, in the shared 6.1 boot: every entry bound, and Python working from it; and
the guest runs on the CPU the harness asks for (tests/vm/guest.py's ``CPU_MODEL``: QEMU's max
model without ERMS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest.harness import GuestResult, shared_boot
from tests.vm import runtime_image

SCRIPT = """
cp /run/nvmf-runtime/binds.txt $OUT/binds.txt
t() {
  local s=$EPOCHREALTIME; "$@" > /dev/null 2>&1
  echo "$* $(( ${EPOCHREALTIME/./} - ${s/./} ))us" >> $OUT/times.txt
}
t "$PY" -c pass
t "$PY" -c "import nvmf.cli.main"
grep -m1 '^flags' /proc/cpuinfo > $OUT/cpuflags.txt
"$PY" -c "import nvmf, uvloop, cryptography, pytest; print(nvmf.__file__)" > $OUT/import.txt 2>&1
"""

runtime = shared_boot("runtime", SCRIPT)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return runtime()


@pytest.mark.guest
def test_every_entry_of_the_runtime_image_is_bound_in_place(guest: GuestResult) -> None:
    entries = [
        runtime_image.Entry(Path(line.split(" ", 1)[1])) for line in guest.lines("binds.txt")
    ]
    assert entries, guest.console[-3000:]
    assert {e.name for e in entries} >= {"libc.so.6", "site-packages", "src"}
    bound = runtime_image.bound(guest.read("mountinfo.txt"), entries)
    assert bound == [e.source for e in entries], guest.read("mountinfo.txt")


@pytest.mark.guest
def test_python_runs_the_project_from_the_image(guest: GuestResult) -> None:
    assert guest.returncode == 0, guest.console[-3000:]
    assert guest.read("import.txt").strip() == str(runtime_image.REPO / "src/nvmf/__init__.py")
    # the start-up times are for the notes (tests/guest/out/runtime/times.txt), not asserted
    assert len(guest.lines("times.txt")) == 2


@pytest.mark.guest
def test_the_guest_cpu_has_no_erms_so_copies_are_not_emulated_a_byte_at_a_time(
    guest: GuestResult,
) -> None:
    flags = guest.read("cpuflags.txt").split(":", 1)[1].split()
    assert "erms" not in flags and "fsrm" not in flags
    assert "avx2" in flags  # still QEMU's max model, not a bare one
