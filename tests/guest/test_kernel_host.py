"""The Linux 6.1 kernel's own NVMe/TCP host (nvme-cli, fio) against our target, in the guest.

One boot runs everything, with the target's I/O queues in two offload workers (``--workers
2``): discovery, connects with ``-i 1``, ``-i 2`` and without ``-i``, fio with CRC32C verify at
4 KiB and 128 KiB on RAM and file namespaces (digests on for RAM), and disconnects; then a
worker is killed (``kill -9``) in the middle of a fio write job: the host reconnects, a new
worker serves, and the job's verify passes.

The same boot watches the running target: ``nvmf status`` and the metrics endpoint show the
kernel host's controller and queues; a namespace added to the configuration file and applied
with ``SIGHUP`` appears on the connected host (Namespace Attribute Changed notice, the host
rescans) without a reconnect, ``nvmf config reload`` takes it away again, and a file that does
not validate changes nothing.  A file nvmetcli saved on a real 6.7 target is served unchanged
and the host connects to it; then it is stopped (``SIGTERM``) while the host writes.  Last,
with our target stopped, ``nvmf config apply`` to the kernel's own target followed by
``nvmf config save --from-kernel`` gives the file back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.guest import tbkas
from tests.guest.harness import GuestResult, run_in_guest

# One boot runs every case; under emulation on a loaded machine it can pass 15 minutes.
pytestmark = [pytest.mark.guest, pytest.mark.timeout(2700)]

CONFIG = Path(__file__).parent / "data" / "kernel-host.json"
KERNEL_FILE = Path(__file__).parent / "data" / "kernel-roundtrip.json"
#: A file nvmetcli saved on a Linux 6.7.9 target (see tests/config/test_config_nvmetcli.py).
NVMETCLI_SAVED = Path(__file__).parents[1] / "config" / "data" / "nvmetcli_save_6.7.json"
NQN = "nqn.2024-01.io.nvmf:"


def _referral_config() -> dict[str, Any]:
    """:data:`CONFIG` with a referral on port 1: the discovery log of a host connected there
    changes."""
    cfg = json.loads(CONFIG.read_text())
    cfg["ports"][0]["referrals"] = [
        {
            "addr": {"adrfam": "ipv4", "portid": "7", "traddr": "127.0.0.1",
                     "treq": "not specified", "trsvcid": "4499", "trtype": "tcp"},
            "enable": 1,
            "name": "peer",
        }
    ]  # fmt: skip
    return cfg


def _added_config() -> dict[str, Any]:
    """:data:`CONFIG` with a second namespace (32 MiB of RAM) in the RAM subsystem: the file the
    watch checks apply with ``SIGHUP``."""
    cfg = json.loads(CONFIG.read_text())
    ram = next(s for s in cfg["subsystems"] if s["nqn"] == NQN + "ram")
    ram["namespaces"].append(
        {"device": {"path": ""}, "enable": 1, "nsid": 2, "nvmf": {"kind": "ram", "size": "32M"}}
    )
    return cfg


SCRIPT = (
    r"""
exec > $OUT/trace.txt 2>&1
mkdir -p /tmp/nvmf-guest
modprobe nvme-tcp
ip link set lo up
nproc > $OUT/nproc.txt
# The target runs a copy of the file, which the watch checks below edit and reload.
cp CONFIG /tmp/nvmf-guest/target.json
SOCK=/tmp/nvmf-guest/control.sock
# nvmf commands that run one after another go in one Python process (the harness's batch).
$PY -m nvmf.cli.main serve -v --workers 2 --config /tmp/nvmf-guest/target.json \
    --control-socket $SOCK --metrics-port 9464 > $OUT/target.log 2>&1 &
target=$!
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
    [ $bs = 4k ] && size=8m || size=16m
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
run_case ram-digest ${NQN}ram -i 2 -g -G
run_case file-i1 ${NQN}file -i 1
run_case file-default ${NQN}file
# SQ flow control disabled (the discovery log says it may be): a Read's C2HData carries its
# success, with no completion capsule.
run_case ram-sqflow ${NQN}ram -i 2 --disable-sqflow

