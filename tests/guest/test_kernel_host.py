"""The Linux 6.1 kernel's own NVMe/TCP host (nvme-cli, fio) against our target, in the guest.

One boot runs everything: discovery, connects with and without ``-i``, fio with CRC32C verify
at 4 KiB and 128 KiB on RAM and file namespaces with digests off and on, and disconnects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.guest.harness import GuestResult, run_in_guest

pytestmark = pytest.mark.guest

CONFIG = Path(__file__).parent / "data" / "kernel-host.json"
NQN = "nqn.2024-01.io.nvmf:"

SCRIPT = r"""
exec > $OUT/trace.txt 2>&1
mkdir -p /tmp/nvmf-guest
modprobe nvme-tcp
ip link set lo up
nproc > $OUT/nproc.txt
$PY -m nvmf.cli.main serve -v --config CONFIG > $OUT/target.log 2>&1 &
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


@pytest.mark.parametrize("case", ["ram-plain", "file-plain", "ram-digest", "file-digest"])
def test_connect_with_two_io_queues_and_fio_verify(guest: GuestResult, case: str) -> None:
    res = results(guest)
    assert res[f"connect {case} rc"] == "0"
    assert res[f"{case} queues"] == "3"  # admin queue + 2 I/O queues
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
