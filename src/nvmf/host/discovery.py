"""Discovery: ask a discovery controller which subsystems it knows (NVMe-oF 1.1 §5).

:func:`discover` connects to the well-known discovery NQN with an admin queue only and keep alive
off (a non-persistent discovery connection, as ``nvme discover`` makes), enables the controller,
identifies it, and reads the Discovery log page (LID 70h) the way the Linux host's library does:
the 1024-byte header first, then the NUMREC entries after it, then the header again; when GENCTR
changed in between the log changed under the reader and it starts over (at most
:data:`MAX_RETRIES` times).
"""

from __future__ import annotations

import uuid

from nvmf.host.controller import ConnectOptions, Controller, connect_with, parse_secret
from nvmf.host.errors import HostError
from nvmf.protocol.dhchap import DhchapSecret
from nvmf.wire.logpage import (
    DiscoveryLog,
    DiscoveryLogEntry,
    DiscoveryLogHeader,
    LogPageId,
    SubsystemType,
    decode_discovery_log,
)

#: The well-known discovery subsystem NQN (NVMe Base 2.0 §4.5).
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
#: Reads of a log whose GENCTR keeps changing before the host gives up (libnvme's default).
MAX_RETRIES = 10


async def read_discovery_log(ctrl: Controller) -> DiscoveryLog:
    """The Discovery log page of a connected discovery controller, consistent by GENCTR."""
    hsize = DiscoveryLogHeader.SIZE
    for _ in range(MAX_RETRIES):
        raw = await ctrl.get_log_page(LogPageId.DISC, hsize, 0, nsid=0)
        first = DiscoveryLogHeader.decode(raw)
        body = b""
        if first.numrec:
            body = await ctrl.get_log_page(
                LogPageId.DISC, first.numrec * DiscoveryLogEntry.SIZE, hsize, nsid=0
            )
        again = DiscoveryLogHeader.decode(await ctrl.get_log_page(LogPageId.DISC, hsize, 0, nsid=0))
        if again.genctr == first.genctr and again.numrec == first.numrec:
            return decode_discovery_log(raw + body)
    raise HostError(f"discovery log kept changing (GENCTR) over {MAX_RETRIES} reads")


async def discover(
    traddr: str,
    trsvcid: str | int = 4420,
    hostnqn: str | None = None,
    *,
    hostid: uuid.UUID | None = None,
    hdr_digest: bool = False,
    data_digest: bool = False,
    timeout: float = 10.0,
    subnqn: str = DISCOVERY_NQN,
    trtype: str = "tcp",
    dhchap_secret: str | DhchapSecret | None = None,
    dhchap_ctrl_secret: str | DhchapSecret | None = None,
) -> DiscoveryLog:
    """Connect to the discovery controller at ``traddr:trsvcid``, read its log, disconnect.
    The DH-HMAC-CHAP secrets are used if the discovery controller asks for authentication."""
    opts = ConnectOptions(
        traddr,
        subnqn,
        trsvcid=trsvcid,
        hostnqn=hostnqn,
        hostid=hostid,
        nr_io_queues=0,
        kato=0,
        hdr_digest=hdr_digest,
        data_digest=data_digest,
        timeout=timeout,
        trtype=trtype,
        dhchap_secret=parse_secret(dhchap_secret, "dhchap_secret"),
        dhchap_ctrl_secret=parse_secret(dhchap_ctrl_secret, "dhchap_ctrl_secret"),
    )
    async with await connect_with(opts, io_queues=False) as ctrl:
        return await read_discovery_log(ctrl)


async def offered_subsystems(opts: ConnectOptions) -> list[str]:
    """The NVM subsystem NQNs the discovery controller at ``opts``' address offers this host.

    What a host can tell a user whose Connect named a subsystem the target does not have: the
    same address, host NQN, host ID, digests and secrets, the discovery NQN instead of
    ``opts.subnqn``.
    """
    log = await discover(
        opts.traddr,
        opts.trsvcid,
        opts.hostnqn,
        hostid=opts.hostid,
        hdr_digest=opts.hdr_digest,
        data_digest=opts.data_digest,
        timeout=opts.timeout,
        trtype=opts.trtype,
        dhchap_secret=opts.dhchap_secret,
        dhchap_ctrl_secret=opts.dhchap_ctrl_secret,
    )
    names: list[str] = []
    for e in log.entries:
        if e.subtype == SubsystemType.NVME and e.subnqn not in names:
            names.append(e.subnqn)
    return names
