"""Whether io_uring can serve media here: the kernel, the ``liburing`` binding, the ring setup.

Kept apart from :mod:`nvmf.media.uring` (which needs asyncio) so that ``nvmf doctor`` can say
what a ``file`` or ``block`` namespace's ``io_engine auto`` will pick without loading the data
path.  The binding is the package index's ``liburing`` (the ``uring`` extra), which says it
needs Linux 6.14 or later; Debian 12's 6.1 and its backports' 6.12 are older, and a kernel can
refuse rings altogether (``kernel.io_uring_disabled``, a seccomp filter).
"""

from __future__ import annotations

import importlib
import os
import re
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
    kernel, then the package, then a ring of two entries set up and torn down (checked once)."""
    global _binding, _problem, _checked
    if _checked:
        return _problem
    _checked = True
    _problem = kernel_problem(kernel_release())
    if _problem is not None:
        return _problem
    try:
        module = importlib.import_module("liburing")
    except ImportError:
        _problem = "the liburing package is not installed (pip install 'nvmf[uring]')"
        return _problem
    ring = module.Ring()
    try:
        module.io_uring_queue_init(2, ring)
    except OSError as exc:
        _problem = f"io_uring_setup refused: {exc.strerror or exc} (kernel.io_uring_disabled?)"
        return _problem
    module.io_uring_queue_exit(ring)
    _binding = module
    return None


def binding() -> ModuleType | None:
    """The ``liburing`` module once :func:`problem` found nothing against it, else None."""
    return _binding if problem() is None else None
