"""Which writes a host saw acknowledged, and whether the medium holds exactly those.

``python -m tests.guest.acked_writes write DEV THREADS BLOCKS LOGDIR STOPFILE`` writes 4 KiB
blocks to DEV with ``O_DIRECT`` from THREADS threads, each over its own BLOCKS blocks, pass
after pass, until STOPFILE exists or a write fails.  Each thread logs ``I block pass`` before a
write, ``A block pass`` once it returned, ``E block pass errno`` when it failed (and then
stops).  Every block written carries its number and pass, so the medium says which write it
holds.

``python -m tests.guest.acked_writes check SOURCE THREADS BLOCKS LOGDIR`` reads SOURCE (the
medium's file, or the device again) and prints, as JSON:

* ``acked``: blocks whose last acknowledged write is known;
* ``lost``: blocks that hold an older write than their last acknowledged one, or no write of
  the run at all (an acknowledged write lost: never allowed);
* ``pending``: writes in flight when the host's queue ended (no acknowledgement, no error yet);
* ``failed_landed``: writes that failed on the host yet are on the medium (the target ran them
  but its completion never reached the host);
* ``failed``: writes that failed.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import sys
import threading
from pathlib import Path

BLOCK = 4096
MAGIC = b"NVMFACKD"


def pattern(block: int, gen: int) -> bytes:
    """The bytes pass ``gen`` writes to ``block``: a header naming both, then noise."""
    head = MAGIC + block.to_bytes(8, "little") + gen.to_bytes(8, "little")
    return head + random.Random(block * 1_000_003 + gen).randbytes(BLOCK - len(head))


def _writer(dev: str, thread: int, blocks: int, logdir: Path, stopfile: Path) -> None:
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)  # page aligned, as O_DIRECT needs
    with open(logdir / f"w{thread}.log", "w", buffering=1) as log:
        gen = 0
        while not stopfile.exists():
            gen += 1
            for i in range(blocks):
                block = thread * blocks + i
                buf[:] = pattern(block, gen)
                log.write(f"I {block} {gen}\n")
                try:
                    os.pwrite(fd, buf, block * BLOCK)
                except OSError as exc:
                    log.write(f"E {block} {gen} {exc.errno}\n")
                    return
                log.write(f"A {block} {gen}\n")
                if stopfile.exists():
                    return


def write(dev: str, threads: int, blocks: int, logdir: Path, stopfile: Path) -> None:
    logdir.mkdir(parents=True, exist_ok=True)
    workers = [
        threading.Thread(target=_writer, args=(dev, t, blocks, logdir, stopfile))
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def check(source: str, threads: int, blocks: int, logdir: Path) -> dict[str, int]:
    acked: dict[int, int] = {}
    started: dict[int, int] = {}
    failed: dict[int, int] = {}
    for t in range(threads):
        path = logdir / f"w{t}.log"
        for line in path.read_text().splitlines() if path.exists() else []:
            kind, block, gen = line.split()[:3]
            if kind == "I":
                started[int(block)] = int(gen)
            elif kind == "A":
                acked[int(block)] = int(gen)
                started.pop(int(block), None)
            elif kind == "E":
                failed[int(block)] = int(gen)
                started.pop(int(block), None)
    fd = os.open(source, os.O_RDONLY)
    try:
        held = {}
        for block in {*acked, *started, *failed}:
            data = os.pread(fd, BLOCK, block * BLOCK)
            gen = int.from_bytes(data[16:24], "little") if data[:8] == MAGIC else 0
            held[block] = gen if gen and data == pattern(block, gen) else 0
    finally:
        os.close(fd)
    lost = sum(1 for b, gen in acked.items() if held[b] < gen)
    return {
        "acked": len(acked),
        "lost": lost,
        "pending": len(started),
        "failed": len(failed),
        "failed_landed": sum(1 for b, gen in failed.items() if held[b] == gen),
    }


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "write":
        dev, threads, blocks, logdir, stopfile = args
        write(dev, int(threads), int(blocks), Path(logdir), Path(stopfile))
    else:
        source, threads, blocks, logdir = args
        print(json.dumps(check(source, int(threads), int(blocks), Path(logdir))))


if __name__ == "__main__":
    main()
