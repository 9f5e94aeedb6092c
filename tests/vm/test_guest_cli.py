"""The guest harness's pure parts: its command line, the QEMU options, the virtme-ng command.

No guest is booted here: these check that what the guest tests ask for (a kernel, a CMB
controller behind an IOMMU, writable directories) turns into the right launcher arguments.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.vm import guest

VNG = Path("/opt/venv/bin/vng")
KERNEL = Path("/boot/vmlinuz-6.1.0-57-amd64")


def test_defaults_boot_6_1_with_no_extra_devices(tmp_path: Path) -> None:
    spec = guest.parse_args(["--", "uname", "-r"], cwd=tmp_path)
    assert spec.kernel == "6.1" and spec.cmb_mb == 0 and spec.command == ("uname", "-r")
    assert guest.qemu_options(spec, None) == ["-machine", "q35", "-cpu", guest.CPU_MODEL]
    assert guest.kernel_append(spec) == ["tsc=reliable"]  # not the emulated HPET (BOOT_APPEND)
    argv = guest.vng_command(spec, VNG, KERNEL)
    assert argv[:3] == [str(VNG), "--run", str(KERNEL)]
    assert "--disable-kvm" in argv  # nested KVM hangs the guest kernel: always TCG
    assert argv[argv.index("--append") + 1] == "tsc=reliable"
    assert argv[argv.index("--user") + 1] == "root"


def test_cmb_nvme_adds_the_controller_behind_an_iommu(tmp_path: Path) -> None:
    spec = guest.parse_args(["--cmb-nvme", "16", "--", "lspci"], cwd=tmp_path)
    media = tmp_path / "nvme.img"
    opts = guest.qemu_options(spec, media)
    # The IOMMU must come before the device it translates for.
    assert opts.index("intel-iommu") < opts.index("nvme,serial=cmb0001,drive=nvm,cmb_size_mb=16")
    assert f"file={media},if=none,id=nvm,format=raw" in opts
    assert guest.kernel_append(spec) == ["tsc=reliable", "intel_iommu=on", "iommu=pt"]

    argv = guest.vng_command(spec, VNG, KERNEL, media)
    assert argv[argv.index("--append") + 1] == "tsc=reliable intel_iommu=on iommu=pt"
    (qemu,) = [a for a in argv if a.startswith("--qemu-opts=")]
    assert qemu.removeprefix("--qemu-opts=").split() == opts


def test_cmb_controller_needs_its_media() -> None:
    spec = guest.GuestSpec(command=("true",), cmb_mb=16)
    with pytest.raises(ValueError):
        guest.qemu_options(spec, None)


def test_working_dir_and_rw_dirs_are_writable_once_each(tmp_path: Path) -> None:
    extra = tmp_path / "results"
    extra.mkdir()
    spec = guest.parse_args(["--rw", str(extra), "--rw", str(tmp_path), "--", "true"], cwd=tmp_path)
    argv = guest.vng_command(spec, VNG, KERNEL)
    assert [a for a in argv if a.startswith("--rwdir=")] == [
        f"--rwdir={tmp_path.resolve()}",
        f"--rwdir={extra.resolve()}",
    ]


def test_command_runs_in_the_working_directory_quoted(tmp_path: Path) -> None:
    workdir = tmp_path / "a dir"
    workdir.mkdir()
    spec = guest.parse_args(["--", "sh", "-c", "echo $HOME > out.txt"], cwd=workdir)
    line = guest.vng_command(spec, VNG, KERNEL)[-1]
    assert shlex.split(line) == [
        "cd",
        str(workdir.resolve()),
        "&&",
        "sh",
        "-c",
        "echo $HOME > out.txt",
    ]


def test_kernel_choice_and_bad_arguments(tmp_path: Path) -> None:
    assert guest.parse_args(["--kernel", "6.12", "--", "uname"], cwd=tmp_path).kernel == "6.12"
    for bad in (["--kernel", "5.10", "--", "true"], ["--"], [], ["--cmb-nvme", "-1", "--", "x"]):
        with pytest.raises(SystemExit):
            guest.parse_args(bad, cwd=tmp_path)


def test_find_kernel_takes_the_newest_of_its_series_only(tmp_path: Path) -> None:
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-57-amd64", "vmlinuz-6.12.12+bpo-amd64"):
        (tmp_path / name).touch()
    assert guest.find_kernel("6.1", tmp_path).name == "vmlinuz-6.1.0-57-amd64"
    assert guest.find_kernel("6.12", tmp_path).name == "vmlinuz-6.12.12+bpo-amd64"
    (tmp_path / "vmlinuz-6.12.12+bpo-amd64").unlink()
    with pytest.raises(guest.GuestError):
        guest.find_kernel("6.12", tmp_path)


def test_trace_enables_qemu_events_into_a_file(tmp_path: Path) -> None:
    spec = guest.parse_args(
        [
            "--cmb-nvme",
            "16",
            "--trace",
            "pci_nvme_map_addr*",
            "--trace",
            "pci_nvme_create_sq",
            "--",
            "true",
        ],
        cwd=tmp_path,
    )
    assert spec.trace == ("pci_nvme_map_addr*", "pci_nvme_create_sq")
    assert spec.trace_file == tmp_path / "qemu-trace.log"
    opts = guest.qemu_options(spec, tmp_path / "nvme.img")
    pairs = [opts[i + 1] for i, o in enumerate(opts) if o == "-trace"]
    assert pairs == [
        "enable=pci_nvme_map_addr*",
        "enable=pci_nvme_create_sq",
        f"file={(tmp_path / 'qemu-trace.log').resolve()}",
    ]
    # virtme-ng splits --qemu-opts on blanks: every option must stay one word.
    argv = guest.vng_command(spec, VNG, KERNEL, tmp_path / "nvme.img")
    (qemu,) = [a for a in argv if a.startswith("--qemu-opts=")]
    assert qemu.removeprefix("--qemu-opts=").split() == opts


def test_trace_file_option_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "t.log"
    spec = guest.parse_args(["--trace", "x", "--trace-file", str(out), "--", "true"], cwd=tmp_path)
    assert spec.trace_file == out
    assert "-trace" not in guest.qemu_options(guest.parse_args(["--", "true"], cwd=tmp_path), None)
    for bad in (["--trace-file", str(out), "--", "true"], ["--trace", "a b", "--", "true"]):
        with pytest.raises(SystemExit):
            guest.parse_args(bad, cwd=tmp_path)
    with pytest.raises(ValueError, match="trace file"):
        guest.GuestSpec(command=("true",), trace=("x",))
