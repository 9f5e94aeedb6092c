"""The Linux 6.1 kernel's own NVMe/TCP host (nvme-cli, fio) against our target, in the guest.

One boot runs everything, with the target's I/O queues in two offload workers (``--workers
2``): discovery, connects with ``-i 1``, ``-i 2`` and without ``-i``, fio with CRC32C verify at
4 KiB and 128 KiB on RAM and file namespaces with digests off and on, and disconnects; then a
worker is killed (``kill -9``) in the middle of a fio write job: the host reconnects, a new
worker serves, and the job's verify passes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.guest.harness import GuestResult, run_in_guest

# One boot runs every case; under emulation on a loaded machine it can pass 15 minutes.
pytestmark = [pytest.mark.guest, pytest.mark.timeout(2700)]

CONFIG = Path(__file__).parent / "data" / "kernel-host.json"
NQN = "nqn.2024-01.io.nvmf:"

SCRIPT = r"""
exec > $OUT/trace.txt 2>&1
mkdir -p /tmp/nvmf-guest
modprobe nvme-tcp
ip link set lo up
nproc > $OUT/nproc.txt
$PY -m nvmf.cli.main serve -v --workers 2 --config CONFIG > $OUT/target.log 2>&1 &
for i in $(seq 900); do grep -q 'nvmf: listening' $OUT/target.log && break; sleep 0.2; done
nvme discover -t tcp -a 127.0.0.1 -s 4420 -o json > $OUT/discover.json; echo $? > $OUT/discover.rc

newdev() {  # the namespace block device of the only connected controller
  for i in $(seq 100); do
    d=$(ls /dev/ | grep -E '^nvme[0-9]+n[0-9]+$' | head -1)
    [ -n "$d" ] && { echo /dev/$d; return; }
    sleep 0.2
  done
}
queues() { cat /sys/class/nvme/nvme*/queue_count | head -1; }

run_case() {  # name nqn connect-args...
  name=$1; nqn=$2; shift 2
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $nqn "$@"
  echo "connect $name rc=$?" >> $OUT/results.txt
  dev=$(newdev)
  echo "$name queues $(queues)" >> $OUT/results.txt
  for bs in 4k 128k; do
    [ $bs = 4k ] && size=8m || size=32m
    fio --name=$name-$bs --filename=$dev --ioengine=libaio --direct=1 --iodepth=16 \
        --rw=randwrite --bs=$bs --size=$size --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --verify_state_save=0 \
        --output-format=json --output=$OUT/fio-$name-$bs.json
    echo "fio $name-$bs rc=$?" >> $OUT/results.txt
  done
  nvme disconnect -n $nqn > $OUT/disconnect-$name.txt
  echo "disconnect $name rc=$?" >> $OUT/results.txt
  sleep 1
}
run_case ram-plain ${NQN}ram -i 2
run_case file-plain ${NQN}file -i 2
run_case ram-digest ${NQN}ram -i 2 -g -G
run_case file-digest ${NQN}file -i 2 -g -G
run_case ram-i1 ${NQN}ram -i 1
run_case file-i1 ${NQN}file -i 1
run_case file-default ${NQN}file

# Without -i: the host asks for one queue per CPU and takes min(that, the target's grant).
for case in ram q1; do
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN}$case
  echo "connect default-$case rc=$?" >> $OUT/results.txt
  newdev > /dev/null
  echo "default-$case queues $(queues)" >> $OUT/results.txt
  nvme disconnect -n ${NQN}$case > /dev/null
  echo "disconnect default-$case rc=$?" >> $OUT/results.txt
  sleep 1
done
ls /sys/class/nvme/ > $OUT/leftover.txt 2>&1
dmesg > $OUT/dmesg.txt

# A worker dies under a write job: only its queues drop, the host reconnects (1 s delay), a
# new worker takes the new queues, and every block the job wrote verifies.
dmesg -C
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN}ram -i 2 --reconnect-delay=1 --ctrl-loss-tmo=120
echo "connect kill rc=$?" >> $OUT/results.txt
dev=$(newdev)
fio --name=kill --filename=$dev --ioengine=libaio --direct=1 --iodepth=16 --rw=write --bs=4k \
    --size=64m --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=json --output=$OUT/fio-kill.json &
