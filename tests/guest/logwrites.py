"""dm-log-writes logs: parse them, replay them to a mark, and judge what a power loss there keeps.

The kernel's ``log-writes`` device-mapper target (``drivers/md/dm-log-writes.c``) passes every
write through to a data device and records it, in the order the data became durable, on a log
device.  A write is logged only once it is stable: a FUA write when it completes, a plain write
when a later Flush completes (it is then logged just before that Flush entry).  A write that was
never flushed is not in the log at all.  ``dmsetup message DEV 0 mark NAME`` appends a MARK entry.
Replaying the log onto the data device's starting image up to a mark therefore gives exactly what
the disk holds if the power fails at that moment and the volatile cache loses everything it may.

The on-disk layout (little-endian, ``sectorsize`` = the data device's logical block size):

* byte 0: the super block, ``magic u64, version u64, nr_entries u64, sectorsize u32``, padded to
  one ``sectorsize`` block.  ``nr_entries`` is rewritten after every FUA or MARK entry and when
  the target is removed (which logs a last mark, ``dm-log-writes-end``, after the writes that were
  still unflushed), so read it after ``dmsetup remove``.
* from byte ``sectorsize``, ``nr_entries`` entries, each one ``sectorsize`` block holding
  ``sector u64, nr_sectors u64, flags u64, data_len u64`` (sector and nr_sectors in ``sectorsize``
  units; for a MARK the mark's name of ``data_len`` bytes follows in the same block), then, for a
  write, ``nr_sectors`` blocks of the written data.  FLUSH, DISCARD and MARK entries carry none.

This module also holds the durability model the guest test checks against: the operations a host
issued and had acknowledged (writes with or without FUA, flushes, marks), in order, and for every
LBA the contents a power loss at a mark may leave.  It runs inside the guest as well (``python -m
tests.guest.logwrites run|check|trim``) to drive nvme-cli and to check replays of a file system.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: ``struct log_write_super``: magic, version, nr_entries, sectorsize.
SUPER = struct.Struct("<QQQI")
assert SUPER.size == 28
#: ``struct log_write_entry``: sector, nr_sectors, flags, data_len.
ENTRY = struct.Struct("<QQQQ")
assert ENTRY.size == 32

MAGIC = 0x6A736677736872
VERSION = 1

FLUSH = 1 << 0
FUA = 1 << 1
DISCARD = 1 << 2
MARK = 1 << 3
METADATA = 1 << 4
FLAG_NAMES = {FLUSH: "flush", FUA: "fua", DISCARD: "discard", MARK: "mark", METADATA: "meta"}

#: The mark the kernel logs when the target is removed.
END_MARK = "dm-log-writes-end"


class LogFormatError(ValueError):
    """The bytes are not a dm-log-writes log this module understands."""


@dataclass(frozen=True)
class Entry:
    """One log entry.  ``sector``/``nr_sectors`` are in the log's ``sectorsize`` units."""

    index: int
    sector: int
    nr_sectors: int
    flags: int
    data: bytes = b""
    mark: str | None = None

    def describe(self) -> str:
        names = [name for bit, name in FLAG_NAMES.items() if self.flags & bit] or ["write"]
        what = repr(self.mark) if self.mark is not None else f"{self.sector}+{self.nr_sectors}"
        return f"#{self.index} {'|'.join(names)} {what}"


@dataclass
class Log:
    """A parsed log: its block size, its entries in order, and how many bytes it used."""

    sectorsize: int
    entries: list[Entry]
    end: int

    def marks(self) -> list[str]:
        return [e.mark for e in self.entries if e.mark is not None]

    def without(self, index: int) -> Log:
        """The same log with entry ``index`` missing (a corrupted log, for negative controls)."""
        return Log(self.sectorsize, [e for e in self.entries if e.index != index], self.end)


