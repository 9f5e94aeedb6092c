"""DH-HMAC-CHAP against the Linux 6.12 kernel host (nvme-cli ``--dhchap-secret``), in the guest.

One boot: our target (two offload workers) serves a subsystem that lists three hosts, each with
its own keys, hash and DH group (nvmetcli's ``dhchap`` group):

* ``uni``: SHA-256, the null DH group, a host key only (the host authenticates);
* ``bi384``: SHA-384, ffdhe2048, host and controller keys (both sides authenticate);
* ``bi512``: SHA-512, ffdhe3072, host and controller keys.

Each connects with the right secrets and passes a small fio ``--verify=crc32c``.  A wrong host
secret, no secret, and a wrong controller secret each fail the connect and leave no controller.
Writing the host's ``dhchap_secret`` in sysfs re-authenticates every queue: with the target's
key it succeeds and I/O goes on; with another key it fails and the target ends the controller.
No secret appears in the target's log or in ``nvmf status``.

Then the other way round, in the same boot: this project's host against the Linux kernel target
(nvmet), which ``nvmf config apply`` configures with three more hosts' keys (nvmetcli's
``dhchap`` group written to configfs ``dhchap_key``, ``dhchap_ctrl_key``, ``dhchap_hash``,
``dhchap_dhgroup``), a loop-device namespace, an NVMe/TCP port on 127.0.0.1 and an NVMe/RDMA
port on Soft-RoCE:

* ``kuni`` (SHA-256, null group, host key only) and ``kbi`` (SHA-384, ffdhe2048, both keys) over
  NVMe/TCP, ``krdma`` (SHA-512, ffdhe3072, both keys) over NVMe/RDMA: the host authenticates
  the admin queue and two I/O queues and reads back what it wrote through each;
* a wrong secret, no secret, and a wrong controller secret are refused with an error naming
  the queue and the reason (the kernel's AUTH_Failure1; the host's AUTH_Failure2);
* ``nvmf identify -S -C`` (the CLI, in the same process: every Python start costs a minute
  under emulation) with the right and with a wrong controller secret.

:mod:`tests.guest.auth_host_driver` runs all of it in one process; no secret appears in what
it reports.

The keys are made here with :func:`nvmf.protocol.dhchap.generate_secret`; the kernel parsing
them (CRC-32, base64, transformation hash) and accepting our responses checks that encoding
independently.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from nvmf.protocol.dhchap import generate_secret
from tests.guest.harness import GuestResult, run_in_guest

pytestmark = [pytest.mark.guest, pytest.mark.timeout(2400)]

SUB = "nqn.2024-01.io.nvmf:auth"
HOSTS = {
    # name: (hash, dhgroup, key transformation hash, key length, bidirectional)
    "uni": ("hmac(sha256)", "null", 1, 32, False),
    "bi384": ("hmac(sha384)", "ffdhe2048", 2, 48, True),
    "bi512": ("hmac(sha512)", "ffdhe3072", 3, 64, True),
}


def _host(name: str) -> tuple[str, str]:
    hostid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"nvmf-auth-{name}"))
    return f"nqn.2014-08.org.nvmexpress:uuid:{hostid}", hostid


#: The Linux kernel target's subsystem (our host's cases), its ports.
KSUB = "nqn.2024-01.io.nvmf:kauth"
KTCP = ("127.0.0.1", "4421")
KRDMA = ("10.99.0.1", "4421")
KHOSTS = {
    # name: (hash, dhgroup, key transformation hash, key length, bidirectional, transport)
    "kuni": ("hmac(sha256)", "null", 1, 32, False, "tcp"),
    "kbi": ("hmac(sha384)", "ffdhe2048", 2, 48, True, "tcp"),
    "krdma": ("hmac(sha512)", "ffdhe3072", 3, 64, True, "rdma"),
}


def _kernel_plan(stranger: str) -> dict[str, Any]:
    """Our host's cases against the kernel target: its configuration and what to run."""
    hosts: dict[str, dict[str, str]] = {}
    for name, (_hash, _group, transform, length, bi, _tr) in KHOSTS.items():
        nqn, hostid = _host(name)
        hosts[name] = {
            "nqn": nqn,
            "hostid": hostid,
            "key": generate_secret(transform, length, nqn),
            "ctrl_key": generate_secret(0, 48) if bi else "",
        }

    def port(portid: int, trtype: str, addr: tuple[str, str]) -> dict[str, Any]:
        return {
            "addr": {
                "adrfam": "ipv4",
                "traddr": addr[0],
                "treq": "not specified",
                "trsvcid": addr[1],
                "trtype": trtype,
            },
            "portid": portid,
            "referrals": [],
            "subsystems": [KSUB],
        }

    config_tcp = {
        "hosts": [
            {
                "nqn": hosts[name]["nqn"],
                "dhchap": {
                    "key": hosts[name]["key"],
                    "ctrl_key": hosts[name]["ctrl_key"],
                    "hash": KHOSTS[name][0],
                    "dhgroup": KHOSTS[name][1],
                },
            }
            for name in KHOSTS
        ],
        "ports": [port(11, "tcp", KTCP)],
        "subsystems": [
            {
                "allowed_hosts": [hosts[name]["nqn"] for name in KHOSTS],
                "attr": {"allow_any_host": "0", "serial": "nvmfkauth001", "version": "1.3"},
                "namespaces": [{"device": {"path": "LOOPDEV"}, "enable": 1, "nsid": 1}],
                "nqn": KSUB,
            }
        ],
    }
    config_all = {**config_tcp, "ports": [port(11, "tcp", KTCP), port(12, "rdma", KRDMA)]}

    def case(name: str, host: str, secret: str, ctrl_secret: str = "") -> dict[str, str]:
        addr = KRDMA if KHOSTS[host][5] == "rdma" else KTCP
        return {
            "name": name,
            "trtype": KHOSTS[host][5],
            "addr": addr[0],
            "port": addr[1],
            "nqn": KSUB,
            "hostnqn": hosts[host]["nqn"],
            "hostid": hosts[host]["hostid"],
            "secret": secret,
            "ctrl_secret": ctrl_secret,
        }

    def identify(host: str, *secrets: str) -> list[str]:
        h = hosts[host]
        argv = ["identify", "-a", KTCP[0], "-s", KTCP[1], "-n", KSUB, "-q", h["nqn"]]
        return [*argv, "-I", h["hostid"], *secrets]

    kbi = hosts["kbi"]
    return {
        "hosts": hosts,
        "config_tcp": config_tcp,
        "config_all": config_all,
        "cases": [
            case("uni", "kuni", hosts["kuni"]["key"]),
            case("bi", "kbi", kbi["key"], kbi["ctrl_key"]),
            case("rdma-bi", "krdma", hosts["krdma"]["key"], hosts["krdma"]["ctrl_key"]),
            case("wrong-secret", "kuni", stranger),
            case("no-secret", "kuni", ""),
            case("wrong-ctrl-secret", "kbi", kbi["key"], stranger),
        ],
        "cli": [
            {"name": "identify", "argv": identify("kbi", "-S", kbi["key"], "-C", kbi["ctrl_key"])},
            {
                "name": "identify-wrong-ctrl-secret",
                "argv": identify("kbi", f"--dhchap-secret={kbi['key']}", "-C", stranger),
            },
        ],
    }