fio_pid=$!
sleep 4
victim=$(sed -n 's/.*offload workers (pids \([0-9]*\) .*/\1/p' $OUT/target.log | head -1)
echo "$victim" > $OUT/victim.txt
kill -9 $victim
echo "kill rc=$?" >> $OUT/results.txt
wait $fio_pid
echo "fio kill rc=$?" >> $OUT/results.txt
nvme disconnect -n ${NQN}ram > /dev/null
echo "disconnect kill rc=$?" >> $OUT/results.txt
dmesg > $OUT/dmesg-kill.txt
kill %1; wait
echo done > $OUT/finished
""".replace("CONFIG", str(CONFIG)).replace("${NQN}", NQN)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return run_in_guest("kernel-host", SCRIPT, timeout=2400)


def results(guest: GuestResult) -> dict[str, str]:
    """``connect X rc=0`` -> {"connect X rc": "0"}; ``X queues 3`` -> {"X queues": "3"}."""
    out = {}
    for line in guest.lines("results.txt"):
        key, _, value = line.rpartition(" ")
        if "=" in value:
            name, _, value = value.partition("=")
            key = f"{key} {name}"
        out[key] = value
    return out


def test_guest_ran_to_the_end(guest: GuestResult) -> None:
    assert guest.read("finished").strip() == "done", guest.read("trace.txt")[-3000:]


def test_nvme_discover_lists_our_subsystems(guest: GuestResult) -> None:
    assert guest.read("discover.rc").strip() == "0"
    records = json.loads(guest.read("discover.json"))["records"]
    nqns = [r["subnqn"] for r in records]
    assert nqns[0] == "nqn.2014-08.org.nvmexpress.discovery"
    assert set(nqns[1:]) == {NQN + "ram", NQN + "file", NQN + "q1"}
    for r in records:
        assert (r["trtype"], r["traddr"], r["trsvcid"]) == ("tcp", "127.0.0.1", "4420")


@pytest.mark.parametrize(
    ("case", "queues"),
    [
        ("ram-plain", 3),  # admin queue + 2 I/O queues
        ("file-plain", 3),
        ("ram-digest", 3),
        ("file-digest", 3),
        ("ram-i1", 2),
        ("file-i1", 2),
        ("file-default", 3),  # min(2 guest CPUs, the grant of 2)
    ],
)
def test_connect_and_fio_verify_with_two_workers(
    guest: GuestResult, case: str, queues: int
) -> None:
    res = results(guest)
    assert res[f"connect {case} rc"] == "0"
    assert res[f"{case} queues"] == str(queues)
    for bs in ("4k", "128k"):
        assert res[f"fio {case}-{bs} rc"] == "0"
        job = json.loads(guest.read(f"fio-{case}-{bs}.json"))["jobs"][0]
        assert job["error"] == 0
        assert job["write"]["io_bytes"] == (8 << 20 if bs == "4k" else 32 << 20)
        assert job["read"]["io_bytes"] == job["write"]["io_bytes"]  # the verify pass
    assert res[f"disconnect {case} rc"] == "0"
    assert "disconnected 1 controller" in guest.read(f"disconnect-{case}.txt")


def test_digests_were_negotiated_when_asked(guest: GuestResult) -> None:
    log = guest.read("target.log")
    assert "hdgst=1 ddgst=1" in log and "hdgst=0 ddgst=0" in log


def test_default_queue_count_is_min_of_host_cpus_and_target_grant(guest: GuestResult) -> None:
    res = results(guest)
    cpus = int(guest.read("nproc.txt"))
    assert res["default-ram queues"] == str(1 + min(cpus, cpus))  # grant = target cores
    assert res["default-q1 queues"] == "2"  # qid_max 1: one I/O queue
    assert res["disconnect default-ram rc"] == "0" == res["disconnect default-q1 rc"]


def test_no_kernel_errors_and_clean_teardown(guest: GuestResult) -> None:
    nvme_lines = [line for line in guest.read("dmesg.txt").splitlines() if "nvme" in line]
    assert any("new ctrl" in line for line in nvme_lines)
    for bad in ("timeout", "I/O Error", "error recovery", "failed", "Reconnecting"):
        assert not [line for line in nvme_lines if bad in line], bad
    assert guest.read("leftover.txt").strip() == ""
    assert "Traceback" not in guest.read("target.log")


def test_io_queues_were_served_by_the_workers(guest: GuestResult) -> None:
    log = guest.read("target.log")
    served = re.findall(r"qid (\d+): served by offload worker (\d+)", log)
    assert {w for _, w in served} == {"0", "1"}, served  # one host's queues spread across both


def test_killed_worker_is_replaced_and_fio_verify_passes(guest: GuestResult) -> None:
    res = results(guest)
    assert res["connect kill rc"] == "0" and res["kill rc"] == "0"
    victim = guest.read("victim.txt").strip()
    log = guest.read("target.log")
    assert re.search(rf"offload worker \d \(pid {victim}\) died .*starting another", log), log[
        -3000:
    ]
    assert res["fio kill rc"] == "0", guest.read("fio-kill.json")[-2000:]
    job = json.loads(guest.read("fio-kill.json"))["jobs"][0]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] == 64 << 20
    assert job["read"]["io_bytes"] == 64 << 20  # the verify pass read back every block
    dmesg = guest.read("dmesg-kill.txt")
    assert "Reconnecting" in dmesg or "reconnect" in dmesg, dmesg[-2000:]
    assert "Successfully reconnected" in dmesg, dmesg[-2000:]
    assert res["disconnect kill rc"] == "0"