# Multipath: the RAM subsystem through both its ports, a controller on each.  The host joins
# the two paths under one namespace head (NMIC says the namespace is shared) and fio verifies
# through it.
dmesg -C
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN}ram -i 1
echo "connect mpath-1 rc=$?" >> $OUT/results.txt
nvme connect -t tcp -a 127.0.0.1 -s 4430 -n ${NQN}ram -i 1
echo "connect mpath-2 rc=$?" >> $OUT/results.txt
dev=$(newdev)
paths() { ls /sys/block | grep -cE '^nvme[0-9]+c[0-9]+n1$'; }
for i in $(seq 50); do [ $(paths) -ge 2 ] && break; sleep 0.2; done
ls /sys/block > $OUT/mpath-block.txt
fio --name=mpath --filename=$dev --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
    --bs=4k --size=8m --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=json --output=$OUT/fio-mpath.json
echo "fio mpath rc=$?" >> $OUT/results.txt
nvme disconnect -n ${NQN}ram > $OUT/disconnect-mpath.txt
dmesg > $OUT/dmesg-mpath.txt
sleep 1

# Without -i: the host asks for one queue per CPU and takes min(that, the target's grant).
for case in ram q1; do
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN}$case
  echo "connect default-$case rc=$?" >> $OUT/results.txt
  dev=$(newdev)
  echo "default-$case queues $(queues)" >> $OUT/results.txt
  nvme ns-descs $dev > $OUT/ns-descs-$case.txt 2>&1
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
# Writes at most 1000 IOPS, so 8 s or more of writing: a kill 3 s in lands while the job still
# writes, however fast the guest runs (unthrottled, the job was seen to end, verify included,
# before a kill 4 s after its start).
fio --name=kill --filename=$dev --ioengine=libaio --direct=1 --iodepth=16 --rw=write --bs=4k \
    --size=32m --rate_iops=,1000 --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --verify_state_save=0 --output-format=json --output=$OUT/fio-kill.json &
fio_pid=$!
sleep 3
victim=$(sed -n 's/.*offload workers (pids \([0-9]*\) .*/\1/p' $OUT/target.log | head -1)
echo "$victim" > $OUT/victim.txt
kill -0 $fio_pid && echo "fio writing at kill=1" >> $OUT/results.txt
kill -9 $victim
echo "kill rc=$?" >> $OUT/results.txt
wait $fio_pid
echo "fio kill rc=$?" >> $OUT/results.txt
nvme disconnect -n ${NQN}ram > /dev/null
echo "disconnect kill rc=$?" >> $OUT/results.txt
dmesg > $OUT/dmesg-kill.txt

# Traffic Based Keep Alive (CTRATT bit 6): tests/guest/tbkas.py.
TBKAS_SCRIPT

# Watching the running target with the kernel host connected.
dmesg -C
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN}ram -i 2
echo "connect watch rc=$?" >> $OUT/results.txt
dev=$(newdev)
base=$(basename ${dev%n1})
ctrl=$(ls /sys/class/nvme/ | head -1)
cat /sys/class/nvme/$ctrl/hostnqn > $OUT/watch-hostnqn.txt
cat /sys/class/nvme/$ctrl/cntlid > $OUT/watch-cntlid-before.txt
dd if=$dev of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null  # some I/O to count
# nvme-cli reads the logs: a reserved log page is refused (an error log entry), SMART counts
# the reads the workers served and the error log's entries.
nvme get-log /dev/$ctrl --log-id=0xbe --log-len=512 > $OUT/watch-badlog.txt 2>&1
nvme smart-log /dev/$ctrl -o json > $OUT/watch-smart.json 2>&1
nvme error-log /dev/$ctrl -e 1 -o json > $OUT/watch-errlog.json 2>&1
batch "out=$OUT/status.json rc=$OUT/results.txt tag=status status -o json --control-socket $SOCK" \
  "out=$OUT/status.txt status --control-socket $SOCK"
