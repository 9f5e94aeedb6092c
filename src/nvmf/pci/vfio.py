"""A PCI function opened through VFIO: container, group, device, BARs, config space, DMA.

The steps are the ones ``Documentation/driver-api/vfio.rst`` lists: open ``/dev/vfio/vfio`` (the
container) and check its API version and the Type1 IOMMU extension; open the function's group
(``/dev/vfio/N``, N from ``/sys/bus/pci/devices/BDF/iommu_group``) and check that it is viable
(every device of the group bound to vfio-pci or to no driver); attach the group to the container,
select the IOMMU model, and ask the group for the device's descriptor.  Region information
(``VFIO_DEVICE_GET_REGION_INFO``) then says where each BAR and the configuration space are in the
device descriptor's offset space: BARs are ``mmap``-ed from there, config space is read and
written with ``pread``/``pwrite``.

DMA (``VFIO_IOMMU_MAP_DMA``) maps a range of this process's memory at an IOVA chosen by the
caller in the container's IOMMU domain; :mod:`nvmf.pci.dma` picks the IOVAs.

Every failure names what to do about it (bind the device to vfio-pci, enable the IOMMU, bind the
rest of the group), since the usual reason is the machine's setup, not a bug.

Another process (an offload worker) that receives :attr:`VfioDevice.fd` over a Unix socket can
map the BARs itself: :func:`region_info` and :func:`map_region` take only the descriptor.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from nvmf.pci import vfio_abi as abi

SYSFS_PCI = Path("/sys/bus/pci/devices")
VFIO_DEV = Path("/dev/vfio")

#: PCI configuration space: COMMAND register and its bits (PCI Local Bus 3.0 §6.2.2).
PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 1 << 1
PCI_COMMAND_MASTER = 1 << 2
#: BAR0 .. BAR5 in config space.
PCI_BASE_ADDRESS_0 = 0x10
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_SPACE_IO = 0x1


class VfioError(OSError):
    """The device cannot be used through VFIO; the message says why and what to do."""


@dataclass(frozen=True)
class RegionInfo:
    """Where one region of the device (a BAR, the config space) is, and what it allows."""

    index: int
    size: int
    offset: int
    flags: int

    @property
    def mappable(self) -> bool:
        return bool(self.flags & abi.VFIO_REGION_INFO_FLAG_MMAP)


IoctlArg = ctypes.Structure | ctypes.c_int32 | ctypes.Array[ctypes.c_char]


def _ioctl_struct(fd: int, request: int, arg: IoctlArg, what: str) -> int:
    """An ioctl whose argument is a structure the kernel may fill in."""
    try:
        return int(fcntl.ioctl(fd, request, arg, True))
    except OSError as exc:
        raise VfioError(exc.errno, f"{what}: {exc.strerror}") from exc


def region_info(device_fd: int, index: int) -> RegionInfo:
    """``VFIO_DEVICE_GET_REGION_INFO`` of region ``index`` (0-5 BARs, 7 config space)."""
    info = abi.vfio_region_info(argsz=ctypes.sizeof(abi.vfio_region_info), index=index)
    _ioctl_struct(device_fd, abi.VFIO_DEVICE_GET_REGION_INFO, info, f"region {index} info")
    return RegionInfo(index, int(info.size), int(info.offset), int(info.flags))


def map_region(device_fd: int, info: RegionInfo, length: int | None = None) -> mmap.mmap:
    """``mmap`` a BAR (shared, read-write) from the device descriptor at the region's offset."""
    if not info.mappable:
        raise VfioError(errno.EINVAL, f"region {info.index} cannot be mmap-ed (no MMAP flag)")
    size = info.size if length is None else length
    return mmap.mmap(
        device_fd,
        size,
        flags=mmap.MAP_SHARED,
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
        offset=info.offset,
    )


def _not_bound_message(bdf: str, driver: str | None) -> str:
    device = SYSFS_PCI / bdf
    unbind = (
        f"echo {bdf} > /sys/bus/pci/drivers/{driver}/unbind; " if driver and driver != "" else ""
    )
    return (
        f"PCI device {bdf} is bound to {driver or 'no driver'}, not vfio-pci: "
        f"{unbind}modprobe vfio-pci; echo vfio-pci > {device}/driver_override; "
        f"echo {bdf} > /sys/bus/pci/drivers/vfio-pci/bind"
    )


def iommu_group(bdf: str, sysfs: Path = SYSFS_PCI) -> int:
    """The IOMMU group number of ``bdf``; a clear error when the device or the IOMMU is missing."""
    device = sysfs / bdf
    if not device.exists():
        raise VfioError(errno.ENODEV, f"no PCI device {bdf} (looked in {device})")
    link = device / "iommu_group"
    if not link.exists():
        raise VfioError(
            errno.ENODEV,
            f"PCI device {bdf} has no IOMMU group: the kernel runs without an IOMMU "
            "(enable VT-d/AMD-Vi in firmware and boot with intel_iommu=on or amd_iommu=on; "
            "iommu=pt keeps host drivers fast)",
        )
    return int(os.readlink(link).rsplit("/", 1)[-1])


