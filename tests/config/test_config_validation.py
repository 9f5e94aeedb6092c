"""One test per validation rule: each bad field is reported at its exact JSON path.

Every case starts from :data:`BASE`, a valid configuration that needs no file on this machine
(``ram`` and ``null`` namespaces), changes one thing, and checks that ``parse_config`` raises a
:class:`ConfigError` whose message has ``source: path: ...`` and what is wrong.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nvmf.config import ConfigError, load_config, parse_config

HOST = "nqn.2014-08.org.nvmexpress:uuid:1d5c3a8e-2f4b-4c6d-9e8f-0a1b2c3d4e5f"
HOST2 = "nqn.2014-08.org.nvmexpress:uuid:2e6d4b9f-3a5c-4d7e-8f90-1b2c3d4e5f60"
SUB = "nqn.2024-01.io.nvmf:validation"
SUB2 = "nqn.2024-01.io.nvmf:validation-2"

BASE: dict[str, Any] = {
    "hosts": [{"nqn": HOST}, {"nqn": HOST2}],
    "subsystems": [
        {
            "nqn": SUB,
            "attr": {
                "allow_any_host": "0",
                "serial": "0123456789abcdef",
                "model": "nvmf",
                "version": "1.3",
                "cntlid_min": "1",
                "cntlid_max": "65519",
            },
            "allowed_hosts": [HOST],
            "namespaces": [
                {"nsid": 1, "enable": 1, "nvmf": {"kind": "ram", "size": "1G"}},
                {"nsid": 2, "enable": 1, "nvmf": {"kind": "null", "size": "512M"}},
            ],
        },
        {"nqn": SUB2, "attr": {"allow_any_host": "1"}, "namespaces": []},
    ],
    "ports": [
        {
            "portid": 1,
            "addr": {
                "trtype": "tcp",
                "adrfam": "ipv4",
                "traddr": "127.0.0.1",
                "trsvcid": "4420",
                "treq": "not specified",
            },
            "param": {"inline_data_size": "8192"},
            "subsystems": [SUB],
            "referrals": [
                {
                    "name": "peer",
                    "enable": 1,
                    "addr": {
                        "trtype": "tcp",
                        "adrfam": "ipv4",
                        "traddr": "127.0.0.2",
                        "trsvcid": "4420",
                        "portid": "2",
                    },
                }
            ],
            "ana_groups": [
                {"grpid": 1, "ana": {"state": "optimized"}},
                {"grpid": 2, "ana": {"state": "non-optimized"}},
            ],
        },
        {
            "portid": 2,
            "addr": {"trtype": "tcp", "adrfam": "ipv6", "traddr": "::1", "trsvcid": "4420"},
            "subsystems": [SUB2],
        },
    ],
    "nvmf": {"max_io_queues": 4, "queue_depth": 128, "staging_bytes": "4M"},
}


def problems_of(obj: Any, source: str = "config.json") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(obj, source)
    return str(info.value)


def mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    change(obj)
    return obj


def sub(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["subsystems"][0]  # type: ignore[no-any-return]


def ns(obj: dict[str, Any], j: int = 0) -> dict[str, Any]:
    return sub(obj)["namespaces"][j]  # type: ignore[no-any-return]


def port(obj: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return obj["ports"][i]  # type: ignore[no-any-return]


def test_base_is_valid() -> None:
    cfg = parse_config(copy.deepcopy(BASE), "config.json")
    assert cfg.subsystems[0].namespaces[0].media.size == 1 << 30
    assert cfg.nvmf.staging_bytes == 4 << 20


def test_nsid_not_an_integer_message_is_exact() -> None:
    obj = mutated(lambda o: ns(o, 1).update(nsid="x"))
    assert problems_of(obj) == (
        'config.json: subsystems[0].namespaces[1].nsid: must be an integer 1..0xFFFFFFFE, got "x"'
    )


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # (name, change, JSON path, part of the message)
    (
        "nsid zero",
        lambda o: ns(o).update(nsid=0),
        "subsystems[0].namespaces[0].nsid",
        "1..0xFFFFFFFE",
    ),
    (
        "nsid missing",
        lambda o: ns(o).pop("nsid"),
        "subsystems[0].namespaces[0].nsid",
        "is required",
    ),
    (
        "nsid duplicate",
        lambda o: ns(o, 1).update(nsid=1),
        "subsystems[0].namespaces[1].nsid",
        "duplicate nsid 1",
    ),
    (
        "NQN too long",
        lambda o: sub(o).update(nqn="nqn." + "a" * 220),
        "subsystems[0].nqn",
        "at most 223 bytes",
    ),
    (
        "NQN with a slash",
        lambda o: sub(o).update(nqn="nqn.2024-01.io.x:a/b"),
        "subsystems[0].nqn",
        "'/'",
    ),
    (
        "host NQN duplicate",
        lambda o: o["hosts"][1].update(nqn=HOST),
        "hosts[1].nqn",
        "duplicate host NQN",
    ),
    (
        "subsystem NQN duplicate",
        lambda o: o["subsystems"][1].update(nqn=SUB),
        "subsystems[1].nqn",
        "duplicate subsystem NQN",
    ),
    (
        "discovery NQN as a subsystem",
        lambda o: o["subsystems"][1].update(nqn="nqn.2014-08.org.nvmexpress.discovery"),
        "subsystems[1].nqn",
        "discovery NQN",
    ),
    (
        "port names an unknown subsystem",
        lambda o: port(o)["subsystems"].append("nqn.2024-01.io.nvmf:nope"),
        "ports[0].subsystems[1]",
        "unknown subsystem",
    ),
    (
        "port names a subsystem twice",
        lambda o: port(o)["subsystems"].append(SUB),
        "ports[0].subsystems[1]",
        "listed twice",
    ),
    (
        "allowed host unknown",
        lambda o: sub(o)["allowed_hosts"].append("nqn.2024-01.io.nvmf:stranger"),
        "subsystems[0].allowed_hosts[1]",
        "unknown host",
    ),
    (
        "allow_any_host with allowed hosts",
        lambda o: sub(o)["attr"].update(allow_any_host="1"),
        "subsystems[0].attr.allow_any_host",
        "allowed_hosts",
    ),
    (
        "allow_any_host not a flag",
        lambda o: sub(o)["attr"].update(allow_any_host="yes"),
        "subsystems[0].attr.allow_any_host",
        "0 or 1",
    ),
    (
        "portid duplicate",
        lambda o: port(o, 1).update(portid=1),
        "ports[1].portid",
        "duplicate portid 1",
    ),
    ("portid range", lambda o: port(o, 1).update(portid=70000), "ports[1].portid", "0..65535"),
    ("portid missing", lambda o: port(o, 1).pop("portid"), "ports[1].portid", "is required"),
    (
        "trtype unknown",
        lambda o: port(o)["addr"].update(trtype="iwarp"),
        "ports[0].addr.trtype",
        "tcp, rdma, loop, fc",
    ),
    (
        "trtype missing",
        lambda o: port(o)["addr"].pop("trtype"),
        "ports[0].addr.trtype",
        "is required",
    ),
    (
        "adrfam unknown",
        lambda o: port(o)["addr"].update(adrfam="ipv5"),
        "ports[0].addr.adrfam",
        "must be one of",
    ),
    (
        "adrfam wrong for trtype",
        lambda o: port(o)["addr"].update(adrfam="fc"),
        "ports[0].addr.adrfam",
        "for trtype tcp",
    ),
    (
        "adrfam missing for tcp",
        lambda o: port(o)["addr"].pop("adrfam"),
        "ports[0].addr.adrfam",
        "is required",
    ),
    (
        "traddr not IPv4",
        lambda o: port(o)["addr"].update(traddr="300.1.2.3"),
        "ports[0].addr.traddr",
        "IPv4 address",
    ),
    (
        "traddr not IPv6",
        lambda o: port(o, 1)["addr"].update(traddr="127.0.0.1"),
        "ports[1].addr.traddr",
        "IPv6 address",
    ),
    (
        "traddr missing",
        lambda o: port(o)["addr"].pop("traddr"),
        "ports[0].addr.traddr",
        "is required",
    ),
    (
        "trsvcid not a number",
        lambda o: port(o)["addr"].update(trsvcid="nvme"),
        "ports[0].addr.trsvcid",
        "port number",
    ),
    (
        "trsvcid too big",
        lambda o: port(o)["addr"].update(trsvcid="70000"),
        "ports[0].addr.trsvcid",
        "1..65535",
    ),
    (
        "treq unknown",
        lambda o: port(o)["addr"].update(treq="maybe"),
        "ports[0].addr.treq",
        "not specified",
    ),
    (
        "listener bound twice",
        lambda o: port(o, 1)["addr"].update(adrfam="ipv4", traddr="127.0.0.1"),
        "ports[1].addr.traddr",
        "bound only once",
    ),
    (
        "inline_data_size not a number",
        lambda o: port(o)["param"].update(inline_data_size="big"),
        "ports[0].param.inline_data_size",
        "must be an integer",
    ),
    (
        "inline_data_size range",
        lambda o: port(o)["param"].update(inline_data_size="-2"),
        "ports[0].param.inline_data_size",
        "-1..1048576",
    ),
    (
        "ANA state unknown",
        lambda o: port(o)["ana_groups"][1]["ana"].update(state="sleepy"),
        "ports[0].ana_groups[1].ana.state",
        "non-optimized",
    ),
    (
        "ANA group duplicate",
        lambda o: port(o)["ana_groups"][1].update(grpid=1),
        "ports[0].ana_groups[1].grpid",
        "duplicate ANA group",
    ),
    (
        "ANA group range",
        lambda o: port(o)["ana_groups"][1].update(grpid=0),
        "ports[0].ana_groups[1].grpid",
        "1..1024",
    ),
    (
        "referral traddr",
        lambda o: port(o)["referrals"][0]["addr"].update(traddr="x"),
        "ports[0].referrals[0].addr.traddr",
        "IPv4",
    ),
    (
        "referral portid",
        lambda o: port(o)["referrals"][0]["addr"].update(portid="-1"),
        "ports[0].referrals[0].addr.portid",
        "0..65535",
    ),
    (
        "referral name",
        lambda o: port(o)["referrals"][0].update(name="a/b"),
        "ports[0].referrals[0].name",
        "without '/'",
    ),
    (
        "cntlid_min above cntlid_max",
        lambda o: sub(o)["attr"].update(cntlid_min="100", cntlid_max="10"),
        "subsystems[0].attr.cntlid_min",
        "<= cntlid_max (10)",
    ),
    (
        "cntlid_max range",
        lambda o: sub(o)["attr"].update(cntlid_max="65520"),
        "subsystems[0].attr.cntlid_max",
        "1..0xFFEF",
    ),
    (
        "qid_max zero",
        lambda o: sub(o)["attr"].update(qid_max="0"),
        "subsystems[0].attr.qid_max",
        "1..65535",
    ),
    (
        "qid_max too big",
        lambda o: sub(o)["attr"].update(qid_max="65536"),
        "subsystems[0].attr.qid_max",
        "1..65535",
    ),
    (
        "version format",
        lambda o: sub(o)["attr"].update(version="1.x"),
        "subsystems[0].attr.version",
        'like "1.3"',
    ),
    (
        "serial too long",
        lambda o: sub(o)["attr"].update(serial="s" * 21),
        "subsystems[0].attr.serial",
        "at most 20",
    ),
    (
        "serial not ASCII",
        lambda o: sub(o)["attr"].update(serial="sérial"),
        "subsystems[0].attr.serial",
        "printable ASCII",
    ),
    (
        "model empty",
        lambda o: sub(o)["attr"].update(model=""),
        "subsystems[0].attr.model",
        "must not be empty",
    ),
    (
        "uuid format",
        lambda o: ns(o).update(device={"uuid": "1234"}),
        "subsystems[0].namespaces[0].device.uuid",
        "UUID",
    ),
    (
        "nguid format",
        lambda o: ns(o).update(device={"nguid": "zz"}),
        "subsystems[0].namespaces[0].device.nguid",
        "32 hex",
    ),
    (
        "ana_grpid range",
        lambda o: ns(o).update(ana_grpid=0),
        "subsystems[0].namespaces[0].ana_grpid",
        "1..1024",
    ),
    (
        "ana_grpid disagrees with ana.grpid",
        lambda o: ns(o).update(ana_grpid=2, ana={"grpid": "1"}),
        "subsystems[0].namespaces[0].ana_grpid",
        "ana.grpid",
    ),
    (
        "enable not a flag",
        lambda o: ns(o).update(enable="on"),
        "subsystems[0].namespaces[0].enable",
        "0 or 1",
    ),
    (
        "media kind",
        lambda o: ns(o)["nvmf"].update(kind="tape"),
        "subsystems[0].namespaces[0].nvmf.kind",
        "ram, file, block, null",
    ),
    (
        "media block size",
        lambda o: ns(o)["nvmf"].update(block_size=1024),
        "subsystems[0].namespaces[0].nvmf.block_size",
        "512 or 4096",
    ),
    (
        "media size text",
        lambda o: ns(o)["nvmf"].update(size="lots"),
        "subsystems[0].namespaces[0].nvmf.size",
        '"512M"',
    ),
    (
        "media size missing for ram",
        lambda o: ns(o)["nvmf"].pop("size"),
        "subsystems[0].namespaces[0].nvmf.size",
        "required for nvmf.kind ram",
    ),
    (
        "media size not whole blocks",
        lambda o: ns(o)["nvmf"].update(size=1000),
        "subsystems[0].namespaces[0].nvmf.size",
        "multiple of nvmf.block_size",
    ),
    (
        "media direct not a bool",
        lambda o: ns(o)["nvmf"].update(direct="yes"),
        "subsystems[0].namespaces[0].nvmf.direct",
        "true or false",
    ),
    (
        "unknown key in a namespace's nvmf",
        lambda o: ns(o)["nvmf"].update(compress=True),
        "subsystems[0].namespaces[0].nvmf.compress",
        "unknown key",
    ),
    (
        "unknown key in nvmf settings",
        lambda o: o["nvmf"].update(turbo=True),
        "nvmf.turbo",
        "unknown key",
    ),
    (
        "nvmf settings range",
        lambda o: o["nvmf"].update(max_io_queues=0),
        "nvmf.max_io_queues",
        "1..65535",
    ),
    ("nvmf settings type", lambda o: o["nvmf"].update(cmb="yes"), "nvmf.cmb", "true or false"),
    (
        "unpreempted_sends type",
        lambda o: o["nvmf"].update(unpreempted_sends=1),
        "nvmf.unpreempted_sends",
        "true or false",
    ),
    ("cmb not honoured", lambda o: o["nvmf"].update(cmb=True), "nvmf.cmb", "sq_placement"),
    (
        "nvmf staging size",
        lambda o: o["nvmf"].update(staging_bytes="4X"),
        "nvmf.staging_bytes",
        "size in bytes",
    ),
    (
        "device.path missing, no kind",
        lambda o: ns(o).pop("nvmf"),
        "subsystems[0].namespaces[0].device.path",
        "is required",
    ),
    (
        "device.path does not exist, no kind",
        lambda o: (ns(o).pop("nvmf"), ns(o).update(device={"path": "/nonexistent/disk.img"})),
        "subsystems[0].namespaces[0].device.path",
        "does not exist",
    ),
    (
        "kind file, path missing, no size",
        lambda o: ns(o).update(device={"path": "/nonexistent/disk.img"}, nvmf={"kind": "file"}),
        "subsystems[0].namespaces[0].device.path",
        "set nvmf.size to create it",
    ),
    (
        "kind block, no path",
        lambda o: ns(o).update(nvmf={"kind": "block"}),
        "subsystems[0].namespaces[0].device.path",
        "required for nvmf.kind block",
    ),
    (
        "nvme_pci path not a PCI address",
        lambda o: ns(o).update(device={"path": "/dev/nvme0n1"}, nvmf={"kind": "nvme_pci"}),
        "subsystems[0].namespaces[0].device.path",
        "not a PCI address like 0000:00:04.0",
    ),
    (
        "nvme_pci no such PCI device",
        lambda o: ns(o).update(device={"path": "0000:7f:1f.7"}, nvmf={"kind": "nvme_pci"}),
        "subsystems[0].namespaces[0].device.path",
        "no such PCI device",
    ),
    (
        "nvme_pci no path",
        lambda o: ns(o).update(nvmf={"kind": "nvme_pci"}),
        "subsystems[0].namespaces[0].device.path",
        "required for nvmf.kind nvme_pci",
    ),
    (
        "sq_placement not a placement",
        lambda o: ns(o).update(
            device={"path": "0000:00:04.0"}, nvmf={"kind": "nvme_pci", "sq_placement": "hbm"}
        ),
        "subsystems[0].namespaces[0].nvmf.sq_placement",
        'must be one of dram, cmb; got "hbm"',
    ),
    (
        "staging_placement not a string",
        lambda o: ns(o).update(
            device={"path": "0000:00:04.0"}, nvmf={"kind": "nvme_pci", "staging_placement": 1}
        ),
        "subsystems[0].namespaces[0].nvmf.staging_placement",
        "must be dram or cmb, got 1",
    ),
    (
        "staging_placement on another kind",
        lambda o: ns(o)["nvmf"].update(staging_placement="cmb"),
        "subsystems[0].namespaces[0].nvmf.staging_placement",
        "only for nvmf.kind nvme_pci",
    ),
    (
        "io_engine not an engine",
        lambda o: ns(o)["nvmf"].update(io_engine="aio"),
        "subsystems[0].namespaces[0].nvmf.io_engine",
        'must be one of auto, threads, io_uring; got "aio"',
    ),
    (
        "io_engine not a string",
        lambda o: ns(o)["nvmf"].update(io_engine=True),
        "subsystems[0].namespaces[0].nvmf.io_engine",
        "must be auto, threads or io_uring, got true",
    ),
    (
        "io_engine on a medium that is memory",
        lambda o: ns(o)["nvmf"].update(kind="ram", size="1M", io_engine="io_uring"),
        "subsystems[0].namespaces[0].nvmf.io_engine",
        "only for nvmf.kind file or block",
    ),
    (
        "a typo of namespaces",
        lambda o: sub(o).update(namespace=[]),
        "subsystems[0].namespace",
        "unknown key",
    ),
    (
        "a known group of the wrong type",
        lambda o: sub(o).update(attr="1"),
        "subsystems[0].attr",
        "JSON object",
    ),
    ("unknown top-level key", lambda o: o.update(subsys=[]), "subsys", "unknown key"),
    ("hosts not a list", lambda o: o.update(hosts={}), "hosts", "must be a list"),
    (
        "allowed host not a string",
        lambda o: sub(o)["allowed_hosts"].append(7),
        "subsystems[0].allowed_hosts[1]",
        "must be a string",
    ),
    (
        "attribute value not a string",
        lambda o: sub(o)["attr"].update(pi_enable=[0]),
        "subsystems[0].attr.pi_enable",
        "must be a string",
    ),
    ("host without nqn", lambda o: o["hosts"][1].pop("nqn"), "hosts[1].nqn", "is required"),
    (
        "passthru next to namespaces",
        lambda o: sub(o).update(passthru=[{"device": {"path": "/dev/nvme0"}, "enable": 1}]),
        "subsystems[0].passthru[0]",
        "has namespaces",
    ),
    (
        "passthru without a path",
        lambda o: o["subsystems"][1].update(passthru=[{"enable": 0}]),
        "subsystems[1].passthru[0].device.path",
        "is required",
    ),
]


@pytest.mark.parametrize(
    ("change", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule(change: Callable[[dict[str, Any]], None], path: str, message: str) -> None:
    text = problems_of(mutated(change))
    line = next((ln for ln in text.splitlines() if ln.startswith(f"config.json: {path}: ")), None)
    assert line is not None, text
    assert message in line, text


def test_every_problem_is_reported_at_once() -> None:
    """Shape and type problems all come together; value checks follow once those are fixed."""

    def shape(o: dict[str, Any]) -> None:
        ns(o).update(nsid="x")
        port(o)["param"].update(inline_data_size="big")
        o["nvmf"].update(bogus=1)

    assert len(problems_of(mutated(shape)).splitlines()) == 3

    def values(o: dict[str, Any]) -> None:
        ns(o).update(nsid=0)
        port(o)["addr"].update(trsvcid="x")
        sub(o)["attr"].update(version="one")

    assert len(problems_of(mutated(values)).splitlines()) == 3


def test_block_kind_needs_a_block_device(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    obj = mutated(lambda o: ns(o).update(device={"path": str(image)}, nvmf={"kind": "block"}))
    text = problems_of(obj)
    assert "subsystems[0].namespaces[0].device.path" in text
    assert "is a regular file" in text


def test_directory_is_not_media(tmp_path: Path) -> None:
    obj = mutated(lambda o: (ns(o).pop("nvmf"), ns(o).update(device={"path": str(tmp_path)})))
    assert "must be a regular file or a block device" in problems_of(obj)


def test_file_paths_are_checked_only_when_asked(tmp_path: Path) -> None:
    obj = mutated(lambda o: (ns(o).pop("nvmf"), ns(o).update(device={"path": "/nonexistent/x"})))
    cfg = parse_config(obj, "config.json", check_paths=False)
    assert cfg.subsystems[0].namespaces[0].path == "/nonexistent/x"


def test_file_kind_with_size_may_be_created(tmp_path: Path) -> None:
    path = str(tmp_path / "new.img")
    obj = mutated(
        lambda o: ns(o).update(device={"path": path}, nvmf={"kind": "file", "size": "1M"})
    )
    assert parse_config(obj).subsystems[0].namespaces[0].media.kind == "file"


def test_existing_regular_file_without_kind(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    obj = mutated(lambda o: (ns(o).pop("nvmf"), ns(o).update(device={"path": str(image)})))
    assert parse_config(obj).subsystems[0].namespaces[0].path == str(image)


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "hosts": [,]\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: invalid JSON at line 2 column 13")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError, match=r"absent\.json: cannot read: No such file"):
        load_config(path)


def test_not_an_object() -> None:
    assert problems_of([1, 2]) == "config.json: must be a JSON object"


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_config({"hosts": 1})


def test_problem_paths_survive_on_the_exception() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(mutated(lambda o: port(o)["addr"].update(traddr="x")), "c.json")
    assert [p.path for p in info.value.problems] == ["ports[0].addr.traddr"]
    assert info.value.source == "c.json"


def test_load_reads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BASE))
    cfg = load_config(os.fspath(path))
    assert [s.nqn for s in cfg.subsystems] == [SUB, SUB2]