def _plan() -> dict[str, Any]:
    """Keys and identities of every host, and the target's configuration."""
    hosts: dict[str, dict[str, str]] = {}
    for name, (_hash, _group, transform, length, bi) in HOSTS.items():
        nqn, hostid = _host(name)
        hosts[name] = {
            "nqn": nqn,
            "hostid": hostid,
            "key": generate_secret(transform, length, nqn),
            "ctrl_key": generate_secret(0, 32) if bi else "",
        }
    # A well-formed secret the target does not know (for the "wrong secret" cases).
    stranger = generate_secret(0, 32)
    config = {
        "hosts": [
            {
                "nqn": hosts[name]["nqn"],
                "dhchap": {
                    "key": hosts[name]["key"],
                    "ctrl_key": hosts[name]["ctrl_key"],
                    "hash": HOSTS[name][0],
                    "dhgroup": HOSTS[name][1],
                },
            }
            for name in HOSTS
        ],
        "ports": [
            {
                "addr": {
                    "adrfam": "ipv4",
                    "traddr": "127.0.0.1",
                    "treq": "not specified",
                    "trsvcid": "4420",
                    "trtype": "tcp",
                },
                "portid": 1,
                "referrals": [],
                "subsystems": [SUB],
            },
            {
                "addr": {
                    "adrfam": "ipv4",
                    "traddr": KRDMA[0],
                    "treq": "not specified",
                    "trsvcid": "4420",
                    "trtype": "rdma",
                },
                "portid": 2,
                "referrals": [],
                "subsystems": [SUB],
            },
        ],
        "subsystems": [
            {
                "allowed_hosts": [hosts[name]["nqn"] for name in HOSTS],
                "attr": {"allow_any_host": "0", "serial": "nvmfauth0001", "version": "1.3"},
                "namespaces": [
                    {
                        "device": {"path": ""},
                        "enable": 1,
                        "nsid": 1,
                        "nvmf": {"kind": "ram", "size": "64M"},
                    }
                ],
                "nqn": SUB,
            }
        ],
    }
    return {
        "hosts": hosts,
        "stranger": stranger,
        "config": config,
        "kernel": _kernel_plan(stranger),
    }


