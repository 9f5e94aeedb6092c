"""Live loopback capture and Wireshark (``tshark``) decoding for wire-level interop tests.

The peer that judges our bytes is Wireshark's ``nvme-tcp`` dissector, written by others.  This
module installs ``tshark`` when it is missing (Debian, as root), records a real capture of one
TCP port on ``lo`` with ``tshark``'s own capture engine (``dumpcap``), and runs the dissector over
the file.  Nothing here knows NVMe: the tests pick the fields.

Live capture on ``lo`` works as root in our sandbox and CI containers, so there is no socket-level
recording fallback: a capture that cannot start fails the test with ``tshark``'s own message.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from xml.etree import ElementTree

#: Debian packages that provide ``tshark`` (and its capture helper ``dumpcap``).
TSHARK_PACKAGES = ("tshark",)

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def _apt(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args],
        env={**os.environ, **_APT_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ensure_tshark() -> str:
    """Path of ``tshark``, installing the Debian package first if it is missing.

    Raises :class:`RuntimeError` with apt's own output when the install is impossible (not root,
    no apt, no network), so that the test fails saying why instead of being skipped.
    """
    found = shutil.which("tshark")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError("tshark is missing and there is no apt-get to install it with")
    if os.geteuid() != 0:
        raise RuntimeError("tshark is missing and installing it needs root (apt-get)")
    update = _apt(["update", "-q"], timeout=600)
    if update.returncode != 0:
        raise RuntimeError(f"apt-get update failed ({update.returncode}):\n{update.stderr}")
    install = _apt(
        ["install", "-y", "-q", "--no-install-recommends", *TSHARK_PACKAGES], timeout=900
    )
    found = shutil.which("tshark")
    if install.returncode != 0 or not found:
        raise RuntimeError(
            f"apt-get install {' '.join(TSHARK_PACKAGES)} failed ({install.returncode}):\n"
            f"{install.stdout[-2000:]}\n{install.stderr[-2000:]}"
        )
    return found


class LiveCapture:
    """``tshark -i lo -f 'tcp port PORT or udp port PORT' -w PATH`` around a ``with`` block.

    The capture engine starts asynchronously and writes its file in bursts, so both ends are
    synchronised with probes: UDP datagrams to ``127.0.0.1:PORT`` (nothing listens there; the
    filter keeps them, the NVMe/TCP decoding ignores them).  Entering returns once a probe has
    reached the file, i.e. the capture is live; leaving goes on probing and waits until the
    file has been flushed twice since, so every segment sent before is on disk, then stops
    the capture with SIGINT and keeps the engine's final report (packet and drop counts) in
    :attr:`report`.
    """

    def __init__(
        self,
        tshark: str,
        path: Path,
        port: int,
        *,
        iface: str = "lo",
        buffer_mib: int = 256,
        timeout: float = 20.0,
    ) -> None:
        self.tshark = tshark
        self.path = path
        self.port = port
        self.iface = iface
        #: Kernel capture buffer (``-B``): loopback bursts overrun the 2 MiB default.
        self.buffer_mib = buffer_mib
        self.timeout = timeout
        #: Everything the capture process wrote on stderr (its status and final statistics).
        self.report = ""
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._lines.append(line)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _probe(self) -> None:
        self._udp.sendto(b"nvmf-capture-probe", ("127.0.0.1", self.port))

    def _wait_growth(self, times: int) -> bool:
        """Probe until the file has grown ``times`` times; False if it did not in time."""
        deadline = time.monotonic() + self.timeout
        size = self._size()
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            self._probe()
            time.sleep(0.05)
            now = self._size()
            if now != size:
                size = now
                times -= 1
                if times == 0:
                    return True
        return False

    def __enter__(self) -> LiveCapture:
        cmd = [
            self.tshark,
            "-i",
            self.iface,
            "-B",
            str(self.buffer_mib),
            "-f",
            f"tcp port {self.port} or udp port {self.port}",
            "-w",
            str(self.path),
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._proc = proc
        self._reader = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True)
        self._reader.start()
        # The file appears with its header, then grows when the first probe is flushed.
        deadline = time.monotonic() + self.timeout
        while self._size() == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._size() == 0 or not self._wait_growth(1):
            self._stop()
            raise RuntimeError(
                f"live capture on {self.iface} did not start ({' '.join(cmd)}):\n{self.report}"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        flushed = self._wait_growth(2)
        self._stop()
        if not flushed and exc is None:
            raise RuntimeError(f"live capture did not flush its last packets:\n{self.report}")

    def _stop(self) -> None:
        self._udp.close()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        self.report = "".join(self._lines)
        self._proc = None


def tshark_fields(
    tshark: str,
    pcap: Path,
    decode_as: Sequence[str],
    fields: Sequence[str],
    *,
    prefs: Sequence[str] = (),
    display_filter: str | None = None,
) -> list[dict[str, list[str]]]:
    """Decode ``pcap`` and return, per packet shown, every occurrence of each field.

    ``decode_as`` are ``-d`` arguments (``tcp.port==N,nvme-tcp``), ``prefs`` ``-o`` arguments.
    A field absent from a packet maps to ``[]``; a packet carrying three PDUs of one protocol
    gives three values for that protocol's fields.
    """
    cmd = [tshark, "-n", "-r", str(pcap)]
    for d in decode_as:
        cmd += ["-d", d]
    for p in prefs:
        cmd += ["-o", p]
    if display_filter:
        cmd += ["-Y", display_filter]
    cmd += ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=;"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    rows: list[dict[str, list[str]]] = []
    for line in out.stdout.splitlines():
        cells = line.split("\t")
        cells += [""] * (len(fields) - len(cells))
        rows.append({f: c.split(";") if c else [] for f, c in zip(fields, cells, strict=True)})
    return rows


def tshark_shownames(tshark: str, pcap: Path, decode_as: Sequence[str], field: str) -> list[str]:
    """Decode ``pcap`` and return how the dissector shows every occurrence of ``field``, in
    order: its ``showname`` (``"Status Code: 0x16 (SGL Offset Invalid)"``), which names a value
    where ``-T fields`` gives only the number."""
    cmd = [tshark, "-n", "-r", str(pcap)]
    for d in decode_as:
        cmd += ["-d", d]
    cmd += ["-T", "pdml", "-Y", field]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    root = ElementTree.fromstring(out.stdout)
    return [str(f.get("showname", "")) for f in root.iter("field") if f.get("name") == field]
