"""nvmf.pci: a userspace NVMe driver over VFIO (see docs/nvme-pci.md).

Modules, bottom-up: ``registers`` (BAR0 register tables), ``vfio_abi`` and ``vfio`` (the device
through VFIO), ``ranges`` and ``dma`` (IOVAs, DMA mappings, memfd-backed DRAM), ``cmb`` (what
CMBSZ allows, regions of the CMB), ``prp`` and ``commands`` (data pointers and command dwords),
``queue`` (a polled SQ/CQ pair, drivable from another process) and ``controller`` (bring-up,
admin commands, I/O queue pairs, release).
"""
