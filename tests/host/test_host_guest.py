"""Our host against the Linux 6.1 kernel target (nvmet-tcp) inside the guest: one boot.

The script loads nvmet and nvmet-tcp, builds the target by hand in configfs (subsystem
:data:`SUBNQN` with ``allow_any_host``, namespace 1 a loop device over a 64 MiB file in the guest's
/tmp on the block backend, port 1 NVMe/TCP 127.0.0.1:4420), then drives it with ``nvmf``
commands, all in one Python process (``tests/guest/cli_batch.py``): discover, identify (text and
JSON), write a known file and read it back without and with both digests, and a few seconds of
bench (randread, a verified randrw and a 128 KiB sequential read).  Last it sends the kernel
target the malformed commands of ``tests/guest/status_probe.py``, whose answers
``tests/guest/test_status_parity.py`` compares with ours.  Every result lands in ``$OUT``; the
tests below read the files.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.guest.harness import GuestResult, shared_boot

SUBNQN = "nqn.2024-01.io.nvmf:host-guest"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:3c8e2d0b-7a51-4c3e-9b1f-0d2e4f6a8b9c"
DATA_BYTES = 1_500_000  # not a whole number of 512-byte blocks: the write pads with zeroes
DATA_BLOCKS = -(-DATA_BYTES // 512)

SCRIPT = rf"""
exec 2>"$OUT/stderr.txt"
set -x
NQN={SUBNQN}
HOSTNQN={HOSTNQN}
modprobe nvmet && modprobe nvmet-tcp && modprobe loop
echo $? > "$OUT/modprobe.rc"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
uname -r > "$OUT/uname.txt"

truncate -s 64M /tmp/ns1.img
stat -f -c %T /tmp > "$OUT/tmpfs.txt"
# a loop device: the file backend takes its LBA size from the file system's i_blkbits, which
# is 0 (1-byte LBAs) on the guest's /tmp; the block backend gives 512-byte LBAs
LOOP=$(losetup -f --show /tmp/ns1.img)
echo "$LOOP" > "$OUT/loop.txt"
S=/sys/kernel/config/nvmet/subsystems/$NQN
mkdir "$S"
echo 1 > "$S/attr_allow_any_host"
mkdir "$S/namespaces/1"
echo "$LOOP" > "$S/namespaces/1/device_path"
echo 1 > "$S/namespaces/1/enable"
P=/sys/kernel/config/nvmet/ports/1
mkdir "$P"
echo tcp > "$P/addr_trtype"
echo ipv4 > "$P/addr_adrfam"
echo 127.0.0.1 > "$P/addr_traddr"
echo 4420 > "$P/addr_trsvcid"
ln -s "$S" "$P/subsystems/$NQN"
echo $? > "$OUT/configfs.rc"

C="-a 127.0.0.1 -s 4420 -q $HOSTNQN"
head -c {DATA_BYTES} /dev/urandom > /tmp/in.bin
head -c 262144 /dev/urandom > /tmp/in2.bin
B="bench $C -n $NQN --json"
# Every nvmf command in one Python process (tests/guest/cli_batch.py): under emulation each
# interpreter start costs more than the command.
batch <<BATCH
out=$OUT/discover.txt rc=$OUT/discover.rc discover $C
out=$OUT/discover.json discover $C --json
out=$OUT/identify.txt rc=$OUT/identify.rc identify $C -n $NQN
out=$OUT/identify.json identify $C -n $NQN --json
err=$OUT/write.err rc=$OUT/write.rc write $C -n $NQN --slba 2048 --file /tmp/in.bin -i 2
err=$OUT/read.err rc=$OUT/read.rc \
  read $C -n $NQN --slba 2048 --nlb {DATA_BLOCKS} --file /tmp/out.bin -i 2
# both digests, and a write above the kernel's in-capsule size (R2T/H2CData path)
err=$OUT/write_dgst.err rc=$OUT/write_dgst.rc \
  write $C -n $NQN -g -G --slba 65536 --file /tmp/in2.bin
err=$OUT/read_dgst.err rc=$OUT/read_dgst.rc \
  read $C -n $NQN -g -G --slba 65536 --length 256k --file /tmp/out2.bin
out=$OUT/bench_randread.json err=$OUT/bench_randread.err rc=$OUT/bench_randread.rc \
  $B --rw randread --bs 4k --iodepth 16 --runtime 3 -i 1
out=$OUT/bench_verify.json err=$OUT/bench_verify.err rc=$OUT/bench_verify.rc \
  $B --rw randrw --bs 8k --iodepth 8 --numjobs 2 --runtime 2 --size 8m --verify
out=$OUT/bench_seqread.json err=$OUT/bench_seqread.err rc=$OUT/bench_seqread.rc \
  $B --rw read --bs 128k --iodepth 4 --runtime 2 -i 1
# Traffic Based Keep Alive (the kernel target says it): a 2 s KATO, 6 s of I/O, no Keep Alive
out=$OUT/bench_tbkas.json err=$OUT/bench_tbkas.err rc=$OUT/bench_tbkas.rc \
  $B --rw randread --bs 4k --iodepth 4 --runtime 6 -i 1 -k 2
BATCH
echo $? > "$OUT/batch.rc"

cmp -n {DATA_BYTES} /tmp/in.bin /tmp/out.bin > "$OUT/cmp.txt" 2>&1; echo $? > "$OUT/cmp.rc"
# the padding past the input's end reads back as zeroes
tail -c +{DATA_BYTES + 1} /tmp/out.bin | tr -d '\0' | wc -c > "$OUT/padding.txt"
cmp /tmp/in2.bin /tmp/out2.bin > "$OUT/cmp_dgst.txt" 2>&1; echo $? > "$OUT/cmp_dgst.rc"