curl -sS --max-time 120 http://127.0.0.1:9464/metrics > $OUT/metrics.txt
echo "metrics rc=$?" >> $OUT/results.txt
ls /sys/block > $OUT/block-before.txt
# A namespace added to the file, applied with SIGHUP: the connected host sees it appear.
cat > /tmp/nvmf-guest/target.json <<'JSON'
ADDED_CONFIG
JSON
kill -HUP $target
for i in $(seq 900); do [ -e /sys/block/${base}n2 ] && break; sleep 0.2; done
ls /sys/block > $OUT/block-added.txt
cat /sys/block/${base}n2/size > $OUT/watch-n2-size.txt
cat /sys/class/nvme/$ctrl/cntlid > $OUT/watch-cntlid-after.txt
head -c 262144 /dev/urandom > /tmp/nvmf-guest/pattern
dd if=/tmp/nvmf-guest/pattern of=/dev/${base}n2 bs=4k oflag=direct 2>/dev/null
dd if=/dev/${base}n2 of=/tmp/nvmf-guest/back bs=4k count=64 iflag=direct 2>/dev/null
cmp /tmp/nvmf-guest/pattern /tmp/nvmf-guest/back
echo "n2 verify rc=$?" >> $OUT/results.txt
batch "out=$OUT/status-added.json status -o json --control-socket $SOCK" \
  "out=$OUT/save.txt err=$OUT/save.txt rc=$OUT/results.txt tag=save \
   config save $OUT/running.json --control-socket $SOCK"
# The original file back, applied with nvmf config reload: the namespace goes away again.
cp CONFIG /tmp/nvmf-guest/target.json
$PY -m nvmf.cli.main config reload --control-socket $SOCK > $OUT/reload.txt 2>&1
echo "reload rc=$?" >> $OUT/results.txt
for i in $(seq 900); do [ -e /sys/block/${base}n2 ] || break; sleep 0.2; done
ls /sys/block > $OUT/block-removed.txt
# A file that does not validate changes nothing.
echo '{"subsystems": [{"nqn": 5}]}' > /tmp/nvmf-guest/target.json
batch "out=$OUT/reload-bad.txt err=$OUT/reload-bad.txt rc=$OUT/results.txt tag=reload-bad \
   config reload --control-socket $SOCK" \
  "out=$OUT/status-after-bad.json status -o json --control-socket $SOCK"
# Discovery Log Page Change: a persistent discovery controller (nvme discover -p) hears a
# change of its log (a referral added, removed, added) once until it reads the log; the host
# kernel reports each event as a uevent NVME_AEN=0x70f002 (tests/guest/uevents.py records them).
$PY -m tests.guest.uevents $OUT/uevents.txt &
uev=$!
for i in $(seq 300); do [ -e $OUT/uevents.txt.ready ] && break; sleep 0.1; done
nvme discover -t tcp -a 127.0.0.1 -s 4420 -p > $OUT/disc-persistent.txt 2>&1
echo "discover persistent rc=$?" >> $OUT/results.txt
for c in /sys/class/nvme/nvme*; do
  [ "$(cat $c/subsysnqn)" = nqn.2014-08.org.nvmexpress.discovery ] && dctrl=$(basename $c)
done
echo "$dctrl" > $OUT/disc-ctrl.txt
cat > /tmp/nvmf-guest/referral.json <<'JSON'
REFERRAL_JSON
JSON
disc_reload() {  # file tag
  cp $1 /tmp/nvmf-guest/target.json
  $PY -m nvmf.cli.main config reload --control-socket $SOCK >> $OUT/disc-reloads.txt 2>&1
  echo "disc reload $2 rc=$?" >> $OUT/results.txt
  sleep 2
}
disc_reload /tmp/nvmf-guest/referral.json 1
disc_reload CONFIG 2
# nvme-cli 2.3 reads the log with Retain Asynchronous Event set in every command: still masked
nvme discover -d $dctrl > $OUT/disc-read.txt 2>&1
echo "discover read rc=$?" >> $OUT/results.txt
disc_reload /tmp/nvmf-guest/referral.json 3
# get-log reads it with RAE clear: the next change is told
nvme get-log /dev/$dctrl --log-id=0x70 --log-len=1024 > $OUT/disc-getlog.txt 2>&1
echo "discovery get-log rc=$?" >> $OUT/results.txt
disc_reload CONFIG 4
kill $uev
nvme disconnect -d $dctrl > /dev/null
cp CONFIG /tmp/nvmf-guest/target.json
$PY -m nvmf.cli.main config reload --control-socket $SOCK > /dev/null 2>&1
nvme disconnect -n ${NQN}ram > /dev/null
echo "disconnect watch rc=$?" >> $OUT/results.txt
dmesg > $OUT/dmesg-watch.txt
kill %1; wait

