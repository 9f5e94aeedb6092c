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
``$NVMF_GUEST_RUN [--cmb-nvme MB] [--kernel K] -- bash SCRIPT`` (the command line of
``python -m tests.vm.guest``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.vm import guest, runtime_image

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

    def finished(self) -> GuestResult:
        """This result, once its script got to the end (wrote ``done.txt``); else fail with its
        exit status, the console's end and its stderr's: what a test reads first."""
        assert (self.out / "done.txt").exists(), (
            f"guest script did not finish (rc {self.returncode}):\n{self.console[-3000:]}\n"
            f"stderr: {self.read('stderr.txt')[-3000:]}"
        )
        return self

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


def _part_script(out: Path, script: str) -> Path:
    """Write ``script`` with the harness's preamble into a fresh ``out`` folder; its path."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    body = (
        "#!/bin/bash\nset -u\n"
        f"export OUT={out} REPO={REPO} PY={PYTHON}\n"
        f"export PATH={PYTHON.parent}:$PATH\n"
        # Every command the script runs, with the time it started, goes to xtrace.txt (where
        # a boot spends its minutes: python -m tests.guest.profile OUT); the script's own output
        # and redirections are untouched.
        "exec 9>>$OUT/xtrace.txt\nBASH_XTRACEFD=9\nPS4='+ $EPOCHREALTIME '\nset -x\n"
        # The Python runtime from its image, once per boot (tests/vm/runtime_image.py): under
        # emulation, imports over the uncached 9p root cost seconds per process.
        + runtime_image.GUEST_MOUNT
        + "cd $REPO\n"
        # batch LINE... (or the lines on standard input): nvmf commands in one Python process
        # (tests/guest/cli_batch.py); under emulation an interpreter start costs more than the
        # command.
        "batch() { if [ $# -gt 0 ]; then printf '%s\\n' \"$@\"; else cat; fi > /tmp/nvmf-batch\n"
        '  "$PY" -m tests.guest.cli_batch /tmp/nvmf-batch; }\n' + script + "\n"
    )
    path = out / "script.sh"
    path.write_text(body)
    return path


def precompile() -> None:
    """Byte-compile the project's modules here, where it costs a second, before a boot.

    The guest's Python imports them from the same files; without their ``.pyc`` (CI sets
    ``PYTHONDONTWRITEBYTECODE``, so this machine's runs write none) the first processes in the
    guest compile every module they import under emulation, tens of seconds in all.
    ``compileall`` writes the files whatever that variable says."""
    subprocess.run(
        [str(PYTHON), "-m", "compileall", "-q", "-j", "0", "src", "tests", "bench"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        check=False,
    )


def _boot(
    path: Path, *, cmb_mb: int, kernel: str, timeout: float, trace: tuple[str, ...] = ()
) -> tuple[int, str]:
    """Boot the guest once to run the bash script at ``path``: its exit status and console.
    ``trace``: QEMU trace event patterns, written to :data:`TRACE_FILE` beside the script."""
    precompile()
    command = ("bash", str(path))
    trace_file = path.parent / TRACE_FILE
    if GUEST_RUN:
        args = shlex.split(GUEST_RUN)
        if cmb_mb:
            args += ["--cmb-nvme", str(cmb_mb)]
        if kernel != "6.1":
            args += ["--kernel", kernel]
        for pattern in trace:
            args += ["--trace", pattern]
        if trace:
            args += ["--trace-file", str(trace_file)]
        args.append("--runtime-image")
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
            trace_file=trace_file if trace else None,
            runtime_image=True,
        )
        proc = guest.run(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, proc.stdout or ""


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
    path = _part_script(out, script)
    start = time.monotonic()
    rc, console = _boot(path, cmb_mb=cmb_mb, kernel=kernel, timeout=timeout, trace=trace)
    result = GuestResult(rc, out, console, time.monotonic() - start)
    (out / "console.log").write_text(result.console)
    return result


@dataclass(frozen=True)
class Machine:
    """What a guest is booted with: scripts for the same machine can share one boot."""

    kernel: str = "6.1"
    cmb_mb: int = 0

    @property
    def name(self) -> str:
        return f"boot-{self.kernel}" + (f"-cmb{self.cmb_mb}" if self.cmb_mb else "")


@dataclass
class _Part:
    name: str
    script: str
    machine: Machine
    timeout: float
    trace: tuple[str, ...] = ()
    result: GuestResult | None = None


#: Scripts registered with :func:`shared_boot`, by name, in registration order.
_PARTS: dict[str, _Part] = {}

#: Run between two parts of a shared boot: whatever a part left running or connected must not
#: be what the next part finds (a target on its port, a controller, a loop device).
_BETWEEN_PARTS = """\
pkill -9 -f 'nvmf[.]cli[.]main|tests[.]guest[.]cli_batch|fio ' 2>/dev/null
nvme disconnect-all > /dev/null 2>&1
sleep 1
"""


def shared_boot(
    name: str,
    script: str,
    *,
    kernel: str = "6.1",
    cmb_mb: int = 0,
    timeout: float = 1500,
    trace: tuple[str, ...] = (),
) -> Callable[[], GuestResult]:
    """Register ``script`` as one part of the boot every part for the same :class:`Machine`
    shares, and return the function that gives its result.

    Each boot costs a minute or more under emulation, and CI's time is counted; test modules
    register at import (pytest imports every selected module before it runs a test), and the
    first result asked for boots the guest once for every part of that machine not run yet.
    The parts run one after the other, each as :func:`run_in_guest` would run it (its own
    ``$OUT``, ``set -u``), with :data:`_BETWEEN_PARTS` after each; a part's result has its own
    exit status and time, and the boot's console.  ``trace``: QEMU trace event patterns; the
    boot traces those of all its parts, and each part that asked finds the whole boot's trace
    as :data:`TRACE_FILE` in its result folder (its own steps are for it to find there).
    """
    part = _PARTS.get(name)
    if part is None or part.script != script or part.trace != trace:
        part = _PARTS[name] = _Part(name, script, Machine(kernel, cmb_mb), timeout, trace)

    def result() -> GuestResult:
        if part.result is None:
            _run_parts(part.machine)
        assert part.result is not None
        return part.result

    return result


def _run_parts(machine: Machine) -> None:
    parts = [p for p in _PARTS.values() if p.machine == machine and p.result is None]
    boot_out = OUT_ROOT / machine.name
    lines = []
    for part in parts:
        path = _part_script(OUT_ROOT / part.name, part.script)
        lines += [
            f"start=$EPOCHREALTIME; bash {path}; rc=$?",
            f'echo "{part.name} $rc $start $EPOCHREALTIME" >> $OUT/parts.txt',
            _BETWEEN_PARTS,
        ]
    boot = _part_script(boot_out, "\n".join(lines))
    trace = tuple(dict.fromkeys(t for p in parts for t in p.trace))
    start = time.monotonic()
    rc, console = _boot(
        boot,
        cmb_mb=machine.cmb_mb,
        kernel=machine.kernel,
        timeout=sum(p.timeout for p in parts),
        trace=trace,
    )
    seconds = time.monotonic() - start
    (boot_out / "console.log").write_text(console)
    ran = {}
    parts_file = boot_out / "parts.txt"
    for line in parts_file.read_text().splitlines() if parts_file.exists() else ():
        name, status, began, ended = line.split()
        ran[name] = (int(status), float(ended) - float(began))
    for part in parts:
        if part.trace and (boot_out / TRACE_FILE).exists():
            shutil.copyfile(boot_out / TRACE_FILE, OUT_ROOT / part.name / TRACE_FILE)
        # A part the boot never finished fails with the boot's status (or -1): its checks
        # then say what is missing, and the console is there to tell why.
        code, took = ran.get(part.name, (rc or -1, seconds))
        part.result = GuestResult(code, OUT_ROOT / part.name, console, took)
