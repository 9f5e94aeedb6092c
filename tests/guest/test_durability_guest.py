"""Durability across a power loss: what the target acknowledged with FUA or before a completed
Flush is on the medium, checked on a log of every write the medium received (issue 7, item 2).

A process kill cannot lose the page cache, so it cannot test this.  Here the namespace's medium
sits on a ``dm-log-writes`` device in the Linux 6.1 guest: the device logs each write once it is
stable (a FUA write when it completes, a plain write when a later Flush completes), so replaying
the log up to a mark gives what a power loss at that moment leaves when the volatile cache loses
all it may (see :mod:`tests.guest.logwrites`).  The kernel's NVMe/TCP host drives our target with
nvme-cli (``nvme write`` with and without ``--force-unit-access``, ``nvme flush``), and after each
acknowledged step the guest logs a mark.  The data devices are loop devices on tmpfs files, so the
dm device has a volatile write cache and Flush and FUA reach it (a write-through device would have
them dropped by the block layer before dm-log-writes sees them).

Four namespaces, one dm-log-writes device each, in one boot:

* ``blk`` / ``blkdirect``: ``block`` media on the dm device, buffered and ``O_DIRECT``;
* ``fs`` / ``fsdirect``: ``file`` media, a sparse file on ext4 on the dm device, buffered and
  ``O_DIRECT``: a replay is mounted (ext4 recovers its journal, as after a reboot) and the file is
  checked, so the file's allocation and size must be durable too, not only its data.

Negative controls: a write acknowledged without FUA and not yet flushed is absent from the replay
at its mark (so the replay really models the loss), the check fails if that write is declared
durable, it fails when the log entry carrying a FUA write is removed, and it fails on a fifth
namespace served by a second target whose media ignore FUA and Flush (``lying_target/``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.guest import logwrites as lw
from tests.guest.harness import GuestResult, run_in_guest

pytestmark = pytest.mark.guest

NQN = "nqn.2024-01.io.nvmf:dur-"
SCENARIOS = ["blk", "blkdirect", "fs", "fsdirect"]
BLOCK_SCENARIOS = ["blk", "blkdirect"]
#: Block media, buffered, served by a second target on port 4421 whose media acknowledge FUA and
#: Flush without doing them (``lying_target/sitecustomize.py``): the check must fail on it.
LYING = "lying"
LYING_PATH = Path(__file__).parent / "lying_target"
DATA_MIB = 32
LOG_MIB = 16  # the workload logs well under 1 MiB
BS = 512
#: What the guest script runs from this machine's root (the guest sees it read-only) that
#: guest-run does not install itself, with the Debian package that has it.
HOST_TOOLS = {"dmsetup": "dmsetup", "mkfs.ext4": "e2fsprogs", "losetup": "mount"}
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _config(scenarios: list[str], port: int) -> str:
    """A target's configuration: one subsystem per scenario on one TCP port."""

    def namespace(s: str) -> dict[str, Any]:
        direct = s.endswith("direct")
        if s.startswith("fs"):
            path = f"/tmp/nvmf-dur/mnt-{s}/ns.img"
            media = {"kind": "file", "size": "16M", "direct": direct}
        else:
            path, media = f"/dev/mapper/lw-{s}", {"kind": "block", "direct": direct}
        return {"device": {"path": path}, "enable": 1, "nsid": 1, "nvmf": media}

    config = {
        "hosts": [],
        "ports": [
            {
                "addr": {
                    "adrfam": "ipv4",
                    "traddr": "127.0.0.1",
                    "treq": "not specified",
                    "trsvcid": str(port),
                    "trtype": "tcp",
                },
                "param": {"inline_data_size": "8192"},
                "portid": 1,
                "referrals": [],
                "subsystems": [NQN + s for s in scenarios],
            }
        ],
        "subsystems": [
            {
                "allowed_hosts": [],
                "attr": {"allow_any_host": "1", "serial": f"dur{s}", "version": "1.3"},
                "namespaces": [namespace(s)],
                "nqn": NQN + s,
            }
            for s in scenarios
        ],
    }
    return json.dumps(config, indent=1)


