"""nvmf.media layer (see ../shared/DESIGN.md)."""
