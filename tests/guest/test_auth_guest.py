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
            }
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
    return {"hosts": hosts, "stranger": stranger, "config": config}


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
$PY -m nvmf.cli.main status --control-socket $SOCK > $OUT/status.txt
$PY -m nvmf.cli.main status -o json --control-socket $SOCK > $OUT/status.json
echo "status rc=$?" >> $OUT/results.txt
nvme disconnect -n $SUB > /dev/null; echo "disconnect uni rc=$?" >> $OUT/results.txt
sleep 1
good_case bi512 $BI512_NQN $BI512_ID --dhchap-secret="$BI512_KEY" --dhchap-ctrl-secret="$BI512_CKEY"
nvme disconnect -n $SUB > /dev/null; echo "disconnect bi512 rc=$?" >> $OUT/results.txt
sleep 1

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
  n=$(cat $OUT/target.log $OUT/status.txt $OUT/status*.json | grep -cF "$b64")
  hits=$((hits + n))
done
echo $hits > $OUT/secret-hits.txt
dmesg > $OUT/dmesg.txt
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
