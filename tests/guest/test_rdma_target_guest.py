"""NVMe/RDMA against real Linux peers over Soft-RoCE: the Linux 6.1 kernel's host (nvme-cli,
fio) against our target, and our host against the kernel's target (nvmet-rdma).

One boot, on Soft-RoCE on a dummy netdev (``rxe0`` on ``nvmf0``, 10.99.0.1):

1. the transport contract suite's NVMe/RDMA cases, with ``tests/transport/rdma_host.py``;
2. the kernel host meets a bare listener (``rdma_cm_probe.py``) that rejects it: its connect
   request's private data is what the spec says, and it reads our reject's status;
3. our host (``-t rdma``: discover, identify, ``rdma_host_driver.py``, bench) against the
   kernel's nvmet-rdma: data written on two I/O queues reads back and is in the namespace,
   every key the host asked to invalidate was invalidated (memory windows); then the
   malformed commands and connect requests of ``status_probe.py --rdma``, whose answers
   ours must equal but for :data:`~tests.guest.status_differences.RDMA_DIFFERENCES`;
4. our target with ``--workers 2`` serving a RAM and a file namespace: the kernel host
   discovers it, connects with ``-i 2`` and with its default, and fio verifies (CRC32C) 4 KiB
   and 128 KiB random writes on both media; ``nvmf status`` shows the I/O queues in the
   workers; ours answers the status probe.  Then, while a host's fio verify runs on the RAM
   subsystem, a client sends connect requests with bad NVMe/RDMA private data (each rejected
   with its status) and a second controller is disconnected in the middle of its own fio job
   (its 4 KiB writes carry their data in the capsule, so commands in flight hold views of the
   receive buffers as their queues end): the first job still verifies, and the target logs no
   error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from nvmf.wire.rdma import CmRequest, decode_request
from tests.guest import tbkas
from tests.guest.harness import GuestResult, run_in_guest
from tests.guest.rdma_host_driver import EXTENTS, QUEUE_STRIDE, pattern
from tests.guest.status_differences import RDMA_DIFFERENCES, unexplained

pytestmark = [pytest.mark.guest, pytest.mark.timeout(2400)]

CONFIG = Path(__file__).parent / "data" / "rdma-host.json"
CLIENT = Path(__file__).parent / "rdma_cm_client.py"
PROBE = Path(__file__).parent / "rdma_cm_probe.py"
NQN = "nqn.2024-01.io.nvmf:"
#: The kernel target's subsystem our host talks to.
HOST_NQN = "nqn.2024-01.io.nvmf:rdmahost"
ADDR = "10.99.0.1"

#: Connect requests a broken host could send, and the reject status each must get (the
#: target's defaults: 128-entry I/O queues, and the guest's 2 CPUs' worth of I/O queues).
BAD_REQUESTS = {
    "recfmt": (b"\x01\x00" + CmRequest(0, 32, 31).encode()[2:], "INVALID_RECFMT"),
    "qid": (CmRequest(1000, 32, 31).encode(), "INVALID_QID"),
    "hsqsize-zero": (CmRequest(0, 32, 0).encode(), "INVALID_HSQSIZE"),
    "hsqsize-admin-64": (CmRequest(0, 64, 63).encode(), "INVALID_HSQSIZE"),
    "hsqsize-io-256": (CmRequest(1, 256, 255).encode(), "INVALID_HSQSIZE"),
    "hrqsize-small": (CmRequest(0, 8, 31).encode(), "INVALID_HRQSIZE"),
}
#: A well-formed admin request from the same client: accepted with CRQSIZE 32.
GOOD_REQUEST = CmRequest(0, 32, 31).encode()

SCRIPT = r"""
exec > $OUT/trace.txt 2>&1
mkdir -p /tmp/nvmf-guest
ip link set lo up
ip link add nvmf0 type dummy && ip addr add ADDR/24 dev nvmf0 && ip link set nvmf0 up
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev nvmf0
echo "rxe rc=$?" >> $OUT/results.txt
modprobe nvme-rdma
nproc > $OUT/nproc.txt
# The transport contract suite's NVMe/RDMA cases (tests/transport/rdma_host.py is their host),
# with the target serving every queue itself (queues in workers: the kernel host's cases below;
# test_rdma_connect.py runs with two workers as well).
NVMF_TEST_RDMA_ADDR=ADDR $PY -m pytest -q -p no:cacheprovider -m "not guest" \
    -k "rdma-one-process or rdma_keyed or rdma_connect" tests/transport/test_transport_contract.py \
    tests/transport/test_rdma_keyed.py tests/transport/test_rdma_connect.py \
    --junitxml=$OUT/contract.xml \
    > $OUT/contract.txt 2>&1
