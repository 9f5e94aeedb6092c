"""nvmetcli's own example files load, with warnings where the kernel is laxer than the spec.

``data/nvmetcli/`` holds ``tcp.json``, ``rdma.json``, ``loop.json`` and ``fc.json`` exactly as
the nvmetcli repository ships them (github.com/linux-nvme/nvmetcli, ``tcp.json`` at the top and
the others in ``examples/``).  They name subsystems and hosts ``testnqn``, ``nvmet-always`` and
``hostnqn``, which the Linux target accepts although they are not NQNs: loading them warns.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nvmf.cli.main import main
from nvmf.config import ConfigError, Problem, load_config, parse_config
from nvmf.config.values import SERVED_TRTYPES
from nvmf.transport.base import REGISTRY

EXAMPLES = Path(__file__).parent / "data" / "nvmetcli"
NAMES = ("tcp", "rdma", "loop", "fc")


def load(name: str) -> tuple[Any, list[Problem]]:
    warnings: list[Problem] = []
    cfg = load_config(EXAMPLES / f"{name}.json", check_paths=False, warnings=warnings)
    return cfg, warnings


@pytest.mark.parametrize("name", NAMES)
def test_example_loads(name: str) -> None:
    cfg, warnings = load(name)
    assert cfg.subsystems and cfg.ports
    nqn_warnings = [w for w in warnings if w.path.endswith(".nqn")]
    assert nqn_warnings, "testnqn-style names are not NQNs: a warning each"
    assert all("is not an NQN" in w.message for w in nqn_warnings)


def test_tcp_example_means_what_it_says() -> None:
    cfg, warnings = load("tcp")
    assert cfg.subsystems[0].nqn == "nvmet-always"
    assert cfg.ports[0].subsystems == ["nvmet-always"]
    assert [w.path for w in warnings] == ["subsystems[0].nqn"]


def test_unserved_trtype_is_one_warning_naming_it() -> None:
    _, warnings = load("fc")
    port_warnings = [w for w in warnings if w.path.startswith("ports[")]
    assert len(port_warnings) == 1
    assert port_warnings[0].path == "ports[0].addr.trtype"
    assert "does not serve trtype fc" in port_warnings[0].message


def test_served_trtypes_are_the_transport_registry() -> None:
    assert sorted(SERVED_TRTYPES) == sorted(REGISTRY)


@pytest.mark.parametrize("name", ["loop", "rdma"])
def test_served_example_port_has_no_trtype_warning(name: str) -> None:
    _, warnings = load(name)
    assert not [w for w in warnings if w.path.startswith("ports[")]


def test_warnings_are_logged_when_not_collected(caplog: pytest.LogCaptureFixture) -> None:
    load_config(EXAMPLES / "loop.json", check_paths=False)
    assert any("subsystems[0].nqn" in r.getMessage() for r in caplog.records)
    assert all(r.levelname == "WARNING" for r in caplog.records)


def test_nqn_hard_limits_stay_errors() -> None:
    obj = copy.deepcopy(json.loads((EXAMPLES / "loop.json").read_text()))
    obj["subsystems"][0]["nqn"] = "test nqn"
    with pytest.raises(ConfigError, match=r"subsystems\[0\]\.nqn: must not contain spaces"):
        parse_config(obj, check_paths=False, warnings=[])


def test_uuid_nqn_without_uuid_warns() -> None:
    obj = {"hosts": [{"nqn": "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid"}]}
    warnings: list[Problem] = []
    parse_config(obj, check_paths=False, warnings=warnings)
    assert warnings[0].path == "hosts[0].nqn"
    assert "should end in a UUID" in warnings[0].message


@pytest.mark.parametrize("name", NAMES)
def test_check_prints_warning_lines_and_exits_0(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = EXAMPLES / f"{name}.json"
    assert main(["config", "check", "--no-path-check", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"{path}: OK:" in captured.out
    lines = captured.err.splitlines()
    assert lines and all(line.startswith(f"{path}: ") and ": warning: " in line for line in lines)
