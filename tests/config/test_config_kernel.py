"""apply_to_kernel / clear_kernel on a fake configfs (see fake_configfs.py for what it enforces)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from nvmf.config import ConfigError, parse_config
from nvmf.config.kernel import ConfigFs, apply_to_kernel, clear_kernel
from nvmf.control.model import TargetConfig, default_config
from nvmf.protocol.dhchap import generate_secret
from tests.config.fake_configfs import FakeConfigFs

HOST = "nqn.2014-08.org.nvmexpress:uuid:1d5c3a8e-2f4b-4c6d-9e8f-0a1b2c3d4e5f"
SUB = "nqn.2024-01.io.nvmf:kernel"
OPEN = "nqn.2024-01.io.nvmf:kernel-open"
UUID = "3b0c6f8e-1d2a-4c5b-9e7f-0a1b2c3d4e5f"


def config(tmp_path: Path) -> dict[str, Any]:
    """A configuration using every kind of configfs object, its media files in ``tmp_path``."""
    disk = tmp_path / "disk0.img"
    disk.write_bytes(b"\0" * 8192)
    return {
        "hosts": [{"nqn": HOST}],
        "subsystems": [
            {
                "nqn": SUB,
                "attr": {
                    "allow_any_host": "0",
                    "serial": "kern0001",
                    "model": "nvmf-kernel",
                    "version": "1.4",
                    "cntlid_min": "16",
                    "cntlid_max": "32",
                    "qid_max": "8",
                    "pi_enable": "0",
                    "firmware": "1.0",
                },
                "allowed_hosts": [HOST],
                "namespaces": [
                    {
                        "nsid": 1,
                        "enable": 1,
                        "device": {"path": str(disk), "uuid": UUID},
                        "nvmf": {"direct": True},
                    },
                    {
                        "nsid": 7,
                        "enable": 0,
                        "ana_grpid": 2,
                        "device": {"path": str(tmp_path / "new.img")},
                        "nvmf": {"kind": "file", "size": "1M"},
                        "resv": {"enable": "1"},
                    },
                ],
            },
            {"nqn": OPEN, "attr": {"allow_any_host": "1"}, "namespaces": []},
        ],
        "ports": [
            {
                "portid": 3,
                "addr": {
                    "trtype": "tcp",
                    "adrfam": "ipv4",
                    "traddr": "127.0.0.1",
                    "trsvcid": "4420",
                    "treq": "not specified",
                },
                "param": {"inline_data_size": "16384"},
                "subsystems": [SUB, OPEN],
                "referrals": [
                    {
                        "name": "peer",
                        "enable": 1,
                        "addr": {
                            "trtype": "tcp",
                            "adrfam": "ipv4",
                            "traddr": "127.0.0.2",
                            "trsvcid": "4420",
                            "portid": "9",
                        },
                    }
                ],
                "ana_groups": [
                    {"grpid": 1, "ana": {"state": "optimized"}},
                    {"grpid": 2, "ana": {"state": "inaccessible"}},
                ],
            },
            {
                "portid": 4,
                "addr": {"trtype": "loop", "adrfam": "", "traddr": "", "trsvcid": ""},
                "subsystems": [OPEN],
            },
        ],
    }


@pytest.fixture
def fs(tmp_path: Path) -> FakeConfigFs:
    return FakeConfigFs(str(tmp_path / "nvmet"))


def apply(cfg: TargetConfig, fs: ConfigFs, **kwargs: Any) -> list[str]:
    return apply_to_kernel(cfg, fs.root, fs=fs, source="config.json", **kwargs)


def test_apply_writes_every_attribute(tmp_path: Path, fs: FakeConfigFs) -> None:
    notes = apply(parse_config(config(tmp_path), kernel=True), fs)
    tree = fs.tree()
    s = f"subsystems/{SUB}"
    for entry in (
        f"hosts/{HOST}/",
        f"{s}/attr_allow_any_host=0",
        f"{s}/attr_serial=kern0001",
        f"{s}/attr_model=nvmf-kernel",
        f"{s}/attr_version=1.4",
        f"{s}/attr_cntlid_min=16",
        f"{s}/attr_cntlid_max=32",
        f"{s}/attr_qid_max=8",
        f"{s}/allowed_hosts/{HOST} -> hosts/{HOST}",
        f"{s}/namespaces/1/device_path={tmp_path / 'disk0.img'}",
        f"{s}/namespaces/1/device_uuid={UUID}",
        f"{s}/namespaces/1/buffered_io=0",
        f"{s}/namespaces/1/enable=1",
        f"{s}/namespaces/7/device_path={tmp_path / 'new.img'}",
        f"{s}/namespaces/7/ana_grpid=2",
        f"{s}/namespaces/7/buffered_io=1",
        f"{s}/namespaces/7/enable=0",
        f"subsystems/{OPEN}/attr_allow_any_host=1",
        "ports/3/addr_trtype=tcp",
        "ports/3/addr_adrfam=ipv4",
        "ports/3/addr_traddr=127.0.0.1",
        "ports/3/addr_trsvcid=4420",
        "ports/3/addr_treq=not specified",
        "ports/3/param_inline_data_size=16384",
        f"ports/3/subsystems/{SUB} -> subsystems/{SUB}",
        f"ports/3/subsystems/{OPEN} -> subsystems/{OPEN}",
        "ports/3/referrals/peer/addr_traddr=127.0.0.2",
        "ports/3/referrals/peer/addr_portid=9",
        "ports/3/referrals/peer/enable=1",
        "ports/3/ana_groups/1/ana_state=optimized",
        "ports/3/ana_groups/2/ana_state=inaccessible",
        "ports/4/addr_trtype=loop",
        "ports/4/addr_adrfam=",
    ):
        assert entry in tree, entry
    # The missing file namespace was created, sparse, with nvmf.size bytes.
    assert (tmp_path / "new.img").stat().st_size == 1 << 20
    # This (6.1-like) kernel has no attr_firmware nor resv_enable: skipped with a note.
    assert any("subsystems[0].attr.firmware" in n for n in notes), notes
    assert any("subsystems[0].namespaces[1].resv.enable" in n for n in notes), notes


def test_apply_order(tmp_path: Path, fs: FakeConfigFs) -> None:
    apply(parse_config(config(tmp_path), kernel=True), fs)
    log = fs.log

    def first(prefix: str) -> int:
        return next(i for i, op in enumerate(log) if op.startswith(prefix))

    def last(prefix: str) -> int:
        return max(i for i, op in enumerate(log) if op.startswith(prefix))

    s = f"subsystems/{SUB}"
    # hosts -> subsystems -> ports
    assert last("mkdir hosts/") < first("mkdir subsystems/") < first("mkdir ports/")
    assert last(f"mkdir {s}/namespaces/") < first("mkdir ports/")
    # allow_any_host before the allowed_hosts links; namespace attributes before enable
    assert first(f"write {s}/attr_allow_any_host") < first(f"link {s}/allowed_hosts/")
    assert first(f"write {s}/namespaces/1/device_path") < first(f"write {s}/namespaces/1/enable")
    # a port is complete (attributes, ANA groups, referrals) before the link that enables it
    assert last("write ports/3/addr_") < first("link ports/3/subsystems/")
    assert last("write ports/3/param_") < first("link ports/3/subsystems/")
    assert last("write ports/3/ana_groups/") < first("link ports/3/subsystems/")
    assert last("write ports/3/referrals/") < first("link ports/3/subsystems/")


def test_clear_tears_down_in_reverse(tmp_path: Path, fs: FakeConfigFs) -> None:
    apply(parse_config(config(tmp_path), kernel=True), fs)
    fs.log.clear()
    clear_kernel(fs.root, fs=fs)
    assert fs.tree() == ["hosts/", "ports/", "subsystems/"]
    log = fs.log

    def first(prefix: str) -> int:
        return next(i for i, op in enumerate(log) if op.startswith(prefix))

    def last(prefix: str) -> int:
        return max(i for i, op in enumerate(log) if op.startswith(prefix))

    assert last("rmdir ports/") < first("rmdir subsystems/") < first("rmdir hosts/")
    assert first("unlink ports/3/subsystems/") < log.index("rmdir ports/3")
    assert log.index("rmdir ports/3/ana_groups/2") < log.index("rmdir ports/3")
    assert log.index(f"rmdir subsystems/{SUB}/namespaces/1") < log.index(f"rmdir subsystems/{SUB}")
    assert "rmdir ports/3/ana_groups/1" not in log


def test_clear_of_an_empty_target_is_a_no_op(fs: FakeConfigFs) -> None:
    clear_kernel(fs.root, fs=fs)
    assert fs.log == []


def test_apply_then_clear_then_apply_again(tmp_path: Path, fs: FakeConfigFs) -> None:
    cfg = parse_config(config(tmp_path), kernel=True)
    apply(cfg, fs)
    before = fs.tree()
    clear_kernel(fs.root, fs=fs)
    apply(cfg, fs)
    assert fs.tree() == before


def test_existing_configuration_is_refused_unless_cleared(tmp_path: Path, fs: FakeConfigFs) -> None:
    cfg = parse_config(config(tmp_path), kernel=True)
    apply(cfg, fs)
    with pytest.raises(ConfigError, match="already has a configuration"):
        apply(cfg, fs)
    other = copy.deepcopy(cfg)
    other.ports = other.ports[:1]
    apply(other, fs, clear_existing=True)
    assert "ports/4/" not in fs.tree()


def test_ram_namespaces_are_refused_before_anything_is_written(fs: FakeConfigFs) -> None:
    with pytest.raises(ConfigError) as info:
        apply(default_config(), fs)
    assert "subsystems[0].namespaces[0].nvmf.kind: ram namespaces" in str(info.value)
    assert "null_blk" in str(info.value)
    assert fs.log == []


def test_null_namespaces_are_refused_too(tmp_path: Path, fs: FakeConfigFs) -> None:
    obj = config(tmp_path)
    obj["subsystems"][1]["namespaces"] = [{"nsid": 1, "nvmf": {"kind": "null", "size": "1G"}}]
    with pytest.raises(ConfigError, match=r"subsystems\[1\]\.namespaces\[0\]\.nvmf\.kind: null"):
        apply(parse_config(obj, kernel=True), fs)


def test_relative_paths_are_refused(tmp_path: Path, fs: FakeConfigFs, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    obj = config(tmp_path)
    obj["subsystems"][0]["namespaces"][0]["device"]["path"] = "disk0.img"
    with pytest.raises(ConfigError, match=r"namespaces\[0\]\.device\.path: must be an absolute"):
        apply(parse_config(obj, kernel=True), fs)


def test_a_refused_step_names_the_field_and_rolls_back(tmp_path: Path) -> None:
    fs = FakeConfigFs(str(tmp_path / "nvmet"), fail=f"subsystems/{SUB}/namespaces/1/enable")
    with pytest.raises(ConfigError) as info:
        apply(parse_config(config(tmp_path), kernel=True), fs)
    message = str(info.value)
    assert message.startswith("config.json: subsystems[0].namespaces[0].enable: the kernel refused")
    assert "Input/output error" in message
    assert fs.tree() == ["hosts/", "ports/", "subsystems/"]


def test_a_refused_dhchap_key_is_named_never_quoted(tmp_path: Path) -> None:
    fs = FakeConfigFs(str(tmp_path / "nvmet"), fail=f"hosts/{HOST}/dhchap_key")
    obj = config(tmp_path)
    key = generate_secret(1, 32, HOST)
    obj["hosts"][0]["dhchap"] = {"key": key}
    with pytest.raises(ConfigError) as info:
        apply(parse_config(obj, kernel=True), fs)
    message = str(info.value)
    assert "hosts[0].dhchap.key: the kernel refused writing the secret to " in message
    assert key.split(":")[2] not in message


def test_a_missing_attribute_is_an_error_for_modelled_fields(tmp_path: Path) -> None:
    fs = FakeConfigFs(str(tmp_path / "nvmet"))
    cfg = parse_config(config(tmp_path), kernel=True)
    original_mkdir = fs.mkdir

    def mkdir_without_qid_max(rel: str) -> None:
        original_mkdir(rel)
        if fs.kind(rel) == "subsystem":
            Path(fs.path(f"{rel}/attr_qid_max")).unlink()

    fs.mkdir = mkdir_without_qid_max  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match=r"subsystems\[0\]\.attr\.qid_max: this kernel has no"):
        apply(cfg, fs)


def test_not_a_configfs(tmp_path: Path) -> None:
    cfg = parse_config(config(tmp_path), kernel=True)
    with pytest.raises(ConfigError, match="is not the nvmet configfs"):
        apply_to_kernel(cfg, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="is not the nvmet configfs"):
        clear_kernel(str(tmp_path / "nowhere"))


def test_a_plain_directory_is_not_mistaken_for_configfs(tmp_path: Path) -> None:
    """Without configfs's mkdir, attribute files never appear: the first write fails cleanly."""
    root = tmp_path / "plain"
    for d in ("hosts", "subsystems", "ports"):
        (root / d).mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"subsystems\[0\]\.attr\.allow_any_host: this kernel"):
        apply_to_kernel(parse_config(config(tmp_path), kernel=True), str(root))
    assert sorted(p.name for p in root.iterdir()) == ["hosts", "ports", "subsystems"]
    assert list((root / "subsystems").iterdir()) == []


def test_passthru(tmp_path: Path, fs: FakeConfigFs) -> None:
    obj = config(tmp_path)
    obj["subsystems"][1]["passthru"] = [
        {"device": {"path": "/dev/nvme0"}, "enable": 0, "clear_ids": 1, "io_timeout": 30}
    ]
    apply(parse_config(obj, kernel=True), fs)
    tree = fs.tree()
    assert f"subsystems/{OPEN}/passthru/device_path=/dev/nvme0" in tree
    assert f"subsystems/{OPEN}/passthru/io_timeout=30" in tree
