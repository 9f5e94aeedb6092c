"""nvmf.config layer (see ../shared/DESIGN.md)."""
