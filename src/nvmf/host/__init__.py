"""nvmf.host layer (see ../shared/DESIGN.md)."""
