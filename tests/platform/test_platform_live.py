"""``nvmf doctor`` on the machine the tests run on: it must answer, not crash.

The development machines and CI have no NVMe controller and no RDMA device; the report must say
so in plain words.  Where a machine does have them, the test checks the report agrees with sysfs.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nvmf.cli.main import main


def _has_nvme() -> bool:
    for path in glob.glob("/sys/bus/pci/devices/*/class"):
        if Path(path).read_text().strip() == "0x010802":
            return True
    return False


def _has_rdma() -> bool:
    return bool(glob.glob("/sys/class/infiniband/*"))


def test_live_report_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    for section in ("Kernel", "NVMe controllers", "RDMA devices", "Queue plan", "Verdicts"):
        assert f"\n{section}\n" in text
    if not _has_nvme():
        assert "none: no PCI function of class 01:08:02 (NVM Express) on this machine" in text
    if not _has_rdma():
        assert "none: /sys/class/infiniband has no devices" in text
        assert "NVMe/RDMA target: no: there is no RDMA device" in text


def test_live_report_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert bool(data["nvme"]) == _has_nvme()
    assert bool(data["rdma"]) == _has_rdma()
    assert data["queues"]["this_machine_cpus"] >= 1


def test_console_script_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout.startswith("nvmf doctor:")


def test_rejects_bad_counts() -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "--host-cpus", "0"])
    with pytest.raises(SystemExit):
        main(["doctor", "-W", "-1"])


def test_live_report_says_whether_pyverbs_imports(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/setup makes Debian's python3-pyverbs visible to the venv; the doctor says
    whether this very interpreter can import it, with what to install when it cannot."""
    assert main(["doctor", "--json"]) == 0
    (rdma,) = [m for m in json.loads(capsys.readouterr().out)["modes"] if "RDMA" in m["mode"]]
    (line,) = [d for d in rdma["details"] if d.startswith("this project: pyverbs:")]
    try:
        import pyverbs.cmid  # noqa: F401
    except ImportError:
        assert "missing" in line and "python3-pyverbs" in line
    else:
        assert "available" in line
