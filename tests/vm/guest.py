"""The project's Linux guest: run one command in a throw-away VM and return its exit status.

The guest tests need real Linux peers that this project did not write: the kernel's NVMe-oF
host and target (nvme-tcp, nvme-rdma, nvmet-tcp, nvmet-rdma), Soft-RoCE (rdma_rxe), null_blk,
vfio-pci, nvme-cli, fio and rdma-core. This module boots Debian's own kernel with virtme-ng
under QEMU and runs a command in it::

    python -m tests.vm.guest [--kernel 6.1|6.12] [--cmb-nvme MB] [--rw DIR]...
        [--trace PATTERN]... [--trace-file FILE] -- CMD...

or, from Python, :func:`run` with a :class:`GuestSpec`.

The guest
    sees this machine's root filesystem read-only (so the project's ``.venv`` works inside it at
    the same path), plus the working directory and every ``--rw`` directory read-write at the same
    paths. The command runs as root in the working directory; the exit status is the command's.
    The console may swallow the first characters of what the command prints: have it write its
    results into files under a read-write directory and read them after the guest exits.
``--kernel``
    6.1 (default): Debian 12's kernel, the kernel of the project's Arm server. 6.12: Debian 12
    backports' (adds NVMe in-band authentication, NVMe/TCP TLS, the target's passthru and loop
    transports), installed on first use. Neither has CONFIG_PCI_P2PDMA, siw or VFIO no-IOMMU.
``--cmb-nvme MB``
    adds QEMU's NVMe controller (1 GiB of sparse media) with a Controller Memory Buffer of MB MiB,
    behind an emulated Intel IOMMU (passthrough for the host's drivers), so the guest can bind it
    to vfio-pci as the project's userspace driver does.
``--runtime-image``
    attaches a read-only image of the project's Python runtime (:mod:`tests.vm.runtime_image`)
    as a virtio-blk disk with serial ``nvmf-runtime``, for the command to mount and bind over the
    9p paths it came from (the guest tests' preamble does): imports then read a cached block
    device instead of uncached 9p.
``--trace PATTERN``
    enables QEMU's trace events matching PATTERN (``pci_nvme_map_addr_cmb``, ``pci_nvme_*``; list
    them with ``qemu-system-x86_64 -trace help``), written by QEMU (on this machine, not in the
    guest) to ``--trace-file`` (default ``qemu-trace.log`` in the working directory).  Debian's
    QEMU uses the ``log`` trace backend, for which ``-trace file=FILE`` names the log file.  An
    independent witness of what the emulated device did, e.g. that it took data from its CMB.

The guest runs under software emulation (TCG): nested KVM on the project's machines hangs the
guest kernel. On 2 cores a boot costs 30 s to a few minutes, depending on what else runs.

What the guest needs (QEMU, the tools above, the kernels, virtme-ng) is installed by
``scripts/guest-setup``, which this module calls before each boot; it only looks when everything
is already there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.vm import runtime_image

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "guest-setup"
KERNELS = ("6.1", "6.12")
#: The guest's CPU: QEMU's ``max`` model (what virtme-ng asks for under TCG) without ERMS.  With
#: ERMS the guest's kernel and glibc copy with ``rep movsb``, which TCG emulates one byte per
#: iteration: a 128 KiB copy took 745 µs in user space and 2.7 ms through a pipe, against 99 µs
#: and 0.6 ms with ``rep movsq`` and vector copies.  That made every copy about 7x dearer than
#: the rest of the emulated code, and so skewed any comparison of a target that copies (a
#: user-space target moves each payload across the user/kernel boundary) against one that does
#: not.  QEMU takes the last ``-cpu`` it is given, so this one replaces virtme-ng's.
CPU_MODEL = "max,-erms"
#: Size of the sparse backing file of the ``--cmb-nvme`` controller's namespace.
NVME_MEDIA_BYTES = 1 << 30


class GuestError(RuntimeError):
    """The guest could not be booted: an install step or the kernel is missing."""


@dataclass(frozen=True)
class GuestSpec:
    """One guest boot: which kernel, which devices, which directories, which command."""

    command: tuple[str, ...]
    kernel: str = "6.1"
    cmb_mb: int = 0
    rw_dirs: tuple[Path, ...] = ()
    cwd: Path = field(default_factory=Path.cwd)
    cpus: int = 2
    memory: str = "4G"
    #: QEMU trace event patterns to enable, and the file (on this machine) QEMU writes them to.
    trace: tuple[str, ...] = ()
    trace_file: Path | None = None
    #: Attach the Python runtime's image (:mod:`tests.vm.runtime_image`), built for this boot.
    runtime_image: bool = False

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("no command given")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel {self.kernel!r}: pick one of {', '.join(KERNELS)}")
        if self.cmb_mb < 0:
            raise ValueError(f"CMB size {self.cmb_mb} MiB: must be 0 (none) or more")
        if self.trace and self.trace_file is None:
            raise ValueError("trace events need a trace file")
        for pattern in self.trace:
            if not pattern or any(c in pattern for c in " ,="):
                raise ValueError(f"trace pattern {pattern!r}: one event name or glob")

    @property
    def writable(self) -> tuple[Path, ...]:
        """The directories the guest may write: the working directory first, no repeats."""
        seen: list[Path] = []
        for path in (self.cwd, *self.rw_dirs):
            resolved = path.resolve()
            if resolved not in seen:
                seen.append(resolved)
        return tuple(seen)


def qemu_options(
    spec: GuestSpec, nvme_media: Path | None, runtime: Path | None = None
) -> list[str]:
    """QEMU's options beyond virtme-ng's own: the machine and CPU (:data:`CPU_MODEL`), the CMB
    controller if asked, and the runtime image (read-only, found in the guest by its serial)
    if given."""
    opts = ["-machine", "q35", "-cpu", CPU_MODEL]
    if spec.runtime_image:
        if runtime is None:
            raise ValueError("the runtime image is asked for but was not built")
        opts += [
            "-drive",
            f"file={runtime},if=none,id=nvmfrt,format=raw,readonly=on",
            "-device",
            f"virtio-blk-pci,drive=nvmfrt,serial={runtime_image.SERIAL}",
        ]
    if spec.cmb_mb:
        if nvme_media is None:
            raise ValueError("a CMB controller needs a media file")
        opts += [
            "-device",
            "intel-iommu",
            "-drive",
            f"file={nvme_media},if=none,id=nvm,format=raw",
            "-device",
            f"nvme,serial=cmb0001,drive=nvm,cmb_size_mb={spec.cmb_mb}",
        ]
    for pattern in spec.trace:
        opts += ["-trace", f"enable={pattern}"]
    if spec.trace:
        assert spec.trace_file is not None
        opts += ["-trace", f"file={spec.trace_file.resolve()}"]
    return opts


#: Kernel command-line words for every boot.  ``tsc=reliable``: under TCG the guest's TSC is the
#: host's (invariant, one for all vCPUs), yet the 6.1 kernel's boot-time check marked it
#: unsynchronised on every boot on record (20 of 20) and fell back to the HPET, so that every
#: clock read became a system call and an emulated MMIO access: fio alone reads the clock about 5
#: times per I/O.  No real machine this project targets reads time that way.  With the TSC the
#: kernel target's 4 KiB random reads under fio went from 12.7k to 17.1k IOPS and ours from 5.3k
#: to 6.6k (``bench/run.py --guest tcp --guest-cpus split``, 2026-12-03).
BOOT_APPEND = ("tsc=reliable",)


def kernel_append(spec: GuestSpec) -> list[str]:
    """Extra kernel command-line words: :data:`BOOT_APPEND`, and the IOMMU on (passthrough)
    when the CMB controller is."""
    return [*BOOT_APPEND, *(["intel_iommu=on", "iommu=pt"] if spec.cmb_mb else [])]


def guest_shell_command(spec: GuestSpec) -> str:
    """The shell line the guest runs: change to the working directory, then the command."""
    return f"cd {shlex.quote(str(spec.cwd.resolve()))} && {shlex.join(spec.command)}"


def vng_command(
    spec: GuestSpec,
    vng: Path,
    kernel_image: Path,
    nvme_media: Path | None = None,
    runtime: Path | None = None,
) -> list[str]:
    """The virtme-ng command line that boots ``spec``."""
    argv = [
        str(vng),
        "--run",
        str(kernel_image),
        "--disable-kvm",
        "--user",
        "root",
        "--cpus",
        str(spec.cpus),
        "--memory",
        spec.memory,
    ]
    argv += [f"--rwdir={path}" for path in spec.writable]
    argv += ["--append", " ".join(kernel_append(spec))]
    # virtme-ng hands the options to QEMU through a shell: one string, split on blanks.
    argv.append("--qemu-opts=" + " ".join(qemu_options(spec, nvme_media, runtime)))
    argv += ["--exec", guest_shell_command(spec)]
    return argv


def _version_key(image: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", image.name))


def find_kernel(series: str, boot: Path = Path("/boot")) -> Path:
    """The newest installed kernel image of ``series`` ("6.1" finds vmlinuz-6.1.*, not 6.12)."""
    images = sorted(boot.glob(f"vmlinuz-{series}.*"), key=_version_key)
    if not images:
        raise GuestError(f"no {series} kernel in {boot} (scripts/guest-setup installs it)")
    return images[-1]


def setup(kernel: str = "6.1") -> Path:
    """Install what a guest with ``kernel`` needs (a no-op once done); the ``vng`` to run."""
    args = [str(SETUP)]
    if kernel != "6.1":
        args += ["--kernel", kernel]
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise GuestError(f"{SETUP} failed with status {proc.returncode}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise GuestError(f"{SETUP} did not name the vng launcher")
    return Path(lines[-1])


@contextlib.contextmanager
def _nvme_media(spec: GuestSpec) -> Iterator[Path | None]:
    """A sparse backing file for the CMB controller's namespace, removed after the boot."""
    if not spec.cmb_mb:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="nvmf-guest-") as tmp:
        media = Path(tmp) / "nvme.img"
        with media.open("wb") as f:
            f.truncate(NVME_MEDIA_BYTES)
        yield media


