"""``nvmf config check|show|apply|clear``: output, exit status, one clear line per problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nvmf.config.kernel
from nvmf.cli.main import main
from nvmf.config import ConfigError, parse_config
from nvmf.control.model import default_config
from tests.config.fake_configfs import FakeConfigFs

DATA = Path(__file__).parent / "data"
SUB = "nqn.2024-01.io.nvmf:cli"


def write(tmp_path: Path, obj: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def file_config(tmp_path: Path) -> dict[str, Any]:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    return {
        "subsystems": [
            {
                "nqn": SUB,
                "attr": {"allow_any_host": "1"},
                "namespaces": [{"nsid": 1, "enable": 1, "device": {"path": str(disk)}}],
            }
        ],
        "ports": [
            {
                "portid": 1,
                "addr": {
                    "trtype": "tcp",
                    "adrfam": "ipv4",
                    "traddr": "127.0.0.1",
                    "trsvcid": "4420",
                },
                "subsystems": [SUB],
            }
        ],
    }


def test_check_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, file_config(tmp_path))
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK: 0 hosts, 1 subsystem (1 namespace), 1 port" in out
    assert "port 1: tcp 127.0.0.1:4420" in out


def test_check_invalid_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = file_config(tmp_path)
    obj["ports"][0]["addr"]["traddr"] = "localhost"
    obj["ports"][0]["subsystems"].append("nqn.2024-01.io.nvmf:ghost")
    path = write(tmp_path, obj)
    assert main(["config", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f'{path}: ports[0].addr.traddr: must be an IPv4 address for adrfam ipv4, got "localhost"',
        f'{path}: ports[0].subsystems[1]: unknown subsystem "nqn.2024-01.io.nvmf:ghost" '
        "(not in subsystems[])",
    ]


def test_check_without_path_checks(capsys: pytest.CaptureFixture[str]) -> None:
    tcp = str(DATA / "nvmetcli_tcp.json")
    assert main(["config", "check", tcp]) == 1
    assert "device.path" in capsys.readouterr().err
    assert main(["config", "check", "--no-path-check", tcp]) == 0


def test_show_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert parse_config(shown) == default_config()
    assert shown["subsystems"][0]["namespaces"][0]["nvmf"] == {"kind": "ram", "size": 1 << 30}


def test_show_file_normalizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = file_config(tmp_path)
    obj["subsystems"][0]["namespaces"][0]["nsid"] = "1"  # hand-written: a string
    path = write(tmp_path, obj)
    assert main(["config", "show", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    ns = shown["subsystems"][0]["namespaces"][0]
    assert ns["nsid"] == 1 and ns["device"]["path"] == str(tmp_path / "disk.img")
    assert shown["subsystems"][0]["attr"]["allow_any_host"] == "1"


def test_apply_and_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nvmf.config.kernel, "ConfigFs", FakeConfigFs)
    root = tmp_path / "nvmet"
    FakeConfigFs(str(root))
    path = write(tmp_path, file_config(tmp_path))
    assert main(["config", "apply", str(path), "--configfs", str(root)]) == 0
    assert "applied" in capsys.readouterr().out
    assert (root / "ports/1/subsystems" / SUB).is_symlink()
    assert main(["config", "apply", str(path), "--configfs", str(root)]) == 1
    assert "already has a configuration" in capsys.readouterr().err
    assert main(["config", "apply", str(path), "--configfs", str(root), "--clear"]) == 0
    assert main(["config", "clear", "--configfs", str(root)]) == 0
    assert sorted(p.name for p in (root / "subsystems").iterdir()) == []


def test_apply_refuses_ram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "default.json"
    assert main(["config", "show"]) == 0
    path.write_text(capsys.readouterr().out)
    assert main(["config", "apply", str(path), "--configfs", str(tmp_path)]) == 1
    assert "nvmf.kind: ram namespaces" in capsys.readouterr().err


def test_clear_of_something_else(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "clear", "--configfs", str(tmp_path)]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "is not the nvmet configfs (modprobe nvmet; is configfs mounted on /sys/kernel/config?)"
        )
    )


def test_missing_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config"])
    assert info.value.code == 2
    assert "required: ACTION" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read: No such file or directory"),
        ("{not json", "invalid JSON at line 1 column 2"),
        ('{"hosts": [{"nqn": "a b"}]}', "hosts[0].nqn: must not contain spaces"),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
        ('{"hosts": [], "hosts": []}', 'invalid JSON: duplicate key "hosts" in one object'),
        ('{"hosts": [{"nqn": "x", "nqn": "y"}]}', 'duplicate key "nqn"'),
        (b'{"hosts": [{"nqn": "nqn.2024-01.io.x:\xff"}]}', "cannot read: not UTF-8 text"),
    ],
    ids=["missing", "not JSON", "invalid", "deep", "duplicate", "duplicate inside", "not UTF-8"],
)
def test_bad_file_is_one_line_without_traceback(
    tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert lines[0].startswith(str(path))


def test_deep_value_in_a_field_is_one_problem(capsys: pytest.CaptureFixture[str]) -> None:
    """Nested deeper than the reader can show, but valid JSON: still a one-line message."""
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    obj = {"hosts": [{"nqn": deep}]}
    with pytest.raises(ConfigError) as info:
        parse_config(obj, "deep.json", check_paths=False, warnings=[])
    assert str(info.value).startswith("deep.json: hosts[0].nqn: must be a string")


def test_no_ports_is_a_warning(tmp_path: Path) -> None:
    obj = file_config(tmp_path)
    obj["ports"] = []
    path = write(tmp_path, obj)
    proc = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        f"{path}: ports: warning: there are no ports: the target would serve nothing"
    ]
    assert f"{path}: OK:" in proc.stdout
