"""nvmf.platform layer (see ../shared/DESIGN.md)."""
