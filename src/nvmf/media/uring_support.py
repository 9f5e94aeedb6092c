"""Whether io_uring can serve media here: the kernel, the ``liburing`` binding, the ring setup.

Kept apart from :mod:`nvmf.media.uring` (which needs asyncio) so that ``nvmf doctor`` can say
what a ``file`` or ``block`` namespace's ``io_engine auto`` will pick without loading the data
path.  The binding is the package index's ``liburing`` (the ``uring`` extra), which says it
needs Linux 6.14 or later; Debian 12's 6.1 and its backports' 6.12 are older, and a kernel can
refuse rings altogether (``kernel.io_uring_disabled``, a seccomp filter).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
from types import ModuleType

#: The oldest kernel the ``liburing`` binding supports (its own statement).
MIN_KERNEL = (6, 14)

_binding: ModuleType | None = None
_problem: str | None = None
_checked = False


def kernel_release(release: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of a kernel release string (default: the running kernel's); (0, 0)
    when it does not start with two numbers."""
    text = release if release is not None else os.uname().release
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def kernel_problem(release: tuple[int, int]) -> str | None:
    """Why a kernel of ``release`` cannot run the binding's rings, or None."""
    major, minor = release
    if release < MIN_KERNEL:
        return (
            f"Linux {major}.{minor}: the liburing binding needs "
            f"{MIN_KERNEL[0]}.{MIN_KERNEL[1]} or later"
        )
    return None


def problem() -> str | None:
    """Why io_uring cannot serve media in this process, or None when it can: the running
    kernel, the package, then the binding loaded and a ring set up in a child
    (:func:`probe_problem`) before the binding is loaded here (checked once per process)."""
    global _binding, _problem, _checked
    if _checked:
        return _problem
    _checked = True
    _problem = kernel_problem(kernel_release()) or package_problem() or probe_problem()
    if _problem is None:
        _binding = importlib.import_module("liburing")
    return _problem


def package_problem() -> str | None:
    """Why the binding cannot be imported here (not installed), or None."""
    if importlib.util.find_spec("liburing") is None:
        return "the liburing package is not installed (pip install 'nvmf[uring]'; x86_64 only)"
    return None


def probe_problem() -> str | None:
    """Load the binding and set up a ring in a child process first: its native code uses
    x86-64-v3 (AVX2, BMI2, MOVBE) and AVX-512 (``zmm`` registers, in ``Ring``'s constructor
    among others), and on a CPU without those (an older server, an AMD EPYC without AVX-512,
    QEMU's default emulated CPU) it kills the process with SIGILL, which nothing in this
    process could catch.  None when the child succeeded."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the liburing probe could not run: {exc}"
    if proc.returncode == 0:
        return None
    if proc.returncode == -signal.SIGILL:
        return (
            "the liburing binding does not run on this CPU (SIGILL: its native code uses "
            "AVX-512 and x86-64-v3's AVX2, BMI2 and MOVBE)"
        )
    if proc.returncode < 0:
        return f"the liburing probe died of signal {-proc.returncode}"
    last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    return f"the liburing probe failed: {last}"


#: What the child of :func:`probe_problem` runs: load the binding, set up and tear down a ring
#: (a refused setup is named: ``kernel.io_uring_disabled``, a seccomp filter).
_PROBE = (
    "import sys, liburing\n"
    "ring = liburing.Ring()\n"
    "try:\n"
    "    liburing.io_uring_queue_init(2, ring)\n"
    "except OSError as exc:\n"
    "    sys.exit(f'io_uring_setup refused: {exc.strerror or exc} (kernel.io_uring_disabled?)')\n"
    "liburing.io_uring_queue_exit(ring)\n"
)


def binding() -> ModuleType | None:
    """The ``liburing`` module once :func:`problem` found nothing against it, else None."""
    return _binding if problem() is None else None
