"""Local measurements: a target process, client processes, and the target's CPU per I/O.

A :class:`Target` is a server subprocess on loopback: ``nvmf serve`` (a RAM namespace, with
``--workers N`` when asked and supported) or the raw responder (:mod:`rawnvme`).  A
:class:`Clients` is one or more client processes (:mod:`client`), each a connected host with
its own I/O queues.  :func:`measure` reads the target's CPU time (itself and every descendant,
:mod:`procstat`) just before the clients start a workload and just after all of them answered,
so the CPU per I/O it reports is the target's alone, over the I/O phase alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procstat

HERE = Path(__file__).resolve().parent
SUBNQN = "nqn.2024-01.io.nvmf:bench"
NS_BYTES = 256 << 20
#: The target command (``nvmf serve``), before its options.
SERVE = [sys.executable, "-m", "nvmf.cli.main", "serve"]
#: How long a server or client may take to say it is up.
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Workload:
    name: str
    rw: str  # fio's --rw
    bs: int
    iodepth: int

    @property
    def write(self) -> bool:
        return "write" in self.rw


@dataclass
class CpuRun:
    """One workload against one target: what the clients saw and what the target spent."""

    ios: int
    elapsed: float
    iops: float
    mb_s: float
    p50_us: float
    p99_us: float
    #: CPU seconds of the target's main process and of its descendants (workers) in the window.
    cpu_parent: float
    cpu_children: float
    error: str | None = None
    #: CPU seconds of the client processes in the window (to tell who the bottleneck was).
    cpu_clients: float = 0.0

    @property
    def cpu(self) -> float:
        return self.cpu_parent + self.cpu_children

    @property
    def us_per_io(self) -> float:
        return self.cpu / self.ios * 1e6 if self.ios else float("nan")

    @property
    def cpu_load(self) -> float:
        """CPUs the target kept busy (1.0: one core all the time)."""
        return self.cpu / self.elapsed if self.elapsed else 0.0

    @property
    def client_load(self) -> float:
        """CPUs the client processes kept busy."""
        return self.cpu_clients / self.elapsed if self.elapsed else 0.0


def target_config(
    port: int,
    kind: str,
    size: int,
    trtype: str = "tcp",
    traddr: str = "127.0.0.1",
    path: str = "",
    io_engine: str = "auto",
) -> dict[str, Any]:
    """An nvmetcli JSON configuration: subsystem :data:`SUBNQN`, one namespace, one port
    (``path``: the namespace's file, for ``kind`` file, with its ``io_engine``)."""
    media: dict[str, Any] = {"kind": kind, "size": size}
    if io_engine != "auto":
        media["io_engine"] = io_engine
    namespace: dict[str, Any] = {"nsid": 1, "enable": 1, "nvmf": media}
    if path:
        namespace["device"] = {"path": path}
    return {
        "hosts": [],
        "ports": [
            {
                "portid": 1,
                "addr": {"trtype": trtype, "adrfam": "ipv4", "traddr": traddr,
                         "trsvcid": str(port), "treq": "not specified"},
                "subsystems": [SUBNQN],
            }
        ],
        "subsystems": [
            {
                "nqn": SUBNQN,
                "attr": {"allow_any_host": "1", "serial": "nvmfbench01", "model": "nvmf-bench"},
                "namespaces": [namespace],
            }
        ],
    }  # fmt: skip


class _Output:
    """Drains a process's stdout in a thread (a full pipe would stall it), keeping the tail."""

    def __init__(self, proc: subprocess.Popen[str], ready: str) -> None:
        self.lines: deque[str] = deque(maxlen=50)
        self.ready = threading.Event()
        self._want = ready
        self._thread = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self._thread.start()

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if self._want in line:
                self.ready.set()
        self.ready.set()  # EOF: the caller finds the process dead

    @property
    def tail(self) -> str:
        return "".join(self.lines)


@dataclass
class Server:
    """A server subprocess and the TCP port it bound (it was asked for port 0: no other
    process can take the port between choosing it and binding it)."""

    proc: subprocess.Popen[str]
    port: int


#: ``nvmf serve`` prints ``listening on tcp ADDR:PORT (...)``, the raw servers ``listening PORT``.
_PORT = re.compile(r"listening(?: on \S+ \S+:| )(\d+)")


@contextmanager
def server(argv: list[str]) -> Iterator[Server]:
    """A server subprocess bound to port 0, up once it printed the port it listens on; stopped
    after."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _Output(proc, "listening")
        if not out.ready.wait(START_TIMEOUT) or proc.poll() is not None:
            raise RuntimeError(f"{' '.join(argv[1:4])} did not start:\n{out.tail}")
        found = next((m for line in out.lines if (m := _PORT.search(line))), None)
        if found is None:
            raise RuntimeError(f"{' '.join(argv[1:4])} did not say its port:\n{out.tail}")
        yield Server(proc, int(found.group(1)))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Target:
    """A running target: its process ID (whose CPU is measured), port and subsystem NQN."""

    name: str
    pid: int
    port: int
    nqn: str = SUBNQN
    workers: int | None = None


def serve_supports_workers() -> bool:
    """Whether ``nvmf serve`` has the ``--workers`` option (its ``--help`` mentions it)."""
    out = subprocess.run(
        [*SERVE, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "--workers" in out.stdout


@contextmanager
def nvmf_target(
    workers: int | None = None, kind: str = "ram", io_engine: str = "auto"
) -> Iterator[Target]:
    """``nvmf serve`` with a ``kind`` namespace of :data:`NS_BYTES` on a free port (a ``file``
    one in a temporary file, reached through ``io_engine``), with ``--workers`` when ``workers``
    is given (the caller checked the option exists)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "target.json"
        path = str(Path(tmp) / "ns.img") if kind == "file" else ""
        cfg.write_text(
            json.dumps(target_config(4420, kind, NS_BYTES, path=path, io_engine=io_engine))
        )
        argv = [*SERVE, "--config", str(cfg), "--trsvcid", "0"]
        if workers is not None:
            argv += ["--workers", str(workers)]
        with server(argv) as srv:
            name = "nvmf serve" + (f" --workers {workers}" if workers is not None else "")
            yield Target(name, srv.proc.pid, srv.port, workers=workers)


@contextmanager
def raw_target() -> Iterator[Target]:
    """The raw responder (:mod:`rawnvme`) on a free port."""
    argv = [sys.executable, str(HERE / "rawnvme.py"), "0", str(NS_BYTES)]
    with server(argv) as srv:
        yield Target("raw responder", srv.proc.pid, srv.port)


@dataclass
class Clients:
    """``count`` client processes with ``queues`` I/O queues each, connected to ``target``."""

    target: Target
    count: int = 1
    queues: int = 1
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def __enter__(self) -> Clients:
        argv = [
            sys.executable,
            str(HERE / "client.py"),
            str(self.target.port),
            self.target.nqn,
            str(self.queues),
        ]
        try:
            for _ in range(self.count):
                self.procs.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
                    )
                )
            for proc in self.procs:
                line = self._line(proc)
                if not line.startswith("ready"):
                    raise RuntimeError(f"client of {self.target.name} did not connect: {line!r}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def _line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client {proc.pid} exited (status {proc.wait()})")
        return line

    def run(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        """Every client runs ``spec`` at once; their answers."""
        text = json.dumps(spec) + "\n"
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(text)
            proc.stdin.flush()
        return [json.loads(self._line(proc)) for proc in self.procs]


def measure(clients: Clients, w: Workload, runtime: float, jobs: int = 1) -> CpuRun:
    """Run ``w`` on every client (``jobs`` queues each) for ``runtime`` seconds; the clients'
    summed I/Os and IOPS, the worst p50/p99, and the target's CPU time over the run."""
    spec = {
        "rw": w.rw,
        "bs": w.bs,
        "iodepth": w.iodepth,
        "numjobs": jobs,
        "runtime": runtime,
        "size": NS_BYTES,
        "seed": 1,
    }
    pid = clients.target.pid
    client_pids = [proc.pid for proc in clients.procs]
    clients_before = sum(procstat.process_cpu(p) for p in client_pids)
    before = procstat.tree_cpu(pid)
    t0 = time.monotonic()
    answers = clients.run(spec)
    wall = time.monotonic() - t0
    spent = procstat.tree_cpu(pid) - before
    clients_spent = sum(procstat.process_cpu(p) for p in client_pids) - clients_before
    errors = [a["error"] for a in answers if a.get("error")]
    ios = sum(int(a["ios"]) for a in answers)
    return CpuRun(
        ios=ios,
        elapsed=wall,
        iops=sum(float(a.get("iops", 0.0)) for a in answers),
        mb_s=sum(float(a.get("mb_s", 0.0)) for a in answers),
        p50_us=max(float(a.get("p50_us", 0.0)) for a in answers),
        p99_us=max(float(a.get("p99_us", 0.0)) for a in answers),
        cpu_parent=spent.parent,
        cpu_children=spent.children,
        error="; ".join(errors) or None,
        cpu_clients=clients_spent,
    )


def interleaved(
    a: Clients, b: Clients, w: Workload, runtime: float, jobs: int = 1
) -> tuple[CpuRun, CpuRun]:
    r"""``w`` on both targets for ``runtime`` seconds each, in halves in the order A B B A, so
    that a linear drift of this shared machine's speed hits both alike; each target's halves
    :func:`combine`\ d."""
    half = runtime / 2
    first = measure(a, w, half, jobs)
    middle = [measure(b, w, half, jobs) for _ in range(2)]
    last = measure(a, w, half, jobs)
    return combine([first, last]), combine(middle)


def combine(runs: list[CpuRun]) -> CpuRun:
    """Several runs of one workload on one target as one: I/Os, seconds and CPU summed, IOPS and
    bandwidth weighted by each run's length, latency percentiles averaged (an approximation)."""
    ok = [r for r in runs if not r.error] or runs
    elapsed = sum(r.elapsed for r in ok)
    weight = [r.elapsed / elapsed if elapsed else 1 / len(ok) for r in ok]
    return CpuRun(
        ios=sum(r.ios for r in ok),
        elapsed=elapsed,
        iops=sum(r.iops * k for r, k in zip(ok, weight, strict=True)),
        mb_s=sum(r.mb_s * k for r, k in zip(ok, weight, strict=True)),
        p50_us=sum(r.p50_us for r in ok) / len(ok),
        p99_us=sum(r.p99_us for r in ok) / len(ok),
        cpu_parent=sum(r.cpu_parent for r in ok),
        cpu_children=sum(r.cpu_children for r in ok),
        error="; ".join(r.error for r in runs if r.error) or None,
        cpu_clients=sum(r.cpu_clients for r in ok),
    )


def fio_side(text: str, write: bool) -> dict[str, Any] | None:
    """The ``write`` (else ``read``) figures of the first job in fio's JSON output ``text``
    (warnings fio prints before the JSON skipped); None when there is no JSON or the job
    failed."""
    try:
        data = json.loads(text[text.index("{") :])
    except ValueError:
        return None
    job = data["jobs"][0]
    if job.get("error"):
        return None
    side: dict[str, Any] = job["write" if write else "read"]
    return side
