"""resolve_media_kind and size parsing: what serves a namespace, and how big it is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nvmf.config import ConfigError, resolve_media_kind
from nvmf.config.values import parse_size
from nvmf.control.model import Namespace, NamespaceMedia


def test_explicit_kind_wins(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 512)
    ns = Namespace(1, path=str(image), media=NamespaceMedia(kind="block"))
    assert resolve_media_kind(ns) == "block"
    assert resolve_media_kind(Namespace(1, media=NamespaceMedia(kind="ram", size=4096))) == "ram"


def test_regular_file_is_file(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 512)
    assert resolve_media_kind(Namespace(1, path=str(image))) == "file"


def test_block_device_is_block(monkeypatch: pytest.MonkeyPatch) -> None:
    real_stat = os.stat

    def fake_stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if path == "/dev/fake-disk":
            return os.stat_result((stat.S_IFBLK | 0o660, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", fake_stat)
    assert resolve_media_kind(Namespace(1, path="/dev/fake-disk")) == "block"


def test_missing_path_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_media_kind(
            Namespace(1, path="/nonexistent/disk"), where="subsystems[0].namespaces[2].device.path"
        )
    assert str(info.value).startswith(
        'subsystems[0].namespaces[2].device.path: "/nonexistent/disk" does not exist'
    )


def test_empty_path_without_kind() -> None:
    with pytest.raises(ConfigError, match=r"device\.path: is required"):
        resolve_media_kind(Namespace(1))


def test_character_device_is_not_media() -> None:
    with pytest.raises(ConfigError, match="must be a regular file or a block device"):
        resolve_media_kind(Namespace(1, path="/dev/null"))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("512K", 512 << 10),
        ("512M", 512 << 20),
        ("1G", 1 << 30),
        ("1g", 1 << 30),
        ("2GiB", 2 << 30),
        ("3 TB", 3 << 40),
        ("1P", 1 << 50),
    ],
)
def test_sizes(text: int | str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1", -1, "1X", True, None, 1.0])
def test_not_sizes(text: object) -> None:
    assert parse_size(text) is None
