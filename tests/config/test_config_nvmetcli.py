"""nvmetcli's own files: they load, mean what nvmetcli means, and survive load -> save intact.

The files in ``data/`` are shaped exactly like ``nvmetcli save`` output (``Root.dump``: sorted
keys, string attributes in groups, integer ``enable`` and IDs) from a 6.1 kernel (tcp, loop) and
from a newer one with more attributes (rdma: ``addr.tsas``, ``param.mdts``, ``attr.firmware``,
``resv``), plus FC addressing.  ``nvmetcli_save_6.7.json`` is a file nvmetcli really saved, on a
Linux 6.7.9 target (published in a public PXE/homelab setup script): the guest serves it
unchanged (``tests/guest/test_kernel_host.py``).  Their media paths belong to the machine they
came from, so they are loaded with ``check_paths=False``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nvmf.config import ConfigError, dump_config, load_config, parse_config, save_config
from nvmf.control.model import AnaGroup

DATA = Path(__file__).parent / "data"
FILES = sorted(DATA.glob("nvmetcli_*.json"))


def contains(saved: Any, original: Any, path: str = "") -> list[str]:
    """Where ``saved`` lacks or changes something of ``original`` (empty: nothing lost)."""
    if isinstance(original, dict):
        if not isinstance(saved, dict):
            return [f"{path}: not an object"]
        lost = []
        for key, value in original.items():
            if key not in saved:
                lost.append(f"{path}.{key}: missing")
            else:
                lost += contains(saved[key], value, f"{path}.{key}")
        return lost
    if isinstance(original, list):
        if not isinstance(saved, list) or len(saved) != len(original):
            return [f"{path}: list differs"]
        return [x for i, o in enumerate(original) for x in contains(saved[i], o, f"{path}[{i}]")]
    return [] if saved == original and type(saved) is type(original) else [f"{path}: {saved!r}"]


def test_there_are_example_files() -> None:
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_load_then_save_preserves_every_nvmetcli_field(path: Path, tmp_path: Path) -> None:
    original = json.loads(path.read_text())
    cfg = load_config(path, check_paths=False)
    out = tmp_path / "saved.json"
    save_config(cfg, out)
    saved = json.loads(out.read_text())
    assert contains(saved, original) == []
    # ... and the saved file loads back to the same model.
    assert load_config(out, check_paths=False) == cfg


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_saved_layout_is_nvmetclis(path: Path, tmp_path: Path) -> None:
    """Same top-level keys and node keys as nvmetcli, every group attribute a string."""
    saved = dump_config(load_config(path, check_paths=False))
    assert {"hosts", "ports", "subsystems", "nvmf"} <= set(saved)
    assert set(saved) <= {"hosts", "ports", "subsystems", "nvmf", "discovery"}
    for sub in saved["subsystems"]:
        assert {"attr", "nqn", "namespaces", "allowed_hosts"} <= set(sub)
        assert all(isinstance(v, str) for v in sub["attr"].values())
        for ns in sub["namespaces"]:
            assert {"device", "enable", "nsid", "ana_grpid"} <= set(ns)
            assert isinstance(ns["enable"], int) and isinstance(ns["nsid"], int)
    for port in saved["ports"]:
        assert {"addr", "param", "portid", "subsystems", "referrals", "ana_groups"} <= set(port)
        assert all(isinstance(v, str) for v in port["addr"].values())


def test_tcp_file_means_what_nvmetcli_means() -> None:
    cfg = load_config(DATA / "nvmetcli_tcp.json", check_paths=False)
    sub = cfg.subsystems[0]
    assert sub.allow_any_host is False
    assert sub.allowed_hosts == [cfg.hosts[0].nqn]
    assert (sub.serial, sub.model, sub.version, sub.qid_max) == (
        "a3f1e9c27d5b6084",
        "Linux",
        "1.3",
        128,
    )
    assert (sub.cntlid_min, sub.cntlid_max) == (1, 0xFFEF)
    assert sub.extra_attrs == {"attr": {"pi_enable": "0"}}
    ns = sub.namespaces[0]
    assert (ns.nsid, ns.path, ns.enable, ns.ana_grpid) == (1, "/dev/nvme0n1", True, 1)
    assert ns.uuid == "d592cdf3-5d1c-44e0-8412-3fcf7d99df27"
    assert ns.media.kind is None
    port = cfg.ports[0]
    assert (port.portid, port.trtype, port.adrfam, port.traddr, port.trsvcid) == (
        1,
        "tcp",
        "ipv4",
        "192.168.122.33",
        "4420",
    )
    assert port.inline_data_size == 16384
    assert port.ana_groups == [AnaGroup(1, "optimized")]


def test_loop_file_has_no_address() -> None:
    cfg = load_config(DATA / "nvmetcli_loop.json", check_paths=False)
    port = cfg.ports[0]
    assert (port.trtype, port.adrfam, port.traddr, port.trsvcid) == ("loop", "", "", "")
    ns = cfg.subsystems[0].namespaces[0]
    assert ns.nguid == "ef90689c-6c46-d44c-89c1-4067801309a8" and ns.uuid is None


def test_rdma_file_keeps_newer_kernels_attributes() -> None:
    cfg = load_config(DATA / "nvmetcli_rdma.json", check_paths=False)
    port = cfg.ports[0]
    assert port.inline_data_size == -1  # "let the transport choose"
    assert port.extra_attrs == {
        "addr": {"tsas": "connected"},
        "param": {"max_queue_size": "-1", "mdts": "-1", "pi_enable": "0"},
    }
    ref = port.referrals[0]
    assert (ref.name, ref.trtype, ref.traddr, ref.portid, ref.enable) == (
        "peer-b",
        "rdma",
        "10.0.0.22",
        3,
        True,
    )
    assert [(g.grpid, g.state) for g in port.ana_groups] == [(1, "optimized"), (2, "inaccessible")]
    ns = cfg.subsystems[0].namespaces[0]
    assert (ns.nsid, ns.enable, ns.ana_grpid) == (10, False, 2)
    assert ns.extra_attrs == {"resv": {"enable": "0"}}
    assert cfg.subsystems[0].extra_attrs["attr"]["firmware"] == "6.12.0"


def test_fc_file() -> None:
    port = load_config(DATA / "nvmetcli_fc.json", check_paths=False).ports[0]
    assert (port.adrfam, port.trsvcid) == ("fc", "none")


def test_what_nvmetcli_save_writes_on_6_12() -> None:
    """discovery, dhchap, tsas, max_queue_size, firmware, ieee_oui, resv and passthru load."""
    cfg = load_config(DATA / "nvmetcli_save_6.12.json", check_paths=False)
    assert cfg.extra_attrs == {"discovery": {"nqn": "nqn.2014-08.org.nvmexpress.discovery"}}
    assert cfg.hosts[0].extra_attrs["dhchap"] == {
        "ctrl_key": "",
        "dhgroup": "null",
        "hash": "hmac(sha256)",
        "key": "",
    }
    port = cfg.ports[0]
    assert port.extra_attrs == {
        "addr": {"tsas": "none"},
        "param": {"max_queue_size": "128", "pi_enable": "0"},
    }
    disk, pt = cfg.subsystems
    assert disk.extra_attrs["attr"]["ieee_oui"] == "0x000000"
    assert disk.namespaces[0].extra_attrs == {"resv": {"enable": "0"}}
    assert pt.passthru is not None and pt.namespaces == []
    assert (pt.passthru.path, pt.passthru.enable, pt.passthru.clear_ids) == ("/dev/nvme2", True, 1)


def test_a_file_nvmetcli_saved_on_linux_6_7() -> None:
    """Loose names, an IPv6 wildcard on port 8009, a file namespace in an ANA group."""
    cfg = load_config(DATA / "nvmetcli_save_6.7.json", check_paths=False)
    (port,) = cfg.ports
    assert (port.adrfam, port.traddr, port.trsvcid, port.subsystems) == (
        "ipv6",
        "::",
        "8009",
        ["testnqn"],
    )
    (sub,) = cfg.subsystems
    assert sub.nqn == "testnqn" and sub.allow_any_host and sub.allowed_hosts == []
    (ns,) = sub.namespaces
    assert (ns.nsid, ns.path, ns.enable, ns.ana_grpid) == (
        1,
        "/srv/pxe/arch/x86_64/pxeboot.img",
        True,
        1,
    )
    assert ns.uuid == "43c4260a-826b-475d-9b42-883b4258f53f"
    assert [h.nqn for h in cfg.hosts] == ["hostnqn"]


@pytest.mark.parametrize("discovery", [{}, {"nqn": "nqn.2014-08.org.nvmexpress.discovery"}])
def test_top_level_discovery_group_survives_a_round_trip(discovery: dict[str, str]) -> None:
    """6.1's nvmetcli writes an empty group, 6.12's the discovery NQN; both come back."""
    cfg = parse_config({"discovery": discovery}, check_paths=False, warnings=[])
    assert dump_config(cfg)["discovery"] == discovery


def test_unknown_top_level_key_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match="discovry: unknown key"):
        parse_config({"discovry": {}}, check_paths=False, warnings=[])


def test_absent_attributes_mean_what_they_mean_to_nvmetcli_restore() -> None:
    """No allow_any_host: closed (the kernel's default); no enable: disabled."""
    from nvmf.config import parse_config

    cfg = parse_config(
        {
            "subsystems": [
                {
                    "nqn": "nqn.2024-01.io.nvmf:bare",
                    "namespaces": [{"nsid": 1, "nvmf": {"kind": "null", "size": 4096}}],
                }
            ],
            "ports": [
                {
                    "portid": 1,
                    "addr": {
                        "trtype": "tcp",
                        "adrfam": "ipv4",
                        "traddr": "10.1.1.1",
                        "trsvcid": "4420",
                    },
                    "subsystems": [],
                }
            ],
        },
        check_paths=False,
    )
    assert cfg.subsystems[0].allow_any_host is False
    assert cfg.subsystems[0].namespaces[0].enable is False
    port = cfg.ports[0]
    assert port.treq == "not specified"
    assert port.ana_groups == [AnaGroup(1)]
