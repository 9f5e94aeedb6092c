"""Where a guest boot's script spent its time, from the ``xtrace.txt`` the harness writes.

The harness runs every guest script with ``PS4='+ $EPOCHREALTIME '`` and ``set -x`` into
``$OUT/xtrace.txt``, so each command the script runs is a line with the time it started; a
top-level command (one ``+``) lasted until the next top-level command started.  Keeping the
suite inside CI's budget means knowing which steps cost the minutes::

    python -m tests.guest.profile tests/guest/out/kernel-host [--top 20]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import NamedTuple

_LINE = re.compile(r"^(\++) (\d+\.\d+) (.*)$")


class Step(NamedTuple):
    """A top-level command of the script: when it started, how long it ran, what it was."""

    start: float
    seconds: float
    command: str


def steps(text: str) -> list[Step]:
    """The top-level commands of an xtrace text, in order; the last one lasts until the last
    traced line (nested or not)."""
    starts: list[tuple[float, str]] = []
    last = 0.0
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue  # a traced command's continuation lines (a here-document, a long string)
        last = float(m.group(2))
        if len(m.group(1)) == 1:
            starts.append((last, m.group(3)))
    out = []
    for i, (start, command) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else last
        out.append(Step(start, end - start, command))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a guest result folder (with xtrace.txt)")
    parser.add_argument("--top", type=int, default=20, help="how many of the slowest steps")
    args = parser.parse_args(argv)
    found = steps((args.out / "xtrace.txt").read_text(errors="replace"))
    if not found:
        parser.exit(1, f"{args.out}/xtrace.txt has no traced command\n")
    total = found[-1].start + found[-1].seconds - found[0].start
    print(f"{len(found)} steps, {total:.1f} s from the first to the last")
    for step in sorted(found, key=lambda s: -s.seconds)[: args.top]:
        print(f"{step.seconds:8.1f} s  +{step.start - found[0].start:7.1f}  {step.command[:100]}")


if __name__ == "__main__":
    main()
