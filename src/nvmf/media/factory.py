"""Open a namespace's media from its configuration (:class:`~nvmf.control.model.Namespace`).

``ns.media.kind`` picks the media type; when it is None the type follows ``ns.path``: a regular
file is ``file``, a block device ``block``.  Other media types join with
:func:`register_media_kind` instead of an edit here; those that ship with the project but serve
hardware only some machines have (the userspace NVMe driver) are named in :data:`MODULES` by
module path and imported the first time a namespace asks for them, as transports are.  Every
failure is a :class:`~nvmf.media.base.MediaError` (the system said no: ``errno`` kept) or a
``ValueError`` (the configuration is wrong), with a message naming the namespace's nsid and
path.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import stat
from collections.abc import Callable
from typing import Protocol, TypeAlias

from nvmf.media.base import Media, MediaError, MediaHandle, close_descriptors
from nvmf.media.block import BlockMedia
from nvmf.media.file import FileMedia
from nvmf.media.null import NullMedia, check_geometry
from nvmf.media.ram import RamMedia


class MediaSettings(Protocol):
    """What the factory reads of a namespace's media settings (``control.model.NamespaceMedia``
    has them all); a protocol, so the media layer imports nothing from the control plane."""

    @property
    def kind(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def block_size(self) -> int: ...
    @property
    def direct(self) -> bool: ...
    @property
    def io_engine(self) -> str: ...


class Namespace(Protocol):
    """What the factory reads of a namespace (``control.model.Namespace`` has it all)."""

    @property
    def nsid(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def media(self) -> MediaSettings: ...


#: Opens one media kind for a namespace; raises ``MediaError`` or ``ValueError``.
Opener: TypeAlias = Callable[[Namespace], Media]
#: Serves, in a worker, a medium of a registered kind from its handle and descriptors (owned
#: by the adopter from then on, closed by it on failure too).
Adopter: TypeAlias = Callable[[MediaHandle, list[int]], Media]


def _open_ram(ns: Namespace) -> Media:
    return RamMedia(_need_size(ns), ns.media.block_size)


def _open_null(ns: Namespace) -> Media:
    return NullMedia(_need_size(ns), ns.media.block_size)


def _open_file(ns: Namespace) -> Media:
    _need_path(ns)
    return FileMedia(
        ns.path,
        size=ns.media.size,
        block_size=ns.media.block_size,
        direct=ns.media.direct,
        io_engine=ns.media.io_engine,
    )


def _open_block(ns: Namespace) -> Media:
    """The device's logical block size wins over a smaller configured one (the 512 default)."""
    _need_path(ns)
    return BlockMedia(
        ns.path,
        block_size=ns.media.block_size,
        direct=ns.media.direct,
        io_engine=ns.media.io_engine,
    )


_OPENERS: dict[str, Opener] = {
    "ram": _open_ram,
    "null": _open_null,
    "file": _open_file,
    "block": _open_block,
}


#: Media kinds whose module registers them when imported (on first use): kind -> module.
MODULES: dict[str, str] = {
    "nvme_pci": "nvmf.media.nvme_pci",
}


_ADOPTERS: dict[str, Adopter] = {}


def register_media_kind(kind: str, opener: Opener, adopter: Adopter | None = None) -> None:
    """Make ``kind`` openable by :func:`open_media` (replacing any opener it had) and, with
    ``adopter``, servable by workers through :func:`adopt_shared`."""
    _OPENERS[kind] = opener
    if adopter is not None:
        _ADOPTERS[kind] = adopter


def media_kinds() -> list[str]:
    """The media types :func:`open_media` knows, sorted."""
    return sorted(set(_OPENERS) | set(MODULES))


def _load(kind: str, registry: dict[str, Opener] | dict[str, Adopter]) -> None:
    """Import the module of ``kind`` when it registers on import and has not yet filled
    ``registry`` (its openers or its adopters)."""
    if kind not in registry and kind in MODULES:
        importlib.import_module(MODULES[kind])


