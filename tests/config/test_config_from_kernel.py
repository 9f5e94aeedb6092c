"""``nvmf config save --from-kernel``: reading the kernel target's configfs back into nvmetcli's
JSON (:mod:`nvmf.config.kernel_read`), on the fake configfs and on a tree laid out as a 6.12
kernel's, which ``nvmetcli save`` turned into ``data/nvmetcli_save_6.12.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nvmf.config import ConfigError, config_to_json, dump_config, parse_config
from nvmf.config.kernel import ConfigFs, apply_to_kernel, clear_kernel
from nvmf.config.kernel_read import dump_kernel, read_kernel
from tests.config.fake_configfs import FakeConfigFs
from tests.config.test_config_kernel import HOST, OPEN, SUB, UUID, config


@pytest.fixture
def fs(tmp_path: Path) -> FakeConfigFs:
    return FakeConfigFs(str(tmp_path / "nvmet"))


def subset(small: Any, big: Any, where: str = "") -> None:
    """Every key and value of ``small`` is in ``big`` (lists matched item by item); an empty
    attribute string is "not set", which apply leaves at the kernel's value."""
    if isinstance(small, dict):
        assert isinstance(big, dict), where
        for key, value in small.items():
            assert key in big, f"{where}.{key} missing"
            subset(value, big[key], f"{where}.{key}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(small) == len(big), where
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            subset(a, b, f"{where}[{i}]")
    elif small != "":
        assert small == big, f"{where}: {small!r} != {big!r}"


def test_apply_then_read_gives_every_applied_value_back(tmp_path: Path, fs: FakeConfigFs) -> None:
    cfg = parse_config(config(tmp_path), kernel=True)
    notes = apply_to_kernel(cfg, fs.root, fs=fs)
    back = dump_config(read_kernel(fs.root, fs=fs))
    written = dump_config(cfg)
    # Attributes this kernel lacks were skipped by apply (and said so): they cannot come back.
    assert len(notes) == 2 and all("this kernel has no" in note for note in notes)
    del written["subsystems"][0]["attr"]["firmware"]
    del written["subsystems"][0]["namespaces"][1]["resv"]
    # "nvmf" keys are this project's, not the kernel's: only "direct" comes back (buffered_io).
    for sub in written["subsystems"]:
        for ns in sub["namespaces"]:
            media = ns.pop("nvmf", {})
            if media.get("direct"):
                ns["nvmf"] = {"direct": True}
    del written["nvmf"]
    subset(written, back)
    s = next(x for x in back["subsystems"] if x["nqn"] == SUB)
    assert s["allowed_hosts"] == [HOST]
    assert s["namespaces"][0]["device"]["uuid"] == UUID
    assert s["attr"]["pi_enable"] == "0"  # the kernel's value of what the file left out
    assert "passthru" not in s  # never configured: not configuration
    assert [p["portid"] for p in back["ports"]] == [3, 4]
    assert [g["grpid"] for g in back["ports"][0]["ana_groups"]] == [1, 2]
    assert back["ports"][0]["referrals"][0]["addr"]["portid"] == "9"


def test_apply_of_a_saved_file_then_save_gives_the_same_json(
    tmp_path: Path, fs: FakeConfigFs
) -> None:
    """The round trip the brief names: ``config apply FILE`` then ``config save
    --from-kernel`` writes FILE again, for a FILE that says what the kernel has."""
    apply_to_kernel(parse_config(config(tmp_path), kernel=True), fs.root, fs=fs)
    first = config_to_json(read_kernel(fs.root, fs=fs))
    clear_kernel(fs.root, fs=fs)
    apply_to_kernel(parse_config(json.loads(first), kernel=True), fs.root, fs=fs)
    assert config_to_json(read_kernel(fs.root, fs=fs)) == first


def test_the_cli_saves_from_the_kernel_atomically(tmp_path: Path, fs: FakeConfigFs) -> None:
    src = tmp_path / "in.json"
    src.write_text(json.dumps(config(tmp_path)))
    apply_to_kernel(parse_config(config(tmp_path), kernel=True), fs.root, fs=fs)
    out_file = tmp_path / "out" / "saved.json"
    out_file.parent.mkdir()
    out_file.write_text("old")
    out = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "config", "save", str(out_file),
         "--from-kernel", "--configfs", fs.root],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"{out_file}: saved from {fs.root}: 1 host, 2 subsystems (2 namespaces), 2 ports"
    )
    assert out_file.read_text() == config_to_json(read_kernel(fs.root, fs=fs))
    assert sorted(p.name for p in out_file.parent.iterdir()) == ["saved.json"]