echo "contract rc=$?" >> $OUT/results.txt
# First the Linux host against a listener that rejects every request with Invalid HSQSIZE
# (tests/guest/rdma_cm_probe.py): what the host sends, and that it reads our reject's status.
$PY PROBE ADDR 4421 INVALID_HSQSIZE $OUT > $OUT/probe.log 2>&1 &
probe=$!
for i in $(seq 600); do [ -e $OUT/listening ] && break; sleep 0.2; done
dmesg -C
nvme discover -t rdma -a ADDR -s 4421 > $OUT/probe-discover.txt 2>&1
echo "probe discover rc=$?" >> $OUT/results.txt
sleep 1
dmesg > $OUT/probe-dmesg.txt
kill $probe

# Our host (-t rdma) against the kernel's nvmet-rdma on a loop device (512-byte LBAs), port
# 4420 until our own target takes it below.
ibv_devinfo -v -d rxe0 > $OUT/devinfo.txt 2>&1
modprobe nvmet-rdma
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
truncate -s 16M /tmp/nsimg
modprobe loop
L=$(losetup -f --show /tmp/nsimg)
S=/sys/kernel/config/nvmet/subsystems/HOSTNQN
mkdir $S && echo 1 > $S/attr_allow_any_host
mkdir $S/namespaces/1
echo $L > $S/namespaces/1/device_path
echo 1 > $S/namespaces/1/enable
P=/sys/kernel/config/nvmet/ports/1
mkdir $P
echo rdma > $P/addr_trtype; echo ipv4 > $P/addr_adrfam
echo ADDR > $P/addr_traddr; echo 4420 > $P/addr_trsvcid
ln -s $S $P/subsystems/
echo "kernel target rc=$?" >> $OUT/results.txt
# Our CLI's commands in one Python process (tests/guest/cli_batch.py): under emulation an
# interpreter start costs more than the command.  The bench's 1 MiB at 12 MiB is clear of the
# driver's extents.  A 30 s keep-alive timeout for it, as for the driver: the kernel target ends
# a controller it hears nothing from for 5 to 10 s, and the emulated guest's Python can stall.
R="rc=$OUT/results.txt"
batch <<BATCH
out=$OUT/host-discover.txt err=$OUT/host-discover.txt $R tag="host discover" \
  discover -t rdma -a ADDR -s 4420
out=$OUT/host-identify.txt err=$OUT/host-identify.txt $R tag="host identify" \
  identify -t rdma -a ADDR -n HOSTNQN
out=$OUT/bench.json err=$OUT/bench.err $R tag="host bench" \
  bench -t rdma -a ADDR -n HOSTNQN -i 2 --numjobs 2 --rw randrw --bs 4k --iodepth 8 \
  --runtime 3 --size 1m --offset 12m --verify --json --keep-alive-tmo 30
