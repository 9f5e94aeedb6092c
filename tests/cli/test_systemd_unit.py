"""The shipped systemd unit (contrib/systemd/nvmf.service) runs a command line this CLI accepts,
with the service properties the README promises."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from nvmf.cli.main import build_parser

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "nvmf.service"


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_exec_start_is_an_nvmf_serve_command_line_with_the_config() -> None:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert Path(argv[0]).name == "nvmf"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.config == "/etc/nvmf/config.json"


def test_restarts_on_failure_reloads_by_sighup_and_may_lock_memory() -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"].split()[-2:] == ["-HUP", "$MAINPID"]
    assert service["LimitMEMLOCK"] == "infinity"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