PLAN = _plan()


def _script(plan: dict[str, Any]) -> str:
    hosts = plan["hosts"]
    lines = [
        "exec > $OUT/trace.txt 2>&1",
        "export PYTHONPATH=$REPO/src:$REPO",
        "mkdir -p /tmp/nvmf-guest",
        "modprobe nvme-tcp",
        "ip link set lo up",
        "cat > /tmp/nvmf-guest/target.json <<'JSON'",
        json.dumps(plan["config"], indent=1),
        "JSON",
        f"SUB={SUB}",
        f"STRANGER='{plan['stranger']}'",
        f"KRDMA_ADDR={KRDMA[0]}",
        "cat > /tmp/nvmf-guest/kplan.json <<'JSON'",
        json.dumps(plan["kernel"], indent=1),
        "JSON",
    ]
    for name, h in hosts.items():
        var = name.upper()
        lines += [
            f"{var}_NQN={h['nqn']}",
            f"{var}_ID={h['hostid']}",
            f"{var}_KEY='{h['key']}'",
            f"{var}_CKEY='{h['ctrl_key']}'",
        ]
    lines.append(BODY)
    return "\n".join(lines)


BODY = r"""
SOCK=/tmp/nvmf-guest/control.sock
start=$(date +%s)
# Soft-RoCE first: our target serves NVMe/RDMA too (and the kernel target below, after it).
ip link add nvmf0 type dummy && ip addr add $KRDMA_ADDR/24 dev nvmf0 && ip link set nvmf0 up \
    && modprobe rdma_rxe && rdma link add rxe0 type rxe netdev nvmf0 && modprobe nvme-rdma
echo "rxe rc=$?" >> $OUT/results.txt
$PY -m nvmf.cli.main serve -v --workers 2 --config /tmp/nvmf-guest/target.json \
    --control-socket $SOCK > $OUT/target.log 2>&1 &
target=$!
for i in $(seq 900); do grep -q 'nvmf: listening' $OUT/target.log && break; sleep 0.2; done
nvme version > $OUT/nvme-version.txt

ctrls() { ls /sys/class/nvme/ 2>/dev/null | wc -l; }
newdev() {
  for i in $(seq 100); do
    d=$(ls /dev/ | grep -E '^nvme[0-9]+n[0-9]+$' | head -1)
    [ -n "$d" ] && { echo /dev/$d; return; }
    sleep 0.2
  done
}
authed() { grep -c 'host authenticated' $OUT/target.log; }
conn() {  # name nqn hostid connect-args...
  name=$1; hn=$2; hid=$3; shift 3
  timeout 180 nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $SUB --hostnqn=$hn --hostid=$hid \
      -i 2 "$@" > $OUT/connect-$name.txt 2>&1
  echo "connect $name rc=$?" >> $OUT/results.txt
}
fio_small() {  # name dev
  fio --name=$1 --filename=$2 --ioengine=libaio --direct=1 --iodepth=8 --rw=randwrite \
      --bs=4k --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
      --output-format=json --output=$OUT/fio-$1.json > /dev/null 2>&1
  echo "fio $1 rc=$?" >> $OUT/results.txt
}
good_case() {  # name nqn hostid connect-args...
  name=$1
  conn "$@"
  dev=$(newdev)
  echo "$name queues $(cat /sys/class/nvme/nvme*/queue_count | head -1)" >> $OUT/results.txt
  fio_small $name $dev
}
bad_case() {  # name nqn hostid connect-args...
  name=$1
  conn "$@"
  sleep 1
  echo "$name controllers $(ctrls)" >> $OUT/results.txt
  nvme disconnect-all > /dev/null 2>&1
}

# -- the right secrets: every hash, three DH groups, both directions ----------------------------
good_case uni $UNI_NQN $UNI_ID --dhchap-secret="$UNI_KEY"
# Both views in one Python process (the harness's batch): a start is slow under emulation.
batch "out=$OUT/status.txt status --control-socket $SOCK" \
  "out=$OUT/status.json rc=$OUT/results.txt tag=status status -o json --control-socket $SOCK"
nvme disconnect -n $SUB > /dev/null; echo "disconnect uni rc=$?" >> $OUT/results.txt
sleep 1
good_case bi512 $BI512_NQN $BI512_ID --dhchap-secret="$BI512_KEY" --dhchap-ctrl-secret="$BI512_CKEY"
nvme disconnect -n $SUB > /dev/null; echo "disconnect bi512 rc=$?" >> $OUT/results.txt
sleep 1

# -- over NVMe/RDMA: I/O queues are born in the workers and authenticate there ------------------
rstart=$(date +%s)
# Our host (one I/O queue, both directions) meanwhile: a Python start is slow under emulation.
timeout 300 $PY -m nvmf.cli.main read -t rdma -a $KRDMA_ADDR -s 4420 -n $SUB -q $BI512_NQN \
    -I $BI512_ID -S "$BI512_KEY" -C "$BI512_CKEY" -i 1 --length 4096 \
    -f $OUT/rdma-read.bin > $OUT/rdma-read.txt 2>&1 &
ourhost=$!
timeout 180 nvme connect -t rdma -a $KRDMA_ADDR -s 4420 -n $SUB --hostnqn=$BI384_NQN \
    --hostid=$BI384_ID -i 2 --dhchap-secret="$BI384_KEY" --dhchap-ctrl-secret="$BI384_CKEY" \
    > $OUT/connect-rdma.txt 2>&1
echo "connect rdma rc=$?" >> $OUT/results.txt
dev=$(newdev)
echo "rdma queues $(cat /sys/class/nvme/nvme*/queue_count | head -1)" >> $OUT/results.txt
echo "rdma transport $(cat /sys/class/nvme/nvme*/transport | head -1)" >> $OUT/results.txt
fio_small rdma $dev
nvme disconnect -n $SUB > /dev/null; echo "disconnect rdma rc=$?" >> $OUT/results.txt
wait $ourhost; echo "our-host rdma read rc=$?" >> $OUT/results.txt
sleep 1
ioq() { grep -cE 'qid [1-9][0-9]*: DH-HMAC-CHAP required' $OUT/target.log; }
before=$(ioq)
timeout 180 nvme connect -t rdma -a $KRDMA_ADDR -s 4420 -n $SUB --hostnqn=$UNI_NQN \
    --hostid=$UNI_ID -i 2 --dhchap-secret="$STRANGER" > $OUT/connect-rdma-wrong.txt 2>&1
echo "connect rdma-wrong rc=$?" >> $OUT/results.txt
sleep 1
echo "rdma-wrong controllers $(ctrls)" >> $OUT/results.txt
echo "rdma-wrong io-queues $(( $(ioq) - before ))" >> $OUT/results.txt
nvme disconnect-all > /dev/null 2>&1
echo "rdma seconds $(( $(date +%s) - rstart ))" >> $OUT/results.txt

# -- refused: wrong host secret, none, wrong controller secret ----------------------------------
bad_case wrong-secret $UNI_NQN $UNI_ID --dhchap-secret="$STRANGER"
bad_case no-secret $UNI_NQN $UNI_ID
bad_case wrong-ctrl-secret $BI384_NQN $BI384_ID --dhchap-secret="$BI384_KEY" \
    --dhchap-ctrl-secret="$STRANGER"
$PY -m nvmf.cli.main status -o json --control-socket $SOCK > $OUT/status-refused.json

# -- re-authentication from sysfs -----------------------------------------------------------------
good_case bi384 $BI384_NQN $BI384_ID --dhchap-secret="$BI384_KEY" \
    --dhchap-ctrl-secret="$BI384_CKEY" --reconnect-delay=1 --ctrl-loss-tmo=4
ctrl=$(ls /sys/class/nvme/ | head -1)
before=$(authed)
echo "$BI384_KEY" > /sys/class/nvme/$ctrl/dhchap_secret
echo "reauth-same write rc=$?" >> $OUT/results.txt
for i in $(seq 60); do [ $(( $(authed) - before )) -ge 3 ] && break; sleep 1; done
echo "reauth-same authenticated $(( $(authed) - before ))" >> $OUT/results.txt
echo "reauth-same state $(cat /sys/class/nvme/$ctrl/state)" >> $OUT/results.txt
fio_small reauth-same $dev
fails=$(grep -c 'authentication failed' $OUT/target.log)
echo "$STRANGER" > /sys/class/nvme/$ctrl/dhchap_secret
echo "reauth-wrong write rc=$?" >> $OUT/results.txt
sleep 3
now_fails=$(grep -c 'authentication failed' $OUT/target.log)
echo "reauth-wrong target-failed $(( now_fails - fails ))" >> $OUT/results.txt
dd if=$dev of=/dev/null bs=4k count=1 iflag=direct 2> /dev/null
echo "reauth-wrong read rc=$?" >> $OUT/results.txt
for i in $(seq 30); do [ "$(ctrls)" = 0 ] && break; sleep 1; done
echo "reauth-wrong controllers $(ctrls)" >> $OUT/results.txt
nvme disconnect-all > /dev/null 2>&1

# -- secrets stay out of the log and the status ---------------------------------------------------
$PY -m nvmf.cli.main status --control-socket $SOCK >> $OUT/status.txt
kill $target; wait $target
echo "target rc=$?" >> $OUT/results.txt
hits=0
for key in "$UNI_KEY" "$BI384_KEY" "$BI384_CKEY" "$BI512_KEY" "$BI512_CKEY" "$STRANGER"; do
  b64=$(echo "$key" | cut -d: -f3)
  n=$(cat $OUT/target.log $OUT/status.txt $OUT/status*.json $OUT/rdma-read.txt \
      | grep -cF "$b64")
  hits=$((hits + n))
done
echo $hits > $OUT/secret-hits.txt
dmesg > $OUT/dmesg.txt

# -- our host against the Linux kernel target (nvmet), DH-HMAC-CHAP over NVMe/TCP and RDMA ------
kstart=$(date +%s)
modprobe nvmet && modprobe nvmet-tcp && modprobe loop
echo "nvmet modprobe rc=$?" >> $OUT/results.txt
modprobe nvmet-rdma
echo "nvmet-rdma rc=$?" >> $OUT/results.txt
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
truncate -s 64M /tmp/nvmf-guest/kauth.img
KLOOP=$(losetup -f --show /tmp/nvmf-guest/kauth.img)
timeout 1200 $PY -m tests.guest.auth_host_driver /tmp/nvmf-guest/kplan.json $KLOOP \
    $OUT/kernel-target.json > $OUT/kernel-target.log 2>&1
echo "kernel driver rc=$?" >> $OUT/results.txt
dmesg > $OUT/kernel-target-dmesg.txt
losetup -d $KLOOP
echo "kernel seconds $(( $(date +%s) - kstart ))" >> $OUT/results.txt
echo "seconds $(( $(date +%s) - start ))" >> $OUT/results.txt
echo done > $OUT/finished
"""


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    result = run_in_guest("auth", _script(PLAN), kernel="6.12")
    assert result.returncode == 0, result.console[-3000:]
    return result


