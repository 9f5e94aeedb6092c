"""The placement bench's own parts (``bench/placement.py``): the configurations it gives the
target are valid nvme_pci configurations by our own validator; the bytes it reports as staged
come from a running target's real status; fio's JSON is read as fio writes it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import placement

from nvmf.config.load import parse_config
from nvmf.control.model import NamespaceMedia, TargetConfig
from nvmf.control.status import target_status
from nvmf.host import connect
from tests.target.conftest import SUBNQN, running_target


def test_both_configurations_are_nvme_pci_with_their_placement() -> None:
    for where in ("dram", "cmb"):
        text = json.dumps(placement.target_config(where)).replace("@BDF@", "0000:00:0a.0")
        cfg = parse_config(json.loads(text), f"{where}.json", check_paths=False)
        (ns,) = cfg.subsystems[0].namespaces
        assert ns.path == "0000:00:0a.0"
        assert (ns.media.kind, ns.media.sq_placement, ns.media.staging_placement) == (
            "nvme_pci",
            where,
            where,
        )


def test_the_script_runs_every_job_on_every_run() -> None:
    text = placement.script(2.0)
    for run in placement.RUNS:
        for i in range(len(placement.JOBS)):
            assert f'--output="$OUT/{run}-{i}.json"' in text
    assert text.count("nvmf.cli.main serve --workers 2") == 2
    assert text.rstrip().endswith('echo done > "$OUT/done.txt"')


def test_staged_bytes_are_summed_over_the_control_plane_and_every_worker(tmp_path: Path) -> None:
    """A file namespace stages every payload in DRAM (a RAM one moves data in place)."""
    payload = os.urandom(128 * 1024)

    def on_a_file(cfg: TargetConfig) -> None:
        ns = cfg.subsystems[0].namespaces[0]
        ns.path = str(tmp_path / "ns1.img")
        ns.media = NamespaceMedia(kind="file", size=8 << 20)

    async def io(port: int) -> None:
        ctrl = await connect("127.0.0.1", SUBNQN, trsvcid=port, nr_io_queues=2)
        async with ctrl:
            for queue in (0, 1):
                await ctrl.write(1, 256 * queue, len(payload) // 512, payload, queue=queue)
                back = bytearray(len(payload))
                await ctrl.read(1, 256 * queue, len(payload) // 512, back, queue=queue)
                assert back == payload

    with running_target(2, edit=on_a_file) as running:
        asyncio.run(io(running.addr[1]))
        status = asyncio.run_coroutine_threadsafe(
            target_status(running.service), running.loop
        ).result(10)
    dram, cmb = placement.staged(status)
    assert (dram, cmb) == (4 * len(payload), 0)


FIO = """note: both iodepth and numjobs set
{"fio version": "fio-3.33", "jobs": [{"jobname": "cmb-1", "error": 0,
 "read": {"iops": 0, "bw_bytes": 0, "clat_ns": {}},
 "write": {"iops": 812.5, "bw_bytes": 3328000,
           "clat_ns": {"percentile": {"50.000000": 9240000, "99.000000": 19000000}}}}]}"""


def test_fio_json_after_a_warning_line() -> None:
    result = placement.parse_fio(FIO, write=True)
    assert result == placement.Result(812.5, 3.328, 9240.0)
    assert placement.parse_fio("fio: no JSON at all", write=True) is None
    failed = FIO.replace('"error": 0', '"error": 5')
    assert placement.parse_fio(failed, write=True) is None
