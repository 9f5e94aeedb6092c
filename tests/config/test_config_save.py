"""save_config writes atomically, keeps permissions, and refuses what would not load again."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nvmf.config import ConfigError, load_config, save_config
from nvmf.control.model import Namespace, NamespaceMedia, Port, TargetConfig, default_config


def test_new_file_is_private_and_ends_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    save_config(default_config(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    save_config(default_config(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load_config(path) == default_config()


def test_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    save_config(default_config(), path)
    before = path.stat().st_ino
    cfg = default_config()
    cfg.nvmf.queue_depth = 64
    save_config(cfg, path)
    assert path.stat().st_ino != before  # a new file renamed over the old one
    assert load_config(path).nvmf.queue_depth == 64
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.json"
    save_config(default_config(), path)
    old = path.read_text()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    cfg = default_config()
    cfg.nvmf.queue_depth = 64
    with pytest.raises(ConfigError, match="cannot write: No space left on device"):
        save_config(cfg, path)
    assert path.read_text() == old
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_unwritable_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        save_config(default_config(), tmp_path / "missing-dir" / "config.json")


def test_invalid_config_is_not_written(tmp_path: Path) -> None:
    cfg = TargetConfig(ports=[Port(portid=1, subsystems=["nqn.2024-01.io.nvmf:ghost"])])
    path = tmp_path / "config.json"
    with pytest.raises(ConfigError, match=r"ports\[0\]\.subsystems\[0\]: unknown subsystem"):
        save_config(cfg, path)
    assert not path.exists()


def test_media_paths_are_not_checked_on_save(tmp_path: Path) -> None:
    """A configuration for another machine may be saved here."""
    cfg = default_config()
    cfg.subsystems[0].namespaces.append(Namespace(2, path="/dev/disk/elsewhere"))
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json", check_paths=False) == cfg


def test_namespace_nvmf_key_only_when_not_default(tmp_path: Path) -> None:
    cfg = default_config()
    cfg.subsystems[0].namespaces.append(Namespace(2, path="/dev/sdb"))
    cfg.subsystems[0].namespaces.append(
        Namespace(3, path="/dev/sdc", media=NamespaceMedia(direct=True, io_engine="threads"))
    )
    path = tmp_path / "config.json"
    save_config(cfg, path)
    namespaces = json.loads(path.read_text())["subsystems"][0]["namespaces"]
    assert namespaces[0]["nvmf"] == {"kind": "ram", "size": 1 << 30}
    assert "nvmf" not in namespaces[1]
    assert namespaces[2]["nvmf"] == {"direct": True, "io_engine": "threads"}
    assert load_config(path, check_paths=False) == cfg
