"""``nvmf serve``: run the target from an nvmetcli JSON file or the embedded default."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from nvmf.config.errors import ConfigError
from nvmf.config.load import load_config
from nvmf.target.model import TargetConfig, default_config
from nvmf.target.service import TargetService
from nvmf.transport.base import TransportUnavailable


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the NVMe-oF target",
        description="Run the target. With no --config: one subsystem with a 1 GiB RAM "
        "namespace on NVMe/TCP 127.0.0.1:4420, discovery on the same port.",
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="nvmetcli JSON configuration")
    parser.add_argument("--traddr", metavar="ADDR", help="override every port's address")
    parser.add_argument(
        "--trsvcid", metavar="PORT", help="override every port's TCP port (0: any free one)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.set_defaults(func=run)


def _build_config(args: argparse.Namespace) -> TargetConfig:
    cfg = load_config(args.config) if args.config else default_config()
    for port in cfg.ports:
        if args.traddr:
            port.traddr = args.traddr
        if args.trsvcid is not None:
            port.trsvcid = str(args.trsvcid)
    return cfg


async def serve(cfg: TargetConfig) -> None:
    """Run until SIGINT/SIGTERM."""
    service = TargetService(cfg)
    await service.start()
    for port in service.ports:
        addr, number = service.transports[port.trtype].bound_address(port)
        print(
            f"nvmf: listening on {port.trtype} {addr}:{number} (port {port.portid}: "
            f"{', '.join(port.subsystems) or 'discovery only'})",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.trsvcid is not None and (not str(args.trsvcid).isdigit() or int(args.trsvcid) > 65535):
        print(f"nvmf serve: --trsvcid: not a TCP port number: {args.trsvcid!r}", file=sys.stderr)
        return 2
    try:
        cfg = _build_config(args)
    except ConfigError as exc:
        print(f"nvmf serve: {exc}", file=sys.stderr)
        return 1
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(cfg))
    except (OSError, ValueError, TransportUnavailable) as exc:
        print(f"nvmf serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
