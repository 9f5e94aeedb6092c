"""A read-only disk image of the Python runtime the guest's scripts run, on a block device.

Why: the guest sees this machine's root over 9p without caching (virtme-ng falls back to 9p
here, and its root mount ignores a cache option), so every module import and every page of a
shared object is a 9p round trip under emulation.  Measured in a 6.1 guest on an idle machine,
the same commands from 9p and then from this image (squashfs on virtio-blk, through the guest's
page cache): ``python -c pass`` 1.2-1.5 s -> 0.5 s, ``import nvmf.cli.main`` 1.9-3.2 s -> 0.7 s,
a refused ``nvmf discover`` 7.0 s -> 2.6 s.  Mounting it costs half a second.

The image holds the interpreter's standard library and shared library, the venv's
site-packages, the project's ``src`` (an editable install), pyverbs, and the system's shared
objects that those map.  ``binds.txt`` at its root lists one entry a line: its name in the image
and the path it is bound over in the guest, which is the path it came from here.  The guest
mounts the image and binds each entry over that path (the harness's preamble does it once per
boot): the same bytes at the same paths, so nothing else in the guest changes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The virtio-blk serial the guest finds the image by (``/sys/block/*/serial``).
SERIAL = "nvmf-runtime"
#: The manifest at the image's root: ``NAME TARGET`` a line.
MANIFEST = "binds.txt"
#: What the guest never imports, left out of the standard library and of site-packages.
STDLIB_EXCLUDE = ("test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip")
SITE_EXCLUDE = ("pip", "mypy", "mypyc", "*__mypyc*")
#: What a guest script's Python imports whose shared objects the image must carry.
_PROBE = (
    "import importlib, ssl, ctypes, asyncio, nvmf.cli.main\n"
    "for name in ('uvloop', 'cryptography.hazmat.bindings._rust', 'crc32c', 'pyverbs.cmid'):\n"
    "    try: importlib.import_module(name)\n"
    "    except ImportError: pass\n"
    "print(open('/proc/self/maps').read())\n"
)


class RuntimeImageError(RuntimeError):
    """The image could not be built (mksquashfs missing or failing, two entries of one name)."""


@dataclass(frozen=True)
class Entry:
    """One file or directory of this machine, at the image's root under its own name, with the
    mksquashfs wildcards (relative to it) of what it leaves out."""

    source: Path
    exclude: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.source.name


def _maps_objects(python: Path) -> list[Path]:
    """The shared objects ``python`` maps once it has imported what the guest scripts use."""
    proc = subprocess.run(
        [str(python), "-c", _PROBE], capture_output=True, text=True, check=False, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeImageError(f"{python} could not import the project: {proc.stderr[-2000:]}")
    found = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and ".so" in fields[5] and fields[5].startswith("/"):
            path = Path(fields[5])
            if path not in found:
                found.append(path)
    return found


def entries() -> list[Entry]:
    """What the image carries for this interpreter (the venv's, which the guest scripts run):
    its paths from ``sysconfig``, its shared objects from a child of the same interpreter."""
    python = Path(sys.executable)
    paths = sysconfig.get_paths()
    stdlib = Path(paths["stdlib"]).resolve()
    site = Path(paths["purelib"]).resolve()
    dirs = [Entry(stdlib, STDLIB_EXCLUDE), Entry(site, SITE_EXCLUDE)]
    src = REPO / "src"
    spec = importlib.util.find_spec("nvmf")
    if spec and spec.origin and Path(spec.origin).resolve().is_relative_to(src):
        dirs.append(Entry(src))
    verbs = importlib.util.find_spec("pyverbs")
    if verbs and verbs.submodule_search_locations:
        dirs.append(Entry(Path(next(iter(verbs.submodule_search_locations))).resolve()))
    files: list[Entry] = []
    for obj in _maps_objects(python):
        real = obj.resolve()
        if any(real.is_relative_to(d.source) for d in dirs):
            continue
        if real not in [f.source for f in files]:
            files.append(Entry(real))
    return dirs + files


def manifest(items: Sequence[Entry]) -> str:
    """The ``binds.txt`` text for ``items``; two entries of one name are an error (mksquashfs
    names each source by its basename, and would rename the second)."""
    names = [e.name for e in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RuntimeImageError(f"two entries named {', '.join(twice)} in the runtime image")
    return "".join(f"{e.name} {e.source}\n" for e in items)


def build(dest: Path, items: Sequence[Entry] | None = None) -> Path:
    """Write the squashfs image of ``items`` (default :func:`entries`) to ``dest``; ``dest``.

    Uncompressed: the guest's CPU is emulated, and the image lives only for one boot.  The
    manifest is written beside ``dest`` first (it must be a file named :data:`MANIFEST`)."""
    items = list(entries() if items is None else items)
    listing = dest.with_name(MANIFEST)
    listing.write_text(manifest(items))
    excludes = [f"{entry.name}/{pattern}" for entry in items for pattern in entry.exclude]
    dest.unlink(missing_ok=True)
    argv = [
        "mksquashfs",
        *(str(entry.source) for entry in items),
        str(listing),
        str(dest),
        "-noI",
        "-noD",
        "-noF",
        "-noX",
        "-no-xattrs",
        "-quiet",
        "-no-progress",
        "-wildcards",
        "-e",
        *excludes,
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeImageError("mksquashfs not found (scripts/guest-setup installs it)") from exc
    if proc.returncode != 0:
        raise RuntimeImageError(f"mksquashfs failed ({proc.returncode}): {proc.stderr.strip()}")
    return dest


#: The guest's half (bash): mount the image, once per boot, and bind its entries in place.
#: Without the device (an external launcher that does not attach it) the guest reads 9p.
#: ``$OUT/mountinfo.txt`` shows what was bound (:func:`bound`).
GUEST_MOUNT = f"""\
nvmf_runtime() {{
  local s d name target
  [ -f /run/nvmf-runtime/{MANIFEST} ] && return 0
  for s in /sys/block/*/serial; do
    [ "$(cat "$s" 2>/dev/null)" = {SERIAL} ] || continue
    d=${{s%/serial}}; d=/dev/${{d##*/}}
    modprobe squashfs 2>/dev/null; mkdir -p /run/nvmf-runtime
    mount -t squashfs -o ro "$d" /run/nvmf-runtime || return 0
    while read -r name target; do
      mount --bind "/run/nvmf-runtime/$name" "$target" || echo "runtime: $target not bound" >&2
    done < /run/nvmf-runtime/{MANIFEST}
  done
}}
nvmf_runtime
cat /proc/self/mountinfo > "$OUT/mountinfo.txt"
"""


def bound(mountinfo: str, items: Sequence[Entry]) -> list[Path]:
    """Which of ``items`` a guest's ``/proc/self/mountinfo`` text shows bound in place."""
    points = {Path(line.split()[4]) for line in mountinfo.splitlines() if len(line.split()) > 4}
    return [entry.source for entry in items if entry.source in points]


if __name__ == "__main__":  # pragma: no cover - by hand: what the image would carry
    for item in entries():
        print(item.name, item.source, os.path.getsize(item.source), " ".join(item.exclude))
