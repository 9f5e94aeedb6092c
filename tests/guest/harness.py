"""Run a shell script inside the project's Linux guest (:mod:`tests.vm.guest`), collect results.

The guest console is lossy, so scripts write what they find into files under an output directory
inside the repository (the repository is mounted read-write in the guest at the same path) and the
test reads those files after the guest exits.  One boot costs 30 s to a few minutes under
emulation: group many checks per boot.

The guest, and everything it needs, comes with the project: :mod:`tests.vm.guest` boots it and
``scripts/guest-setup`` installs QEMU, the kernels and the tools on first use.  An install or boot
that fails is a test failure, not a skip: these tests are how the project proves it works against
real Linux peers.

``NVMF_GUEST_RUN``, if set, names an external command to boot the guest instead, called as
``$NVMF_GUEST_RUN [--cmb-nvme MB] [--kernel K] [--trace P]... [--trace-file F] -- bash SCRIPT``
(the command line of ``python -m tests.vm.guest``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vm import guest

REPO = Path(__file__).resolve().parents[2]
#: An external guest launcher that replaces :func:`tests.vm.guest.run` (see the module's doc).
GUEST_RUN = os.environ.get("NVMF_GUEST_RUN", "")
OUT_ROOT = REPO / "tests" / "guest" / "out"
#: The interpreter of the project's venv; the guest sees this machine's root read-only, so the
#: same path works inside it.
PYTHON = Path(sys.executable)
#: Where QEMU's trace goes, in the result folder, when ``run_in_guest(trace=...)`` asks for one.
TRACE_FILE = "qemu-trace.log"


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

    def results(self, name: str = "results.txt") -> dict[str, str]:
        """The script's one-line results: ``connect X rc=0`` -> {"connect X rc": "0"},
        ``X queues 3`` -> {"X queues": "3"}."""
        out = {}
        for line in self.lines(name):
            key, _, value = line.rpartition(" ")
            if "=" in value:
                field, _, value = value.partition("=")
                key = f"{key} {field}"
            out[key] = value
        return out


def run_in_guest(
    name: str,
    script: str,
    *,
    cmb_mb: int = 0,
    kernel: str = "6.1",
    timeout: float = 1500,
    trace: tuple[str, ...] = (),
) -> GuestResult:
    """Boot the guest and run ``script`` (bash) in it with ``$OUT`` set to a fresh result folder.

    The script runs with ``set -u``; ``$REPO`` is the repository, ``$PY`` the project's Python.
    ``trace``: QEMU trace event patterns; QEMU writes them to ``qemu-trace.log`` in the result
    folder (:meth:`GuestResult.read` it after the run).
    """
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
    command = ("bash", str(path))
    start = time.monotonic()
    if GUEST_RUN:
        args = shlex.split(GUEST_RUN)
        if cmb_mb:
            args += ["--cmb-nvme", str(cmb_mb)]
        if kernel != "6.1":
            args += ["--kernel", kernel]
        for pattern in trace:
            args += ["--trace", pattern]
        if trace:
            args += ["--trace-file", str(out / TRACE_FILE)]
        proc = subprocess.run(
            [*args, "--", *command],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            text=True,
            errors="replace",
        )
    else:
        spec = guest.GuestSpec(
            command=command,
            kernel=kernel,
            cmb_mb=cmb_mb,
            cwd=REPO,
            trace=trace,
            trace_file=out / TRACE_FILE if trace else None,
        )
        proc = guest.run(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    result = GuestResult(proc.returncode, out, proc.stdout or "", time.monotonic() - start)
    (out / "console.log").write_text(result.console)
    return result