def bound_driver(bdf: str, sysfs: Path = SYSFS_PCI) -> str | None:
    """The driver ``bdf`` is bound to (None: none)."""
    link = sysfs / bdf / "driver"
    return os.readlink(link).rsplit("/", 1)[-1] if link.exists() else None


class VfioDevice:
    """One PCI function owned by this process through VFIO, with its own container.

    Closing (or the process dying) releases the container, the group and the device; the kernel
    then resets the function and tears down every DMA mapping.
    """

    def __init__(self, bdf: str, *, sysfs: Path = SYSFS_PCI) -> None:
        self.bdf = bdf
        self.container_fd = -1
        self.group_fd = -1
        self.fd = -1
        self._regions: dict[int, RegionInfo] = {}
        try:
            self._open(sysfs)
        except BaseException:
            self.close()
            raise

    def _open(self, sysfs: Path) -> None:
        driver = bound_driver(self.bdf, sysfs)
        group = iommu_group(self.bdf, sysfs)
        if driver != "vfio-pci":
            raise VfioError(errno.ENODEV, _not_bound_message(self.bdf, driver))
        try:
            self.container_fd = os.open(VFIO_DEV / "vfio", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise VfioError(
                exc.errno, f"cannot open /dev/vfio/vfio ({exc.strerror}): modprobe vfio-pci"
            ) from exc
        version = fcntl.ioctl(self.container_fd, abi.VFIO_GET_API_VERSION)
        if version != abi.VFIO_API_VERSION:
            raise VfioError(errno.EINVAL, f"VFIO API version {version}, expected 0")
        self.iommu_type = 0
        for kind in (abi.VFIO_TYPE1v2_IOMMU, abi.VFIO_TYPE1_IOMMU):
            if fcntl.ioctl(self.container_fd, abi.VFIO_CHECK_EXTENSION, kind) > 0:
                self.iommu_type = kind
                break
        if not self.iommu_type:
            raise VfioError(
                errno.ENODEV, "VFIO offers no Type1 IOMMU: the kernel runs without an IOMMU"
            )
        path = VFIO_DEV / str(group)
        try:
            self.group_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise VfioError(
                    exc.errno,
                    f"{path} is busy: another process owns PCI device {self.bdf} (or its group)",
                ) from exc
            raise VfioError(exc.errno, f"cannot open {path}: {exc.strerror}") from exc
        status = abi.vfio_group_status(argsz=ctypes.sizeof(abi.vfio_group_status))
        _ioctl_struct(self.group_fd, abi.VFIO_GROUP_GET_STATUS, status, "group status")
        if not status.flags & abi.VFIO_GROUP_FLAGS_VIABLE:
            members = sorted(
                p.name for p in (sysfs / self.bdf / "iommu_group" / "devices").iterdir()
            )
            raise VfioError(
                errno.EPERM,
                f"IOMMU group {group} is not viable: every device in it must be bound to "
                f"vfio-pci or to no driver ({', '.join(members)})",
            )
        container = ctypes.c_int32(self.container_fd)
        _ioctl_struct(self.group_fd, abi.VFIO_GROUP_SET_CONTAINER, container, "set container")
        try:
            fcntl.ioctl(self.container_fd, abi.VFIO_SET_IOMMU, self.iommu_type)
        except OSError as exc:
            raise VfioError(exc.errno, f"VFIO_SET_IOMMU: {exc.strerror}") from exc
        name = ctypes.create_string_buffer(self.bdf.encode())
        self.fd = _ioctl_struct(self.group_fd, abi.VFIO_GROUP_GET_DEVICE_FD, name, "device fd")
        os.set_inheritable(self.fd, False)
        info = abi.vfio_device_info(argsz=ctypes.sizeof(abi.vfio_device_info))
        _ioctl_struct(self.fd, abi.VFIO_DEVICE_GET_INFO, info, "device info")
        if not info.flags & abi.VFIO_DEVICE_FLAGS_PCI:
            raise VfioError(errno.ENODEV, f"{self.bdf} is not a vfio-pci device")
        self.flags = int(info.flags)
        self.num_regions = int(info.num_regions)

    # -- regions -------------------------------------------------------------------------------

    def region(self, index: int) -> RegionInfo:
        """Region ``index``'s info (cached: it does not change while the device is open)."""
        if index not in self._regions:
            self._regions[index] = region_info(self.fd, index)
        return self._regions[index]

    def map_bar(self, bar: int, length: int | None = None) -> mmap.mmap:
        """BAR ``bar`` (or its first ``length`` bytes) mapped into this process."""
        info = self.region(abi.VFIO_PCI_BAR0_REGION_INDEX + bar)
        if not info.size:
            raise VfioError(errno.ENODEV, f"{self.bdf} has no BAR{bar}")
        return map_region(self.fd, info, length)

    def config_read(self, offset: int, width: int) -> int:
        """``width`` bytes (1, 2, 4) of PCI config space at ``offset``, little-endian."""
        info = self.region(abi.VFIO_PCI_CONFIG_REGION_INDEX)
        data = os.pread(self.fd, width, info.offset + offset)
        if len(data) != width:
            raise VfioError(errno.EIO, f"short config read at {offset:#x}")
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, width: int, value: int) -> None:
        """Write ``width`` bytes of PCI config space (vfio-pci filters what it must)."""
        info = self.region(abi.VFIO_PCI_CONFIG_REGION_INDEX)
        if os.pwrite(self.fd, value.to_bytes(width, "little"), info.offset + offset) != width:
            raise VfioError(errno.EIO, f"short config write at {offset:#x}")

    def enable_memory_and_bus_master(self) -> None:
        """Set COMMAND.Memory Space (the BARs decode) and Bus Master (the device may DMA)."""
        command = self.config_read(PCI_COMMAND, 2)
        wanted = command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
        if wanted != command:
            self.config_write(PCI_COMMAND, 2, wanted)

    def bar_address(self, bar: int) -> int:
        """The bus address BAR ``bar`` decodes, from config space (64-bit BARs span two)."""
        low = self.config_read(PCI_BASE_ADDRESS_0 + 4 * bar, 4)
        if low & PCI_BASE_ADDRESS_SPACE_IO:
            raise VfioError(errno.EINVAL, f"BAR{bar} of {self.bdf} is an I/O BAR")
        address = low & ~0xF
        if low & 0x6 == PCI_BASE_ADDRESS_MEM_TYPE_64:
            address |= self.config_read(PCI_BASE_ADDRESS_0 + 4 * bar + 4, 4) << 32
        if not address:
            # Config space reads 0 when the BAR was never assigned by the kernel, or when a
            # user of the device cleared it: sysfs still has the kernel's assignment.
            address = self._sysfs_bar_start(bar)
        return address

    def _sysfs_bar_start(self, bar: int) -> int:
        lines = (SYSFS_PCI / self.bdf / "resource").read_text().splitlines()
        return int(lines[bar].split()[0], 16) if bar < len(lines) else 0

    @property
    def can_reset(self) -> bool:
        return bool(self.flags & abi.VFIO_DEVICE_FLAGS_RESET)

    def reset(self) -> None:
        """``VFIO_DEVICE_RESET``: a function-level (or equivalent) reset of the device."""
        try:
            fcntl.ioctl(self.fd, abi.VFIO_DEVICE_RESET)
        except OSError as exc:
            raise VfioError(exc.errno, f"VFIO_DEVICE_RESET of {self.bdf}: {exc.strerror}") from exc

    # -- DMA -----------------------------------------------------------------------------------

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        """Let the device read and write ``size`` bytes of this process at ``vaddr`` as ``iova``."""
        arg = abi.vfio_iommu_type1_dma_map(
            argsz=ctypes.sizeof(abi.vfio_iommu_type1_dma_map),
            flags=abi.VFIO_DMA_MAP_FLAG_READ | abi.VFIO_DMA_MAP_FLAG_WRITE,
            vaddr=vaddr,
            iova=iova,
            size=size,
        )
        _ioctl_struct(self.container_fd, abi.VFIO_IOMMU_MAP_DMA, arg, f"map DMA at {iova:#x}")

    def unmap_dma(self, iova: int, size: int) -> None:
        """Remove the mapping made at ``iova``."""
        arg = abi.vfio_iommu_type1_dma_unmap(
            argsz=ctypes.sizeof(abi.vfio_iommu_type1_dma_unmap), iova=iova, size=size
        )
        _ioctl_struct(self.container_fd, abi.VFIO_IOMMU_UNMAP_DMA, arg, f"unmap DMA at {iova:#x}")

    def reserved_iova_ranges(self, sysfs: Path = SYSFS_PCI) -> list[tuple[int, int]]:
        """IOVA ranges the IOMMU group reserves (MSI windows and the like), as [start, end)."""
        path = sysfs / self.bdf / "iommu_group" / "reserved_regions"
        ranges = []
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    ranges.append(
                        (int(parts[0], 16), int(parts[1], 16) + 1)
                    )  # sysfs: inclusive end
        return ranges

    def close(self) -> None:
        """Close the device, the group and the container (the kernel resets the function)."""
        for name in ("fd", "group_fd", "container_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> VfioDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
