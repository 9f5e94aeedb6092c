"""tests.guest.profile: the durations of a guest script's top-level steps from its xtrace."""

from __future__ import annotations

from tests.guest.profile import steps

XTRACE = """\
+ 100.000000 modprobe nvme-tcp
+ 100.500000 fio --name=a
++ 101.000000 seq 900
line of a here-document
+ 104.250000 nvme disconnect -n x
++ 104.300000 cat /sys/x
"""


def test_each_top_level_step_lasts_until_the_next_one() -> None:
    found = steps(XTRACE)
    assert [s.command for s in found] == [
        "modprobe nvme-tcp",
        "fio --name=a",
        "nvme disconnect -n x",
    ]
    assert [round(s.seconds, 3) for s in found] == [0.5, 3.75, 0.05]  # the last: to the last line
    assert found[1].start == 100.5


def test_no_traced_line_gives_no_step() -> None:
    assert steps("plain output\n") == []