def parse(raw: bytes | bytearray | memoryview) -> Log:
    """Parse a whole log device's contents."""
    view = memoryview(raw)
    if len(view) < SUPER.size:
        raise LogFormatError(f"{len(view)} bytes is too short for the super block")
    magic, version, nr_entries, sectorsize = SUPER.unpack_from(view, 0)
    if magic != MAGIC:
        raise LogFormatError(f"bad magic {magic:#x} (want {MAGIC:#x})")
    if version != VERSION:
        raise LogFormatError(f"unknown version {version}")
    if sectorsize < 512 or sectorsize & (sectorsize - 1):
        raise LogFormatError(f"bad sectorsize {sectorsize}")
    entries = []
    pos = sectorsize
    for index in range(nr_entries):
        if pos + sectorsize > len(view):
            raise LogFormatError(f"entry {index} at byte {pos} runs past the end of the log")
        sector, nr_sectors, flags, data_len = ENTRY.unpack_from(view, pos)
        mark = None
        data = b""
        if flags & MARK:
            if ENTRY.size + data_len > sectorsize:
                raise LogFormatError(f"entry {index}: mark of {data_len} bytes overflows its block")
            mark = bytes(view[pos + ENTRY.size : pos + ENTRY.size + data_len]).decode()
        elif data_len:
            raise LogFormatError(f"entry {index}: inline data (data_len {data_len}) unsupported")
        pos += sectorsize
        if not flags & (MARK | DISCARD) and nr_sectors:
            length = nr_sectors * sectorsize
            if pos + length > len(view):
                raise LogFormatError(f"entry {index}: data runs past the end of the log")
            data = bytes(view[pos : pos + length])
            pos += length
        entries.append(Entry(index, sector, nr_sectors, flags, data, mark))
    return Log(sectorsize, entries, pos)


def read_log(path: str | os.PathLike[str]) -> Log:
    """Parse the log on a device or in a file, reading only the part it uses.

    A log device is mostly unused: reading all of it costs more than the entries (memory moves
    slowly in an emulated guest), so the entries are read in growing steps until they parse.
    """
    with open(path, "rb") as f:
        raw = f.read(1 << 20)
        while True:
            try:
                return parse(raw)
            except LogFormatError as exc:
                more = f.read(max(len(raw), 1 << 20))
                if "past the end" not in str(exc) or not more:
                    raise
                raw += more


def apply(image: bytearray, entry: Entry, sectorsize: int) -> None:
    """Apply one entry to ``image``: a write stores its data, a discard zeroes its range."""
    start = entry.sector * sectorsize
    if entry.flags & MARK:
        return
    if entry.flags & DISCARD:
        end = min(start + entry.nr_sectors * sectorsize, len(image))
        image[start:end] = bytes(end - start)
        return
    if not entry.data:
        return  # a flush alone
    if start + len(entry.data) > len(image):
        raise LogFormatError(f"{entry.describe()} writes past the image's {len(image)} bytes")
    image[start : start + len(entry.data)] = entry.data


def replay(log: Log, image: bytearray, until: str | None = None) -> None:
    """Apply ``log`` to ``image`` up to (not including) the first mark named ``until``.

    ``until=None`` applies everything.  A mark that is not in the log raises ``KeyError``.
    """
    for entry in log.entries:
        if until is not None and entry.mark == until:
            return
        apply(image, entry, log.sectorsize)
    if until is not None:
        raise KeyError(f"mark {until!r} is not in the log")


def states(log: Log, image: bytearray) -> Iterator[str]:
    """Replay ``log`` onto ``image``, yielding each mark's name when ``image`` is its state.

    The image is updated in place between yields, so read it before asking for the next one.
    """
    for entry in log.entries:
        if entry.mark is not None:
            yield entry.mark
        apply(image, entry, log.sectorsize)


def build(entries: Iterable[Entry], sectorsize: int = 512, nr_entries: int | None = None) -> bytes:
    """The bytes of a log holding ``entries`` (for tests; ``nr_entries`` overrides the count)."""
    out = bytearray(sectorsize)
    count = 0
    for e in entries:
        name = (e.mark or "").encode()
        block = bytearray(sectorsize)
        ENTRY.pack_into(block, 0, e.sector, e.nr_sectors, e.flags, len(name))
        block[ENTRY.size : ENTRY.size + len(name)] = name
        out += block
        if not e.flags & (MARK | DISCARD):
            assert len(e.data) == e.nr_sectors * sectorsize, e
            out += e.data
        count += 1
    SUPER.pack_into(out, 0, MAGIC, VERSION, count if nr_entries is None else nr_entries, sectorsize)
    return bytes(out)


# -- the durability model ----------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One acknowledged host operation: ``write`` (``lba``, ``nlb``, ``fua``, ``tag``),
    ``flush``, or ``mark`` (``name``)."""

    kind: str
    lba: int = 0
    nlb: int = 0
    fua: bool = False
    tag: str = ""
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        return cls(**d)


ZEROES = "zeroes"
GARBAGE = "garbage"


def pattern(tag: str, lba: int, block_size: int) -> bytes:
    """The contents of block ``lba`` written with ``tag``: says what and where, so it is unique."""
    line = f"nvmf-dur {tag} lba={lba}\n".encode()
    return (line * (block_size // len(line) + 1))[:block_size]


def write_data(op: Op, block_size: int) -> bytes:
    return b"".join(pattern(op.tag, op.lba + i, block_size) for i in range(op.nlb))


def identify(block: bytes | bytearray | memoryview, lba: int, block_size: int) -> str:
    """What block ``lba`` holds: a write's tag, :data:`ZEROES`, or :data:`GARBAGE`."""
    block = bytes(block)
    if block.count(0) == len(block):
        return ZEROES
    head, sep, _ = block.partition(b"\n")
    words = head.decode(errors="replace").split(" ")
    if sep and len(words) == 3 and words[0] == "nvmf-dur":
        tag = words[1]
        if block == pattern(tag, lba, block_size):
            return tag
    return GARBAGE


