"""nvmf.control layer (see ../shared/DESIGN.md)."""
