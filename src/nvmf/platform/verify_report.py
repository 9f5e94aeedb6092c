"""``nvmf doctor --verify-cmb``'s output: the verdict first, then the figures behind it.

Text for people (what was read, each transfer's bytes, seconds and MB/s, the comparison, what
was given back), JSON for scripts and tests (the :class:`~nvmf.platform.verify_cmb.
CmbVerification` as it is, or ``{"bdf", "ok": false, "error", "released"}`` when the check
could not run).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from nvmf.platform.report import human_size
from nvmf.platform.verify_cmb import POISON, CmbVerification, Transfer, VerifyError

#: The CMBSZ fields spelled out, register order.
_CMBSZ_SHOWN = ("SQS", "CQS", "LISTS", "RDS", "WDS", "SZU", "SZ")


def to_dict(result: CmbVerification) -> dict[str, Any]:
    """The result as plain data, with ``ok`` (the check ran) beside ``match``."""
    return {"ok": True, **dataclasses.asdict(result)}


def error_dict(bdf: str, error: VerifyError) -> dict[str, Any]:
    """A check that could not run, as plain data."""
    return {"bdf": bdf, "ok": False, "error": str(error), "released": error.released}


def render_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def _transfer(t: Transfer) -> str:
    commands = f", {t.commands} command{'s' if t.commands > 1 else ''}" if t.commands else ""
    return (
        f"{t.what + ':':<34} {t.bytes} bytes in {t.seconds:.6f} s = {t.mb_per_s:.1f} MB/s"
        f" ({t.placement.upper()} at {t.address:#x}{commands})"
    )


def render_text(r: CmbVerification) -> str:
    """The result for people: the verdict, what was read, the figures, what was released."""
    verdict = (
        "MATCH: the SSD put the same bytes in its CMB as in DRAM"
        if r.match
        else "MISMATCH: the CMB does not hold what the SSD read; do not place Read data in this "
        "CMB (staging_placement cmb) on this machine"
    )
    cmb = r.cmb
    sz = cmb.get("CMBSZ", {})
    bits = " ".join(f"{n}={sz[n]}" for n in _CMBSZ_SHOWN if n in sz)
    loc = cmb.get("CMBLOC", {})
    regs = cmb["registers"]
    lines = [
        f"nvmf doctor --verify-cmb {r.bdf}: {verdict}",
        f"  controller: {r.model or 'model unknown'} (serial {r.serial or '?'})",
        f"  CMB: {human_size(cmb['size'])} in BAR{cmb['bar']} at offset {cmb['offset']:#x}, "
        f"address {cmb['address']:#x} for the SSD (CMBMSC.CBA)",
        f"    CMBSZ {regs.get('CMBSZ', '?')}: {bits}; "
        f"CMBLOC {regs.get('CMBLOC', '?')}: BIR={loc.get('BIR')} OFST={loc.get('OFST')}",
        f"  blocks: LBA {r.slba} + {r.blocks} of {r.lba_size} bytes ({r.bytes} bytes) of "
        f"namespace {r.nsid}; "
        + (
            "a random pattern was written there from DRAM first"
            if r.written
            else "read only (nothing written to the SSD)"
        ),
        f"  PRP lists of the CMB read in {r.cmb_prp_lists.upper()}; both destinations filled "
        f"with {POISON:#04x} before each read",
    ]
    lines += [f"  {_transfer(t)}" for t in r.transfers]
    if r.match:
        lines.append(
            f"  compare: {r.bytes} bytes identical (sha256 {r.sha256_cmb[:16]}..."
            + (", all zeroes)" if r.all_zero else ")")
        )
    else:
        where = f"first at offset {r.first_mismatch:#x}" if r.first_mismatch is not None else ""
        lines.append(
            f"  compare: {r.mismatched_bytes} of {r.bytes} bytes differ, {where}; "
            f"{r.poison_left} of them still hold the poison byte (never written by the SSD)"
        )
        if r.dram_matches_pattern is False:
            lines.append("  the DRAM copy does not match the pattern written either")
    lines += [f"  note: {n}" for n in r.notes]
    lines.append("  released: " + "; ".join(r.released))
    return "\n".join(lines) + "\n"


def render_error(bdf: str, error: VerifyError) -> str:
    """Why the check could not run, and what was given back."""
    lines = [f"nvmf doctor --verify-cmb {bdf}: {error}"]
    if error.released:
        lines.append("  released: " + "; ".join(error.released))
    return "\n".join(lines) + "\n"


__all__ = ["error_dict", "render_error", "render_json", "render_text", "to_dict"]
