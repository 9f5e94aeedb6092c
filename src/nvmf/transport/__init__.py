"""nvmf.transport layer (see docs/architecture.md)."""