@contextlib.contextmanager
def _runtime(spec: GuestSpec) -> Iterator[Path | None]:
    """The runtime image for this boot, built now (a second or two) and removed after it."""
    if not spec.runtime_image:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="nvmf-runtime-") as tmp:
        try:
            yield runtime_image.build(Path(tmp) / "runtime.sqfs")
        except runtime_image.RuntimeImageError as exc:
            raise GuestError(str(exc)) from exc


def run(
    spec: GuestSpec,
    *,
    stdout: int | IO[str] | None = None,
    stderr: int | IO[str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Boot the guest, run ``spec.command`` in it and return the command's status and output.

    ``stdout``/``stderr`` are as for :func:`subprocess.run` (``None``: this process's own).
    On ``timeout`` the whole guest (virtme-ng and QEMU, one process group) is killed and
    :class:`subprocess.TimeoutExpired` raised.
    """
    vng = setup(spec.kernel)
    kernel_image = find_kernel(spec.kernel)
    env = dict(os.environ)
    # vng starts virtme-run by name: its venv's bin must be on PATH.
    env["PATH"] = f"{vng.parent}{os.pathsep}{env.get('PATH', '')}"
    with _nvme_media(spec) as media, _runtime(spec) as runtime:
        argv = vng_command(spec, vng, kernel_image, media, runtime)
        with subprocess.Popen(
            argv,
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            errors="replace",
            start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except BaseException:
                # A timeout or an interrupt: QEMU must not outlive the run.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def parse_args(argv: Sequence[str], cwd: Path | None = None) -> GuestSpec:
    """The :class:`GuestSpec` of a command line ``[options] -- COMMAND...``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.vm.guest",
        description="Run COMMAND as root in a throw-away Linux guest (see this module's doc).",
    )
    parser.add_argument("--kernel", choices=KERNELS, default="6.1", help="guest kernel series")
    parser.add_argument(
        "--cmb-nvme",
        type=int,
        default=0,
        metavar="MB",
        help="add QEMU's NVMe controller with an MB MiB CMB behind an Intel IOMMU",
    )
    parser.add_argument(
        "--rw",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a directory the guest may write (the working directory always is)",
    )
    parser.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="PATTERN",
        help="enable QEMU trace events matching PATTERN (repeatable)",
    )
    parser.add_argument(
        "--trace-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="where QEMU writes the trace (default: qemu-trace.log in the working directory)",
    )
    parser.add_argument(
        "--runtime-image",
        action="store_true",
        help="attach a read-only image of the project's Python runtime (see the module's doc)",
    )
    parser.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    parser.add_argument("--memory", default="4G", help="guest memory (default 4G)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(list(argv))
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("no command given (put it after --)")
    if args.cmb_nvme < 0:
        parser.error("--cmb-nvme takes a size in MiB")
    work = cwd or Path.cwd()
    trace_file = args.trace_file
    if args.trace and trace_file is None:
        trace_file = work / "qemu-trace.log"
    if trace_file is not None and not args.trace:
        parser.error("--trace-file needs at least one --trace PATTERN")
    for pattern in args.trace:
        if not pattern or any(c in pattern for c in " ,="):
            parser.error(f"--trace {pattern!r}: one event name or glob")
    return GuestSpec(
        command=tuple(command),
        kernel=args.kernel,
        cmb_mb=args.cmb_nvme,
        rw_dirs=tuple(args.rw),
        cwd=work,
        cpus=args.cpus,
        memory=args.memory,
        trace=tuple(args.trace),
        trace_file=trace_file,
        runtime_image=args.runtime_image,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: exit with the guest command's status."""
    spec = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(spec).returncode
    except GuestError as exc:
        print(f"guest: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
