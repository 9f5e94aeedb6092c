"""Physical Region Page entries for one data transfer (NVMe Base 2.0 §4.1.1, Figures 108-110).

A command's data pointer is PRP1 and PRP2.  PRP1 is the address of the first byte (any dword
aligned offset into a memory page).  Every further entry is a whole page (offset 0), and:

- the transfer fits in PRP1's page: PRP2 is not used (0);
- it ends in the next page: PRP2 is that page;
- otherwise PRP2 points to a PRP list: one entry per further page.  A list occupies one memory
  page here; a transfer needing more than ``page_size / 8`` further pages would need chained
  lists, which this driver does not build (MDTS keeps real transfers far below: 512 entries are
  2 MiB with 4 KiB pages).

Pages are the controller's memory page size (CC.MPS), not the host's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prps:
    """PRP1, PRP2 and the list entries PRP2 points to (empty when PRP2 is data or unused)."""

    prp1: int
    prp2: int
    entries: tuple[int, ...] = ()


def page_count(address: int, length: int, page_size: int) -> int:
    """How many memory pages ``length`` bytes starting at ``address`` touch."""
    first = address & ~(page_size - 1)
    return (address + length - first + page_size - 1) // page_size


def max_list_entries(page_size: int) -> int:
    """Entries one PRP list page holds (no chaining)."""
    return page_size // 8


def build_prps(address: int, length: int, page_size: int, list_address: int) -> Prps:
    """The PRPs for ``length`` bytes at device address ``address``.

    ``list_address`` is where the caller will write :attr:`Prps.entries` (page aligned, used
    only when a list is needed).  Raises ``ValueError`` for an empty or odd-aligned transfer, or
    one that needs a chained list.
    """
    if length <= 0:
        raise ValueError(f"transfer of {length} bytes")
    if address & 3:
        raise ValueError(f"PRP1 {address:#x} is not dword aligned")
    pages = page_count(address, length, page_size)
    if pages == 1:
        return Prps(address, 0)
    second = (address & ~(page_size - 1)) + page_size
    if pages == 2:
        return Prps(address, second)
    if pages - 1 > max_list_entries(page_size):
        raise ValueError(
            f"{length} bytes need {pages - 1} PRP list entries; one list page holds "
            f"{max_list_entries(page_size)}"
        )
    if list_address & (page_size - 1):
        raise ValueError(f"PRP list at {list_address:#x} is not page aligned")
    entries = tuple(second + i * page_size for i in range(pages - 1))
    return Prps(address, list_address, entries)
