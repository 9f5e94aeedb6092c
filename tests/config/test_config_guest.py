"""``nvmf config apply`` against the real Linux 6.1 kernel target, checked by the real nvme-cli.

One guest boot: load nvmet, nvmet-tcp and null_blk, check and apply a configuration whose
namespaces are ``/dev/nullb0`` and ``/dev/nullb1`` on NVMe/TCP 127.0.0.1:4420 (an allowed host
only, two ANA groups, a referral), then let ``nvme discover`` and ``nvme connect`` prove the
kernel took it: the discovery log lists the subsystem and the referral, the allowed host gets a
block device while another host is refused, the ANA log shows the second group's state.  Finally
``nvmf config clear`` must leave configfs empty, and a ``ram`` namespace must be refused.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.guest.harness import GuestResult, shared_boot

SUBNQN = "nqn.2024-01.io.nvmf:config-guest"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:6a1f1c9e-3f43-4a0e-9f0b-2b1f4f1d7c01"
OTHER_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0e5b3a51-8a2c-4b8e-a1de-77c1c9b4a002"
NS1_UUID = "3b0c6f8e-1d2a-4c5b-9e7f-0a1b2c3d4e5f"

CONFIG = {
    "hosts": [{"nqn": HOSTNQN}],
    "subsystems": [
        {
            "nqn": SUBNQN,
            "attr": {
                "allow_any_host": "0",
                "serial": "nvmfcfg0001",
                "model": "nvmf-config-guest",
                "version": "1.3",
                "cntlid_min": "1",
                "cntlid_max": "65519",
                "qid_max": "4",
            },
            "allowed_hosts": [HOSTNQN],
            "namespaces": [
                {
                    "nsid": 1,
                    "enable": 1,
                    "ana_grpid": 1,
                    "device": {"path": "/dev/nullb0", "uuid": NS1_UUID},
                },
                {"nsid": 2, "enable": 1, "ana_grpid": 2, "device": {"path": "/dev/nullb1"}},
            ],
        }
    ],
    "ports": [
        {
            "portid": 1,
            "addr": {
                "trtype": "tcp",
                "adrfam": "ipv4",
                "traddr": "127.0.0.1",
                "trsvcid": "4420",
                "treq": "not specified",
            },
            "param": {"inline_data_size": "16384"},
            "subsystems": [SUBNQN],
            "referrals": [
                {
                    "name": "peer",
                    "enable": 1,
                    "addr": {
                        "trtype": "tcp",
                        "adrfam": "ipv4",
                        "traddr": "127.0.0.1",
                        "trsvcid": "4421",
                        "treq": "not specified",
                        "portid": "2",
                    },
                }
            ],
            "ana_groups": [
                {"grpid": 1, "ana": {"state": "optimized"}},
                {"grpid": 2, "ana": {"state": "non-optimized"}},
            ],
        }
    ],
}

RAM_CONFIG = {
    "subsystems": [
        {
            "nqn": "nqn.2024-01.io.nvmf:config-guest-ram",
            "attr": {"allow_any_host": "1"},
            "namespaces": [{"nsid": 1, "enable": 1, "nvmf": {"kind": "ram", "size": "64M"}}],
        }
    ],
}

SCRIPT = f"""
# nvmf commands run in batches, one Python process each (the harness's batch).
for m in nvmet nvmet-tcp nvme-tcp; do modprobe $m; echo "$m $?" >> $OUT/modprobe.txt; done
modprobe null_blk nr_devices=2; echo "null_blk $?" >> $OUT/modprobe.txt
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
ls -l /dev/nullb0 /dev/nullb1 > $OUT/nullb.txt 2>&1
cat > $OUT/config.json <<'JSON'
{json.dumps(CONFIG, indent=2)}
JSON
cat > $OUT/ram.json <<'JSON'
{json.dumps(RAM_CONFIG, indent=2)}
JSON
batch "out=$OUT/check.txt err=$OUT/check.txt rc=$OUT/check.rc config check $OUT/config.json" \
  "out=$OUT/apply.txt err=$OUT/apply.txt rc=$OUT/apply.rc config apply $OUT/config.json" \
  "out=$OUT/apply-again.txt err=$OUT/apply-again.txt rc=$OUT/apply-again.rc \
   config apply $OUT/config.json"
(cd /sys/kernel/config/nvmet && find . \\( -type f -o -type l \\) | sort | while read -r f; do
   if [ -L "$f" ]; then echo "$f -> $(readlink "$f")";
   else echo "$f=$(head -c 200 "$f" 2>/dev/null | tr '\\n' ' ' | sed 's/ *$//')"; fi
 done) > $OUT/configfs.txt
nvme discover -t tcp -a 127.0.0.1 -s 4420 -q {HOSTNQN} > $OUT/discover.txt 2>&1
echo $? > $OUT/discover.rc
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {SUBNQN} -q {HOSTNQN} > $OUT/connect.txt 2>&1
echo $? > $OUT/connect.rc
for i in $(seq 1 50); do ls /dev/nvme*n2 >/dev/null 2>&1 && break; sleep 0.2; done
ls /dev/ | grep -E '^nvme[0-9]+n[0-9]+$' > $OUT/blockdevs.txt
for b in /sys/block/nvme*; do echo "$(basename $b) $(cat $b/size)"; done > $OUT/block-sizes.txt
for c in /sys/class/nvme/nvme*; do
  echo "$(cat $c/subsysnqn) | $(cat $c/serial) | $(cat $c/model)" >> $OUT/controllers.txt
