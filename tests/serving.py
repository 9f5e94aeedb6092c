"""``nvmf serve`` as a subprocess for tests that need the real command line and process.

The target binds ports the kernel picks (``--trsvcid 0``) and prints one "listening" line per
port, from which the bound ports are read (no free-port guessing); it runs without a control
socket, which another test's target may hold at the default path.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def nvmf_serve(
    config: Path,
    ports: int = 1,
    *args: str,
    prefix: tuple[str, ...] = (),
    output: list[str] | None = None,
) -> Iterator[dict[str, int]]:
    """Run ``nvmf serve --config CONFIG`` with ``args`` (under the command ``prefix``, such as
    ``setpriv ...``) until the block ends; yields the bound TCP port of each of its ``ports``
    listeners, by address.  ``output`` gets every line the target printed, once it ended."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "nvmf.cli.main", "serve", "--config", str(config),
         "--trsvcid", "0", "--control-socket", "none", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        bound: dict[str, int] = {}
        while len(bound) < ports:
            line = proc.stdout.readline()
            if output is not None:
                output.append(line)
            if not line:
                raise AssertionError(f"nvmf serve exited before listening (status {proc.wait()})")
            if "listening" in line:  # "nvmf: listening on tcp ADDR:PORT (port N: ...)"
                addr, port = line.split(" (")[0].split()[-1].rsplit(":", 1)
                if ":" in addr:  # IPv6, shown as [ADDR]:PORT
                    assert addr.startswith("[") and addr.endswith("]"), line
                    addr = addr[1:-1]
                bound[addr] = int(port)
        yield bound
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if output is not None and proc.stdout is not None:
            output.extend(proc.stdout.read().splitlines(keepends=True))