def test_guest_ran_to_the_end(guest: GuestResult) -> None:
    assert guest.read("finished").strip() == "done", guest.read("trace.txt")[-3000:]


@pytest.mark.parametrize("case", ["uni", "bi384", "bi512"])
def test_right_secrets_connect_and_verify(guest: GuestResult, case: str) -> None:
    res = guest.results()
    assert res[f"connect {case} rc"] == "0", guest.read(f"connect-{case}.txt")
    assert res[f"{case} queues"] == "3"  # admin + 2 I/O queues, each authenticated
    assert res[f"fio {case} rc"] == "0"
    job = json.loads(guest.read(f"fio-{case}.json"))["jobs"][0]
    assert job["error"] == 0 and job["read"]["io_bytes"] == job["write"]["io_bytes"] > 0


def test_kernel_host_authenticates_over_rdma(guest: GuestResult) -> None:
    """The Linux host over NVMe/RDMA: the admin queue authenticates in the control plane, both
    I/O queues in their workers (forwarded until the transaction succeeded), then fio."""
    res = guest.results()
    assert res["rxe rc"] == "0", guest.read("trace.txt")[-2000:]
    assert res["connect rdma rc"] == "0", guest.read("connect-rdma.txt")
    assert res["rdma transport"] == "rdma"
    assert res["rdma queues"] == "3"
    assert res["fio rdma rc"] == "0"
    job = json.loads(guest.read("fio-rdma.json"))["jobs"][0]
    assert job["error"] == 0 and job["read"]["io_bytes"] == job["write"]["io_bytes"] > 0
    log = guest.read("target.log")
    # Both kernel I/O queues and our host's one were gated in their worker until authenticated.
    assert log.count("authenticated, its worker serves it") >= 3, log[-3000:]
    assert "not built yet" not in log


