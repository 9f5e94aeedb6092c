"""Traffic Based Keep Alive as the Linux host exercises it, for any boot that serves our target
with its metrics on port 9464 (the kernel-host boot over NVMe/TCP, the rdma-target boot).

:func:`script` is the bash: connect with a 2 s KATO, 14 s of fio on the workers' queues,
metrics scraped at 4 s and 10 s and once more 5 s after fio ends, the CNTLID before and after,
dmesg.  :func:`check` requires what CTRATT.TBKAS promises: no admin command (the Keep Alives)
between the two scrapes under I/O, where a host without TBKAS sends one every second; the same
controller throughout, nothing reconnecting; and the Keep Alives back once the host is idle.
"""

from __future__ import annotations

from tests.guest.harness import GuestResult


def script(connect: str, ctrl: str, device: str, nqn: str) -> str:
    """The bash for one run.  ``connect``: the ``nvme connect`` command line, without its KATO;
    ``ctrl`` and ``device``: commands printing the new controller's name and its namespace's
    block device; ``nqn``: the subsystem, to disconnect."""
    metrics = "curl -sS --max-time 60 http://127.0.0.1:9464/metrics"
    return rf"""
dmesg -C
{connect} --keep-alive-tmo=2
echo "connect tbkas rc=$?" >> $OUT/results.txt
ctrl=$({ctrl})
dev=$({device})
cat /sys/class/nvme/$ctrl/cntlid > $OUT/tbkas-cntlid-before.txt
fio --name=tbkas --filename=$dev --ioengine=libaio --direct=1 --iodepth=8 --rw=randread \
    --bs=4k --size=8m --time_based --runtime=14 --output-format=json --output=$OUT/fio-tbkas.json &
fio_pid=$!
sleep 4; {metrics} > $OUT/tbkas-busy-1.txt
sleep 6; {metrics} > $OUT/tbkas-busy-2.txt
wait $fio_pid
echo "fio tbkas rc=$?" >> $OUT/results.txt
sleep 5; {metrics} > $OUT/tbkas-idle.txt
cat /sys/class/nvme/$ctrl/cntlid > $OUT/tbkas-cntlid-after.txt
nvme disconnect -n {nqn} > /dev/null
echo "disconnect tbkas rc=$?" >> $OUT/results.txt
dmesg > $OUT/dmesg-tbkas.txt
"""


def admin_commands(metrics: str) -> int:
    """The admin queue's command count of the one controller ``metrics`` shows."""
    (count,) = (
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("nvmf_queue_commands_total{") and 'queue="0"' in line
    )
    return int(count)


def check(guest: GuestResult) -> None:
    """What :func:`script` ran must show (see the module docstring)."""
    results = guest.results()
    for key in ("connect tbkas rc", "fio tbkas rc", "disconnect tbkas rc"):
        assert results[key] == "0", key
    busy_1, busy_2, idle = (
        admin_commands(guest.read(f"tbkas-{name}.txt")) for name in ("busy-1", "busy-2", "idle")
    )
    assert busy_2 - busy_1 == 0 and idle - busy_2 >= 2, (busy_1, busy_2, idle)
    assert guest.read("tbkas-cntlid-before.txt") == guest.read("tbkas-cntlid-after.txt")
    dmesg = guest.read("dmesg-tbkas.txt").lower()
    assert "reconnect" not in dmesg and "keep-alive" not in dmesg, dmesg