def _opener(kind: str) -> Opener | None:
    """The opener of ``kind``, importing its module first when it registers on import."""
    _load(kind, _OPENERS)
    return _OPENERS.get(kind)


def open_media(ns: Namespace) -> Media:
    """Open the storage of namespace ``ns``; the caller closes it."""
    where = f"namespace {ns.nsid} ({ns.path or 'no path'})"
    try:
        kind = ns.media.kind or _infer_kind(ns)
        opener = _opener(kind)
        if opener is None:
            raise ValueError(f"unknown media kind {kind!r} (known: {', '.join(media_kinds())})")
        return opener(ns)
    except MediaError as exc:
        raise MediaError(exc.errno, f"{where}: {exc.strerror}", exc.filename) from exc
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def adopt_media(handle: MediaHandle, fd: int | None) -> Media:
    """Serve, in this process, a medium another process opened and shared
    (:meth:`~nvmf.media.base.Media.share`); ``fd`` is the descriptor received with it, owned
    here from now on: closed here too when the handle is refused (``ValueError``)."""
    try:
        _check_shared(handle, fd)
    except BaseException:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    if handle.kind == "null":
        if fd is not None:
            os.close(fd)  # nothing to serve it with
        return NullMedia(handle.size, handle.block_size)
    assert fd is not None
    if handle.kind == "ram":
        return RamMedia.adopt(handle, fd)
    if handle.kind == "file":
        return FileMedia.adopt(handle, fd)
    return BlockMedia.adopt(handle, fd)


def adopt_shared(handle: MediaHandle, fds: list[int]) -> Media:
    """:func:`adopt_media` for a handle sent with any number of descriptors: a registered
    kind's adopter takes them all; the built-in kinds take at most one (extras are closed)."""
    try:
        _load(handle.kind, _ADOPTERS)
    except BaseException:
        close_descriptors(fds)
        raise
    adopter = _ADOPTERS.get(handle.kind)
    if adopter is not None:
        return adopter(handle, fds)
    close_descriptors(fds[1:])
    return adopt_media(handle, fds[0] if fds else None)


def _check_shared(handle: MediaHandle, fd: int | None) -> None:
    """Refuse a handle no medium can be served from, before anything takes ``fd``."""
    if handle.kind not in ("null", "ram", "file", "block"):
        raise ValueError(f"media kind {handle.kind!r} cannot be served by a worker")
    check_geometry(handle.size, handle.block_size)
    if handle.kind == "null":
        return
    if fd is None:
        raise ValueError(f"media kind {handle.kind!r} needs the descriptor it was shared with")
    if handle.kind == "ram":
        # Mapping past the end of the memfd works, and then the first access there is SIGBUS.
        have = os.fstat(fd).st_size
        if have < handle.size:
            raise ValueError(
                f"the shared RAM namespace holds {have} bytes, less than its {handle.size}"
            )


def path_kind(path: str) -> str | None:
    """What is at ``path`` for serving: ``file``, ``block``, ``other``, or None when nothing.

    The one place the project decides this; configuration validation asks it too.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:
        return "other"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISBLK(mode):
        return "block"
    return "other"


def _infer_kind(ns: Namespace) -> str:
    """``file`` or ``block`` from what ``ns.path`` is."""
    _need_path(ns)
    kind = path_kind(ns.path)
    if kind is None:
        raise MediaError(errno.ENOENT, "no such file or device", ns.path)
    if kind == "other":
        raise ValueError("the path is neither a regular file nor a block device; set a media kind")
    return kind


def _need_path(ns: Namespace) -> None:
    if not ns.path:
        what = f"media kind {ns.media.kind!r}" if ns.media.kind else "inferring the media kind"
        raise ValueError(f"{what} needs a device path")


def _need_size(ns: Namespace) -> int:
    """The configured size; ``ram`` and ``null`` have no other source for it."""
    if ns.media.size is None:
        raise ValueError(f"media kind {ns.media.kind!r} needs a size")
    return ns.media.size