def acceptable(ops: Sequence[Op], mark: str) -> dict[int, frozenset[str]]:
    """For every LBA the ops write, the contents a power loss at ``mark`` may leave there.

    A write acknowledged before the mark is *required* when it had FUA or a Flush completed after
    it (and before the mark): the block then holds it, or a later acknowledged write to the same
    block (which may or may not have reached the medium).  A block with no required write may
    still hold its starting zeroes.  Raises ``KeyError`` when no op marks ``mark``.
    """
    durable: dict[int, str] = {}
    pending: dict[int, list[str]] = {}
    lbas: set[int] = set()
    for op in ops:
        if op.kind == "write":
            lbas.update(range(op.lba, op.lba + op.nlb))
    for op in ops:
        if op.kind == "mark" and op.name == mark:
            return {
                lba: frozenset([durable.get(lba, ZEROES), *pending.get(lba, [])])
                for lba in sorted(lbas)
            }
        if op.kind == "write":
            for lba in range(op.lba, op.lba + op.nlb):
                if op.fua:
                    durable[lba] = op.tag
                    pending.pop(lba, None)
                else:
                    pending.setdefault(lba, []).append(op.tag)
        elif op.kind == "flush":
            for lba, tags in pending.items():
                durable[lba] = tags[-1]
            pending.clear()
    raise KeyError(f"no mark {mark!r} in the operations")


def check(
    content: bytes | bytearray | memoryview, ops: Sequence[Op], mark: str, block_size: int
) -> list[str]:
    """Problems with ``content`` (the namespace's bytes, LBA 0 first) as the state at ``mark``."""
    view = memoryview(content)
    problems = []
    for lba, allowed in acceptable(ops, mark).items():
        block = view[lba * block_size : (lba + 1) * block_size]
        found = identify(block, lba, block_size) if len(block) == block_size else "missing"
        if found not in allowed:
            problems.append(
                f"lba {lba}: holds {found}, a power loss at {mark} may leave only "
                f"{' or '.join(sorted(allowed))}"
            )
    return problems


def observed(
    content: bytes | bytearray | memoryview, ops: Sequence[Op], block_size: int
) -> dict[int, str]:
    """What every written LBA holds (for reports)."""
    view = memoryview(content)
    lbas = sorted(
        {lba for op in ops if op.kind == "write" for lba in range(op.lba, op.lba + op.nlb)}
    )
    return {
        lba: identify(view[lba * block_size : (lba + 1) * block_size], lba, block_size)
        for lba in lbas
    }


# -- the workload the guest runs ---------------------------------------------------------------

#: 4 KiB regions; each step is (what, region, tag) or ("flush",) or ("mark", name).
PLAN: list[tuple[Any, ...]] = [
    ("write", 0, "a"),
    ("flush",),
    ("mark", "flush-1"),  # a plain write made durable by a Flush
    ("fua", 1, "b"),
    ("mark", "fua-1"),  # a FUA write, nothing flushed since
    ("write", 2, "c"),
    ("write", 0, "d"),
    ("flush",),
    ("mark", "flush-2"),  # an overwrite, flushed
    ("fua", 3, "e"),
    ("write", 4, "f"),
    ("mark", "fua-2"),  # a FUA write after a plain one: region 4 may or may not be there
    *[("write", region, "g") for region in range(5, 13)],
    ("flush",),
    ("mark", "flush-3"),  # a burst of plain writes, then a Flush
    ("write", 1, "h"),
    ("write", 13, "i"),
    ("mark", "unflushed"),  # region 1 may be b or h; region 13 need not be there
    ("flush",),
    ("mark", "final"),
]
REGION = 4096
#: The region written after the last Flush but one, never with FUA: the negative control.
UNFLUSHED_REGION = 13


def plan_ops(block_size: int) -> list[Op]:
    """:data:`PLAN` as the :class:`Op` list it becomes when every command is acknowledged."""
    nlb = REGION // block_size
    ops = []
    for step in PLAN:
        if step[0] in ("write", "fua"):
            ops.append(Op("write", step[1] * nlb, nlb, step[0] == "fua", step[2]))
        elif step[0] == "flush":
            ops.append(Op("flush"))
        else:
            ops.append(Op("mark", name=step[1]))
    return ops


