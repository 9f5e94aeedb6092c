"""Our host, with DH-HMAC-CHAP, against the Linux kernel target (nvmet) in the guest; one process.

``python -m tests.guest.auth_host_driver PLAN.json LOOPDEV OUT.json``.  Every Python start costs
a minute under the guest's emulation, so one process does it all, the CLI included (called
in-process through :func:`nvmf.cli.main.main`, its output captured):

1. ``nvmf config apply`` of the plan's kernel configuration (hosts with their ``dhchap`` keys,
   the subsystem with namespace 1 on ``LOOPDEV``, an NVMe/TCP and an NVMe/RDMA port); if that
   fails (no Soft-RoCE in this guest), the configuration without the RDMA port;
2. each library case: connect with the case's secrets and two I/O queues, write a pattern
   through each I/O queue and read it back; or, for a case that must be refused, the error;
3. each CLI case (``nvmf identify ...``): exit status, stdout, stderr;
4. ``nvmf config clear``.

Everything lands in OUT.json, including what :mod:`nvmf.host.auth` logged of each queue's
authentication (hash, DH group, whether the controller was authenticated).  The plan holds the
secrets and stays outside ``$OUT``; tests/guest/test_auth_guest.py judges OUT.json and checks
that no secret is in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
import uuid
from typing import Any

from nvmf.cli.main import main as nvmf_main
from nvmf.host import connect

#: Keep Alive Timeout and command timeout, seconds: an emulated guest's Python is slow.
KATO = 30.0
TIMEOUT = 60.0


class _Lines(logging.Handler):
    """The log lines of :mod:`nvmf.host.auth` since the last :meth:`take`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


async def io_case(case: dict[str, Any]) -> dict[str, Any]:
    """Connect with the case's secrets, write and read back through every I/O queue."""
    report: dict[str, Any] = {}
    ctrl = await connect(
        case["addr"],
        case["nqn"],
        trsvcid=case["port"],
        trtype=case["trtype"],
        hostnqn=case["hostnqn"],
        hostid=uuid.UUID(case["hostid"]),
        nr_io_queues=2,
        queue_size=32,
        kato=KATO,
        timeout=TIMEOUT,
        dhchap_secret=case.get("secret") or None,
        dhchap_ctrl_secret=case.get("ctrl_secret") or None,
    )
    async with ctrl:
        report["io_queues"] = len(ctrl.io_queues)
        geo = await ctrl.namespace(1)
        checks: dict[str, bool] = {}
        for qi in range(len(ctrl.io_queues)):
            data = os.urandom(16384)
            slba = (1 << 20) // geo.block_size + qi * (len(data) // geo.block_size)
            nlb = len(data) // geo.block_size
            await ctrl.write(1, slba, nlb, data, queue=qi)
            checks[f"q{qi}"] = bytes(await ctrl.read(1, slba, nlb, queue=qi)) == data
        report["readback"] = checks
    return report


def cli(argv: list[str]) -> dict[str, Any]:
    """``nvmf ARGV`` in this process: exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = nvmf_main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def apply(plan: dict[str, Any], loopdev: str, workdir: str) -> dict[str, Any]:
    """Apply the full configuration, or without the RDMA port when that is refused."""
    tried: dict[str, Any] = {}
    for name in ("config_all", "config_tcp"):
        config = json.loads(json.dumps(plan[name]).replace("LOOPDEV", loopdev))
        path = os.path.join(workdir, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        tried[name] = cli(["config", "apply", path])
        if tried[name]["rc"] == 0:
            tried["applied"] = name
            return tried
    return tried


def main() -> int:
    plan_path, loopdev, out = sys.argv[1:4]
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    lines = _Lines()
    auth_log = logging.getLogger("nvmf.host.auth")
    auth_log.addHandler(lines)
    auth_log.setLevel(logging.DEBUG)
    report: dict[str, Any] = {"apply": apply(plan, loopdev, os.path.dirname(plan_path))}
    cases: dict[str, Any] = {}
    for case in plan["cases"]:
        try:
            result = asyncio.run(io_case(case))
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["auth_log"] = lines.take()
        cases[case["name"]] = result
    report["cases"] = cases
    report["cli"] = {c["name"]: cli(c["argv"]) for c in plan["cli"]}
    report["clear"] = cli(["config", "clear"])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
