"""Run a shell script inside the Linux guest (``../shared/vm/guest-run``) and collect its results.

The guest console is lossy, so scripts write what they find into files under an output directory
inside the repository (the repository is mounted read-write in the guest at the same path) and the
test reads those files after the guest exits.  One boot costs 15-45 s: group many checks per boot.

A missing ``guest-run`` is a test failure, not a skip: these tests are how the project proves it
works against real Linux peers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST_RUN = Path(os.environ.get("NVMF_GUEST_RUN", REPO.parent / "shared" / "vm" / "guest-run"))
OUT_ROOT = REPO / "tests" / "guest" / "out"
#: The interpreter of the project's venv; the guest sees this machine's root read-only, so the
#: same path works inside it.
PYTHON = Path(sys.executable)


@dataclass
class GuestResult:
    """What one guest run left behind."""

    returncode: int
    out: Path
    console: str
    seconds: float

    def read(self, name: str) -> str:
        """The text of a result file the script wrote (empty if it did not write it)."""
        path = self.out / name
        return path.read_text(errors="replace") if path.exists() else ""

    def lines(self, name: str) -> list[str]:
        return [line for line in self.read(name).splitlines() if line.strip()]


def run_in_guest(
    name: str,
    script: str,
    *,
    cmb_mb: int = 0,
    kernel: str = "6.1",
    timeout: float = 1500,
) -> GuestResult:
    """Boot the guest and run ``script`` (bash) in it with ``$OUT`` set to a fresh result folder.

    The script runs with ``set -u``; ``$REPO`` is the repository, ``$PY`` the project's Python.
    """
    if not GUEST_RUN.exists():
        raise AssertionError(f"guest-run not found at {GUEST_RUN}: the guest tests need it")
    out = OUT_ROOT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    body = (
        "#!/bin/bash\nset -u\n"
        f"export OUT={out} REPO={REPO} PY={PYTHON}\n"
        f"export PATH={PYTHON.parent}:$PATH\n"
        "cd $REPO\n" + script + "\n"
    )
    path = out / "script.sh"
    path.write_text(body)
    args = [str(GUEST_RUN)]
    if cmb_mb:
        args += ["--cmb-nvme", str(cmb_mb)]
    if kernel != "6.1":
        args += ["--kernel", kernel]
    args += ["--", "bash", str(path)]
    start = time.monotonic()
    proc = subprocess.run(
        args,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        text=True,
        errors="replace",
    )
    result = GuestResult(proc.returncode, out, proc.stdout, time.monotonic() - start)
    (out / "console.log").write_text(proc.stdout)
    return result
