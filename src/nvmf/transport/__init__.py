"""nvmf.transport layer (see ../shared/DESIGN.md)."""