# the kernel target's answers to malformed commands (tests/guest/test_status_parity.py)
$PY -m tests.guest.status_probe 127.0.0.1 4420 $NQN > "$OUT/status-kernel.json" \
    2> "$OUT/status-probe.err"
echo $? > "$OUT/status-probe.rc"

dmesg | grep -i nvme | tail -40 > "$OUT/dmesg.txt"
losetup -d "$LOOP"
echo done > "$OUT/done.txt"
"""


host_kernel_target = shared_boot("host-kernel-target", SCRIPT)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    result = host_kernel_target()
    result.finished()
    assert result.read("modprobe.rc").strip() == "0", result.read("stderr.txt")[-2000:]
    assert result.read("configfs.rc").strip() == "0", result.read("stderr.txt")[-2000:]
    assert result.read("loop.txt").startswith("/dev/loop"), result.read("stderr.txt")[-2000:]
    assert result.read("batch.rc").strip() == "0", result.read("stderr.txt")[-2000:]
    return result


def _json(guest: GuestResult, name: str) -> Any:
    text = guest.read(name)
    err = name.replace(".json", ".err")
    assert text, f"{name} is empty; {guest.read(err)[-2000:]}"
    return json.loads(text)


@pytest.mark.guest
def test_guest_runs_linux_6_1(guest: GuestResult) -> None:
    assert guest.read("uname.txt").startswith("6.1.")


@pytest.mark.guest
def test_discover_lists_the_kernel_subsystem(guest: GuestResult) -> None:
    assert guest.read("discover.rc").strip() == "0", guest.read("stderr.txt")[-2000:]
    records = _json(guest, "discover.json")["records"]
    (entry,) = [r for r in records if r["subnqn"] == SUBNQN]
    assert entry["trtype"] == "tcp" and entry["adrfam"] == "ipv4"
    assert entry["traddr"] == "127.0.0.1" and entry["trsvcid"] == "4420"
    assert entry["subtype"] == "nvme subsystem" and entry["portid"] == 1  # nvme-cli's string
    text = guest.read("discover.txt")
    assert f"subnqn:  {SUBNQN}" in text and "Discovery Log Number of Records" in text


@pytest.mark.guest
def test_identify_shows_the_kernel_controller(guest: GuestResult) -> None:
    assert guest.read("identify.rc").strip() == "0", guest.read("stderr.txt")[-2000:]
    ident = _json(guest, "identify.json")
    ctrl = ident["controller"]
    assert ctrl["mn"] == "Linux"  # nvmet's default model
    assert ctrl["subnqn"] == SUBNQN
    assert ctrl["cntlid"] == 1  # the subsystem's first controller (nvmet's cntlid_min)
    assert ctrl["ioccsz"] * 16 - 64 == 16384  # nvmet-tcp's default inline_data_size
    (ns,) = ident["namespaces"]
    lbaf = ns["lbafs"][ns["flbas"] & 0xF]  # nvme-cli's id-ns JSON: the format in use
    assert ns["nsid"] == 1 and 1 << lbaf["ds"] == 512 and ns["nsze"] == (64 << 20) // 512
    assert "model (mn)      : Linux" in guest.read("identify.txt")


@pytest.mark.guest
def test_written_file_reads_back_identical(guest: GuestResult) -> None:
    assert guest.read("write.rc").strip() == "0", guest.read("write.err")
    assert guest.read("read.rc").strip() == "0", guest.read("read.err")
    assert f"{DATA_BLOCKS} blocks" in guest.read("write.err")
    assert guest.read("cmp.rc").strip() == "0", guest.read("cmp.txt")
    assert guest.read("padding.txt").strip() == "0"


@pytest.mark.guest
def test_digests_and_r2t_path_against_the_kernel(guest: GuestResult) -> None:
    assert guest.read("write_dgst.rc").strip() == "0", guest.read("write_dgst.err")
    assert guest.read("read_dgst.rc").strip() == "0", guest.read("read_dgst.err")
    assert guest.read("cmp_dgst.rc").strip() == "0", guest.read("cmp_dgst.txt")


@pytest.mark.guest
def test_bench_against_the_kernel_target(guest: GuestResult) -> None:
    for name in ("bench_randread", "bench_verify", "bench_seqread"):
        assert guest.read(f"{name}.rc").strip() == "0", guest.read(f"{name}.err")[-2000:]
    randread = _json(guest, "bench_randread.json")
    assert randread["error"] is None and randread["read"]["ios"] > 100
    lat = randread["read"]["lat_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"]
    verify = _json(guest, "bench_verify.json")
    assert verify["io_queues"] == 2
    assert verify["verify"]["mismatches"] == 0 and verify["verify"]["checked"] > 1000
    assert verify["read"]["ios"] > 0 and verify["write"]["ios"] > 0
    seq = _json(guest, "bench_seqread.json")
    assert seq["read"]["bytes"] == seq["read"]["ios"] * 131072 > 0


@pytest.mark.guest
def test_no_keep_alive_to_the_kernel_target_while_io_completes(guest: GuestResult) -> None:
    """The kernel target's CTRATT says Traffic Based Keep Alive, so our host sends no Keep Alive
    in 6 s of I/O with a 2 s KATO (else one a second), and the kernel target, counting that I/O
    as traffic, keeps the controller: the run ends without error."""
    assert _json(guest, "identify.json")["controller"]["ctratt"] & (1 << 6)
    assert guest.read("bench_tbkas.rc").strip() == "0", guest.read("bench_tbkas.err")[-2000:]
    run = _json(guest, "bench_tbkas.json")
    assert run["error"] is None and run["read"]["ios"] > 100
    assert run["keep_alives"] == 0, run