def test_our_host_authenticates_to_our_target_over_rdma(guest: GuestResult) -> None:
    res = guest.results()
    assert res["our-host rdma read rc"] == "0", guest.read("rdma-read.txt")
    assert (guest.out / "rdma-read.bin").stat().st_size == 4096


def test_wrong_secret_over_rdma_creates_no_io_queue(guest: GuestResult) -> None:
    res = guest.results()
    assert res["connect rdma-wrong rc"] != "0"
    assert res["rdma-wrong controllers"] == "0"
    assert res["rdma-wrong io-queues"] == "0"


def test_every_hash_and_group_was_negotiated(guest: GuestResult) -> None:
    log = guest.read("target.log")
    for hash_name, group, *_ in HOSTS.values():
        assert f"{hash_name}, DH group {group}" in log


def test_io_queues_went_to_workers_after_authentication(guest: GuestResult) -> None:
    log = guest.read("target.log")
    assert "DH-HMAC-CHAP required" in log
    assert "served by offload worker" in log


@pytest.mark.parametrize("case", ["wrong-secret", "no-secret", "wrong-ctrl-secret"])
def test_bad_secrets_are_refused(guest: GuestResult, case: str) -> None:
    res = guest.results()
    assert res[f"connect {case} rc"] != "0"
    assert res[f"{case} controllers"] == "0"


