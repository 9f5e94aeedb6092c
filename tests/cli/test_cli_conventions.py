"""nvme-cli's conventions for the ``nvmf`` command as a whole: ``--version``, help with no
arguments, every ``--help`` renders, a closed pipe is not an error, every error printed once."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from nvmf import __version__
from nvmf.cli.main import EXIT_BROKEN_PIPE, build_parser, main
from tests.cli.tools import REPO, SUBNQN, Target, cli


def _parsers(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """Every parser under ``parser`` with the words that reach it (``["config", "save"]``)."""
    yield [], parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                for words, p in _parsers(child):
                    yield [name, *words], p


ALL_PARSERS = [words for words, _ in _parsers(build_parser())]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nvmf version {__version__}"


def test_no_arguments_prints_help_and_exits_0() -> None:
    out = cli()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: nvmf")
    for command in ("discover", "identify", "list", "bench"):
        assert command in out.stdout
    assert out.stderr == ""


@pytest.mark.parametrize("words", ALL_PARSERS, ids=lambda w: " ".join(w) or "nvmf")
def test_every_help_renders(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*words, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: nvmf")
    assert "option_strings" not in text  # what an unescaped "% r" in a help string renders


def test_help_strings_escape_percent() -> None:
    """argparse formats help with ``%``: a literal percent must be ``%%``."""
    for words, parser in _parsers(build_parser()):
        for action in parser._actions:
            rest = re.sub(r"%%|%\((\w+)\)[sd]", "", action.help or "")
            assert "%" not in rest, f"nvmf {' '.join(words)} {action.option_strings}: {action.help}"


def test_closed_pipe_is_quiet(target: Target) -> None:
    """``nvmf discover | head -1`` when head has gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nvmf.cli.main", "discover", *target.conn()],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_closed_pipe_on_binary_read_is_quiet(target: Target) -> None:
    """``nvmf read`` streams blocks to stdout; a reader that leaves ends it quietly too."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nvmf.cli.main", "read", *target.conn(), "-n", SUBNQN,
             "--length", "1m"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=REPO,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == EXIT_BROKEN_PIPE


@pytest.fixture
def garbage_target() -> Iterator[int]:
    """A TCP server that answers ICReq with bytes that are no NVMe/TCP PDU: the host's queue
    fails with a fatal transport error, which the host library also logs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(128)
                conn.sendall(b"\xff" * 128)
                conn.recv(1)  # until the host hangs up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.close()


@pytest.mark.parametrize("command", ["discover", "identify"])
def test_transport_error_is_printed_once(garbage_target: int, command: str) -> None:
    args = ["-a", "127.0.0.1", "-s", str(garbage_target)]
    if command == "identify":
        args += ["-n", SUBNQN]
    out = cli(command, *args)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"nvmf {command}: ") and "unknown PDU type" in lines[0]


def test_bracketed_ipv6_address_is_refused_with_the_spelling_that_works() -> None:
    out = cli("discover", "-a", "[::1]", "-s", "4420")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "nvmf discover: argument -a/--traddr: '[::1]': write an IPv6 address without brackets, "
        "as nvme-cli takes it: -a ::1 (the port goes in -s)"
    ]