SCRIPT = r"""
exec > $OUT/trace.txt 2>&1
cut -d' ' -f1 /proc/uptime > $OUT/uptime-start.txt  # how long the guest took to boot
set -x
D=/tmp/nvmf-dur
mkdir -p $D
for m in loop dm-mod dm-log-writes nvme-tcp; do
  modprobe $m || echo "modprobe $m failed" >> $OUT/errors.txt
done
ip link set lo up
cat > $D/config.json <<'EOF'
@CONFIG@
EOF
cat > $D/lying.json <<'EOF'
@LYING_CONFIG@
EOF
# One log-writes device per scenario, over two loop devices on tmpfs files (volatile cache).
for s in @SCENARIOS@; do
  truncate -s @DATA_MIB@M $D/$s.data
  truncate -s @LOG_MIB@M $D/$s.log
  data=$(losetup -f --show $D/$s.data)
  log=$(losetup -f --show $D/$s.log)
  echo $log > $D/$s.logdev
  case $s in fs*)
    mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 $data
    cp $D/$s.data $D/$s.base ;;  # the replay's starting image
  esac
  dmsetup create lw-$s --table "0 $(blockdev --getsz $data) log-writes $data $log" \
    || echo "dmsetup create $s failed" >> $OUT/errors.txt
  dm=$(basename $(readlink -f /dev/mapper/lw-$s))
  echo "$s $(cat /sys/block/$dm/queue/write_cache)" >> $OUT/write_cache.txt
  case $s in fs*) mkdir -p $D/mnt-$s && mount /dev/mapper/lw-$s $D/mnt-$s ;; esac
done
$PY -m nvmf.cli.main serve -v --config $D/config.json > $OUT/target.log 2>&1 &
PYTHONPATH=@LYING_PATH@ $PY -m nvmf.cli.main serve -v --config $D/lying.json \
  > $OUT/target-lying.log 2>&1 &
for log in target target-lying; do
  for i in $(seq 900); do grep -q 'nvmf: listening' $OUT/$log.log && break; sleep 0.2; done
done

newdev() {  # the namespace block device of the only connected controller
  for i in $(seq 100); do
    d=$(ls /dev/ | grep -E '^nvme[0-9]+n[0-9]+$' | head -1)
    [ -n "$d" ] && { echo /dev/$d; return; }
    sleep 0.2
  done
}
for s in @SCENARIOS@; do
  start=$(date +%s)
  port=4420; [ $s = @LYING@ ] && port=4421
  nvme connect -t tcp -a 127.0.0.1 -s $port -n @NQN@$s
  echo "connect $s rc=$?" >> $OUT/results.txt
  dev=$(newdev)
  echo "$s lbs $(cat /sys/block/$(basename $dev)/queue/logical_block_size)" >> $OUT/results.txt
  $PY -m tests.guest.logwrites run --dev $dev --dm lw-$s --block-size @BS@ \
      --journal $OUT/$s.journal.json
  echo "run $s rc=$?" >> $OUT/results.txt
  nvme disconnect -n @NQN@$s
  echo "disconnect $s rc=$?" >> $OUT/results.txt
  echo "$s seconds $(( $(date +%s) - start ))" >> $OUT/results.txt
  sleep 1
done
kill %1 %2; wait
for s in @SCENARIOS@; do
  case $s in fs*) umount $D/mnt-$s ;; esac
  dmsetup status lw-$s >> $OUT/dm-status.txt
  dmsetup remove lw-$s  # logs the unflushed writes and the dm-log-writes-end mark
  echo "remove $s rc=$?" >> $OUT/results.txt
done
# Every check and trim in one Python process (tests/guest/cli_batch.py): under emulation each
# interpreter start costs more than a check.
: > $D/checks
for s in @SCENARIOS@; do
  log=$(cat $D/$s.logdev)
  R="rc=$OUT/results.txt"
  case $s in
    fs*) echo "$R tag='check $s' check --log $log --journal $OUT/$s.journal.json \
             --base $D/$s.base --file ns.img --out $OUT/$s.check.json" >> $D/checks ;;
    *)   echo "$R tag='check $s' check --log $log --journal $OUT/$s.journal.json \
             --size $((@DATA_MIB@ << 20)) --out $OUT/$s.check.json" >> $D/checks
         echo "$R tag='trim $s' trim --log $log --out $OUT/$s.log" >> $D/checks ;;
  esac
done
$PY -m tests.guest.cli_batch --entry tests.guest.logwrites $D/checks
dmesg > $OUT/dmesg.txt
cut -d' ' -f1 /proc/uptime > $OUT/uptime-end.txt
echo done > $OUT/finished
"""


