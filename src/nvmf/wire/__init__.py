"""nvmf.wire layer (see ../shared/DESIGN.md)."""