# A file nvmetcli saved on a real Linux 6.7 target, served unchanged: an IPv6 wildcard on port
# 8009, non-strict names, a file namespace at the path it had there (made on a tmpfs here: the
# guest's root is read-only).
mount -t tmpfs none /srv && mkdir -p /srv/pxe/arch/x86_64
truncate -s 64M /srv/pxe/arch/x86_64/pxeboot.img
$PY -m nvmf.cli.main serve --workers 2 --config NVMETCLI_SAVED --control-socket none \
    > $OUT/saved-target.log 2>&1 &
saved=$!
for i in $(seq 900); do grep -q 'nvmf: listening' $OUT/saved-target.log && break; sleep 0.2; done
nvme discover -t tcp -a ::1 -s 8009 -o json > $OUT/saved-discover.json
echo "discover saved rc=$?" >> $OUT/results.txt
nvme connect -t tcp -a ::1 -s 8009 -n testnqn -i 2
echo "connect saved rc=$?" >> $OUT/results.txt
dev=$(newdev)
echo "saved queues $(queues)" >> $OUT/results.txt
fio --name=saved --filename=$dev --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
    --bs=4k --size=8m --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=json --output=$OUT/fio-saved.json
echo "fio saved rc=$?" >> $OUT/results.txt
nvme disconnect -n testnqn > /dev/null
echo "disconnect saved rc=$?" >> $OUT/results.txt
# SIGTERM while the kernel host writes (16 threads, 4 KiB O_DIRECT), the host not reconnecting
# (--ctrl-loss-tmo=0): the stop must not wait out its grace period, and every write that
# reached the medium must have been acknowledged first (tests/guest/acked_writes.py).
nvme connect -t tcp -a ::1 -s 8009 -n testnqn -i 2 --ctrl-loss-tmo=0
echo "connect stop rc=$?" >> $OUT/results.txt
dev=$(newdev)
W=/tmp/nvmf-guest/acked
$PY -m tests.guest.acked_writes write $dev 16 512 $W $W.stop &
writer=$!
for i in $(seq 300); do [ -s $W/w0.log ] && break; sleep 0.1; done
sleep 2
t0=$EPOCHREALTIME
kill $saved; wait $saved
echo "serve saved rc=$?" >> $OUT/results.txt
echo "stop ms $(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 ))" >> $OUT/results.txt
touch $W.stop; wait $writer
$PY -m tests.guest.acked_writes check /srv/pxe/arch/x86_64/pxeboot.img 16 512 $W \
    > $OUT/acked-writes.json

# The kernel's own target: apply a file, save it back from configfs, apply that, save again.
modprobe nvmet && modprobe nvmet-tcp
echo "modprobe nvmet rc=$?" >> $OUT/results.txt
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
truncate -s 16M /tmp/nvmf-guest/kernel.img
R="rc=$OUT/results.txt"
batch "out=$OUT/kapply.txt err=$OUT/kapply.txt $R tag=kapply config apply KERNEL_FILE" \
  "out=$OUT/ksave1.txt err=$OUT/ksave1.txt $R tag=ksave1 \
   config save $OUT/ksave1.json --from-kernel" \
  "out=$OUT/kclear.txt err=$OUT/kclear.txt $R tag=kclear config clear" \
  "out=$OUT/kapply2.txt err=$OUT/kapply2.txt $R tag=kapply2 config apply $OUT/ksave1.json" \
  "out=$OUT/ksave2.txt err=$OUT/ksave2.txt $R tag=ksave2 \
   config save $OUT/ksave2.json --from-kernel" \
  "out=$OUT/kclear2.txt err=$OUT/kclear2.txt $R tag=kclear2 config clear"
