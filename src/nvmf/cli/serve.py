"""``nvmf serve``: run the target from an nvmetcli JSON file or the embedded default.

While it runs, the target answers on its control socket (:mod:`nvmf.control.rpc`: ``nvmf
status``, ``nvmf config reload``, ``nvmf config save``, ``nvmf doctor``'s ``pci_devices``),
reloads its ``--config`` file on ``SIGHUP`` (:mod:`nvmf.control.reconfigure`), and with
``--metrics-port`` serves Prometheus metrics (:mod:`nvmf.control.metrics`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from nvmf.config.errors import ConfigError
from nvmf.config.load import load_config
from nvmf.config.save import dump_config
from nvmf.control.model import TargetConfig, default_config
from nvmf.control.reconfigure import ReloadError
from nvmf.control.rpc import ControlServer, ControlSocketError, RequestError, default_socket_path
from nvmf.control.service import TargetService
from nvmf.transport.base import TransportUnavailable

if TYPE_CHECKING:
    from nvmf.control.metrics import MetricsServer

log = logging.getLogger("nvmf.serve")


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
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        help="Unix socket for nvmf status / config reload / config save (default "
        f"{default_socket_path()}; 'none': no socket)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_tcp_port,
        metavar="PORT",
        help="serve Prometheus metrics on this TCP port (0: any free one; default: none)",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics endpoint binds to (default 127.0.0.1)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.set_defaults(func=run)


def _tcp_port(text: str) -> int:
    """A TCP port number, 0 to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port number: {text!r}")
    return int(text)


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


class Watch:
    """What ``nvmf serve`` adds around the target: the control socket's requests, reloads on
    ``SIGHUP``, the metrics endpoint."""

    def __init__(self, service: TargetService, args: argparse.Namespace | None) -> None:
        self.service = service
        self.args = args
        self._reloading = asyncio.Lock()

    @property
    def source(self) -> str | None:
        """The configuration file the target runs (None: the embedded default)."""
        return None if self.args is None else self.args.config

    async def status(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.service.status()

    async def pci_devices(self, request: dict[str, Any]) -> dict[str, Any]:
        """The SSDs the target's ``nvme_pci`` namespaces own (``nvmf doctor`` asks)."""
        return await self.service.devices()

    async def config(self, request: dict[str, Any]) -> dict[str, Any]:
        """The running configuration as nvmetcli JSON (``nvmf config save``); a port told to
        take any free TCP port (``--trsvcid 0``) is saved with the one it got."""
        obj = dump_config(self.service.config)
        for port, saved in zip(self.service.ports, obj["ports"], strict=True):
            if port.trsvcid == "0" and port.trtype in self.service.transports:
                _, number = self.service.transports[port.trtype].bound_address(port)
                saved["addr"]["trsvcid"] = str(number)
        return obj

    async def reload(self, request: dict[str, Any]) -> dict[str, Any]:
        """Re-read ``--config FILE`` and apply it; a file that does not validate, or that
        cannot be applied, changes nothing and says why in one log line."""
        if self.args is None or not self.source:
            raise RequestError(
                "the target runs the embedded default configuration (no --config FILE): "
                "nothing to reload"
            )
        async with self._reloading:
            try:
                cfg = _build_config(self.args)
                report = await self.service.reload(cfg)
            except (ConfigError, ReloadError) as exc:
                why = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                log.error("reload of %s refused, nothing changed: %s", self.source, why)
                raise RequestError(why) from None
        summary = report.summary()
        print(f"nvmf: reloaded {self.source}: {summary}", flush=True)
        return {"summary": summary, **report.as_dict()}

    def on_sighup(self) -> None:
        async def reload() -> None:
            try:
                await self.reload({})
            except RequestError as exc:
                if self.source is None:
                    log.error("SIGHUP: %s", exc)

        self.service.spawn(reload())

    def handlers(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "config": self.config,
            "reload": self.reload,
            "pci_devices": self.pci_devices,
        }


async def _control_server(watch: Watch, path: str | None) -> ControlServer | None:
    """Start the control socket; at the default path a live one (another target) leaves this
    target without a socket and says so, an explicit path that is in use is an error."""
    if path == "none":
        return None
    server = ControlServer(path or default_socket_path(), watch.handlers())
    try:
        await server.start()
    except ControlSocketError as exc:
        if path:
            raise RuntimeError(str(exc)) from None
        log.warning("%s; running without a control socket", exc)
        return None
    return server


async def serve(
    cfg: TargetConfig, log_level: int = logging.WARNING, args: argparse.Namespace | None = None
) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully (commands in flight complete)."""
    service = TargetService(cfg, log_level=log_level)
    await service.start()
    watch = Watch(service, args)
    control: ControlServer | None = None
    metrics: MetricsServer | None = None
    try:
        control = await _control_server(watch, None if args is None else args.control_socket)
        if args is not None and args.metrics_port is not None:
            # Here, not at the top: prometheus_client costs seconds per start in the emulated
            # guest, and most targets serve no metrics.
            from nvmf.control.metrics import MetricsServer, TargetCollector, threadsafe_snapshot

            collector = TargetCollector(
                threadsafe_snapshot(service.status, asyncio.get_running_loop())
            )
            metrics = MetricsServer(collector, args.metrics_address, args.metrics_port)
    except BaseException:
        if control is not None:
            await control.close()
        await service.stop()
        raise
    for port in service.ports:
        addr, number = service.transports[port.trtype].bound_address(port)
        shown = f"[{addr}]" if ":" in addr else addr  # an IPv6 address: [::1]:4420
        print(
            f"nvmf: listening on {port.trtype} {shown}:{number} (port {port.portid}: "
            f"{', '.join(port.subsystems) or 'discovery only'})",
            flush=True,
        )
    if service.workers is not None:
        pids = " ".join(str(pid) for pid in service.workers.pids)
        print(f"nvmf: {len(service.workers.pids)} offload workers (pids {pids})", flush=True)
    if control is not None:
        print(f"nvmf: control socket {control.path}", flush=True)
    if metrics is not None:
        address = args.metrics_address if args is not None else ""
        print(f"nvmf: metrics on http://{address}:{metrics.port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, watch.on_sighup)
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if metrics is not None:
            metrics.close()
        if control is not None:
            await control.close()
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
        runner(serve(cfg, level, args))
    except (OSError, ValueError, RuntimeError, TransportUnavailable) as exc:
        print(f"nvmf serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