def test_not_configfs_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not the nvmet configfs"):
        read_kernel(str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "nvmf.cli.main", "config", "save", str(tmp_path / "x.json"),
         "--from-kernel", "--configfs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "is not the nvmet configfs" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "x.json").exists()


# -- a tree as Linux 6.12 lays it out ------------------------------------------------------------


def _attrs(node: Path, obj: dict[str, Any], groups: tuple[str, ...]) -> None:
    for group in groups:
        for name, value in obj.get(group, {}).items():
            (node / f"{group}_{name}").write_text(value + "\n")


def make_tree(root: Path, saved: dict[str, Any]) -> None:
    """The configfs tree ``nvmetcli save`` read ``saved`` from, with a read-only attribute
    and the write-only ``revalidate_size`` a real kernel has as well."""
    for top in ("hosts", "subsystems", "ports"):
        (root / top).mkdir(parents=True)
    _attrs(root, saved, ("discovery",))
    for host in saved["hosts"]:
        node = root / "hosts" / host["nqn"]
        node.mkdir()
        _attrs(node, host, ("dhchap",))
    for sub in saved["subsystems"]:
        node = root / "subsystems" / sub["nqn"]
        for d in ("namespaces", "allowed_hosts", "passthru"):
            (node / d).mkdir(parents=True)
        _attrs(node, sub, ("attr",))
        ro = node / "attr_cntlid_live"
        ro.write_text("3\n")
        ro.chmod(0o444)
        for nqn in sub["allowed_hosts"]:
            (node / "allowed_hosts" / nqn).symlink_to(root / "hosts" / nqn)
        for ns in sub["namespaces"]:
            ns_node = node / "namespaces" / str(ns["nsid"])
            ns_node.mkdir()
            _attrs(ns_node, ns, ("device", "ana", "resv"))
            (ns_node / "enable").write_text(f"{ns['enable']}\n")
            (ns_node / "buffered_io").write_text("0\n")
            wo = ns_node / "revalidate_size"
            wo.write_text("")
            wo.chmod(0o200)
        pt = (sub.get("passthru") or [{"device": {"path": ""}, "enable": 0}])[0]
        _attrs(node / "passthru", pt, ("device",))
        for key, default in (("enable", 0), ("clear_ids", 1), ("admin_timeout", 0)):
            (node / "passthru" / key).write_text(f"{pt.get(key, default)}\n")
        (node / "passthru" / "io_timeout").write_text(f"{pt.get('io_timeout', 0)}\n")
    for port in saved["ports"]:
        node = root / "ports" / str(port["portid"])
        for d in ("subsystems", "referrals", "ana_groups"):
            (node / d).mkdir(parents=True)
        _attrs(node, port, ("addr", "param"))
        for nqn in port["subsystems"]:
            (node / "subsystems" / nqn).symlink_to(root / "subsystems" / nqn)
        for group in port["ana_groups"]:
            g = node / "ana_groups" / str(group["grpid"])
            g.mkdir()
            _attrs(g, group, ("ana",))


def test_a_6_12_tree_reads_as_nvmetcli_saved_it(tmp_path: Path, saved: dict[str, Any]) -> None:
    root = tmp_path / "nvmet"
    make_tree(root, saved)
    obj = dump_kernel(str(root))
    assert obj == saved  # key for key what nvmetcli save wrote
    expected = config_to_json(parse_config(saved, check_paths=False, kernel=True))
    assert config_to_json(read_kernel(str(root))) == expected


class UnreadableFs(ConfigFs):
    """A configfs whose ``attr_serial`` files fail to read (as an attribute the kernel
    refuses to show does)."""

    def read(self, rel: str) -> str:
        if rel.endswith("attr_serial"):
            raise PermissionError(13, "Permission denied", self.path(rel))
        return super().read(rel)


def test_an_unreadable_attribute_names_its_path(tmp_path: Path, saved: dict[str, Any]) -> None:
    root = tmp_path / "nvmet"
    make_tree(root, saved)
    nqn = saved["subsystems"][0]["nqn"]
    with pytest.raises(ConfigError) as err:
        read_kernel(str(root), fs=UnreadableFs(str(root)))
    assert str(err.value) == f"{root}/subsystems/{nqn}/attr_serial: cannot read: Permission denied"


def test_open_subsystem_of_the_fixture_is_there(tmp_path: Path, fs: FakeConfigFs) -> None:
    apply_to_kernel(parse_config(config(tmp_path), kernel=True), fs.root, fs=fs)
    nqns = [s.nqn for s in read_kernel(fs.root, fs=fs).subsystems]
    assert nqns == sorted([SUB, OPEN])
