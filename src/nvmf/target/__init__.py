"""nvmf.target layer (see ../shared/DESIGN.md)."""
