"""``discover``, ``identify`` and ``list`` print what nvme-cli prints: its JSON key names and
value strings (``-o json``), its plain discovery layout; IPv6 with ``-a ::1``; a wrong
subsystem NQN answered with the NQNs the target offers.

The expected key names are nvme-cli's (``src/nvme-print-json.c``), written out here as the
behaviour under test, not derived from the code under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nvmf.cli.nvme_print import eflags_str, treq_str
from nvmf.host import NvmeError
from nvmf.wire.fabrics import (
    CONNECT_DATA_OFF_HOSTID,
    CONNECT_DATA_OFF_SUBSYSNQN,
    invalid_parameter_result,
)
from nvmf.wire.logpage import DiscoveryEntryFlags, Treq
from nvmf.wire.status import SC, Status
from tests.cli.tools import MODEL, SERIAL, SUBNQN, Target, cli

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
#: ``json_discovery_log``'s keys of a TCP record, in nvme-cli's order.
DISCOVERY_RECORD_KEYS = ["trtype", "adrfam", "subtype", "treq", "portid", "trsvcid", "subnqn",
                         "traddr", "eflags", "sectype"]  # fmt: skip
#: ``json_list_item_obj``'s keys that ``nvmf list`` keeps.
LIST_KEYS = {"NameSpace", "Firmware", "ModelNumber", "SerialNumber", "UsedBytes", "MaximumLBA",
             "PhysicalSize", "SectorSize"}  # fmt: skip


def _json(*args: str) -> dict[str, object]:
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_discover_json_has_nvme_cli_keys_and_strings(target: Target) -> None:
    log = _json("discover", *target.conn(), "-o", "json")
    assert set(log) == {"genctr", "records"}
    records = log["records"]
    assert isinstance(records, list)
    assert all(list(r) == DISCOVERY_RECORD_KEYS for r in records)
    by_nqn = {r["subnqn"]: r for r in records}
    assert by_nqn[DISCOVERY_NQN]["subtype"] == "current discovery subsystem"
    nvm = by_nqn[SUBNQN]
    assert nvm["subtype"] == "nvme subsystem"
    assert (nvm["trtype"], nvm["adrfam"], nvm["traddr"]) == ("tcp", "ipv4", "127.0.0.1")
    assert (nvm["treq"], nvm["eflags"], nvm["sectype"]) == (
        "not specified, sq flow control disable supported",
        "none",
        "none",
    )
    assert nvm["trsvcid"] == str(target.v4) and isinstance(nvm["portid"], int)
    # --json is kept as the same thing
    assert _json("discover", *target.conn(), "--json") == log


def test_discover_plain_uses_nvme_cli_layout(target: Target) -> None:
    out = cli("discover", *target.conn())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "" and lines[1].startswith("Discovery Log Number of Records 2, ")
    assert "=====Discovery Log Entry 0======" in lines
    assert "subtype: current discovery subsystem" in lines
    assert "subtype: nvme subsystem" in lines
    assert f"subnqn:  {SUBNQN}" in lines and "sectype: none" in lines


@pytest.mark.parametrize(
    ("treq", "text"),
    [
        (Treq.NOT_SPECIFIED, "not specified"),
        (Treq.REQUIRED | Treq.DISABLE_SQFLOW, "required, sq flow control disable supported"),
        (Treq.NOT_REQUIRED, "not required"),
        (3, "unrecognized"),
        (1 << 3, "unrecognized"),
    ],
)
def test_treq_strings(treq: int, text: str) -> None:
    assert treq_str(treq) == text


@pytest.mark.parametrize(
    ("eflags", "text"),
    [
        (0, "none"),
        (DiscoveryEntryFlags.DUPRETINFO, "duplicate discovery information"),
        (
            DiscoveryEntryFlags.DUPRETINFO | DiscoveryEntryFlags.EPCSD,
            "explicit discovery connections, duplicate discovery information",
        ),
        (1 << 3, "unrecognized"),
    ],
)
def test_eflags_strings(eflags: int, text: str) -> None:
    assert eflags_str(eflags) == text


def test_identify_json_has_nvme_cli_keys(target: Target) -> None:
    ident = _json("identify", *target.conn(), "-n", SUBNQN, "-o", "json")
    ctrl = ident["controller"]
    assert isinstance(ctrl, dict)
    for key in ("vid", "ssvid", "sn", "mn", "fr", "rab", "ieee", "cmic", "mdts", "cntlid", "ver",
                "oacs", "kas", "sqes", "cqes", "maxcmd", "nn", "oncs", "vwc", "icsvscc", "sgls",
                "subnqn", "ioccsz", "iorcsz", "icdoff", "fcatt", "msdbd", "psds"):  # fmt: skip
        assert key in ctrl, key
    assert "nvscc" not in ctrl and "psd" not in ctrl
    assert (ctrl["sn"], ctrl["mn"], ctrl["subnqn"]) == (SERIAL, MODEL, SUBNQN)
    assert isinstance(ctrl["ver"], int) and ctrl["ver"] >> 16 >= 1
    assert ctrl["fguid"] == "00000000-0000-0000-0000-000000000000"
    assert len(ctrl["psds"]) == ctrl["npss"] + 1 and "max_power" in ctrl["psds"][0]
    namespaces = ident["namespaces"]
    assert isinstance(namespaces, list)
    assert [n["nsid"] for n in namespaces] == [1, 2]
    for ns, ds in zip(namespaces, (9, 12), strict=True):
        for key in ("nsze", "ncap", "nuse", "nsfeat", "nlbaf", "flbas", "nguid", "eui64"):
            assert key in ns, key
        assert len(ns["nguid"]) == 32 and len(ns["eui64"]) == 16
        in_use = [f for f in ns["lbafs"] if f["in_use"]]
        assert [set(f) for f in in_use] == [{"lbaf", "ms", "ds", "rp", "in_use"}]
        assert in_use[0]["ds"] == ds


def test_identify_plain_still_reads(target: Target) -> None:
    out = cli("identify", *target.conn(), "-n", SUBNQN)
    assert out.returncode == 0, out.stderr
    assert f"model (mn)      : {MODEL}" in out.stdout


def test_list_table_has_nvme_list_columns(target: Target) -> None:
    out = cli("list", *target.conn())
    assert out.returncode == 0, out.stderr
    header, dashes, *rows = out.stdout.splitlines()
    assert header.split() == ["Subsystem", "Address", "SN", "Model", "Namespace", "Usage",
                              "Format", "FW", "Rev"]  # fmt: skip
    assert set(dashes) == {"-", " "}
    assert len(rows) == 2
    assert rows[0].split()[:5] == [SUBNQN, f"traddr=127.0.0.1,trsvcid={target.v4}", SERIAL,
                                   MODEL, "0x1"]  # fmt: skip
    assert " 33.55  MB /  33.55  MB" in rows[0] and "512   B +  0 B" in rows[0]
    assert "  4 KiB +  0 B" in rows[1]


def test_list_json_has_nvme_cli_keys(target: Target) -> None:
    data = _json("list", *target.conn(), "-n", SUBNQN, "-o", "json")
    devices = data["Devices"]
    assert isinstance(devices, list) and len(devices) == 2
    first = devices[0]
    assert set(first) >= LIST_KEYS
    assert (first["NameSpace"], first["SectorSize"], first["MaximumLBA"]) == (1, 512, 65536)
    assert first["PhysicalSize"] == 32 << 20 and first["SerialNumber"] == SERIAL
    assert (first["SubsystemNQN"], first["Transport"]) == (SUBNQN, "tcp")
    assert devices[1]["SectorSize"] == 4096


def test_wrong_subsystem_nqn_gets_the_offered_ones(target: Target) -> None:
    out = cli("identify", *target.conn(), "-n", "nqn.2024-01.io.nvmf:typo")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Connect qid 0: CONNECT_INVALID_PARAM" in lines[0]
    assert f"has no subsystem 'nqn.2024-01.io.nvmf:typo'; it offers {SUBNQN}" in lines[0]


def test_unknown_subsystem_is_only_the_subnqn_parameter() -> None:
    status = Status(SC.CONNECT_INVALID_PARAM, dnr=True)
    subnqn = invalid_parameter_result(CONNECT_DATA_OFF_SUBSYSNQN, in_data=True)
    hostid = invalid_parameter_result(CONNECT_DATA_OFF_HOSTID, in_data=True)
    assert NvmeError(status, result=subnqn).unknown_subsystem
    assert not NvmeError(status, result=hostid).unknown_subsystem
    assert not NvmeError(Status(SC.CONNECT_INVALID_HOST, dnr=True), result=subnqn).unknown_subsystem


def _v6(target: Target) -> list[str]:
    if target.v6 is None:
        pytest.skip("this machine has no IPv6 loopback (::1 cannot be bound)")
    return target.conn(v6=True)


def test_ipv6_discover_and_list(target: Target) -> None:
    conn = _v6(target)
    records = _json("discover", *conn, "-o", "json")["records"]
    assert isinstance(records, list)
    assert {(r["adrfam"], r["traddr"]) for r in records} == {("ipv6", "::1")}
    devices = _json("list", *conn, "-o", "json")["Devices"]
    assert isinstance(devices, list)
    assert devices[0]["Address"] == f"traddr=::1,trsvcid={target.v6}"


def test_ipv6_write_read_back(target: Target, tmp_path: Path) -> None:
    conn = [*_v6(target), "-n", SUBNQN]
    src = tmp_path / "in.bin"
    data = os.urandom(64 * 1024)
    src.write_bytes(data)
    out = cli("write", *conn, "--slba", "2048", "--file", str(src), "-i", "1")
    assert out.returncode == 0, out.stderr
    dst = tmp_path / "out.bin"
    out = cli("read", *conn, "--slba", "2048", "--length", "64k", "--file", str(dst))
    assert out.returncode == 0, out.stderr
    assert dst.read_bytes() == data
