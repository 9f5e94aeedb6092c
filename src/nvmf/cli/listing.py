"""``nvmf list``: the namespaces a target offers this host, in ``nvme list``'s table or JSON.

nvme-cli's ``nvme list`` shows the namespaces of the controllers the kernel holds connected.  This
CLI keeps no connection from one run to the next (each command connects, works and disconnects),
so ``nvmf list`` asks a target instead: it reads the discovery log at ``-a``/``-s`` and, for each
NVM subsystem there (or only ``-n``), connects an admin queue, identifies the controller and its
active namespaces, and prints one row per namespace.  The device-file columns of ``nvme list``
(Node, Generic) become the subsystem NQN and the controller's address.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from nvmf.cli.host import (
    add_connect_options,
    add_output_format,
    connect_options,
    connect_or_hint,
    one_line_errors,
    run_host_command,
)
from nvmf.cli.nvme_print import ListItem, list_json, list_text
from nvmf.host import DISCOVERY_NQN, offered_subsystems


async def _list(args: argparse.Namespace) -> int:
    base = dataclasses.replace(
        connect_options(args, nr_io_queues=0), subnqn=args.nqn or DISCOVERY_NQN, kato=0
    )
    nqns = [args.nqn] if args.nqn else await offered_subsystems(base)
    items: list[ListItem] = []
    address = f"traddr={base.traddr},trsvcid={base.trsvcid}"
    for nqn in nqns:
        async with await connect_or_hint(
            dataclasses.replace(base, subnqn=nqn), io_queues=False
        ) as ctrl:
            idc = await ctrl.identify_controller()
            for nsid in await ctrl.active_namespaces():
                ns = await ctrl.identify_namespace(nsid)
                fmt = ns.lba_format
                items.append(
                    ListItem(
                        transport=args.transport,
                        address=address,
                        subnqn=nqn,
                        cntlid=ctrl.cntlid,
                        nsid=nsid,
                        sn=idc.sn,
                        mn=idc.mn,
                        fr=idc.fr,
                        nuse=ns.nuse,
                        nsze=ns.nsze,
                        block_size=1 << fmt.lbads,
                        ms=fmt.ms,
                    )
                )
    if args.output_format == "json":
        print(json.dumps(list_json(items), indent=2))
    else:
        print(list_text(items))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_host_command("list", _list(args))


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "list",
        help="list the namespaces a target offers (like nvme list)",
        description="Read the target's discovery log, connect (admin queue only) to each NVM "
        "subsystem in it, or only to -n, and list the active namespaces in nvme list's "
        "columns. The CLI keeps no connections between runs, so this asks the target rather "
        "than this machine.",
    )
    one_line_errors(p)
    add_connect_options(p, io_queues=False, nqn_required=False)
    add_output_format(p)
    p.set_defaults(func=run)