def _script() -> str:
    subs = {
        "@CONFIG@": _config(SCENARIOS, 4420),
        "@LYING_CONFIG@": _config([LYING], 4421),
        "@LYING_PATH@": str(LYING_PATH),
        "@LYING@": LYING,
        "@SCENARIOS@": " ".join([*SCENARIOS, LYING]),
        "@NQN@": NQN,
        "@DATA_MIB@": str(DATA_MIB),
        "@LOG_MIB@": str(LOG_MIB),
        "@BS@": str(BS),
    }
    script = SCRIPT
    for key, value in subs.items():
        script = script.replace(key, value)
    return script


def ensure_host_tools() -> None:
    """Install (apt) the packages of :data:`HOST_TOOLS` that this machine lacks."""
    missing = sorted(
        {pkg for cmd, pkg in HOST_TOOLS.items() if not shutil.which(cmd, path=SBIN_PATH)}
    )
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
        )


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    ensure_host_tools()
    result = run_in_guest("durability", _script(), timeout=2400)
    timings = {"wall": round(result.seconds, 1)}
    for name in ("start", "end"):
        text = result.read(f"uptime-{name}.txt").strip()
        if text:
            timings[f"guest_uptime_{name}"] = float(text)
    (result.out / "timings.json").write_text(json.dumps(timings) + "\n")
    return result


def results(guest: GuestResult) -> dict[str, str]:
    """``connect X rc=0`` -> {"connect X": "0"}; ``X lbs 512`` -> {"X lbs": "512"}."""
    out = {}
    for line in guest.lines("results.txt"):
        key, _, value = line.rpartition(" ")
        if value.startswith("rc="):
            value = value[3:]
        out[key] = value
    return out


def journal(guest: GuestResult, s: str) -> lw.Journal:
    return lw.Journal.load(guest.out / f"{s}.journal.json")


def checked(guest: GuestResult, s: str) -> dict[str, Any]:
    text = guest.read(f"{s}.check.json")
    assert text, f"no check results for {s}:\n{guest.read('trace.txt')[-3000:]}"
    result: dict[str, Any] = json.loads(text)
    return result


def test_guest_ran_to_the_end(guest: GuestResult) -> None:
    assert guest.read("finished").strip() == "done", guest.read("trace.txt")[-3000:]
    assert guest.read("errors.txt") == ""


def test_the_logged_devices_have_a_volatile_write_cache(guest: GuestResult) -> None:
    """Else the block layer completes Flush and drops FUA before dm-log-writes sees them."""
    assert guest.lines("write_cache.txt") == [f"{s} write back" for s in [*SCENARIOS, LYING]]


@pytest.mark.parametrize("s", [*SCENARIOS, LYING])
def test_every_command_of_the_workload_was_acknowledged(guest: GuestResult, s: str) -> None:
    res = results(guest)
    assert res[f"connect {s}"] == "0"
    assert res[f"{s} lbs"] == str(BS)
    j = journal(guest, s)
    assert j.error == ""
    assert j.ops == lw.plan_ops(BS)
    assert res[f"run {s}"] == "0" and res[f"disconnect {s}"] == "0"
    assert res[f"remove {s}"] == "0" and res[f"check {s}"] == "0"


@pytest.mark.parametrize("s", SCENARIOS)
def test_a_power_loss_at_any_mark_keeps_every_fua_or_flushed_write(
    guest: GuestResult, s: str
) -> None:
    """The guest replayed the log to each mark (and, for ext4, recovered it) and checked it."""
    result = checked(guest, s)
    marks = [op.name for op in journal(guest, s).ops if op.kind == "mark"]
    assert result["log_marks"][: len(marks)] == marks
    assert result["log_marks"][-1] == lw.END_MARK
    assert sorted(result["marks"]) == sorted(marks)
    problems = {m: r["problems"] for m, r in result["marks"].items() if r["problems"]}
    assert problems == {}


def block_log(guest: GuestResult, s: str) -> lw.Log:
    return lw.read_log(guest.out / f"{s}.log")


def replayed(log: lw.Log, mark: str) -> bytearray:
    image = bytearray(DATA_MIB << 20)
    lw.replay(log, image, mark)
    return image


