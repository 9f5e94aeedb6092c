"""Unit tests of the host's pure parts: command builders, identity defaults, latency
percentiles, size parsing and the verify pattern."""

from __future__ import annotations

import array
import uuid
from pathlib import Path

import pytest

from nvmf.cli.arguments import parse_size
from nvmf.host import commands as c
from nvmf.host import identity
from nvmf.host.bench import VERIFY_HEADER, VERIFY_MAGIC, BenchSpec, LatencySummary
from nvmf.wire.fabrics import ConnectCommand, PropertyCommand
from nvmf.wire.opcodes import AdminOpcode, FabricsType, IoOpcode
from nvmf.wire.sqe import Sqe


def test_rw_fields() -> None:
    sqe = Sqe.decode(bytes(c.rw(IoOpcode.WRITE, 3, (7 << 32) | 5, 16, fua=True)))
    assert (sqe.opcode, sqe.nsid, sqe.slba, sqe.nlb, sqe.fua) == (0x01, 3, (7 << 32) | 5, 15, True)
    assert sqe.flags == 0x40 and sqe.cid == 0
    with pytest.raises(ValueError, match="nlb 65537"):
        c.rw(IoOpcode.READ, 1, 0, 65537)


def test_get_log_page_splits_numd_and_offset() -> None:
    sqe = Sqe.decode(bytes(c.get_log_page(0x70, 1 << 20, offset=(1 << 32) + 1024, rae=True)))
    numd = (1 << 20) // 4 - 1
    assert sqe.opcode == AdminOpcode.GET_LOG_PAGE
    assert sqe.cdw10 == 0x70 | (1 << 15) | ((numd & 0xFFFF) << 16)
    assert sqe.cdw11 == numd >> 16
    assert (sqe.cdw12, sqe.cdw13) == (1024, 1)
    with pytest.raises(ValueError):
        c.get_log_page(2, 6)


def test_identify_features_and_queues() -> None:
    sqe = Sqe.decode(bytes(c.identify(0x03, nsid=5, cntid=0x1234, csi=2)))
    assert (sqe.cdw10, sqe.cdw11, sqe.nsid) == (0x12340003, 2 << 24, 5)
    sqe = Sqe.decode(bytes(c.number_of_queues(4)))
    assert (sqe.opcode, sqe.cdw10, sqe.cdw11) == (AdminOpcode.SET_FEATURES, 0x07, 0x00030003)
    sqe = Sqe.decode(bytes(c.set_features(0x06, 1, save=True)))
    assert sqe.cdw10 == 0x80000006 and sqe.cdw11 == 1
    sqe = Sqe.decode(bytes(c.write_zeroes(1, 8, 2, deallocate=True)))
    assert sqe.cdw12 == 1 | (1 << 25)
    sqe = Sqe.decode(bytes(c.dsm_deallocate(1, 3)))
    assert (sqe.cdw10, sqe.cdw11) == (2, 4)
    assert c.dsm_ranges([(10, 2)]) == bytes(4) + (2).to_bytes(4, "little") + (10).to_bytes(
        8, "little"
    )


def test_fabrics_builders() -> None:
    cmd = ConnectCommand.decode(bytes(c.connect(0, 31, kato_ms=5000)))
    assert (cmd.qid, cmd.sqsize, cmd.kato) == (0, 31, 5000)
    prop = PropertyCommand.decode(bytes(c.property_get(0, 8)))
    assert (prop.fctype, prop.attrib, prop.offset) == (FabricsType.PROPERTY_GET, 1, 0)
    prop = PropertyCommand.decode(bytes(c.property_set(0x14, 0x460001)))
    assert (prop.fctype, prop.attrib, prop.value) == (FabricsType.PROPERTY_SET, 0, 0x460001)


def test_identity_files_and_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nqn_file, id_file = tmp_path / "hostnqn", tmp_path / "hostid"
    monkeypatch.setattr(identity, "HOSTNQN_FILE", nqn_file)
    monkeypatch.setattr(identity, "HOSTID_FILE", id_file)
    generated = identity.default_hostnqn()
    assert generated.startswith(identity.UUID_NQN_PREFIX)
    assert identity.default_hostnqn() == generated  # stable within the process
    assert identity.default_hostid() == uuid.UUID(generated.removeprefix(identity.UUID_NQN_PREFIX))
    nqn_file.write_text("nqn.2014-08.org.example:host1\n")
    assert identity.default_hostnqn() == "nqn.2014-08.org.example:host1"
    hostid = uuid.uuid4()
    id_file.write_text(f"{hostid}\n")
    assert identity.default_hostid() == hostid


def test_latency_percentiles_nearest_rank() -> None:
    lat = LatencySummary.of(array.array("q", [i * 1000 for i in range(1, 1001)]))
    assert (lat.min, lat.p50, lat.p90, lat.p99, lat.p99_9, lat.max) == (1, 500, 900, 990, 999, 1000)
    assert lat.mean == 500.5
    assert LatencySummary.of(array.array("q")).p99 == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [("512", 512), ("4k", 4096), ("4K", 4096), ("128KiB", 131072), ("1m", 1 << 20),
     ("2g", 2 << 30), ("8MB", 8 << 20)],
)  # fmt: skip
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_bench_spec_validation_names_the_option() -> None:
    for spec, flag in [
        (BenchSpec(rw="x"), "--rw"),
        (BenchSpec(bs=0), "--bs"),
        (BenchSpec(iodepth=0), "--iodepth"),
        (BenchSpec(rwmixread=101), "--rwmixread"),
    ]:
        with pytest.raises(ValueError, match=flag):
            spec.validate()


def test_verify_header_layout() -> None:
    raw = VERIFY_HEADER.pack(VERIFY_MAGIC, 1, 2, 3, 4, 0)
    assert len(raw) == 32 and raw[:8] == b"NVMFBNCH"
