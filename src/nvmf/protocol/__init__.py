"""nvmf.protocol layer (see ../shared/DESIGN.md)."""
