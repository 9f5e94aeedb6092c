"""nvmf.pci layer (see docs/architecture.md)."""