@pytest.mark.parametrize("s", BLOCK_SCENARIOS)
def test_block_replays_pass_when_checked_here_too(guest: GuestResult, s: str) -> None:
    """The kernel's log, parsed and replayed outside the guest, gives the same verdict."""
    result = lw.check_block(block_log(guest, s), journal(guest, s), DATA_MIB << 20)
    assert {m: r["problems"] for m, r in result["marks"].items()} == {
        m: [] for m in result["marks"]
    }
    assert result == checked(guest, s)


@pytest.mark.parametrize("s", BLOCK_SCENARIOS)
def test_the_host_flushes_reach_the_device_as_flushes(guest: GuestResult, s: str) -> None:
    log = block_log(guest, s)
    flags = Counter(e.flags & (lw.FLUSH | lw.FUA) for e in log.entries)
    host_flushes = sum(op.kind == "flush" for op in journal(guest, s).ops)
    assert flags[lw.FLUSH] + flags[lw.FLUSH | lw.FUA] >= host_flushes


@pytest.mark.parametrize("s", BLOCK_SCENARIOS)
def test_negative_an_unflushed_write_is_lost_at_its_mark(guest: GuestResult, s: str) -> None:
    """The replay models a power loss: a write acknowledged without FUA and not yet flushed is
    not there at its mark, and is after the Flush that follows."""
    log = block_log(guest, s)
    nlb = lw.REGION // BS
    lbas = range(lw.UNFLUSHED_REGION * nlb, (lw.UNFLUSHED_REGION + 1) * nlb)
    at_mark = replayed(log, "unflushed")
    assert {lw.identify(at_mark[lba * BS : (lba + 1) * BS], lba, BS) for lba in lbas} == {lw.ZEROES}
    final = replayed(log, "final")
    assert {lw.identify(final[lba * BS : (lba + 1) * BS], lba, BS) for lba in lbas} == {"i"}


@pytest.mark.parametrize("s", BLOCK_SCENARIOS)
def test_negative_the_check_fails_if_that_write_had_been_acknowledged_as_fua(
    guest: GuestResult, s: str
) -> None:
    j = journal(guest, s)
    nlb = lw.REGION // BS
    lying = [
        lw.Op(op.kind, op.lba, op.nlb, True, op.tag, op.name)
        if op.kind == "write" and op.lba == lw.UNFLUSHED_REGION * nlb
        else op
        for op in j.ops
    ]
    problems = lw.check(replayed(block_log(guest, s), "unflushed"), lying, "unflushed", BS)
    assert len(problems) == nlb
    assert all("holds zeroes" in p and "only i" in p for p in problems)


@pytest.mark.parametrize("s", BLOCK_SCENARIOS)
def test_negative_the_check_fails_without_the_fua_writes_log_entry(
    guest: GuestResult, s: str
) -> None:
    log = block_log(guest, s)
    j = journal(guest, s)
    (fua,) = [op for op in j.ops if op.kind == "write" and op.tag == "b"]
    first = lw.pattern("b", fua.lba, BS)
    carriers = [e.index for e in log.entries if first in e.data]
    assert carriers, "the FUA write is not in the log"
    assert lw.check(replayed(log, "fua-1"), j.ops, "fua-1", BS) == []
    broken = log
    for index in carriers:
        broken = broken.without(index)
    problems = lw.check(replayed(broken, "fua-1"), j.ops, "fua-1", BS)
    assert [p.split(":")[0] for p in problems] == [
        f"lba {lba}" for lba in range(fua.lba, fua.lba + fua.nlb)
    ]


def test_negative_a_target_that_ignores_fua_and_flush_fails_the_check(guest: GuestResult) -> None:
    """The whole pipeline, not only the checker, catches a target that acknowledges FUA and
    Flush without making the data durable: a power loss at any mark loses required writes."""
    assert "lying media: FUA and Flush are ignored" in guest.read("target-lying.log")
    assert "lying media" not in guest.read("target.log")
    result = checked(guest, LYING)
    marks = [op.name for op in journal(guest, LYING).ops if op.kind == "mark"]
    assert sorted(result["marks"]) == sorted(marks)
    assert all(result["marks"][m]["problems"] for m in marks)
    nlb = lw.REGION // BS
    fua_problems = result["marks"]["fua-1"]["problems"]
    assert any(p.startswith(f"lba {nlb}: holds zeroes") for p in fua_problems)
    host_log = lw.read_log(guest.out / f"{LYING}.log")
    assert lw.check_block(host_log, journal(guest, LYING), DATA_MIB << 20) == result
