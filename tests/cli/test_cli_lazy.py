"""``nvmf`` imports only the module of the sub-command it runs (:data:`nvmf.cli.main.ENTRY`):
every call in the emulated guest paid for importing the whole target, host and cryptography
before this."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nvmf.cli.main import COMMANDS, ENTRY, build_parser, command_named
from tests.cli.tools import REPO


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (so ``sys.modules`` shows what it imported)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}/src"},
        timeout=60,
    )


def _registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"nvmf.cli.{module}").register(sub)
    return set(sub.choices)


@pytest.mark.parametrize("module", COMMANDS)
def test_entry_names_exactly_what_each_module_registers(module: str) -> None:
    assert {name for name, m in ENTRY.items() if m == module} == _registered(module)


def test_the_command_is_the_first_word_that_is_not_an_option() -> None:
    assert command_named(["config", "check", "x.json"]) == "config"
    assert command_named(["-h"]) is None
    assert command_named(["--version"]) is None
    assert command_named(["confgi", "check"]) is None  # argparse's full error then
    assert command_named(["discover", "-a", "127.0.0.1"]) == "discover"


def test_one_command_parser_parses_as_the_full_one() -> None:
    argv = ["read", "-a", "127.0.0.1", "-n", "nqn.x", "--slba", "8", "--nlb", "1"]
    full = vars(build_parser().parse_args(argv))
    one = vars(build_parser("read").parse_args(argv))
    assert full == one


def test_config_check_loads_neither_the_target_nor_the_host(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"hosts": [], "ports": [], "subsystems": []}))
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['nvmf', 'config', 'check', {str(cfg)!r}]\n"
        "try:\n"
        "    runpy.run_module('nvmf.cli.main', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('nvmf.')))\n"
    )
    out = _python(probe)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.strip().splitlines()[-1]
    for heavy in (
        "nvmf.control.service",
        "nvmf.offload.worker",
        "nvmf.host.queue",
        "nvmf.cli.serve",
    ):
        assert f"'{heavy}'" not in loaded, heavy
    assert "'nvmf.cli.config'" in loaded


@pytest.mark.parametrize("module", ["nvmf.cli.serve", "nvmf.offload.worker", "nvmf.cli.host"])
def test_no_digest_or_metrics_library_is_loaded_before_it_is_used(module: str) -> None:
    """crc32c (its ``__init__`` reads ``importlib.metadata``, which imports ``email``) loads when
    digests may be due (a target's NVMe/TCP transport starts, a host asks for a digest) and
    prometheus_client with the metrics endpoint: each costs seconds per process in the guest,
    and most host commands use neither."""
    probe = (
        f"import sys, {module}\n"
        "print([m for m in ('crc32c', 'prometheus_client', 'importlib.metadata') "
        "if m in sys.modules])\n"
        "from nvmf.wire.tcp import crc32c\n"
        "assert crc32c(b'123456789') == 0xE3069283  # the CRC-32C check value\n"
    )
    out = _python(probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_target_loads_the_digest_library_when_its_tcp_transport_starts() -> None:
    """Not at the first digest: importing crc32c there stalled an I/O queue's Connect for
    seconds in the guest while its controller's Keep Alive Timer ran (the Linux host sends no
    Keep Alive before its I/O queues are up), and the controller was deleted."""
    probe = (
        "import sys\n"
        "from nvmf.transport.tcp import TcpTransport\n"
        "before = 'crc32c' in sys.modules\n"
        "TcpTransport()\n"
        "print(before, 'crc32c' in sys.modules)\n"
    )
    out = _python(probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False True"


def test_status_asks_the_target_without_an_event_loop() -> None:
    """``nvmf status`` is a socket request: asyncio (6 s per process in the guest) stays out."""
    out = _python("import sys, nvmf.cli.status; print('asyncio' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_doctor_loads_no_host_library() -> None:
    """``nvmf doctor`` shares only argument types with the host commands: the host library
    (asyncio, cryptography) stays out, as in the guest each doctor call paid for it."""
    out = _python(
        "import sys, nvmf.cli.doctor\n"
        "print([m for m in ('nvmf.host', 'asyncio', 'cryptography') if m in sys.modules])"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["nvmf.cli.config", "nvmf.cli.serve", "nvmf.cli.host"])
def test_cryptography_loads_with_the_first_authentication(module: str) -> None:
    """The config validator reads DHHC-1 secrets (base64 and CRC) and the host and target
    import the DH-HMAC-CHAP module, but cryptography itself loads only when a transaction
    computes: every ``nvmf config``/``serve``/host call in the guest paid seconds for it."""
    out = _python(f"import sys, {module}; print('cryptography' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
