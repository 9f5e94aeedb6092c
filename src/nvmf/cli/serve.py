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
from nvmf.control.model import TargetConfig, default_config
from nvmf.control.service import TargetService
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
    parser.add_argument(
        "--workers",
        "-w",
        type=_workers,
        metavar="N",
        help="offload data-plane worker processes (default: the configuration's "
        "offload_workers, or one per online core; 0: serve everything in one process)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.set_defaults(func=run)


def _workers(text: str) -> int:
    """``--workers``: a whole number of processes, 0 to 4096."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..4096")
    return value


def _build_config(args: argparse.Namespace) -> TargetConfig:
    cfg = load_config(args.config) if args.config else default_config()
    if args.workers is not None:
        cfg.nvmf.offload_workers = args.workers
    for port in cfg.ports:
        if args.traddr:
            port.traddr = args.traddr
        if args.trsvcid is not None:
            port.trsvcid = str(args.trsvcid)
    return cfg


async def serve(cfg: TargetConfig, log_level: int = logging.WARNING) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully (commands in flight complete)."""
    service = TargetService(cfg, log_level=log_level)
    await service.start()
    for port in service.ports:
        addr, number = service.transports[port.trtype].bound_address(port)
        print(
            f"nvmf: listening on {port.trtype} {addr}:{number} (port {port.portid}: "
            f"{', '.join(port.subsystems) or 'discovery only'})",
            flush=True,
        )
    if service.workers is not None:
        pids = " ".join(str(pid) for pid in service.workers.pids)
        print(f"nvmf: {len(service.workers.pids)} offload workers (pids {pids})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop()


def run(args: argparse.Namespace) -> int:
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level,
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
        runner(serve(cfg, level))
    except (OSError, ValueError, RuntimeError, TransportUnavailable) as exc:
        print(f"nvmf serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
