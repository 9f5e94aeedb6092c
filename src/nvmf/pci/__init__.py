"""nvmf.pci layer (see ../shared/DESIGN.md)."""
