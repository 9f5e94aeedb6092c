"""nvmf.media layer (see docs/architecture.md)."""