@dataclass
class Journal:
    """What the workload did: ops acknowledged, in order, and the first failure if any."""

    block_size: int
    ops: list[Op] = field(default_factory=list)
    error: str = ""

    def save(self, path: Path) -> None:
        data = {
            "block_size": self.block_size,
            "ops": [asdict(op) for op in self.ops],
            "error": self.error,
        }
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> Journal:
        data = json.loads(path.read_text())
        return cls(data["block_size"], [Op.from_dict(d) for d in data["ops"]], data["error"])


def run_plan(dev: str, dm: str, block_size: int, journal_path: Path) -> Journal:
    """Run :data:`PLAN` on ``dev`` with nvme-cli, marking ``dm``'s log; journal each ack."""
    journal = Journal(block_size)
    with tempfile.TemporaryDirectory() as tmp:
        for op in plan_ops(block_size):
            if op.kind == "write":
                data = Path(tmp, "data")
                data.write_bytes(write_data(op, block_size))
                cmd = [
                    "nvme",
                    "write",
                    dev,
                    "-n",
                    "1",
                    "-s",
                    str(op.lba),
                    "-c",
                    str(op.nlb - 1),
                    "-z",
                    str(op.nlb * block_size),
                    "-d",
                    str(data),
                ]
                cmd += ["--force-unit-access"] if op.fua else []
            elif op.kind == "flush":
                cmd = ["nvme", "flush", dev, "-n", "1"]
            else:
                cmd = ["dmsetup", "message", dm, "0", "mark", op.name]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                journal.error = f"{' '.join(cmd)}: rc {proc.returncode}: {proc.stderr.strip()}"
                journal.save(journal_path)
                return journal
            journal.ops.append(op)
            journal.save(journal_path)
    return journal


def check_block(log: Log, journal: Journal, size: int) -> dict[str, Any]:
    """Replay ``log`` onto ``size`` zero bytes; check the state at every journal mark."""
    image = bytearray(size)
    return _check_states(log, journal, image, lambda: image)


def check_file_system(log: Log, journal: Journal, base: Path, rel: str) -> dict[str, Any]:
    """Replay ``log`` onto a copy of ``base`` (an ext4 image); at each mark mount it (the journal
    recovers, as after a power loss) and check the namespace file ``rel`` in it."""
    image = bytearray(base.read_bytes())
    work = Path(tempfile.mkdtemp(prefix="nvmf-replay-"))

    def content() -> bytes:
        img, mnt = work / "replay.img", work / "mnt"
        img.write_bytes(image)
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "ext4", "-o", "loop", str(img), str(mnt)], check=True)
        try:
            path = mnt / rel
            return path.read_bytes() if path.exists() else b""
        finally:
            subprocess.run(["umount", str(mnt)], check=True)

    return _check_states(log, journal, image, content)


def _check_states(log: Log, journal: Journal, image: bytearray, content: Any) -> dict[str, Any]:
    wanted = {op.name for op in journal.ops if op.kind == "mark"}
    result: dict[str, Any] = {"log_marks": log.marks(), "entries": len(log.entries), "marks": {}}
    for mark in states(log, image):
        if mark in wanted:
            data = content()
            result["marks"][mark] = {
                "problems": check(data, journal.ops, mark, journal.block_size),
                "observed": {
                    str(k): v for k, v in observed(data, journal.ops, journal.block_size).items()
                },
            }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.guest.logwrites")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the workload with nvme-cli, marking the log")
    r.add_argument("--dev", required=True)
    r.add_argument("--dm", required=True)
    r.add_argument("--block-size", type=int, default=512)
    r.add_argument("--journal", type=Path, required=True)
    c = sub.add_parser("check", help="replay a log to each mark and check it")
    c.add_argument("--log", required=True)
    c.add_argument("--journal", type=Path, required=True)
    c.add_argument("--size", type=int, help="block: the namespace's size in bytes")
    c.add_argument("--base", type=Path, help="file system: the data device before logging")
    c.add_argument("--file", help="file system: the namespace file's path inside it")
    c.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("trim", help="copy the used part of a log")
    t.add_argument("--log", required=True)
    t.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "run":
        journal = run_plan(args.dev, args.dm, args.block_size, args.journal)
        return 1 if journal.error else 0
    if args.cmd == "trim":
        log = read_log(args.log)
        with open(args.log, "rb") as f:
            args.out.write_bytes(f.read(log.end))  # what the log uses, to copy out of the guest
        return 0
    log = read_log(args.log)
    journal = Journal.load(args.journal)
    if args.base is not None:
        result = check_file_system(log, journal, args.base, args.file)
    else:
        result = check_block(log, journal, args.size)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
