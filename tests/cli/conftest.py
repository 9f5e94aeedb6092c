"""One target for the CLI tests: ``nvmf serve`` in a subprocess, on IPv4 and IPv6 loopback.

Subsystem :data:`~tests.cli.tools.SUBNQN` (a 32 MiB RAM namespace of 512-byte blocks, nsid 1,
and an 8 MiB one of 4096-byte blocks, nsid 2) behind two ports, ``127.0.0.1`` and ``::1``, each
on a port the kernel picks (``--trsvcid 0``; the bound ports are read from the target's
"listening" lines).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cli.tools import MODEL, SERIAL, SUBNQN, Target, ipv6_loopback
from tests.serving import nvmf_serve


def _port(traddr: str, portid: int) -> dict[str, object]:
    family = "ipv6" if ":" in traddr else "ipv4"
    return {
        "portid": portid,
        "addr": {"trtype": "tcp", "adrfam": family, "traddr": traddr, "trsvcid": "4420",
                 "treq": "not specified"},
        "subsystems": [SUBNQN],
    }  # fmt: skip


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """``nvmf serve --config --trsvcid 0`` with an IPv4 and (when the machine has it) an IPv6
    loopback port."""
    addrs = ["127.0.0.1"] + (["::1"] if ipv6_loopback() else [])
    config = {
        "hosts": [],
        "ports": [_port(a, i + 1) for i, a in enumerate(addrs)],
        "subsystems": [
            {
                "nqn": SUBNQN,
                "attr": {"allow_any_host": "1", "serial": SERIAL, "model": MODEL},
                "namespaces": [
                    {"nsid": 1, "enable": 1, "nvmf": {"kind": "ram", "size": "32M"}},
                    {"nsid": 2, "enable": 1,
                     "nvmf": {"kind": "ram", "size": "8M", "block_size": 4096}},
                ],
            }
        ],
        "nvmf": {"max_io_queues": 2, "offload_workers": 0},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("cli-target") / "target.json"
    path.write_text(json.dumps(config))
    with nvmf_serve(path, len(addrs)) as ports:
        yield Target(v4=ports["127.0.0.1"], v6=ports.get("::1"))
