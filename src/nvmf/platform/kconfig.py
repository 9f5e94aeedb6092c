"""The kernel: its version, the build options NVMe-oF and P2P DMA depend on, and its modules.

The build configuration comes from ``/proc/config.gz`` (present when the kernel was built with
``CONFIG_IKCONFIG_PROC``) or from ``/boot/config-RELEASE`` (what distributions ship); when neither
can be read the report says so instead of guessing.  A ``=m`` option is only useful once its
module is loaded (or loadable), so every option is shown with the module that provides it and
whether ``/proc/modules`` lists it.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field

from nvmf.platform.sysfs import SysRoot


@dataclass(frozen=True)
class OptionSpec:
    """A kernel option the doctor checks, the module it builds and why it matters."""

    name: str
    module: str | None
    why: str


#: The options the issue asks about, in report order.
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "CONFIG_PCI_P2PDMA",
        None,
        "PCI peer-to-peer DMA: without it the nvme driver cannot register its CMB as p2pmem, "
        "so the CMB is unused by the kernel and no NIC can DMA into it",
    ),
    OptionSpec("CONFIG_NVME_TARGET_TCP", "nvmet_tcp", "the Linux kernel's NVMe/TCP target"),
    OptionSpec("CONFIG_NVME_TARGET_RDMA", "nvmet_rdma", "the Linux kernel's NVMe/RDMA target"),
    OptionSpec("CONFIG_NVME_TCP", "nvme_tcp", "the Linux NVMe/TCP host (nvme connect -t tcp)"),
    OptionSpec("CONFIG_NVME_RDMA", "nvme_rdma", "the Linux NVMe/RDMA host (nvme connect -t rdma)"),
    OptionSpec("CONFIG_INFINIBAND", "ib_core", "the RDMA core every RDMA driver needs"),
    OptionSpec(
        "CONFIG_RDMA_RXE", "rdma_rxe", "Soft-RoCE: RDMA over any Ethernet netdev, in software"
    ),
    OptionSpec(
        "CONFIG_VFIO_PCI", "vfio_pci", "vfio-pci: hands an NVMe SSD to a userspace driver (ours)"
    ),
)


@dataclass
class OptionState:
    """One option's value in the running kernel's build configuration."""

    name: str
    #: ``"y"``, ``"m"``, another literal value, ``"not set"``, or ``None`` when the configuration
    #: could not be read at all.
    value: str | None
    module: str | None
    module_loaded: bool | None
    why: str

    @property
    def enabled(self) -> bool | None:
        """True for ``y``/``m``, False for not set, None when unknown."""
        if self.value is None:
            return None
        return self.value in ("y", "m")


@dataclass
class KernelInfo:
    """What the doctor knows of the running kernel."""

    release: str | None
    cmdline: str | None
    config_source: str | None
    config_error: str | None
    options: list[OptionState] = field(default_factory=list)
    modules_loaded: list[str] = field(default_factory=list)

    def option(self, name: str) -> OptionState | None:
        """The state of ``name`` (``CONFIG_...``), or None if the doctor does not check it."""
        for opt in self.options:
            if opt.name == name:
                return opt
        return None

    def enabled(self, name: str) -> bool | None:
        """Whether ``CONFIG_name`` is y or m (None: configuration unknown or not checked)."""
        opt = self.option(name)
        return None if opt is None else opt.enabled

    def cmdline_param(self, key: str) -> str | None:
        """The value of ``key=`` on the kernel command line (last one wins), or None."""
        value = None
        for word in (self.cmdline or "").split():
            if word.startswith(key + "="):
                value = word.split("=", 1)[1]
        return value


def parse_config(text: str) -> dict[str, str]:
    """``CONFIG_X=v`` and ``# CONFIG_X is not set`` lines as a mapping to ``v`` / ``"not set"``."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2 : -len(" is not set")]] = "not set"
    return values


def read_config(fs: SysRoot, release: str | None) -> tuple[dict[str, str] | None, str, str | None]:
    """The build configuration, where it came from, and why it could not be read (if so)."""
    data = fs.read_bytes("/proc/config.gz")
    if data is not None:
        try:
            return (
                parse_config(gzip.decompress(data).decode(errors="replace")),
                "/proc/config.gz",
                None,
            )
        except (OSError, EOFError, zlib.error):
            pass
    if release:
        path = f"/boot/config-{release}"
        text = fs.read_text(path)
        if text is not None:
            return parse_config(text), path, None
    tried = "/proc/config.gz" + (f" nor /boot/config-{release}" if release else "")
    return None, "", f"neither {tried} is readable: the kernel's build options are unknown"


def inspect_kernel(fs: SysRoot) -> KernelInfo:
    """Read the kernel's release, command line, build options and loaded modules."""
    release = fs.read_text("/proc/sys/kernel/osrelease")
    cmdline = fs.read_text("/proc/cmdline")
    modules_text = fs.read_text("/proc/modules")
    loaded = sorted(line.split()[0] for line in (modules_text or "").splitlines() if line.strip())
    config, source, error = read_config(fs, release)
    options: list[OptionState] = []
    for spec in OPTIONS:
        value = None if config is None else config.get(spec.name, "not set")
        module_loaded: bool | None = None
        if spec.module is not None and modules_text is not None:
            module_loaded = spec.module in loaded
        options.append(OptionState(spec.name, value, spec.module, module_loaded, spec.why))
    return KernelInfo(
        release=release,
        cmdline=cmdline,
        config_source=source or None,
        config_error=error,
        options=options,
        modules_loaded=loaded,
    )