echo done > $OUT/finished
""".replace("KERNEL_FILE", str(KERNEL_FILE))
    .replace("NVMETCLI_SAVED", str(NVMETCLI_SAVED))
    .replace(
        "TBKAS_SCRIPT",
        tbkas.script(
            "nvme connect -t tcp -a 127.0.0.1 -s 4420 -n ${NQN}ram -i 2",
            "ls /sys/class/nvme/ | head -1",
            "newdev",
            "${NQN}ram",
        ),
    )
    .replace("ADDED_CONFIG", json.dumps(_added_config()))
    .replace("REFERRAL_JSON", json.dumps(_referral_config()))
    .replace("CONFIG", str(CONFIG))
    .replace("${NQN}", NQN)
)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return run_in_guest("kernel-host", SCRIPT, timeout=2400)


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
        assert r["treq"] == "not specified, sq flow control disable supported", r


def test_the_host_joins_both_ports_paths_under_one_namespace(guest: GuestResult) -> None:
    """Two controllers of the RAM subsystem, one through each port: the Linux host makes one
    namespace head with a path through each (Identify Namespace NMIC: shared; Linux 6.1 refused
    the second path of an unshared one: "duplicate IDs in subsystem for nsid 1", so the head had
    one path), and a verified fio job runs on it."""
    res = guest.results()
    assert res["connect mpath-1 rc"] == "0" and res["connect mpath-2 rc"] == "0"
    block = guest.lines("mpath-block.txt")
    (head,) = [b for b in block if re.fullmatch(r"nvme\d+n1", b)]
    paths = [b for b in block if re.fullmatch(r"nvme\d+c\d+n1", b)]
    assert len(paths) == 2 and all(p.split("c")[0] == head[:-2] for p in paths), block
    dmesg = guest.read("dmesg-mpath.txt")  # an unshared namespace's second path is refused:
    assert "duplicate IDs" not in dmesg and "unshared" not in dmesg, dmesg  # (Linux 6.1, 6.12)
    assert res["fio mpath rc"] == "0"
    job = json.loads(guest.read("fio-mpath.json"))["jobs"][0]
    assert job["error"] == 0 and job["read"]["io_bytes"] == job["write"]["io_bytes"] == 8 << 20
    assert "disconnected 2 controller" in guest.read("disconnect-mpath.txt")


@pytest.mark.parametrize(
    ("case", "queues"),
    [
        ("ram-plain", 3),  # admin queue + 2 I/O queues
        ("ram-digest", 3),
        ("file-i1", 2),
        ("file-default", 3),  # min(2 guest CPUs, the grant of 2)
        ("ram-sqflow", 3),
    ],
)
def test_connect_and_fio_verify_with_two_workers(
    guest: GuestResult, case: str, queues: int
) -> None:
    res = guest.results()
    assert res[f"connect {case} rc"] == "0"
    assert res[f"{case} queues"] == str(queues)
    for bs in ("4k", "128k"):
        assert res[f"fio {case}-{bs} rc"] == "0"
        job = json.loads(guest.read(f"fio-{case}-{bs}.json"))["jobs"][0]
        assert job["error"] == 0
        assert job["write"]["io_bytes"] == (8 << 20 if bs == "4k" else 16 << 20)
        assert job["read"]["io_bytes"] == job["write"]["io_bytes"]  # the verify pass
    assert res[f"disconnect {case} rc"] == "0"
    assert "disconnected 1 controller" in guest.read(f"disconnect-{case}.txt")


def test_digests_were_negotiated_when_asked(guest: GuestResult) -> None:
    log = guest.read("target.log")
    assert "hdgst=1 ddgst=1" in log and "hdgst=0 ddgst=0" in log


def test_default_queue_count_is_min_of_host_cpus_and_target_grant(guest: GuestResult) -> None:
    res = guest.results()
    cpus = int(guest.read("nproc.txt"))
    assert res["default-ram queues"] == str(1 + min(cpus, cpus))  # grant = target cores
    assert res["default-q1 queues"] == "2"  # qid_max 1: one I/O queue
    assert res["disconnect default-ram rc"] == "0" == res["disconnect default-q1 rc"]


def test_nvme_cli_lists_the_namespace_identifiers_it_has(guest: GuestResult) -> None:
    """``nvme ns-descs``: the RAM namespace's derived NGUID and UUID; q1's namespace has the
    zero NGUID ``nvmetcli save`` writes for none, which is no identifier (no descriptor), and
    its configured UUID."""
    ram, q1 = guest.read("ns-descs-ram.txt"), guest.read("ns-descs-q1.txt")
    assert re.search(r"^nguid +: [0-9a-f]{32}$", ram, re.M) and "uuid" in ram, ram
    assert "nguid" not in q1, q1
    assert re.search(r"^uuid +: c1a0b7e6-3b1c-4f0e-9d5d-0123456789ab$", q1, re.M), q1
    assert re.search(r"^csi +: 0$", q1, re.M), q1


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
    res = guest.results()
    assert res["connect kill rc"] == "0" and res["kill rc"] == "0"
    assert res.get("fio writing at kill") == "1", "the job ended before the worker was killed"
    victim = guest.read("victim.txt").strip()
    log = guest.read("target.log")
    assert re.search(rf"offload worker \d \(pid {victim}\) died .*starting another", log), log[
        -3000:
    ]
    assert res["fio kill rc"] == "0", guest.read("fio-kill.json")[-2000:]
    job = json.loads(guest.read("fio-kill.json"))["jobs"][0]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] == 32 << 20
    assert job["read"]["io_bytes"] == 32 << 20  # the verify pass read back every block
    dmesg = guest.read("dmesg-kill.txt")
    assert "Reconnecting" in dmesg or "reconnect" in dmesg, dmesg[-2000:]
    assert "Successfully reconnected" in dmesg, dmesg[-2000:]
    assert res["disconnect kill rc"] == "0"


# -- watching the running target -----------------------------------------------------------------


def _ram_subsystem(status: dict[str, Any]) -> dict[str, Any]:
    (sub,) = [s for s in status["subsystems"] if s["nqn"] == NQN + "ram"]
    return sub


def test_the_host_sends_no_keep_alive_while_its_io_completes(guest: GuestResult) -> None:
    """CTRATT.TBKAS over NVMe/TCP: no Keep Alive under I/O, the controller kept, and the Keep
    Alives back once idle (tests/guest/tbkas.py)."""
    tbkas.check(guest)


def test_status_shows_the_kernel_hosts_controller_and_queues(guest: GuestResult) -> None:
    res = guest.results()
    assert res["connect watch rc"] == "0" and res["status rc"] == "0"
    status = json.loads(guest.read("status.json"))
    (ctrl,) = _ram_subsystem(status)["controllers"]
    assert ctrl["hostnqn"] == guest.read("watch-hostnqn.txt").strip()
    assert str(ctrl["cntlid"]) == guest.read("watch-cntlid-before.txt").strip()
    assert ctrl["address"].startswith("127.0.0.1:") and ctrl["kato_ms"] > 0
    queues = {q["qid"]: q for q in ctrl["queues"]}
    assert sorted(queues) == [0, 1, 2]  # -i 2
    assert queues[0]["worker"] == "control" and queues[0]["size"] == 32
    for qid in (1, 2):
        assert queues[qid]["worker"] in (0, 1) and queues[qid]["size"] == 128
    assert sum(queues[qid]["commands"] for qid in (1, 2)) >= 16  # the host's reads at least
    text = guest.read("status.txt")
    assert f"controller {ctrl['cntlid']}: host {ctrl['hostnqn']}" in text


def test_nvme_cli_reads_smart_and_the_error_log_as_the_spec_lays_them_out(
    guest: GuestResult,
) -> None:
    """``nvme smart-log`` shows the reads the workers served (the host's 16 at least, in
    thousands of 512-byte units rounded up) and as many error log entries as ``nvme error-log``
    numbers; the newest entry is the reserved log page just refused, whose Status Field
    nvme-cli decodes (bits 15:1) as Invalid Log Page with DNR, phase tag 0."""
    assert "Invalid Log Page" in guest.read("watch-badlog.txt"), guest.read("watch-badlog.txt")
    smart = json.loads(guest.read("watch-smart.json"))
    assert int(smart["host_read_commands"]) >= 16 and int(smart["data_units_read"]) >= 1
    (entry,) = json.loads(guest.read("watch-errlog.json"))["errors"]
    assert entry["status_field"] == 0x4109 and entry["phase_tag"] == 0, entry
    assert entry["sqid"] == 0 and entry["error_count"] == int(smart["num_err_log_entries"])


def test_metrics_endpoint_shows_the_same_controller(guest: GuestResult) -> None:
    assert guest.results()["metrics rc"] == "0"
    metrics = guest.read("metrics.txt")
    host = guest.read("watch-hostnqn.txt").strip()
    info = [line for line in metrics.splitlines() if line.startswith("nvmf_controller_info{")]
    assert any(f'host="{host}"' in line and NQN + "ram" in line for line in info), info
    sizes = [line for line in metrics.splitlines() if line.startswith("nvmf_queue_size{")]
    assert sum('queue="1"' in line or 'queue="2"' in line for line in sizes) == 2, sizes
    assert 'nvmf_worker_up{worker="0"} 1.0' in metrics


def test_namespace_added_by_sighup_appears_without_reconnecting(guest: GuestResult) -> None:
    res = guest.results()
    before = set(guest.lines("block-before.txt"))
    added = set(guest.lines("block-added.txt")) - before
    # The namespace is shared (NMIC), so the host shows it as a multipath head (nvme0n2) over
    # a hidden path device (nvme0c0n2).
    heads = {b for b in added if not re.fullmatch(r"nvme\d+c\d+n\d+", b)}
    assert len(heads) == 1 and next(iter(heads)).endswith("n2"), (before, added)
    assert guest.read("watch-n2-size.txt").strip() == str((32 << 20) // 512)
    assert guest.read("watch-cntlid-after.txt") == guest.read("watch-cntlid-before.txt")
    assert res["n2 verify rc"] == "0"
    dmesg = guest.read("dmesg-watch.txt")
    assert "rescanning namespaces" in dmesg, dmesg[-2000:]  # the AEN path: nvme_scan_work
    for bad in ("Reconnecting", "resetting", "I/O Error", "timeout"):
        assert bad not in dmesg, bad
    log = guest.read("target.log")
    added = f"namespaces added {NQN}ram/2; namespace change notice to 1 controller"
    assert f"nvmf: reloaded /tmp/nvmf-guest/target.json: {added}" in log
    added_status = json.loads(guest.read("status-added.json"))
    ram = _ram_subsystem(added_status)
    assert [ns["nsid"] for ns in ram["namespaces"]] == [1, 2]
    (ctrl,) = ram["controllers"]
    assert str(ctrl["cntlid"]) == guest.read("watch-cntlid-before.txt").strip()
    assert res["save rc"] == "0"
    running = json.loads(guest.read("running.json"))
    (saved,) = [s for s in running["subsystems"] if s["nqn"] == NQN + "ram"]
    assert [ns["nsid"] for ns in saved["namespaces"]] == [1, 2]


def test_config_reload_removes_it_and_a_bad_file_changes_nothing(guest: GuestResult) -> None:
    res = guest.results()
    assert res["reload rc"] == "0", guest.read("reload.txt")
    assert guest.read("reload.txt").strip() == (
        f"reloaded: namespaces removed {NQN}ram/2; namespace change notice to 1 controller"
    )
    assert set(guest.lines("block-removed.txt")) == set(guest.lines("block-before.txt"))
    assert res["reload-bad rc"] == "1"
    assert "subsystems[0].nqn" in guest.read("reload-bad.txt")
    log = guest.read("target.log").splitlines()
    refused = [line for line in log if "reload of" in line and "refused" in line]
    assert len(refused) == 1 and "nothing changed" in refused[0], refused
    after = json.loads(guest.read("status-after-bad.json"))
    assert [s["nqn"] for s in after["subsystems"][1:]] == [NQN + "ram", NQN + "file", NQN + "q1"]
    assert res["disconnect watch rc"] == "0"


def test_a_persistent_discovery_controller_hears_each_log_change_once(
    guest: GuestResult,
) -> None:
    """The Linux host's persistent discovery controller (``nvme discover -p``) gets a
    Discovery Log Page Change notice (the host kernel's uevent ``NVME_AEN=0x70f002``) when a
    reload adds a referral to its port; then none until the host reads the log with Retain
    Asynchronous Event clear, as Linux's nvmet: not after ``nvme discover -d`` (nvme-cli 2.3
    sets RAE in every Get Log Page of the discovery log), again after ``nvme get-log``."""
    res = guest.results()
    assert res["discover persistent rc"] == "0", guest.read("disc-persistent.txt")
    assert [res[f"disc reload {i} rc"] for i in (1, 2, 3, 4)] == ["0"] * 4, guest.read(
        "disc-reloads.txt"
    )
    changed = "reloaded: discovery log changed, notice to"
    told, masked = f"{changed} 1 controller", f"{changed} 0 controllers"
    assert guest.lines("disc-reloads.txt") == [told, masked, masked, told]
    assert res["discover read rc"] == "0", guest.read("disc-read.txt")
    assert "127.0.0.1" in guest.read("disc-read.txt")
    assert res["discovery get-log rc"] == "0", guest.read("disc-getlog.txt")
    dctrl = guest.read("disc-ctrl.txt").strip()
    assert dctrl.startswith("nvme"), dctrl
    events = [line.split()[:3] for line in guest.lines("uevents.txt") if "NVME_AEN=" in line]
    assert events == [["change", dctrl, "NVME_AEN=0x70f002"]] * 2, guest.read("uevents.txt")


def test_a_file_nvmetcli_saved_serves_unchanged(guest: GuestResult) -> None:
    res = guest.results()
    assert res["discover saved rc"] == "0", guest.read("saved-target.log")
    records = json.loads(guest.read("saved-discover.json"))["records"]
    assert "testnqn" in [r["subnqn"] for r in records]
    assert res["connect saved rc"] == "0", guest.read("saved-target.log")
    assert res["saved queues"] == "3"
    assert res["fio saved rc"] == "0", guest.read("fio-saved.json")[-2000:]
    assert res["disconnect saved rc"] == "0"
    assert res["serve saved rc"] == "0", guest.read("saved-target.log")


def test_sigterm_while_the_host_writes_acknowledges_every_write_it_ran(
    guest: GuestResult,
) -> None:
    """SIGTERM while the kernel host writes and will not reconnect: the target stops without
    waiting out its grace period, no acknowledged write is lost, and no write reached the
    medium without its completion reaching the host first: the writes the host saw fail were
    never run.  Before, the stop waited 10 s on the host's Asynchronous Event Request and
    then closed queues under completions (13 of 16 failed writes were on the medium)."""
    res = guest.results()
    assert res["connect stop rc"] == "0"
    log = guest.read("saved-target.log")
    assert "still in flight" not in log and "Traceback" not in log, log[-3000:]
    counts = json.loads(guest.read("acked-writes.json"))
    assert counts["acked"] > 0 and counts["lost"] == 0, counts
    assert counts["failed_landed"] == 0, counts


def test_kernel_target_apply_then_save_from_kernel_round_trips(guest: GuestResult) -> None:
    res = guest.results()
    assert res["modprobe nvmet rc"] == "0"
    for step in ("kapply", "ksave1", "kclear", "kapply2", "ksave2", "kclear2"):
        assert res[f"{step} rc"] == "0", (step, guest.read(f"{step}.txt"))
    first, second = guest.read("ksave1.json"), guest.read("ksave2.json")
    assert first and first == second
    saved = json.loads(first)
    applied = json.loads(KERNEL_FILE.read_text())
    (sub,) = saved["subsystems"]
    (want,) = applied["subsystems"]
    assert sub["nqn"] == want["nqn"] and sub["allowed_hosts"] == want["allowed_hosts"]
    for key, value in want["attr"].items():
        assert sub["attr"][key] == value, key
    (ns,) = sub["namespaces"]
    assert ns["nsid"] == 3 and ns["enable"] == 1
    assert ns["device"] == {**ns["device"], **want["namespaces"][0]["device"]}
    (port,) = saved["ports"]
    assert port["addr"] == {**port["addr"], **applied["ports"][0]["addr"]}
    assert port["param"]["inline_data_size"] == "16384" and port["subsystems"] == [want["nqn"]]
    assert [h["nqn"] for h in saved["hosts"]] == [h["nqn"] for h in applied["hosts"]]
