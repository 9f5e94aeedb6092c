"""The VFIO user ABI this driver uses: ioctl request numbers and argument structures.

Everything here is from Linux ``include/uapi/linux/vfio.h`` (and ``asm-generic/ioctl.h`` for the
encoding), names kept.  Every VFIO ioctl is ``_IO(VFIO_TYPE, VFIO_BASE + n)``: no direction and
no size in the number; the structures carry their own size in ``argsz``.  Layouts are ctypes
structures with their sizes asserted at import, so a wrong field shows up before any device is
touched.
"""

from __future__ import annotations

import ctypes

# asm-generic/ioctl.h: nr 8 bits, type 8 bits, size 14 bits, dir 2 bits, in that order from bit 0.
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_NONE = 0


def ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)``: an ioctl request number."""
    return (
        (direction << _IOC_DIRSHIFT)
        | (kind << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def io(kind: int, nr: int) -> int:
    """``_IO(type, nr)``: a request that passes no structure size in its number."""
    return ioc(_IOC_NONE, kind, nr, 0)


VFIO_API_VERSION = 0
VFIO_TYPE = ord(";")
VFIO_BASE = 100

VFIO_GET_API_VERSION = io(VFIO_TYPE, VFIO_BASE + 0)
VFIO_CHECK_EXTENSION = io(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU = io(VFIO_TYPE, VFIO_BASE + 2)
VFIO_GROUP_GET_STATUS = io(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER = io(VFIO_TYPE, VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER = io(VFIO_TYPE, VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD = io(VFIO_TYPE, VFIO_BASE + 6)
VFIO_DEVICE_GET_INFO = io(VFIO_TYPE, VFIO_BASE + 7)
VFIO_DEVICE_GET_REGION_INFO = io(VFIO_TYPE, VFIO_BASE + 8)
VFIO_DEVICE_RESET = io(VFIO_TYPE, VFIO_BASE + 11)
VFIO_IOMMU_MAP_DMA = io(VFIO_TYPE, VFIO_BASE + 13)
VFIO_IOMMU_UNMAP_DMA = io(VFIO_TYPE, VFIO_BASE + 14)

#: IOMMU models for VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU.
VFIO_TYPE1_IOMMU = 1
VFIO_TYPE1v2_IOMMU = 3

#: vfio_group_status.flags
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1

#: vfio_device_info.flags
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1

#: vfio_region_info.flags
VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2

#: vfio_iommu_type1_dma_map.flags
VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1

#: Region indexes of a vfio-pci device (enum VFIO_PCI_*_REGION_INDEX): BAR0..BAR5, ROM, config.
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7


class vfio_group_status(ctypes.Structure):
    _fields_ = [("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class vfio_device_info(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("num_regions", ctypes.c_uint32),
        ("num_irqs", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class vfio_region_info(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
    ]


class vfio_iommu_type1_dma_map(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("vaddr", ctypes.c_uint64),
        ("iova", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    ]


class vfio_iommu_type1_dma_unmap(ctypes.Structure):
    _fields_ = [
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("iova", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    ]


assert ctypes.sizeof(vfio_group_status) == 8
assert ctypes.sizeof(vfio_device_info) == 24
assert ctypes.sizeof(vfio_region_info) == 32
assert ctypes.sizeof(vfio_iommu_type1_dma_map) == 32
assert ctypes.sizeof(vfio_iommu_type1_dma_unmap) == 24
