"""The host against this project's target (``nvmf serve`` in a subprocess) on loopback TCP.

One target for the module, started from an nvmetcli JSON file on a free port: subsystem
:data:`SUBNQN` with a 64 MiB RAM namespace of 512-byte blocks (nsid 1) and a 16 MiB one of
4096-byte blocks (nsid 2).  The library checks write/read-back integrity from 512 B to 1 MiB with
every digest combination, many concurrent commands on several queues, the admin API, discovery
and identify; the CLI checks go through ``python -m nvmf.cli.main`` like a user would.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nvmf.host import NvmeError, connect, discover
from nvmf.host.bench import BenchSpec, run_bench
from nvmf.wire.identify import CTRATT_TBKAS
from nvmf.wire.status import SC
from tests.serving import nvmf_serve

T = TypeVar("T")
SUBNQN = "nqn.2024-01.io.nvmf:host-loopback"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:7d4c2a51-0c1e-4f53-9a43-5f7e0e1f2b3c"
SIZES = [512, 1024, 4096, 8192, 8704, 65536, 131072, 1 << 20]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``nvmf serve --config --trsvcid 0``; yields the port it bound."""
    config = {
        "hosts": [],
        "ports": [
            {
                "portid": 1,
                "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                         "trsvcid": "4420", "treq": "not specified"},
                "subsystems": [SUBNQN],
            }
        ],
        "subsystems": [
            {
                "nqn": SUBNQN,
                "attr": {"allow_any_host": "1", "serial": "hostloop01", "model": "nvmf-loop"},
                "namespaces": [
                    {"nsid": 1, "enable": 1, "nvmf": {"kind": "ram", "size": "64M"}},
                    {"nsid": 2, "enable": 1,
                     "nvmf": {"kind": "ram", "size": "16M", "block_size": 4096}},
                ],
            }
        ],
        "nvmf": {"max_io_queues": 4},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("target") / "target.json"
    path.write_text(json.dumps(config))
    with nvmf_serve(path) as ports:
        yield ports["127.0.0.1"]


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


# -- library ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hdgst", "ddgst"), [(False, False), (True, True), (True, False)])
def test_write_read_back_every_size(target: int, hdgst: bool, ddgst: bool) -> None:
    async def main() -> None:
        async with await connect(
            "127.0.0.1", SUBNQN, trsvcid=target, hostnqn=HOSTNQN, nr_io_queues=2,
            hdr_digest=hdgst, data_digest=ddgst,
        ) as ctrl:  # fmt: skip
            assert all(q.digests == (hdgst, ddgst) for q in ctrl.io_queues)
            rng = random.Random(len(SIZES) + hdgst * 2 + ddgst)
            slba = 1000
            for size in SIZES:
                data = rng.randbytes(size)
                await ctrl.write(1, slba, size // 512, data)
                back = await ctrl.read(1, slba, size // 512)
                assert back == data, f"{size} bytes at LBA {slba}"
                slba += size // 512 + 7

    run(main())


def test_many_concurrent_commands_on_several_queues(target: int) -> None:
    async def main() -> None:
        async with await connect(
            "127.0.0.1", SUBNQN, trsvcid=target, nr_io_queues=3, queue_size=32
        ) as ctrl:
            assert len(ctrl.io_queues) == 3
            rng = random.Random(7)
            blocks = {lba: rng.randbytes(4096) for lba in range(0, 400 * 8, 8)}
            await asyncio.gather(*(ctrl.write(1, lba, 8, d) for lba, d in blocks.items()))
            backs = await asyncio.gather(*(ctrl.read(1, lba, 8) for lba in blocks))
            assert list(backs) == list(blocks.values())
            assert all(q.outstanding == 0 for q in ctrl.io_queues)

    run(main())


def test_4k_namespace_and_admin_api(target: int) -> None:
    async def main() -> None:
        async with await connect("127.0.0.1", SUBNQN, trsvcid=target, nr_io_queues=1) as ctrl:
            assert await ctrl.active_namespaces() == [1, 2]
            ns2 = await ctrl.identify_namespace(2)
            assert 1 << ns2.lba_format.lbads == 4096 and ns2.nsze == 4096
            data = os.urandom(3 * 4096)
            await ctrl.write(2, 10, 3, data, fua=True)
            assert await ctrl.read(2, 10, 3) == data
            assert await ctrl.compare(2, 10, 3, data)
            assert not await ctrl.compare(2, 10, 3, bytes(len(data)))
            await ctrl.write_zeroes(2, 11, 1)
            assert await ctrl.read(2, 10, 3) == data[:4096] + bytes(4096) + data[8192:]
            await ctrl.deallocate(2, [(10, 3)])
            await ctrl.flush(2)
            # an inactive NSID identifies as all zeroes, and the I/O API refuses it
            assert (await ctrl.identify_namespace(99)).nsze == 0
            with pytest.raises(NvmeError) as info:
                await ctrl.namespace(99)
            assert info.value.code == SC.INVALID_NS
            idc = ctrl.id_ctrl
            assert idc is not None
            assert idc.mn == "nvmf-loop" and idc.sn == "hostloop01" and idc.subnqn == SUBNQN
            assert idc.cntlid == ctrl.cntlid and idc.ioccsz * 16 - 64 == ctrl.io_incapsule_size
            assert idc.maxcmd >= 2
            # a write above the in-capsule size takes the R2T path; both must work
            big = os.urandom(ctrl.io_incapsule_size + 4096)
            await ctrl.write(2, 100, len(big) // 4096, big)
            assert await ctrl.read(2, 100, len(big) // 4096) == big

    run(main())


def test_discover_lists_the_subsystem(target: int) -> None:
    log = run(discover("127.0.0.1", target, HOSTNQN))
    subs = {e.subnqn: e for e in log.entries}
    assert SUBNQN in subs
    entry = subs[SUBNQN]
    assert (entry.trtype, entry.adrfam, entry.traddr) == (3, 1, "127.0.0.1")
    assert entry.trsvcid == str(target)


def test_bench_verify_against_target(target: int) -> None:
    async def main() -> None:
        async with await connect("127.0.0.1", SUBNQN, trsvcid=target, nr_io_queues=2) as ctrl:
            spec = BenchSpec(
                rw="randrw", bs=8192, iodepth=8, numjobs=2, runtime=1.0, size=4 << 20,
                verify=True, seed=3,
            )  # fmt: skip
            result = await run_bench(ctrl, spec)
            assert result.error is None
            assert result.read is not None and result.write is not None
            assert result.read.ios > 0 and result.write.ios > 0
            assert result.verify is not None and result.verify.mismatches == 0
            # every unit was prefilled, and every written unit read back: more checks than IOs
            assert result.verify.checked >= result.read.ios + 1
            # and the verifier does catch a unit changed behind its back
            await ctrl.write(1, 0, 16, bytes(8192))
            spec = BenchSpec(rw="randread", bs=8192, iodepth=1, runtime=0.2, size=8192,
                             verify=True, seed=3)  # fmt: skip
            ok = await run_bench(ctrl, spec)
            assert ok.verify is not None and ok.verify.mismatches == 0  # prefill rewrote it

    run(main())


def test_no_keep_alive_while_io_completes_when_the_target_says_tbkas(target: int) -> None:
    """The target says Traffic Based Keep Alive (CTRATT bit 6): the host sends no Keep Alive
    while its commands complete, and the target, whose workers serve the I/O, keeps the
    controller on that traffic alone.  Idle, the host sends one every KATO / 4."""

    async def main() -> None:
        async with await connect(
            "127.0.0.1", SUBNQN, trsvcid=target, nr_io_queues=2, kato=0.8
        ) as ctrl:
            assert ctrl.id_ctrl is not None and ctrl.id_ctrl.ctratt & CTRATT_TBKAS
            spec = BenchSpec(rw="randread", bs=4096, iodepth=4, numjobs=2, runtime=2.5)
            result = await run_bench(ctrl, spec)  # 3 KATOs
            assert result.error is None and result.keep_alives == 0
            before = ctrl.keep_alives_sent
            await asyncio.sleep(1.2)
            assert ctrl.keep_alives_sent - before >= 3
            assert len(await ctrl.read(1, 0, 8)) == 4096  # the controller lives on

    run(main())


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_discover_identify_write_read(target: int, tmp_path: Path) -> None:
    conn = ["-a", "127.0.0.1", "-s", str(target), "-q", HOSTNQN]
    out = _cli("discover", *conn, "--json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)["records"]
    assert any(r["subnqn"] == SUBNQN and r["subtype"] == "nvme subsystem" for r in records)

    out = _cli("identify", *conn, "-n", SUBNQN, "--json")
    assert out.returncode == 0, out.stderr
    ident = json.loads(out.stdout)
    assert ident["controller"]["mn"] == "nvmf-loop"
    in_use = [next(f["ds"] for f in n["lbafs"] if f["in_use"]) for n in ident["namespaces"]]
    assert [n["nsid"] for n in ident["namespaces"]] == [1, 2] and in_use == [9, 12]
    out = _cli("identify", *conn, "-n", SUBNQN)
    assert b"model (mn)      : nvmf-loop" in out.stdout

    src = tmp_path / "in.bin"
    data = os.urandom(300_000)  # not a whole number of blocks: padded with zeroes
    src.write_bytes(data)
    out = _cli("write", *conn, "-n", SUBNQN, "--slba", "5000", "--file", str(src), "-i", "1")
    assert out.returncode == 0, out.stderr
    assert b"586 blocks" in out.stderr
    dst = tmp_path / "out.bin"
    out = _cli("read", *conn, "-n", SUBNQN, "--slba", "5000", "--nlb", "586", "--file", str(dst))
    assert out.returncode == 0, out.stderr
    back = dst.read_bytes()
    assert back[: len(data)] == data and back[len(data) :] == bytes(586 * 512 - len(data))
    # stdin -> stdout
    out = _cli("write", *conn, "-n", SUBNQN, "--slba", "9000", "-G", stdin=b"x" * 1024)
    assert out.returncode == 0, out.stderr
    out = _cli("read", *conn, "-n", SUBNQN, "--slba", "9000", "--length", "1k", "-g")
    assert out.returncode == 0 and out.stdout == b"x" * 1024


def test_cli_bench_json_and_progress(target: int) -> None:
    args = ["-a", "127.0.0.1", "-s", str(target), "-n", SUBNQN]
    start = time.monotonic()
    out = _cli("bench", *args, "--rw", "randread", "--bs", "4k", "--iodepth", "8",
               "--runtime", "2.5", "--numjobs", "2", "--json", "--size", "8m",
               "--eta", "always")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start >= 2.5
    result = json.loads(out.stdout)
    assert result["io_queues"] == 2
    read = result["read"]
    assert read["ios"] > 100 and read["iops"] > 0 and read["mb_s"] > 0
    lat = read["lat_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert result["write"] is None
    progress = [ln for ln in out.stderr.decode().splitlines() if ln.startswith("Jobs:")]
    assert len(progress) >= 2 and "IOPS" in progress[0]

    out = _cli("bench", *args, "--rw", "write", "--bs", "128k", "--runtime", "1", "--verify",
               "--size", "4m", "--iodepth", "4")  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "write: IOPS=" in text and ", 0 mismatches" in text
    assert not [ln for ln in out.stderr.decode().splitlines() if ln.startswith("Jobs:")]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["bench", "--bs", "4q"], "--bs"),
        (["bench", "--iodepth", "0"], "--iodepth"),
        (["bench", "--rw", "sideways"], "--rw"),
        (["bench", "--runtime", "0"], "--runtime"),
        (["bench", "--bs", "1000"], "--bs"),
        (["bench", "--size", "1k", "--numjobs", "4"], "--size"),
        (["read", "--nlb", "0"], "--nlb"),
        (["read"], "--nlb or --length"),
        (["read", "--length", "1000"], "--length"),
        (["write", "-s", "99999"], "--trsvcid"),
        (["identify", "-t", "fc"], "--transport"),
    ],
)
def test_cli_bad_arguments_one_line_exit_2(target: int, argv: list[str], flag: str) -> None:
    out = _cli(*argv[:1], "-a", "127.0.0.1", "-s", str(target), "-n", SUBNQN, *argv[1:])
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert flag in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_connection_failure_is_one_line_exit_1() -> None:
    # A port bound and not listening refuses connections for as long as this test holds it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        out = _cli("identify", "-a", "127.0.0.1", "-s", str(port), "-n", SUBNQN)
    err = out.stderr.decode()
    assert out.returncode == 1 and "cannot connect" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_wrong_subsystem_is_an_nvme_error(target: int) -> None:
    out = _cli("identify", "-a", "127.0.0.1", "-s", str(target), "-n", "nqn.2024-01.io.nvmf:none")
    err = out.stderr.decode()
    assert out.returncode == 1 and "Connect qid 0" in err and "CONNECT_INVALID_PARAM" in err
