"""Kernel build options: where they come from, and saying so when nothing is readable."""

from __future__ import annotations

import gzip
from pathlib import Path

from nvmf.platform.kconfig import inspect_kernel, parse_config
from nvmf.platform.sysfs import SysRoot, parse_cpu_list


def _tree(tmp_path: Path, files: dict[str, bytes | str]) -> SysRoot:
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return SysRoot(tmp_path)


def test_parse_config_values_and_not_set() -> None:
    cfg = parse_config('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x"\n# comment\n')
    assert cfg == {"CONFIG_A": "y", "CONFIG_B": "not set", "CONFIG_C": "x"}


def test_proc_config_gz_is_preferred(tmp_path: Path) -> None:
    fs = _tree(
        tmp_path,
        {
            "proc/sys/kernel/osrelease": "6.1.0\n",
            "proc/config.gz": gzip.compress(b"CONFIG_PCI_P2PDMA=y\nCONFIG_NVME_TCP=m\n"),
            "boot/config-6.1.0": "# CONFIG_PCI_P2PDMA is not set\n",
            "proc/modules": "nvme_tcp 16384 0 - Live 0x0\n",
        },
    )
    k = inspect_kernel(fs)
    assert k.config_source == "/proc/config.gz"
    assert k.enabled("CONFIG_PCI_P2PDMA") is True
    tcp = k.option("CONFIG_NVME_TCP")
    assert tcp is not None and tcp.value == "m" and tcp.module_loaded is True
    assert k.enabled("CONFIG_RDMA_RXE") is False  # absent from the config means not set


def test_boot_config_used_when_no_proc_config(tmp_path: Path) -> None:
    fs = _tree(
        tmp_path,
        {"proc/sys/kernel/osrelease": "6.1.0\n", "boot/config-6.1.0": "CONFIG_VFIO_PCI=m\n"},
    )
    k = inspect_kernel(fs)
    assert k.config_source == "/boot/config-6.1.0"
    vfio = k.option("CONFIG_VFIO_PCI")
    assert vfio is not None and vfio.module_loaded is None  # no /proc/modules: unknown


def test_says_so_when_no_config_is_readable(tmp_path: Path) -> None:
    fs = _tree(tmp_path, {"proc/sys/kernel/osrelease": "6.1.0\n", "proc/modules": ""})
    k = inspect_kernel(fs)
    assert k.config_source is None
    assert k.config_error is not None and "/proc/config.gz" in k.config_error
    assert "/boot/config-6.1.0" in k.config_error
    assert all(opt.value is None for opt in k.options)
    assert k.enabled("CONFIG_PCI_P2PDMA") is None


def test_cmdline_param_last_wins(tmp_path: Path) -> None:
    fs = _tree(tmp_path, {"proc/cmdline": "intel_iommu=off quiet intel_iommu=on iommu=pt\n"})
    k = inspect_kernel(fs)
    assert k.cmdline_param("intel_iommu") == "on" and k.cmdline_param("iommu") == "pt"
    assert k.cmdline_param("amd_iommu") is None


def test_cpu_list() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("0") == [0]