BATCH
$PY -m tests.guest.rdma_host_driver ADDR HOSTNQN $OUT/driver.json > $OUT/driver.log 2>&1
echo "host driver rc=$?" >> $OUT/results.txt
for e in EXTENTS; do  # what the kernel target wrote, for each extent the driver wrote
    set -- ${e//,/ }
    dd if=$L of=$OUT/file-$1.bin bs=4096 skip=$2 count=$3 iflag=direct status=none
done
dmesg > $OUT/host-dmesg.txt
# The kernel target's answers to malformed commands (tests/guest/status_probe.py), ours below.
$PY -m tests.guest.status_probe --rdma ADDR 4420 HOSTNQN > $OUT/status-kernel.json \
    2> $OUT/status-kernel.err
echo "status probe kernel rc=$?" >> $OUT/results.txt
rm $P/subsystems/HOSTNQN && rmdir $P
SOCK=/tmp/nvmf-guest/control.sock
$PY -m nvmf.cli.main serve -v --workers 2 --config CONFIG --control-socket $SOCK \
    --metrics-port 9464 > $OUT/target.log 2>&1 &
target=$!
for i in $(seq 900); do grep -q 'nvmf: listening' $OUT/target.log && break; sleep 0.2; done
nvme discover -t rdma -a ADDR -s 4420 -o json > $OUT/discover.json
echo "discover rc=$?" >> $OUT/results.txt
$PY -m tests.guest.status_probe --rdma ADDR 4420 ${NQN}ram > $OUT/status-ours.json \
    2> $OUT/status-ours.err
echo "status probe ours rc=$?" >> $OUT/results.txt

newdev() {  # the namespace block device of controller $1
  for i in $(seq 100); do
    # a shared namespace (NMIC) shows under its controller as the path nvmeXcYnZ of the
    # multipath head nvmeXnZ, the block device to use
    d=$(ls /sys/class/nvme/$1/ | grep -E '^nvme[0-9]+(c[0-9]+)?n[0-9]+$' | head -1 \
        | sed -E 's/c[0-9]+n/n/')
    [ -n "$d" ] && { echo /dev/$d; return; }
    sleep 0.2
  done
}
ctrl_of() {  # the controller connected to subsystem $1
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat $c/subsysnqn)" = "$1" ] && { basename $c; return; }
  done
}
verify() {  # name device bs size [extra fio args]
  fio --name=$1 --filename=$2 --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
      --bs=$3 --size=$4 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
      --output-format=json --output=$OUT/fio-$1.json "${@:5}"
}

for media in ram file; do
  nvme connect -t rdma -a ADDR -s 4420 -n ${NQN}$media -i 2
  echo "connect $media rc=$?" >> $OUT/results.txt
  ctrl=$(ctrl_of ${NQN}$media)
  dev=$(newdev $ctrl)
  echo "$media queues $(cat /sys/class/nvme/$ctrl/queue_count)" >> $OUT/results.txt
  verify $media-4k $dev 4k 4m
  echo "fio $media-4k rc=$?" >> $OUT/results.txt
  verify $media-128k $dev 128k 16m
  echo "fio $media-128k rc=$?" >> $OUT/results.txt
  $PY -m nvmf.cli.main status -o json --control-socket $SOCK > $OUT/status-$media.json
  nvme disconnect -n ${NQN}$media > /dev/null
  echo "disconnect $media rc=$?" >> $OUT/results.txt
  sleep 1
done

# Traffic Based Keep Alive over NVMe/RDMA, whose I/O queues are born in the workers:
# tests/guest/tbkas.py.
TBKAS_SCRIPT

# Without -i: one I/O queue per CPU of the host, at most what the target grants.
nvme connect -t rdma -a ADDR -s 4420 -n ${NQN}ram
echo "connect default rc=$?" >> $OUT/results.txt
ctrl=$(ctrl_of ${NQN}ram)
echo "default queues $(cat /sys/class/nvme/$ctrl/queue_count)" >> $OUT/results.txt
nvme disconnect -n ${NQN}ram > /dev/null
sleep 1

# Isolation: a job verifying on the RAM subsystem, meanwhile bad connect requests, and a
# second controller (the file subsystem) disconnected in the middle of its own job.
nvme connect -t rdma -a ADDR -s 4420 -n ${NQN}ram -i 2
echo "connect steady rc=$?" >> $OUT/results.txt
steady=$(newdev $(ctrl_of ${NQN}ram))
nvme connect -t rdma -a ADDR -s 4420 -n ${NQN}file -i 1
echo "connect victim rc=$?" >> $OUT/results.txt
victim=$(newdev $(ctrl_of ${NQN}file))
verify steady $steady 4k 8m &
steady_pid=$!
fio --name=victim --filename=$victim --ioengine=libaio --direct=1 --iodepth=16 --rw=randrw \
    --bssplit=4k/50:64k/50 --size=64m --time_based --runtime=600 --output=$OUT/fio-victim.txt &
