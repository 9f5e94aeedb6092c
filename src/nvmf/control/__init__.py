"""nvmf.control layer (see docs/architecture.md)."""
