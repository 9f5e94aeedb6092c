"""Run several ``nvmf`` commands in one Python process inside the guest.

Under the guest's software emulation, starting Python and importing what a host command needs
costs 5 to 40 seconds, so a script that ran ``python -m nvmf.cli.main`` ten times spent minutes
starting interpreters.  This runs the same entry point the ``nvmf`` console script calls
(:func:`nvmf.cli.main.main`) once per line of a batch file, in order::

    python -m tests.guest.cli_batch [--entry MODULE] BATCH

``--entry`` names another module whose ``main(argv)`` runs each line (the guest's own tools,
e.g. ``tests.guest.logwrites``); the default is ``nvmf.cli.main``.

Each line is shell words: optional ``out=FILE``, ``err=FILE``, ``rc=FILE`` and ``tag=NAME``
first, then the command's arguments. ``out`` and ``err`` are where the command's standard output
and error go, at the file-descriptor level so bytes written to ``sys.stdout.buffer`` land there
too (one file when both name it, as ``> FILE 2>&1`` does). ``rc`` gets the exit status as ``echo
$? > FILE`` writes it or, with ``tag``, a line ``NAME rc=STATUS`` appended, as the scripts'
``echo "NAME rc=$?" >> $OUT/results.txt`` does. Without ``out=``/``err=`` the command writes to
this process's own. Blank lines and lines starting with ``#`` are skipped. A command that raises
gets the traceback on its standard error and status 1, as the interpreter would give it; the
batch goes on. This process exits 0 once every line ran.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_KEYS = ("out", "err", "rc", "tag")


@dataclass(frozen=True)
class Step:
    """One line of a batch: the command's arguments and where its results go."""

    argv: tuple[str, ...]
    out: Path | None = None
    err: Path | None = None
    rc: Path | None = None
    tag: str | None = None


def parse(text: str) -> list[Step]:
    """The steps of a batch file's text; :class:`ValueError` names a line without a command."""
    steps = []
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        given: dict[str, str] = {}
        while words and words[0].partition("=")[0] in _KEYS and "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            given[key] = value
        if not words:
            raise ValueError(f"line {number}: {line!r} names no command")
        if "tag" in given and "rc" not in given:
            raise ValueError(f"line {number}: tag={given['tag']} without rc=FILE")
        files = {key: Path(value) for key, value in given.items() if key != "tag"}
        steps.append(Step(tuple(words), **files, tag=given.get("tag")))
    return steps


@contextlib.contextmanager
def _redirected(out: Path | None, err: Path | None) -> Iterator[None]:
    """Standard output and error (file descriptors 1 and 2) point at ``out`` and ``err``
    (truncated; one file when both name the same) for the duration."""
    targets = {1: out, 2: err}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    opened: dict[Path, int] = {}
    saved: dict[int, int] = {}
    try:
        for fd, path in targets.items():
            if path is None:
                continue
            if path not in opened:
                opened[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            saved[fd] = os.dup(fd)
            os.dup2(opened[path], fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for target in opened.values():
            os.close(target)


def run(step: Step, entry: Callable[[list[str]], int | None]) -> int:
    """Run one step as ``MODULE ARGV`` would run, ``entry`` being the module's ``main``; its
    exit status."""
    with _redirected(step.out, step.err):
        try:
            status = entry(list(step.argv)) or 0
        except SystemExit as exc:  # argparse, and commands that exit
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            traceback.print_exc()
            status = 1
    if step.rc is not None and step.tag is not None:
        with step.rc.open("a") as results:
            results.write(f"{step.tag} rc={status}\n")
    elif step.rc is not None:
        step.rc.write_text(f"{status}\n")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.guest.cli_batch")
    parser.add_argument("--entry", default="nvmf.cli.main", help="the module whose main runs")
    parser.add_argument("batch", type=Path)
    args = parser.parse_args(argv)
    steps = parse(args.batch.read_text())
    entry = importlib.import_module(args.entry).main
    for step in steps:
        run(step, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