victim_pid=$!
sleep 3
$PY CLIENT ADDR 4420 REQUESTS > $OUT/client.txt 2>&1
echo "client rc=$?" >> $OUT/results.txt
nvme disconnect -n ${NQN}file > $OUT/disconnect-victim.txt 2>&1
echo "disconnect victim rc=$?" >> $OUT/results.txt
wait $victim_pid
wait $steady_pid
echo "fio steady rc=$?" >> $OUT/results.txt
nvme disconnect -n ${NQN}ram > /dev/null
echo "disconnect steady rc=$?" >> $OUT/results.txt
sleep 1
ls /sys/class/nvme/ > $OUT/leftover.txt 2>&1
dmesg > $OUT/dmesg.txt
kill $target; wait $target
echo "target rc=$?" >> $OUT/results.txt
echo done > $OUT/finished
"""


def _script() -> str:
    requests = (
        " ".join(f"{name}={data.hex()}" for name, (data, _status) in BAD_REQUESTS.items())
        + f" good={GOOD_REQUEST.hex()}"
    )
    extents = [
        f"{name}-q{qi},{(offset + qi * QUEUE_STRIDE) // 4096},{size // 4096}"
        for qi in range(2)
        for name, offset, size in EXTENTS
    ]
    script = SCRIPT.replace(
        "TBKAS_SCRIPT",
        tbkas.script(
            "nvme connect -t rdma -a ADDR -s 4420 -n ${NQN}ram -i 2",
            "ctrl_of ${NQN}ram",
            "newdev $ctrl",
            "${NQN}ram",
        ),
    )
    script = re.sub(r"\bADDR\b", ADDR, script)  # not inside NVMF_TEST_RDMA_ADDR
    return (
        script.replace("CONFIG", str(CONFIG))
        .replace("CLIENT", str(CLIENT))
        .replace("PROBE", str(PROBE))
        .replace("REQUESTS", requests)
        .replace("${NQN}", NQN)
        .replace("HOSTNQN", HOST_NQN)
        .replace("EXTENTS", " ".join(extents))
    )


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return run_in_guest("rdma-target", _script(), timeout=2100)


def fio_job(guest: GuestResult, name: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(guest.read(f"fio-{name}.json"))["jobs"][0]
    return job


def test_the_target_listened_on_soft_roce(guest: GuestResult) -> None:
    assert guest.read("finished"), guest.console[-3000:]
    res = guest.results()
    assert res["rxe rc"] == "0", guest.read("trace.txt")
    assert "listening on rdma 10.99.0.1:4420" in guest.read("target.log")


def test_the_transport_contract_holds_for_rdma(guest: GuestResult) -> None:
    """The suite every transport passes, on NVMe/RDMA (queues in the control plane)."""
    assert guest.results()["contract rc"] == "0", guest.read("contract.txt")[-3000:]
    suite = ElementTree.fromstring(guest.read("contract.xml")).find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) >= 20 and all("rdma" in case.get("name", "") for case in cases)
    names = {case.get("name", "") for case in cases}
    assert {
        "test_rdma_keyed_a_key_never_registered_ends_only_its_queue",
        "test_rdma_keyed_longer_than_mdts_fails_with_dnr_and_the_queue_goes_on",
        "test_rdma_connect_admin_on_an_io_queues_connection_is_refused[2-workers]",
        "test_rdma_connect_sqsize_other_than_hsqsize_is_refused[one-process-63]",
    } <= names
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert suite.get("skipped") == "0"


def test_the_linux_hosts_admin_connect_request_is_what_the_spec_says(guest: GuestResult) -> None:
    requests = guest.lines("requests.txt")
    assert requests, guest.read("probe.log")
    data = bytes.fromhex(requests[0].split()[0])
    # An admin queue: QID 0, 32 response buffers, a 32-entry SQ (HSQSIZE 0's based).
    assert decode_request(data) == CmRequest(qid=0, hrqsize=32, hsqsize=31)


def test_the_linux_host_reads_our_reject_status(guest: GuestResult) -> None:
    assert guest.results()["probe discover rc"] != "0", guest.read("probe-discover.txt")
    dmesg = guest.read("probe-dmesg.txt")
    # nvme_rdma_conn_rejected: "Connect rejected: status 28 (consumer defined) nvme status 4
    # (invalid host SQ size)."
    assert "nvme status 4 (invalid host SQ size)" in dmesg, dmesg


def test_our_target_answers_malformed_commands_as_the_kernel_target_does(
    guest: GuestResult,
) -> None:
    """Over NVMe/RDMA, with the I/O queues in the workers: the same answers as nvmet-rdma,
    but for the listed differences (each with its reason)."""
    res = guest.results()
    for who in ("kernel", "ours"):
        assert res[f"status probe {who} rc"] == "0", guest.read(f"status-{who}.err")[-3000:]
    kernel = json.loads(guest.read("status-kernel.json"))
    ours = json.loads(guest.read("status-ours.json"))
    assert len(ours) >= 90 and set(ours) == set(kernel)
    assert unexplained(kernel, ours, RDMA_DIFFERENCES) == {}


def test_the_kernel_host_discovers_both_subsystems_over_rdma(guest: GuestResult) -> None:
    assert guest.results()["discover rc"] == "0", guest.read("trace.txt")[-2000:]
    records = json.loads(guest.read("discover.json"))["records"]
    subs = {r["subnqn"]: r for r in records}
    assert {NQN + "ram", NQN + "file"} <= set(subs)
    for record in subs.values():
        assert record["trtype"] == "rdma" and record["traddr"] == ADDR
        assert record["rdma_cms"] == "rdma-cm" and record["rdma_qptype"] == "connected"


@pytest.mark.parametrize("media", ["ram", "file"])
def test_connect_i2_and_fio_verify(guest: GuestResult, media: str) -> None:
    res = guest.results()
    assert res[f"connect {media} rc"] == "0", guest.read("trace.txt")[-2000:]
    assert res[f"{media} queues"] == "3"  # the admin queue and -i 2
    for bs, size in (("4k", 4 << 20), ("128k", 16 << 20)):
        assert res[f"fio {media}-{bs} rc"] == "0", guest.read(f"fio-{media}-{bs}.json")[-2000:]
        job = fio_job(guest, f"{media}-{bs}")
        assert job["error"] == 0
        assert job["write"]["io_bytes"] == size and job["read"]["io_bytes"] == size
    assert res[f"disconnect {media} rc"] == "0"


@pytest.mark.parametrize("media", ["ram", "file"])
def test_the_io_queues_ran_in_the_workers(guest: GuestResult, media: str) -> None:
    status = json.loads(guest.read(f"status-{media}.json"))
    (sub,) = [s for s in status["subsystems"] if s["nqn"] == NQN + media]
    (ctrl,) = sub["controllers"]
    queues = {q["qid"]: q for q in ctrl["queues"]}
    assert sorted(queues) == [0, 1, 2]
    assert queues[0]["worker"] == "control"
    assert {queues[1]["worker"], queues[2]["worker"]} == {0, 1}  # one queue in each worker
    assert sum(queues[qid]["commands"] for qid in (1, 2)) >= 2 * 1024  # fio's 4 KiB pass
    workers = {w["worker"]: w for w in status["workers"]}
    assert all(workers[i]["commands"] > 0 for i in (0, 1)), workers


def test_default_connect_gets_one_queue_per_host_cpu(guest: GuestResult) -> None:
    res = guest.results()
    assert res["connect default rc"] == "0"
    cpus = int(guest.read("nproc.txt"))
    assert res["default queues"] == str(cpus + 1)


def test_the_linux_host_sends_no_keep_alive_while_its_rdma_io_completes(
    guest: GuestResult,
) -> None:
    """CTRATT.TBKAS over NVMe/RDMA, whose I/O queues are placed in the workers before their
    Connect: their commands count for the control plane's Keep Alive Timer too, so the host's
    14 s of I/O with a 2 s KATO and no Keep Alive keep the controller (tests/guest/tbkas.py)."""
    tbkas.check(guest)


def test_bad_connect_requests_are_rejected_with_their_status(guest: GuestResult) -> None:
    assert guest.results()["client rc"] == "0", guest.read("client.txt")
    outcomes = dict(line.split(" ", 1) for line in guest.lines("client.txt"))
    for name, (_data, status) in BAD_REQUESTS.items():
        assert outcomes[name] == f"rejected {status}", guest.read("client.txt")
    assert outcomes["good"] == "accepted 32"
    log = guest.read("target.log")
    # one log line per reject: these, and those the status probe's connect requests got
    probed = json.loads(guest.read("status-ours.json")).values()
    rejects = len(BAD_REQUESTS) + sum(1 for answer in probed if answer.startswith("rejected"))
    assert len(re.findall(r"connect request rejected", log)) == rejects


def test_a_disconnect_mid_transfer_and_bad_requests_leave_other_hosts_alone(
    guest: GuestResult,
) -> None:
    res = guest.results()
    assert res["connect steady rc"] == "0" and res["connect victim rc"] == "0"
    assert res["disconnect victim rc"] == "0", guest.read("disconnect-victim.txt")
    assert res["fio steady rc"] == "0", guest.read("fio-steady.json")[-2000:]
    job = fio_job(guest, "steady")
    assert job["error"] == 0 and job["read"]["io_bytes"] == 8 << 20
    assert res["disconnect steady rc"] == "0"
    assert guest.read("leftover.txt").split() == []  # every controller went away cleanly
    assert res["target rc"] == "0", guest.read("target.log")[-3000:]
    log = guest.read("target.log")  # the control plane's and the workers' (their stderr)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# -- our host against the kernel's nvmet-rdma ----------------------------------------------------


def _driver(guest: GuestResult, name: str = "driver") -> dict[str, Any]:
    text = guest.read(f"{name}.json")
    assert text, guest.read(f"{name}.log")[-3000:] + guest.read("trace.txt")[-2000:]
    report: dict[str, Any] = json.loads(text)
    assert "error" not in report, report["error"] + guest.read("host-dmesg.txt")[-2000:]
    return report


def test_our_host_discovers_the_kernel_target_over_rdma(guest: GuestResult) -> None:
    res = guest.results()
    assert res["kernel target rc"] == "0", guest.read("trace.txt")[-3000:]
    assert res["host discover rc"] == "0", guest.read("host-discover.txt")[-3000:]
    text = guest.read("host-discover.txt")
    assert "trtype:  rdma" in text and f"subnqn:  {HOST_NQN}" in text, text
    assert f"traddr:  {ADDR}" in text, text


def test_our_host_identifies_the_kernel_target_over_rdma(guest: GuestResult) -> None:
    assert guest.results()["host identify rc"] == "0", guest.read("host-identify.txt")[-3000:]
    text = guest.read("host-identify.txt")
    assert f"of {HOST_NQN}" in text and "namespaces      : 1 active" in text, text
    # The Linux target's I/O queues take 4 KiB in the capsule (IOCCSZ 260).
    assert "(4096 bytes in-capsule)" in text, text


def test_our_host_writes_and_reads_back_on_two_io_queues(guest: GuestResult) -> None:
    report = _driver(guest)
    assert report["io_queues"] == 2 and report["queue_types"] == ["RdmaHostQueue"], report
    assert report["io_incapsule"] == [4096, 4096] and report["block_size"] == 512, report
    expected = {f"{name}-q{qi}" for qi in range(2) for name, _, _ in EXTENTS}
    assert set(report["readback"]) == expected, report
    assert all(report["readback"].values()), report["readback"]


def test_the_kernel_target_stored_the_bytes_our_host_sent(guest: GuestResult) -> None:
    _driver(guest)
    for qi in range(2):
        for name, _, size in EXTENTS:
            tag = f"{name}-q{qi}"
            data = (guest.out / f"file-{tag}.bin").read_bytes()
            assert data == pattern(tag, size), f"{tag}: the namespace differs"


def test_every_key_our_host_asked_to_invalidate_was_invalidated(guest: GuestResult) -> None:
    report = _driver(guest)
    assert "MEM_WINDOW_TYPE_2B" in guest.read("devinfo.txt"), guest.read("devinfo.txt")
    assert report["uses_windows"] == [True, True, True], report  # Soft-RoCE has type 2B
    assert report["invalidate_requests"] > 0, report
    assert report["invalidated_completions"] == report["invalidate_requests"], report
    # rxe reports the invalidation with the kernel's flag bit (1 << 2), not IBV_WC_WITH_INV.
    assert set(report["recv_wc_flags"]) <= {"0x1", "0x5", "0x9", "0xd"}, report


def test_our_host_names_the_nvme_rdma_status_of_a_reject(guest: GuestResult) -> None:
    report = _driver(guest)
    # An admin queue of 64 entries: the Linux target allows 32 (NVME_AQ_DEPTH).
    assert "NVMe/RDMA status 0x4 (invalid host SQ size)" in report["reject"], report


def test_our_bench_verifies_data_on_two_io_queues(guest: GuestResult) -> None:
    kernel = [line for line in guest.lines("host-dmesg.txt") if "nvmet" in line]
    assert guest.results()["host bench rc"] == "0", (
        guest.read("bench.err")[-3000:] + "\n" + "\n".join(kernel[-20:])
    )
    summary = json.loads(guest.read("bench.json"))
    assert summary["io_queues"] == 2 and summary["error"] is None, summary
    assert summary["read"]["ios"] > 0 and summary["write"]["ios"] > 0, summary
    assert summary["verify"]["checked"] > 0 and summary["verify"]["mismatches"] == 0, summary
