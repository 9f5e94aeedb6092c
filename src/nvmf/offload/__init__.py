"""nvmf.offload layer (see ../shared/DESIGN.md)."""
