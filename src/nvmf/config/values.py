"""Checks and conversions of single configuration values: NQNs, addresses, sizes, versions.

Each check returns ``None`` for a good value or a short message saying what is wrong ("must be
...") that the caller prefixes with the field's JSON path; none of them raises, so the loader can
report every bad field of a file at once.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

from nvmf.config.errors import show

#: Longest NQN the spec allows, in bytes of UTF-8 (NVMe Base Specification, "NQN").
NQN_MAX_BYTES = 223
UUID_NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"

TRTYPES = ("tcp", "rdma", "loop", "fc")
#: The transports this target serves itself (nvmf.transport.base.REGISTRY); the others are
#: valid for the kernel target only.
SERVED_TRTYPES = ("tcp", "loop", "rdma")
ADRFAMS = ("ipv4", "ipv6", "ib", "fc", "loop")
TREQS = ("not specified", "required", "not required")
ANA_STATES = ("optimized", "non-optimized", "inaccessible", "persistent-loss", "change")
MEDIA_KINDS = ("ram", "file", "block", "null", "nvme_pci")
#: Where an ``nvme_pci`` namespace's SSD queues and staging buffers live.
PLACEMENTS = ("dram", "cmb")
BLOCK_SIZES = (512, 4096)

NSID_MAX = 0xFFFFFFFE
PORTID_MAX = 0xFFFF
#: Highest ANA group ID nvmetcli creates (the kernel itself stops at 128).
ANA_GRPID_MAX = 1024
CNTLID_MAX = 0xFFEF
QID_MAX = 0xFFFF
#: Largest in-capsule data size accepted; -1 asks the transport for its own default.
INLINE_DATA_MAX = 1 << 20
SERIAL_MAX = 20
MODEL_MAX = 40

_FC_ADDR = re.compile(r"nn-0x[0-9a-fA-F]{16}:pn-0x[0-9a-fA-F]{16}")
_VERSION = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?")
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgtp]?)(i?b)?\s*", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def check_nqn(nqn: str) -> str | None:
    """A name the kernel target takes for a host or subsystem: hard limits only.

    At most 223 bytes of UTF-8, not empty, usable as a configfs directory name (no spaces,
    control characters or '/').  Whether it has the NQN *format* is :func:`nqn_format_warning`'s
    business: the Linux target accepts names like ``testnqn``, and nvmetcli's examples use them.
    """
    if not nqn:
        return "must not be empty"
    size = utf8_len(nqn)
    if size is None:
        return f"must be valid UTF-8, got {show(nqn)}"
    if size > NQN_MAX_BYTES:
        return f"must be at most {NQN_MAX_BYTES} bytes, got {size}"
    if any(ch.isspace() or not ch.isprintable() or ch == "/" for ch in nqn):
        return f"must not contain spaces, control characters or '/', got {show(nqn)}"
    return None


def nqn_format_warning(nqn: str) -> str | None:
    """Why ``nqn`` is not a strict NQN (``nqn.`` then a name, or the UUID form); None if it is.

    Not an error: the kernel accepts any directory name, and hosts that connect with such a
    name work, so a file written for the kernel (nvmetcli's ``testnqn``) still loads.
    """
    if not nqn.startswith("nqn.") or len(nqn) == len("nqn."):
        return (
            f'{show(nqn)} is not an NQN ("nqn.YYYY-MM.reverse.domain:name" or the UUID form); '
            "the kernel accepts it, but hosts may not"
        )
    if nqn.startswith(UUID_NQN_PREFIX) and check_uuid(nqn[len(UUID_NQN_PREFIX) :]) is not None:
        return f"a UUID NQN should end in a UUID (8-4-4-4-12 hex digits), got {show(nqn)}"
    return None


def check_uuid(value: str) -> str | None:
    """A UUID in its 36-character 8-4-4-4-12 form (what the kernel's ``uuid_parse`` takes)."""
    try:
        ok = len(value) == 36 and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        ok = False
    return None if ok else f"must be a UUID like 8-4-4-4-12 hex digits, got {show(value)}"


def check_nguid(value: str) -> str | None:
    """An NGUID: 16 bytes as 32 hex digits, optionally separated by ``-`` or ``:``."""
    digits = value.replace("-", "").replace(":", "")
    if len(digits) == 32 and all(ch in "0123456789abcdefABCDEF" for ch in digits):
        return None
    return f"must be 32 hex digits (dashes allowed), got {show(value)}"


def check_version(value: str) -> str | None:
    """An NVMe version as the kernel's ``attr_version`` takes it: ``1.3`` or ``2.0.1``."""
    if _VERSION.fullmatch(value):
        return None
    return f'must be a version like "1.3", got {show(value)}'


def check_ascii(value: str, limit: int) -> str | None:
    """Printable ASCII of at most ``limit`` characters (Identify's serial and model fields)."""
    if len(value) > limit:
        return f"must be at most {limit} characters, got {len(value)}"
    if not all(" " <= ch <= "~" for ch in value):
        return f"must be printable ASCII, got {show(value)}"
    return None


def check_traddr(adrfam: str, traddr: str) -> str | None:
    """A transport address valid for its address family (ipv4/ipv6 parsed by ``ipaddress``)."""
    if adrfam == "ipv4":
        try:
            ipaddress.IPv4Address(traddr)
        except ValueError:
            return f"must be an IPv4 address for adrfam ipv4, got {show(traddr)}"
    elif adrfam == "ipv6":
        try:
            ipaddress.IPv6Address(traddr)
        except ValueError:
            return f"must be an IPv6 address for adrfam ipv6, got {show(traddr)}"
    elif adrfam == "fc":
        if not _FC_ADDR.fullmatch(traddr):
            return f'must be "nn-0x<16 hex>:pn-0x<16 hex>" for adrfam fc, got {show(traddr)}'
    elif adrfam == "ib" and not traddr:
        return "must not be empty for adrfam ib"
    size = utf8_len(traddr)
    if size is None or size > 256:
        return "must be at most 256 bytes of UTF-8"
    return None


def utf8_len(text: str) -> int | None:
    """Length of ``text`` in UTF-8 bytes; None if it cannot be encoded (a lone surrogate)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return None


def check_trsvcid(trtype: str, trsvcid: str) -> str | None:
    """A service ID: a port number 1..65535 for tcp and rdma; fc and loop may leave it empty."""
    if trtype in ("fc", "loop") and trsvcid in ("", "none"):
        return None
    if trsvcid.isdigit() and 1 <= int(trsvcid) <= 0xFFFF:
        return None
    return f"must be a port number 1..65535 for trtype {trtype}, got {show(trsvcid)}"


def check_choice(value: str, choices: tuple[str, ...]) -> str | None:
    """One of ``choices``."""
    if value in choices:
        return None
    return f"must be one of {', '.join(choices)}; got {show(value)}"


def range_message(value: object, low: int, high: int, *, hex_bounds: bool = False) -> str:
    """``must be an integer LOW..HIGH, got VALUE`` (bounds in hex for NVMe identifiers)."""
    bounds = f"{low}..0x{high:X}" if hex_bounds else f"{low}..{high}"
    return f"must be an integer {bounds}, got {show(value)}"


def check_range(value: int, low: int, high: int, *, hex_bounds: bool = False) -> str | None:
    """An integer in ``low..high``."""
    if low <= value <= high:
        return None
    return range_message(value, low, high, hex_bounds=hex_bounds)


def parse_size(value: object) -> int | None:
    """Bytes from an integer or a string like ``"512M"``, ``"1G"``, ``"4KiB"``, ``"4096"``.

    Suffixes are binary (K = 1024).  Returns None when ``value`` is not a size.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match:
            return int(match.group(1)) << _SIZE_SHIFT[match.group(2).lower()]
    return None
