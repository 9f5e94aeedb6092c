"""The one nvmetcli configuration the guests' ``nvme_pci`` runs give our target: QEMU's SSD
(``@BDF@`` stands for its PCI address, which the guest script fills in) as namespace 1 of one
subsystem, any host allowed, on TCP ports on 127.0.0.1 (and, if asked, an RDMA one)."""

from __future__ import annotations

from typing import Any


def _port(portid: int, trtype: str, nqn: str, param: dict[str, str]) -> dict[str, Any]:
    return {
        "addr": {
            "adrfam": "ipv4",
            "traddr": "127.0.0.1",
            "treq": "not specified",
            "trsvcid": str(4419 + portid),
            "trtype": trtype,
        },
        "param": dict(param),
        "portid": portid,
        "referrals": [],
        "subsystems": [nqn],
    }


def ssd_config(
    nqn: str,
    placement: str,
    *,
    serial: str,
    rdma: bool = False,
    param: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Namespace 1 on the SSD with its SQs and staging where ``placement`` says; port 1 is TCP
    on 4420, port 2 (with ``rdma``) RDMA on 4421; ``param`` are the ports' parameters."""
    param = param or {}
    return {
        "hosts": [],
        "ports": [
            _port(1, "tcp", nqn, param),
            *([_port(2, "rdma", nqn, param)] if rdma else []),
        ],
        "subsystems": [
            {
                "allowed_hosts": [],
                "attr": {"allow_any_host": "1", "serial": serial, "version": "1.3"},
                "namespaces": [
                    {
                        "device": {"path": "@BDF@"},
                        "enable": 1,
                        "nsid": 1,
                        "nvmf": {
                            "kind": "nvme_pci",
                            "sq_placement": placement,
                            "staging_placement": placement,
                        },
                    }
                ],
                "nqn": nqn,
            }
        ],
    }
