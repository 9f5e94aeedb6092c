"""nvmf: NVMe over Fabrics target, offload data plane, host library and doctor."""

__version__ = "0.1.0"