def test_refused_hosts_left_no_controller_on_the_target(guest: GuestResult) -> None:
    status = json.loads(guest.read("status-refused.json"))
    (sub,) = [s for s in status["subsystems"] if s["nqn"] == SUB]
    assert sub["controllers"] == []


def test_reauthentication_with_the_same_key(guest: GuestResult) -> None:
    res = guest.results()
    assert res["reauth-same write rc"] == "0"
    assert int(res["reauth-same authenticated"]) >= 3  # the admin queue and both I/O queues
    assert res["reauth-same state"] == "live"
    assert res["fio reauth-same rc"] == "0"


def test_reauthentication_with_another_key_fails(guest: GuestResult) -> None:
    res = guest.results()
    assert res["reauth-wrong write rc"] == "0"
    assert int(res["reauth-wrong target-failed"]) >= 1
    assert res["reauth-wrong controllers"] == "0"


def test_no_secret_in_log_or_status(guest: GuestResult) -> None:
    assert guest.read("secret-hits.txt").strip() == "0"
    assert guest.results()["status rc"] == "0"


def test_target_clean(guest: GuestResult) -> None:
    log = guest.read("target.log")
    assert "Traceback" not in log
    assert guest.results()["target rc"] == "0"


# -- our host against the Linux kernel target ---------------------------------------------------


