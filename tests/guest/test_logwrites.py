"""The dm-log-writes parser, replay and durability model, offline (no guest).

The logs here are built by :func:`tests.guest.logwrites.build` in the kernel's layout; the guest
test (``test_durability_guest.py``) runs the same code on logs the kernel wrote.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.guest import logwrites as lw
from tests.guest.logwrites import DISCARD, FLUSH, FUA, MARK, Entry, Op

BS = 512


def data(tag: str, sector: int, n: int = 1) -> bytes:
    return b"".join(lw.pattern(tag, sector + i, BS) for i in range(n))


def write(i: int, sector: int, tag: str, n: int = 1, flags: int = 0) -> Entry:
    return Entry(i, sector, n, flags, data(tag, sector, n))


def mark(i: int, name: str) -> Entry:
    return Entry(i, 0, 0, MARK, mark=name)


def sample_log() -> bytes:
    return lw.build(
        [
            write(0, 0, "a", 2),
            Entry(1, 0, 0, FLUSH),
            mark(2, "one"),
            write(3, 4, "b", 1, FUA),
            Entry(4, 0, 2, DISCARD),
            mark(5, "two"),
        ]
    )


def test_parse_reads_entries_flags_data_and_marks() -> None:
    log = lw.parse(sample_log())
    assert log.sectorsize == BS
    assert [e.flags for e in log.entries] == [0, FLUSH, MARK, FUA, DISCARD, MARK]
    assert log.marks() == ["one", "two"]
    assert log.entries[3].describe() == "#3 fua 4+1"
    assert log.entries[5].describe() == "#5 mark 'two'"
    assert log.entries[0].data == data("a", 0, 2)
    assert log.entries[3].sector == 4 and log.entries[3].data == data("b", 4)
    assert log.entries[4].data == b""  # a discard carries no data in the log
    # super + 6 entry blocks + 3 data blocks
    assert log.end == BS * (1 + 6 + 3)


def test_parse_of_the_kernel_layout_by_hand() -> None:
    """One write entry laid out byte by byte as dm-log-writes.c writes it."""
    raw = bytearray(BS * 3)
    struct.pack_into("<QQQI", raw, 0, 0x6A736677736872, 1, 1, BS)
    struct.pack_into("<QQQQ", raw, BS, 7, 1, FUA, 0)
    raw[2 * BS :] = b"x" * BS
    (entry,) = lw.parse(raw).entries
    assert (entry.sector, entry.nr_sectors, entry.flags, entry.data) == (7, 1, FUA, b"x" * BS)


def test_parse_refuses_what_is_not_a_log() -> None:
    raw = bytearray(sample_log())
    with pytest.raises(lw.LogFormatError, match="magic"):
        lw.parse(b"\0" * BS)
    with pytest.raises(lw.LogFormatError, match="past the end"):
        lw.parse(raw[: 3 * BS])  # cut inside the first write's data
    with pytest.raises(lw.LogFormatError, match="past the end"):
        lw.parse(lw.build([mark(0, "x")], nr_entries=2))  # the super counts an entry not there
    struct.pack_into("<Q", raw, 8, 2)
    with pytest.raises(lw.LogFormatError, match="version"):
        lw.parse(raw)


def test_read_log_reads_a_log_longer_than_its_first_step(tmp_path: Path) -> None:
    """A log bigger than one read (1 MiB), on a device with unused space after it."""
    big = [write(i, i * 64, "w", 64) for i in range(40)]  # 40 x 32 KiB of data
    raw = lw.build([*big, mark(40, "m")])
    assert len(raw) > 1 << 20
    path = tmp_path / "log"
    path.write_bytes(raw + bytes(3 << 20))
    log = lw.read_log(path)
    assert log.marks() == ["m"] and len(log.entries) == 41 and log.end == len(raw)
    path.write_bytes(raw[: len(raw) - BS])  # the last entry's block is missing
    with pytest.raises(lw.LogFormatError, match="past the end"):
        lw.read_log(path)


def test_replay_stops_before_the_mark() -> None:
    log = lw.parse(sample_log())
    image = bytearray(8 * BS)
    lw.replay(log, image, "one")
    assert image[: 2 * BS] == data("a", 0, 2) and image[4 * BS : 5 * BS] == bytes(BS)
    image = bytearray(8 * BS)
    lw.replay(log, image, "two")
    assert image[: 2 * BS] == bytes(2 * BS)  # discarded
    assert image[4 * BS : 5 * BS] == data("b", 4)
    with pytest.raises(KeyError):
        lw.replay(log, bytearray(8 * BS), "three")


def test_states_yield_each_mark_with_the_image_at_that_point() -> None:
    image = bytearray(8 * BS)
    seen = {
        name: lw.identify(image[4 * BS : 5 * BS], 4, BS)
        for name in lw.states(lw.parse(sample_log()), image)
    }
    assert seen == {"one": lw.ZEROES, "two": "b"}


def test_identify_tells_tags_zeroes_and_garbage_apart() -> None:
    assert lw.identify(lw.pattern("q", 9, BS), 9, BS) == "q"
    assert lw.identify(lw.pattern("q", 9, BS), 10, BS) == lw.GARBAGE  # right tag, wrong place
    assert lw.identify(bytes(BS), 9, BS) == lw.ZEROES
    torn = lw.pattern("q", 9, BS)[:100] + lw.pattern("r", 9, BS)[100:]
    assert lw.identify(torn, 9, BS) == lw.GARBAGE


OPS = [
    Op("write", 0, 1, False, "a"),
    Op("mark", name="m0"),  # nothing durable yet
    Op("flush"),
    Op("write", 0, 1, False, "b"),
    Op("write", 1, 1, True, "c"),
    Op("mark", name="m1"),  # 0 is a (or b), 1 is c
    Op("write", 1, 1, False, "d"),
    Op("flush"),
    Op("mark", name="m2"),  # 0 is b, 1 is d
]


def test_acceptable_follows_fua_and_flush() -> None:
    assert lw.acceptable(OPS, "m0") == {0: {lw.ZEROES, "a"}, 1: {lw.ZEROES}}
    assert lw.acceptable(OPS, "m1") == {0: {"a", "b"}, 1: {"c"}}
    assert lw.acceptable(OPS, "m2") == {0: {"b"}, 1: {"d"}}
    with pytest.raises(KeyError):
        lw.acceptable(OPS, "nope")


def test_check_passes_a_right_state_and_names_each_wrong_block() -> None:
    state = lw.pattern("a", 0, BS) + lw.pattern("c", 1, BS)
    assert lw.check(state, OPS, "m1", BS) == []
    assert lw.check(bytes(2 * BS), OPS, "m0", BS) == []
    problems = lw.check(bytes(2 * BS), OPS, "m1", BS)  # a power loss that lost both
    assert len(problems) == 2 and problems[0].startswith("lba 0: holds zeroes")
    assert "lba 1: holds zeroes" in problems[1] and "only c" in problems[1]
    assert lw.check(state[:BS], OPS, "m1", BS) == [
        "lba 1: holds missing, a power loss at m1 may leave only c"
    ]


def test_replay_and_check_catch_a_lost_fua_write() -> None:
    """End to end on a log: intact it passes; without the FUA entry the check fails."""
    ops = [Op("write", 0, 1, False, "a"), Op("write", 1, 1, True, "c"), Op("mark", name="m")]
    log = lw.parse(lw.build([write(0, 1, "c", 1, FUA), mark(1, "m")]))
    image = bytearray(2 * BS)
    lw.replay(log, image, "m")
    assert lw.check(image, ops, "m", BS) == []  # block 0 was never flushed: zeroes are fine
    broken = log.without(0)
    image = bytearray(2 * BS)
    lw.replay(broken, image, "m")
    assert lw.check(image, ops, "m", BS) == [
        "lba 1: holds zeroes, a power loss at m may leave only c"
    ]


def test_the_plan_marks_what_the_guest_test_relies_on() -> None:
    ops = lw.plan_ops(BS)
    nlb = lw.REGION // BS
    unflushed = lw.UNFLUSHED_REGION * nlb
    marks = [op.name for op in ops if op.kind == "mark"]
    assert marks == ["flush-1", "fua-1", "flush-2", "fua-2", "flush-3", "unflushed", "final"]
    assert lw.acceptable(ops, "unflushed")[unflushed] == {lw.ZEROES, "i"}
    assert lw.acceptable(ops, "final")[unflushed] == {"i"}
    assert lw.acceptable(ops, "fua-1")[1 * nlb] == {"b"}
    assert lw.acceptable(ops, "flush-2")[0] == {"d"}
    assert lw.acceptable(ops, "fua-2")[4 * nlb] == {lw.ZEROES, "f"}
