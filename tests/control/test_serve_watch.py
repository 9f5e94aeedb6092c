"""``nvmf serve`` watched and reconfigured from outside, as an operator does it: ``nvmf status``
over the control socket, ``SIGHUP`` and ``nvmf config reload`` after editing the file, ``nvmf
config save``, and the metrics endpoint; a file that does not validate changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nvmf.config import load_config
from tests.target.rawhost import HOSTNQN, RawHost, status_of

SUBNQN = "nqn.2024-01.io.nvmf:watch"


def config(namespaces: int) -> dict[str, Any]:
    """A one-subsystem configuration with ``namespaces`` 4 MiB RAM namespaces."""
    return {
        "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4",
                   "traddr": "127.0.0.1", "trsvcid": "4420"}, "subsystems": [SUBNQN]}],
        "subsystems": [{"nqn": SUBNQN, "attr": {"allow_any_host": "1"},
                        "namespaces": [{"nsid": n, "enable": 1,
                                        "nvmf": {"kind": "ram", "size": "4M"}}
                                       for n in range(1, namespaces + 1)]}],
    }  # fmt: skip


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    config: Path
    socket: str
    log: Path
    port: int
    metrics_port: int

    def output(self) -> str:
        return self.log.read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nvmf.cli.main", *args, "--control-socket", self.socket],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def status(self) -> dict[str, Any]:
        out = self.cli("status", "-o", "json")
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def nsids(self) -> list[int]:
        (sub,) = [s for s in self.status()["subsystems"] if s["nqn"] == SUBNQN]
        return [ns["nsid"] for ns in sub["namespaces"]]


def wait_for(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    path = tmp_path / "target.json"
    path.write_text(json.dumps(config(1)))
    log = tmp_path / "serve.log"
    sock = str(tmp_path / "control.sock")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nvmf.cli.main", "serve", "--config", str(path), "--trsvcid",
             "0", "--workers", "1", "--control-socket", sock, "--metrics-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "metrics on" in log.read_text() or proc.poll() is not None, 120)
        text = log.read_text()
        assert proc.poll() is None, text
        port = int(text.split("listening on tcp 127.0.0.1:")[1].split(" ")[0])
        metrics = int(text.split("metrics on http://127.0.0.1:")[1].split("/")[0])
        yield Serve(proc, path, sock, log, port, metrics)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_status_lists_the_connected_host_and_its_queues(serve: Serve) -> None:
    host = RawHost(("127.0.0.1", serve.port))
    host.initialize()
    assert status_of(host.connect(SUBNQN, kato=5000)).ok
    host.enable()
    status = serve.status()
    (port,) = status["ports"]
    assert port["trsvcid"] == str(serve.port) and port["subsystems"] == [SUBNQN]
    (sub,) = [s for s in status["subsystems"] if s["nqn"] == SUBNQN]
    (ctrl,) = sub["controllers"]
    assert ctrl["hostnqn"] == HOSTNQN and ctrl["kato_ms"] == 5000
    assert ctrl["address"] == f"127.0.0.1:{host.sock.getsockname()[1]}"
    assert [q["qid"] for q in ctrl["queues"]] == [0]
    assert [w["worker"] for w in status["workers"]] == [0]
    text = serve.cli("status")
    assert text.returncode == 0
    assert f"controller {ctrl['cntlid']}: host {HOSTNQN} from {ctrl['address']}" in text.stdout
    assert "queue 0: 32 entries, control plane" in text.stdout
    assert "worker 0 (pid" in text.stdout


def test_sighup_adds_a_namespace_and_a_bad_file_changes_nothing(serve: Serve) -> None:
    assert serve.nsids() == [1]
    serve.config.write_text(json.dumps(config(2)))
    serve.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: serve.nsids() == [1, 2])
    assert f"nvmf: reloaded {serve.config}: namespaces added {SUBNQN}/2" in serve.output()
    bad = config(3)
    bad["subsystems"][0]["namespaces"][2]["nsid"] = 1  # a duplicate NSID
    serve.config.write_text(json.dumps(bad))
    serve.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "refused, nothing changed" in serve.output())
    (line,) = [x for x in serve.output().splitlines() if "refused" in x]
    assert "subsystems[0].namespaces[2].nsid" in line
    assert "Traceback" not in serve.output()
    assert serve.nsids() == [1, 2]


def test_config_reload_reports_what_changed_or_why_not(serve: Serve) -> None:
    serve.config.write_text(json.dumps(config(3)))
    out = serve.cli("config", "reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"reloaded: namespaces added {SUBNQN}/2, {SUBNQN}/3"
    assert serve.nsids() == [1, 2, 3]
    serve.config.write_text('{"subsystems": [{"nqn": 5}]}')
    out = serve.cli("config", "reload")
    assert out.returncode == 1 and "subsystems[0].nqn" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert serve.nsids() == [1, 2, 3]


def test_config_reload_by_pid_signals_the_target(serve: Serve) -> None:
    serve.config.write_text(json.dumps(config(2)))
    out = serve.cli("config", "reload", "--pid", str(serve.proc.pid))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sent SIGHUP to {serve.proc.pid}; the target logs what changed"
    wait_for(lambda: serve.nsids() == [1, 2])


def test_config_reload_of_no_such_pid_says_so() -> None:
    # Above pid_max no process can exist (a reaped child's pid could be reused and signalled).
    missing = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    out = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "config", "reload", "--pid", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == f"nvmf config reload: no process {missing}"


def test_config_save_writes_the_running_configuration(serve: Serve, tmp_path: Path) -> None:
    serve.config.write_text(json.dumps(config(2)))
    assert serve.cli("config", "reload").returncode == 0
    saved = tmp_path / "saved" / "running.json"
    saved.parent.mkdir()
    out = serve.cli("config", "save", str(saved))
    assert out.returncode == 0, out.stderr
    cfg = load_config(saved)
    assert [ns.nsid for ns in cfg.subsystems[0].namespaces] == [1, 2]
    assert cfg.ports[0].trsvcid == str(serve.port)  # the port it got, not "0"
    assert stat_mode(saved) == 0o600
    assert [p.name for p in saved.parent.iterdir()] == ["running.json"]  # no temporary left


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_metrics_endpoint_serves_the_target(serve: Serve) -> None:
    host = RawHost(("127.0.0.1", serve.port))
    host.initialize()
    assert status_of(host.connect(SUBNQN)).ok
    url = f"http://127.0.0.1:{serve.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    assert f'host="{HOSTNQN}"' in text and "nvmf_queue_size{" in text
    assert 'nvmf_worker_up{worker="0"} 1.0' in text


def test_status_without_a_target_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "status", "--control-socket",
         str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("nvmf status: no target control socket at")
    assert len(out.stderr.strip().splitlines()) == 1
