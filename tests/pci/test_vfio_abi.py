"""VFIO ioctl numbers and structure layouts against linux/vfio.h, computed independently.

The request numbers are recomputed here from the _IO macro's definition in asm-generic/ioctl.h
(dir << 30 | size << 16 | type << 8 | nr, with _IO's dir and size 0) and vfio.h's
``VFIO_TYPE (';')`` / ``VFIO_BASE (100)`` and offsets; the layouts from vfio.h's field lists.
"""

from __future__ import annotations

import ctypes

import pytest

from nvmf.pci import vfio_abi as abi


def _io(kind: str, nr: int) -> int:
    return (0 << 30) | (0 << 16) | (ord(kind) << 8) | nr


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("VFIO_GET_API_VERSION", 0),
        ("VFIO_CHECK_EXTENSION", 1),
        ("VFIO_SET_IOMMU", 2),
        ("VFIO_GROUP_GET_STATUS", 3),
        ("VFIO_GROUP_SET_CONTAINER", 4),
        ("VFIO_GROUP_UNSET_CONTAINER", 5),
        ("VFIO_GROUP_GET_DEVICE_FD", 6),
        ("VFIO_DEVICE_GET_INFO", 7),
        ("VFIO_DEVICE_GET_REGION_INFO", 8),
        ("VFIO_DEVICE_RESET", 11),
        ("VFIO_IOMMU_MAP_DMA", 13),
        ("VFIO_IOMMU_UNMAP_DMA", 14),
    ],
)
def test_request_numbers(name: str, offset: int) -> None:
    assert getattr(abi, name) == _io(";", 100 + offset)


def test_known_numbers_spot_check() -> None:
    # ';' is 0x3b: VFIO_GET_API_VERSION is 0x3b64, the value strace prints.
    assert abi.VFIO_GET_API_VERSION == 0x3B64
    assert abi.VFIO_IOMMU_MAP_DMA == 0x3B71


def _layout(struct: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    return [
        (name, getattr(struct, name).offset, getattr(struct, name).size)
        for name, *_ in struct._fields_
    ]


def test_region_info_layout() -> None:
    assert _layout(abi.vfio_region_info) == [
        ("argsz", 0, 4),
        ("flags", 4, 4),
        ("index", 8, 4),
        ("cap_offset", 12, 4),
        ("size", 16, 8),
        ("offset", 24, 8),
    ]


def test_dma_map_and_unmap_layouts() -> None:
    assert _layout(abi.vfio_iommu_type1_dma_map) == [
        ("argsz", 0, 4),
        ("flags", 4, 4),
        ("vaddr", 8, 8),
        ("iova", 16, 8),
        ("size", 24, 8),
    ]
    assert _layout(abi.vfio_iommu_type1_dma_unmap) == [
        ("argsz", 0, 4),
        ("flags", 4, 4),
        ("iova", 8, 8),
        ("size", 16, 8),
    ]


def test_device_info_and_group_status_layouts() -> None:
    assert [o for _, o, _ in _layout(abi.vfio_device_info)] == [0, 4, 8, 12, 16, 20]
    assert _layout(abi.vfio_group_status) == [("argsz", 0, 4), ("flags", 4, 4)]


def test_constants() -> None:
    assert abi.VFIO_TYPE1_IOMMU == 1 and abi.VFIO_TYPE1v2_IOMMU == 3
    assert abi.VFIO_PCI_CONFIG_REGION_INDEX == 7
    assert abi.VFIO_GROUP_FLAGS_VIABLE == 1
    assert abi.VFIO_DMA_MAP_FLAG_READ | abi.VFIO_DMA_MAP_FLAG_WRITE == 3
