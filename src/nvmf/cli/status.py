"""``nvmf status``: what a running target serves, asked over its control socket.

Ports, subsystems and namespaces, connected controllers (host NQN, address, keep-alive) with
every queue (size, the worker serving it, commands received), and each offload worker's
counters.  ``-o json`` prints the target's answer as it came (:mod:`nvmf.control.status`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nvmf.control.rpc import ControlSocketError, RequestError, default_socket_path, request


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="show a running target's ports, subsystems, controllers, queues and counters",
        description="Ask a running nvmf serve, over its control socket, what it serves.",
    )
    control_socket_option(parser)
    parser.add_argument(
        "-o", "--output-format", choices=("normal", "json"), default="normal", help="output"
    )
    parser.set_defaults(func=run)


def control_socket_option(parser: argparse.ArgumentParser) -> None:
    """``--control-socket PATH``, as ``nvmf serve`` has it."""
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        default=None,
        help=f"the target's control socket (default {default_socket_path()})",
    )


def run(args: argparse.Namespace) -> int:
    path = args.control_socket or default_socket_path()
    try:
        status = request(path, "status")
    except (ControlSocketError, RequestError) as exc:
        print(f"nvmf status: {exc}", file=sys.stderr)
        return 1
    if args.output_format == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render(status))
    return 0


def _size(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def render(status: dict[str, Any]) -> str:
    """The status as text for people."""
    lines = [f"target pid {status['pid']}", "ports:"]
    for p in status["ports"]:
        address = f"[{p['traddr']}]" if ":" in p["traddr"] else p["traddr"]
        exports = ", ".join(p["subsystems"]) or "discovery only"
        lines.append(f"  port {p['portid']}: {p['trtype']} {address}:{p['trsvcid']} -> {exports}")
    for sub in status["subsystems"]:
        if sub["discovery"]:
            if not sub["controllers"]:
                continue
            lines.append(f"discovery subsystem {sub['nqn']}")
        else:
            access = (
                "any host"
                if sub["allow_any_host"]
                else (
                    "hosts: " + ", ".join(sub["allowed_hosts"])
                    if sub["allowed_hosts"]
                    else "no host"
                )
            )
            lines.append(f"subsystem {sub['nqn']} ({access})")
            for ns in sub["namespaces"]:
                lines.append(
                    f"  namespace {ns['nsid']}: {ns['kind']} {_size(ns['size'])} "
                    f"({ns['block_size']}-byte blocks)"
                )
        for ctrl in sub["controllers"]:
            kato = f"keep-alive {ctrl['kato_ms']} ms" if ctrl["kato_ms"] else "keep-alive off"
            lines.append(
                f"  controller {ctrl['cntlid']}: host {ctrl['hostnqn']} from "
                f"{ctrl['address'] or '?'} on port {ctrl['portid']}, {kato}"
            )
            for q in ctrl["queues"]:
                where = "control plane" if q["worker"] == "control" else f"worker {q['worker']}"
                lines.append(
                    f"    queue {q['qid']}: {q['size']} entries, {where}, {q['commands']} commands"
                )
    if status["workers"]:
        lines.append("offload workers:")
    for w in status["workers"]:
        if w.get("dead"):
            lines.append(f"  worker {w['worker']} (pid {w['pid']}): not answering")
            continue
        lines.append(
            f"  worker {w['worker']} (pid {w['pid']}, cpu {w['cpu']}): {len(w['queues'])} "
            f"queues, {w['commands']} commands, {w['incapsule_writes']} in-capsule writes, "
            f"{w['forwarded']} forwarded, {w['errors']} errors, {w['restarts']} restarts"
        )
        lines.extend(_namespace_lines(w["namespaces"]))
    control = _namespace_lines(status["control_plane"]["namespaces"])
    if control:
        lines.append("control plane data path:")
        lines.extend(control)
    return "\n".join(lines)


def _namespace_lines(namespaces: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for key, c in sorted(namespaces.items()):
        if not any(c.values()):
            continue
        out.append(
            f"    {key}: read {c['read_cmds']} cmds / {c['read_blocks']} blocks, write "
            f"{c['write_cmds']} cmds / {c['write_blocks']} blocks, flush {c['flush_cmds']}, "
            f"compare {c.get('compare_cmds', 0)} cmds / {c.get('compare_blocks', 0)} blocks, "
            f"other {c['other_cmds']}, errors {c['errors']}, staged "
            f"{c.get('staged_dram_bytes', 0)} bytes in DRAM / "
            f"{c.get('staged_cmb_bytes', 0)} in the CMB"
        )
    return out
