"""``open_media``: the kind comes from configuration or from the path; errors name the nsid."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from nvmf.control.model import Namespace, NamespaceMedia, default_config
from nvmf.media.base import Media, MediaError, MediaHandle
from nvmf.media.block import BlockMedia
from nvmf.media.factory import adopt_media, media_kinds, open_media, register_media_kind
from nvmf.media.file import FileMedia
from nvmf.media.null import NullMedia
from nvmf.media.ram import RamMedia

MiB = 1 << 20


def ns(
    nsid: int = 7,
    path: str = "",
    kind: str | None = None,
    size: int | None = None,
    block_size: int = 512,
) -> Namespace:
    return Namespace(nsid=nsid, path=path, media=NamespaceMedia(kind, size, block_size))


def test_default_config_namespace_is_ram() -> None:
    namespace = default_config().subsystems[0].namespaces[0]
    media = open_media(namespace)
    try:
        assert isinstance(media, RamMedia)
        assert (media.size, media.block_size) == (1 << 30, 512)
    finally:
        media.close()


@pytest.mark.parametrize(("kind", "cls"), [("ram", RamMedia), ("null", NullMedia)])
def test_pathless_kinds(kind: str, cls: type[Media]) -> None:
    media = open_media(ns(kind=kind, size=MiB, block_size=4096))
    try:
        assert isinstance(media, cls)
        assert (media.size, media.block_size) == (MiB, 4096)
    finally:
        media.close()
    with pytest.raises(ValueError, match=rf"namespace 7 .*media kind '{kind}' needs a size"):
        open_media(ns(kind=kind))


def test_file_kind_creates_and_infers(tmp_path: Path) -> None:
    path = str(tmp_path / "ns.img")
    media = open_media(ns(path=path, kind="file", size=2 * MiB))
    assert isinstance(media, FileMedia) and media.size == 2 * MiB
    media.close()
    media = open_media(ns(path=path))  # no kind: a regular file is file media
    assert isinstance(media, FileMedia) and media.size == 2 * MiB
    media.close()


def test_block_kind_inferred_from_a_device(loop_device: Callable[..., tuple[str, Path]]) -> None:
    dev, _ = loop_device(4 * MiB)
    media = open_media(ns(path=dev))
    try:
        assert isinstance(media, BlockMedia)
        assert (media.kind, media.size) == ("block", 4 * MiB)
    finally:
        media.close()


def test_errors_name_the_namespace(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(MediaError) as err:
        open_media(ns(nsid=3, path=missing))
    assert err.value.errno == errno.ENOENT
    assert f"namespace 3 ({missing})" in str(err.value)
    with pytest.raises(MediaError) as err:
        open_media(ns(nsid=4, path=missing, kind="file"))  # no size: nothing to create
    assert err.value.errno == errno.ENOENT
    assert "namespace 4" in str(err.value)
    with pytest.raises(ValueError, match=r"namespace 5 \(no path\): inferring .* needs a device"):
        open_media(ns(nsid=5))
    with pytest.raises(ValueError, match=r"namespace 6 .* 'file' needs a device path"):
        open_media(ns(nsid=6, kind="file", size=MiB))
    with pytest.raises(ValueError, match=rf"namespace 8 \({re.escape(str(tmp_path))}\): .*neither"):
        open_media(ns(nsid=8, path=str(tmp_path)))
    with pytest.raises(ValueError, match=r"namespace 9 .*unknown media kind 'tape'"):
        open_media(ns(nsid=9, kind="tape"))
    with pytest.raises(ValueError, match=r"namespace 10 .*not a block device"):
        (tmp_path / "plain").write_bytes(bytes(4096))
        open_media(ns(nsid=10, path=str(tmp_path / "plain"), kind="block"))


def test_register_a_media_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import nvmf.media.factory as factory

    monkeypatch.setattr(factory, "_OPENERS", dict(factory._OPENERS))
    register_media_kind("tape", lambda n: NullMedia(MiB))
    assert "tape" in media_kinds()
    media = open_media(ns(kind="tape"))
    assert isinstance(media, NullMedia)


# -- adopt_media: the descriptor is the adopter's, whatever happens -----------------------------


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "handle",
    [
        MediaHandle("ram", 1000, 512, False),  # no whole number of blocks
        MediaHandle("ram", MiB, 500, False),  # no block size
        MediaHandle("file", 0, 512, True, "/nowhere"),  # nothing to serve
        MediaHandle("block", MiB + 1, 512, True, "/dev/nowhere"),
        MediaHandle("nvme_pci", MiB, 512, False),  # no worker can serve it
    ],
    ids=["ram-size", "ram-block-size", "file-empty", "block-size", "unknown-kind"],
)
def test_adopt_refuses_a_bad_handle_and_closes_the_descriptor(handle: MediaHandle) -> None:
    """A refused handle raises ValueError and still closes the descriptor it came with (it
    was handed over: nobody else will)."""
    media = RamMedia(MiB)
    try:
        _, shared = media.share()
        assert shared is not None
        fd = os.dup(shared)
        with pytest.raises(ValueError):
            adopt_media(handle, fd)
        assert not _is_open(fd), "the refused descriptor leaked"
    finally:
        media.close()


def test_adopt_refuses_a_memfd_shorter_than_the_namespace() -> None:
    """Mapping past the end of a memfd succeeds and the first access there kills the process
    with SIGBUS: a worker given a handle larger than its memfd must refuse it at once."""
    media = RamMedia(MiB)
    try:
        handle, shared = media.share()
        assert shared is not None
        fd = os.dup(shared)
        with pytest.raises(ValueError, match="less than"):
            adopt_media(dataclasses.replace(handle, size=4 * MiB), fd)
        assert not _is_open(fd)
    finally:
        media.close()


def test_adopting_null_closes_a_descriptor_it_does_not_need() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    adopted = adopt_media(MediaHandle("null", MiB, 512, False), fd)
    assert isinstance(adopted, NullMedia) and adopted.size == MiB
    assert not _is_open(fd)
