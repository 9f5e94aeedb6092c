"""tests.vm.runtime_image: what the image of the guest's Python runtime carries, and how the
guest is told to attach it.  The image is built here for real (mksquashfs); the guest's half is
proven in the guest (tests/guest/test_runtime_guest.py)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.vm import guest, runtime_image
from tests.vm.runtime_image import Entry


@pytest.fixture(scope="module")
def mksquashfs() -> None:
    """scripts/guest-setup installs squashfs-tools (a look only, once it is there)."""
    guest.setup()


def test_the_runtime_carries_the_interpreter_the_venv_and_the_project() -> None:
    items = runtime_image.entries()
    sources = [entry.source for entry in items]
    assert Path(sysconfig.get_paths()["stdlib"]).resolve() in sources
    assert Path(sysconfig.get_paths()["purelib"]).resolve() in sources
    assert runtime_image.REPO / "src" in sources
    # the shared objects the interpreter maps: libc at least, and libpython where it is shared
    names = [entry.name for entry in items]
    assert "libc.so.6" in names
    libpython = sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert libpython in names
    # nothing twice, and every file is a real file (bind targets are resolved paths)
    runtime_image.manifest(items)
    assert all(not entry.source.is_symlink() for entry in items)


def test_two_entries_of_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "lib").mkdir()
    (tmp_path / "b" / "lib").mkdir()
    with pytest.raises(runtime_image.RuntimeImageError, match="two entries named lib"):
        runtime_image.manifest([Entry(tmp_path / "a" / "lib"), Entry(tmp_path / "b" / "lib")])


def test_the_image_holds_each_entry_less_its_exclusions_and_the_manifest(
    tmp_path: Path, mksquashfs: None
) -> None:
    tree = tmp_path / "tree"
    (tree / "test").mkdir(parents=True)
    (tree / "test" / "t.py").write_text("x = 1\n")
    (tree / "keep.py").write_text("y = 2\n")
    lib = tmp_path / "libx.so.1"
    lib.write_bytes(b"\x7fELF")
    out = tmp_path / "img"
    out.mkdir()
    image = runtime_image.build(out / "r.sqfs", [Entry(tree, ("test",)), Entry(lib)])
    listing = subprocess.run(
        ["unsquashfs", "-l", "-d", "", str(image)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "/tree/keep.py" in listing and "/libx.so.1" in listing
    assert not [p for p in listing if p.startswith("/tree/test")]
    manifest = subprocess.run(
        ["unsquashfs", "-cat", str(image), runtime_image.MANIFEST],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert manifest == f"tree {tree}\nlibx.so.1 {lib}\n"


def test_the_guest_gets_the_image_read_only_by_its_serial(tmp_path: Path) -> None:
    spec = guest.parse_args(["--runtime-image", "--", "true"], cwd=tmp_path)
    assert spec.runtime_image
    image = tmp_path / "r.sqfs"
    opts = guest.qemu_options(spec, None, image)
    assert f"file={image},if=none,id=nvmfrt,format=raw,readonly=on" in opts
    assert f"virtio-blk-pci,drive=nvmfrt,serial={runtime_image.SERIAL}" in opts
    with pytest.raises(ValueError, match="not built"):
        guest.qemu_options(spec, None, None)
    assert not guest.parse_args(["--", "true"], cwd=tmp_path).runtime_image


def test_bound_reads_the_guests_mountinfo() -> None:
    items = [Entry(Path("/usr/lib/x/libc.so.6")), Entry(Path("/opt/v/site-packages"))]
    mountinfo = (
        "22 1 0:20 / / ro - 9p /dev/root ro\n"
        "40 22 254:0 /libc.so.6 /usr/lib/x/libc.so.6 ro - squashfs /dev/vda ro\n"
    )
    assert runtime_image.bound(mountinfo, items) == [Path("/usr/lib/x/libc.so.6")]


def test_the_probe_runs_in_this_interpreter() -> None:
    """The probe's imports are the ones the guest scripts make; it must not fail here."""
    objects = runtime_image._maps_objects(Path(sys.executable))
    assert any(p.name.startswith("libc") for p in objects)
