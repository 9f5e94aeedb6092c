"""Argument types the sub-commands share: fio-style sizes and bounded integers.

A module of their own so that a command using them (``nvmf doctor --verify-cmb-bytes``) does
not import the host library with them (asyncio, cryptography: seconds per call in the guest).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

_SIZE_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """fio-style sizes: ``512``, ``4k``, ``128K``, ``1m``, ``2GiB`` (powers of 1024)."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    suffix = t[-1:] if t[-1:] in _SIZE_SUFFIX else ""
    number = t[: len(t) - len(suffix)]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 512, 4k, 1m)")
    return int(number) * _SIZE_SUFFIX[suffix]


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not {lo}-{hi}")
        return value

    parse.__name__ = "integer"
    return parse
