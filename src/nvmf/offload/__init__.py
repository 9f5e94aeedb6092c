"""nvmf.offload layer (see docs/architecture.md)."""