done
dev=$(head -n 1 $OUT/blockdevs.txt)
dd if=/dev/$dev of=/dev/null bs=4096 count=256 iflag=direct > $OUT/dd.txt 2>&1; echo $? > $OUT/dd.rc
ctrl=$(ls /sys/class/nvme | head -n 1)
nvme ana-log /dev/$ctrl > $OUT/ana-log.txt 2>&1
nvme disconnect -n {SUBNQN} > $OUT/disconnect.txt 2>&1
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {SUBNQN} -q {OTHER_HOSTNQN} \\
  > $OUT/connect-other.txt 2>&1
echo $? > $OUT/connect-other.rc
nvme disconnect -n {SUBNQN} > /dev/null 2>&1
# The refused RAM configuration follows the clear in the same batch: a clear that left
# anything behind still shows below, as a refused apply adds nothing and removes nothing.
batch "out=$OUT/clear.txt err=$OUT/clear.txt rc=$OUT/clear.rc config clear" \
  "out=$OUT/apply-ram.txt err=$OUT/apply-ram.txt rc=$OUT/apply-ram.rc config apply $OUT/ram.json"
ls -A /sys/kernel/config/nvmet/hosts /sys/kernel/config/nvmet/subsystems \\
  /sys/kernel/config/nvmet/ports > $OUT/after-clear.txt 2>&1
ls -A /sys/kernel/config/nvmet/subsystems > $OUT/after-ram.txt 2>&1
echo done > $OUT/done
"""


config_kernel = shared_boot("config-kernel", SCRIPT)


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    return config_kernel()


@pytest.mark.guest
def test_apply_to_real_kernel_target(guest: GuestResult) -> None:
    assert guest.read("done").strip() == "done", guest.console[-3000:]
    assert all(line.endswith(" 0") for line in guest.lines("modprobe.txt")), guest.read(
        "modprobe.txt"
    )
    assert guest.read("check.rc").strip() == "0", guest.read("check.txt")
    assert guest.read("apply.rc").strip() == "0", guest.read("apply.txt")
    assert "applied" in guest.read("apply.txt")

    # What the kernel holds is what the file said.
    configfs = guest.read("configfs.txt")
    for line in (
        f"./subsystems/{SUBNQN}/attr_allow_any_host=0",
        f"./subsystems/{SUBNQN}/attr_serial=nvmfcfg0001",
        f"./subsystems/{SUBNQN}/attr_model=nvmf-config-guest",
        f"./subsystems/{SUBNQN}/attr_qid_max=4",
        f"./subsystems/{SUBNQN}/namespaces/1/device_path=/dev/nullb0",
        f"./subsystems/{SUBNQN}/namespaces/1/device_uuid={NS1_UUID}",
        f"./subsystems/{SUBNQN}/namespaces/1/enable=1",
        f"./subsystems/{SUBNQN}/namespaces/2/ana_grpid=2",
        f"./subsystems/{SUBNQN}/allowed_hosts/{HOSTNQN} -> ",
        "./ports/1/addr_traddr=127.0.0.1",
        "./ports/1/addr_trsvcid=4420",
        "./ports/1/param_inline_data_size=16384",
        "./ports/1/ana_groups/2/ana_state=non-optimized",
        "./ports/1/referrals/peer/addr_trsvcid=4421",
        "./ports/1/referrals/peer/enable=1",
        f"./ports/1/subsystems/{SUBNQN} -> ",
    ):
        assert any(entry.startswith(line) for entry in configfs.splitlines()), (line, configfs)

    # Applying over an existing configuration is refused, with one clear line.
    assert guest.read("apply-again.rc").strip() == "1"
    assert "already has a configuration" in guest.read("apply-again.txt")
    assert "Traceback" not in guest.read("apply-again.txt")

    # The real initiator sees it: discovery lists the subsystem and the referral.
    discover = guest.read("discover.txt")
    assert guest.read("discover.rc").strip() == "0", discover
    assert f"subnqn:  {SUBNQN}" in discover, discover
    assert "trsvcid: 4421" in discover, discover

    # The allowed host connects and gets both namespaces as block devices.
    assert guest.read("connect.rc").strip() == "0", guest.read("connect.txt")
    assert len(guest.lines("blockdevs.txt")) == 2, guest.read("blockdevs.txt")
    assert guest.read("dd.rc").strip() == "0", guest.read("dd.txt")
    # sysfs pads serial and model with spaces, as Identify Controller does.
    controllers = [[f.strip() for f in line.split("|")] for line in guest.lines("controllers.txt")]
    assert controllers == [[SUBNQN, "nvmfcfg0001", "nvmf-config-guest"]], controllers
    # The ANA log has namespace 2 in group 2, in the state the port's ana_groups gave it.
    ana_log = guest.read("ana-log.txt")
    assert re.search(
        r"grpid\s*:\s*2\s.*?state\s*:\s*non-optimized\s+nsid\s*:\s*2\b", ana_log, re.S
    ), ana_log

    # Another host is refused (allow_any_host 0).
    assert guest.read("connect-other.rc").strip() != "0", guest.read("connect-other.txt")

    # clear leaves nothing behind.
    assert guest.read("clear.rc").strip() == "0", guest.read("clear.txt")
    after = [line for line in guest.lines("after-clear.txt") if not line.endswith(":")]
    assert after == [], guest.read("after-clear.txt")

    # A ram namespace cannot be expressed in configfs: refused before anything is made.
    assert guest.read("apply-ram.rc").strip() == "1"
    assert "subsystems[0].namespaces[0].nvmf.kind" in guest.read("apply-ram.txt")
    assert guest.lines("after-ram.txt") == []
