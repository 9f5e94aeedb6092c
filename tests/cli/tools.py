"""What the CLI tests share: the test target's names, where it listens, and running ``nvmf``."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUBNQN = "nqn.2024-01.io.nvmf:cli-tests"
SERIAL = "clitest01"
MODEL = "nvmf-cli-test"


def ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here (a container may have IPv6 off)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """Where the test target listens."""

    v4: int
    v6: int | None

    def conn(self, *, v6: bool = False) -> list[str]:
        """nvme-cli's ``-a -s`` for one of the ports."""
        if v6:
            assert self.v6 is not None
            return ["-a", "::1", "-s", str(self.v6)]
        return ["-a", "127.0.0.1", "-s", str(self.v4)]


def cli(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``nvmf ARGS`` as a user runs it (``python -m nvmf.cli.main``); text output."""
    return subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