def _kernel(guest: GuestResult) -> dict[str, Any]:
    text = guest.read("kernel-target.json")
    assert text, guest.read("kernel-target.log")[-3000:] + guest.read("trace.txt")[-2000:]
    report: dict[str, Any] = json.loads(text)
    return report


def test_config_apply_gave_the_kernel_target_the_keys(guest: GuestResult) -> None:
    res = guest.results()
    assert res["nvmet modprobe rc"] == "0" and res["kernel driver rc"] == "0"
    apply = _kernel(guest)["apply"]
    assert apply.get("applied") in ("config_all", "config_tcp"), apply
    assert apply[apply["applied"]]["rc"] == 0


@pytest.mark.parametrize(("case", "host"), [("uni", "kuni"), ("bi", "kbi"), ("rdma-bi", "krdma")])
def test_our_host_authenticates_to_the_kernel_target(
    guest: GuestResult, case: str, host: str
) -> None:
    report = _kernel(guest)
    if case == "rdma-bi":
        assert guest.results()["rxe rc"] == "0", guest.read("trace.txt")[-2000:]
        assert report["apply"].get("applied") == "config_all", report["apply"]
    result = report["cases"][case]
    assert "error" not in result, result
    assert result["io_queues"] == 2 and result["readback"] == {"q0": True, "q1": True}
    hash_name, group, _, _, bidirectional, _ = KHOSTS[host]
    lines = result["auth_log"]
    for qid in range(3):  # the admin queue and both I/O queues
        expected = f"qid {qid}: authenticated with {hash_name}, DH group {group}"
        (line,) = [line for line in lines if line.startswith(expected)]
        assert line.endswith(", controller authenticated") == bidirectional, line


#: Linux nvmet refusing a host's response: it queues its AUTH_Failure1 and declares the
#: controller dead in the same step (``nvmet_ctrl_fatal_error`` in fabrics-cmd-auth.c), so the
#: connection may close before the message is sent.  Either way the host must name the refusal.
WRONG_SECRET_REASONS = (
    "the controller sent AUTH_Failure1, reason 0x01 (authentication failure), explanation 0x01 "
    "(authentication failed): the controller did not accept the host's response",
    "the controller closed the connection after the host's DH-HMAC-CHAP_Reply, without a "
    "DH-HMAC-CHAP_Success1: the controller did not accept the host's response",
)


@pytest.mark.parametrize(
    ("case", "reasons"),
    [
        ("wrong-secret", WRONG_SECRET_REASONS),
        ("no-secret", ("the controller requires authentication (Connect AUTHREQ.ATR) and no host "
                       "secret was given",)),
        ("wrong-ctrl-secret", ("the controller's response does not match the controller "
                               "secret",)),
    ],
)  # fmt: skip
def test_the_kernel_target_refusal_is_a_clear_error(
    guest: GuestResult, case: str, reasons: tuple[str, ...]
) -> None:
    result = _kernel(guest)["cases"][case]
    error = result.get("error", "")
    assert error.startswith("AuthenticationError: DH-HMAC-CHAP failed on qid 0: "), result
    assert any(reason in error for reason in reasons), error
    if case == "wrong-ctrl-secret":
        assert "the host sent AUTH_Failure2, explanation 0x01" in error


def test_our_cli_with_the_kernel_target(guest: GuestResult) -> None:
    cli = _kernel(guest)["cli"]
    ok = cli["identify"]
    assert ok["rc"] == 0, ok["stderr"]
    assert f"of {KSUB}" in ok["stdout"] and "namespaces      : 1 active" in ok["stdout"]
    bad = cli["identify-wrong-ctrl-secret"]
    assert bad["rc"] == 1 and bad["stdout"] == ""
    assert bad["stderr"].startswith("nvmf identify: DH-HMAC-CHAP failed on qid 0: the ")
    assert len(bad["stderr"].splitlines()) == 1, bad["stderr"]


def test_no_secret_in_our_hosts_output(guest: GuestResult) -> None:
    kernel = PLAN["kernel"]
    secrets = [PLAN["stranger"]] + [
        h[k] for h in kernel["hosts"].values() for k in ("key", "ctrl_key") if h[k]
    ]
    text = guest.read("kernel-target.json") + guest.read("kernel-target.log")
    assert text
    hits = [s for s in secrets if s.split(":")[2] in text]
    assert hits == []
