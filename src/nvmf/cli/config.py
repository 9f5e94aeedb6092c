"""``nvmf config``: check, show, apply and clear nvmetcli-style JSON configurations.

* ``check FILE``: validate; print a summary (and any warnings, on stderr, exit 0), or every
  problem (exit 1).
* ``show [FILE]``: print the normalized JSON (what ``save`` would write); without FILE the
  embedded default configuration.
* ``apply FILE [--configfs DIR] [--clear]``: configure the Linux kernel target from FILE.
* ``clear [--configfs DIR]``: remove the kernel target's whole configuration.
* ``reload [--control-socket PATH | --pid PID]``: make a running ``nvmf serve`` re-read its
  ``--config`` file and print what changed, or why nothing did; with ``--pid`` it only sends
  the target ``SIGHUP`` (the target logs the outcome).
* ``save FILE [--control-socket PATH]``: write a running target's configuration to FILE,
  atomically; ``save FILE --from-kernel [--configfs DIR]``: the Linux kernel target's instead,
  read from configfs the way ``nvmetcli save`` reads it.

All logic lives in :mod:`nvmf.config`; a bad file or a refused step prints its
:class:`~nvmf.config.ConfigError` lines to stderr and exits 1, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from nvmf.cli.status import control_socket_option
from nvmf.config import (
    ConfigError,
    Problem,
    config_to_json,
    load_config,
    parse_config,
    resolve_media_kind,
    save_config,
)
from nvmf.config.kernel import CONFIGFS_ROOT, apply_to_kernel, clear_kernel
from nvmf.config.kernel_read import read_kernel
from nvmf.control.model import TargetConfig, default_config
from nvmf.control.rpc import ControlSocketError, RequestError, default_socket_path, request


def register(sub: Any) -> None:
    """Add the ``config`` command and its actions to the ``nvmf`` sub-command parsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "config",
        help="check, show, apply or clear an nvmetcli-style JSON configuration",
        description="Configurations are nvmetcli's JSON (nvmetcli save/restore) with this "
        'project\'s settings under "nvmf" keys.',
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="validate FILE and summarize it")
    check.add_argument("file", metavar="FILE")
    _path_check_option(check)

    show = actions.add_parser("show", help="print FILE (or the default) as normalized JSON")
    show.add_argument("file", metavar="FILE", nargs="?")
    _path_check_option(show)

    apply = actions.add_parser("apply", help="configure the Linux kernel target (nvmet) from FILE")
    apply.add_argument("file", metavar="FILE")
    _configfs_option(apply)
    apply.add_argument(
        "--clear",
        action="store_true",
        help="replace an existing kernel configuration instead of refusing",
    )

    clear = actions.add_parser("clear", help="remove the kernel target's whole configuration")
    _configfs_option(clear)

    reload = actions.add_parser(
        "reload", help="make a running nvmf serve apply its edited --config file"
    )
    control_socket_option(reload)
    reload.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="send SIGHUP to this nvmf serve instead of asking over its control socket",
    )

    save = actions.add_parser(
        "save", help="write a running target's (or the kernel target's) configuration to FILE"
    )
    save.add_argument("file", metavar="FILE")
    control_socket_option(save)
    save.add_argument(
        "--from-kernel",
        action="store_true",
        help="save the Linux kernel target's configuration (configfs) instead",
    )
    _configfs_option(save)

    parser.set_defaults(func=run)


def _path_check_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-path-check",
        dest="check_paths",
        action="store_false",
        help="do not look at namespaces' device paths on this machine",
    )


def _configfs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfs",
        metavar="DIR",
        default=CONFIGFS_ROOT,
        help=f"the nvmet configfs directory (default {CONFIGFS_ROOT})",
    )


def run(args: argparse.Namespace) -> int:
    """Carry out ``args.action``; 0 on success, 1 with the problem on stderr otherwise."""
    try:
        if args.action == "check":
            warnings: list[Problem] = []
            cfg = load_config(args.file, check_paths=args.check_paths, warnings=warnings)
            for warning in warnings:
                print(warning_line(warning, args.file), file=sys.stderr)
            print(summary(cfg, args.file))
        elif args.action == "show":
            if args.file is None:
                cfg = default_config()
            else:
                cfg = load_config(args.file, check_paths=args.check_paths)
            sys.stdout.write(config_to_json(cfg))
        elif args.action == "apply":
            cfg = load_config(args.file, kernel=True)
            notes = apply_to_kernel(cfg, args.configfs, clear_existing=args.clear, source=args.file)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            print(f"{args.file}: applied to {args.configfs}: {_counts(cfg)}")
        elif args.action == "clear":
            clear_kernel(args.configfs)
            print(f"{args.configfs}: cleared")
        elif args.action == "reload":
            if args.pid is not None:
                _signal_reload(args.pid)
            else:
                result = request(args.control_socket or default_socket_path(), "reload")
                print(f"reloaded: {result['summary']}")
        elif args.action == "save":
            if args.from_kernel:
                cfg = read_kernel(args.configfs)
                source = args.configfs
            else:
                source = args.control_socket or default_socket_path()
                cfg = parse_config(request(source, "config"), source, check_paths=False)
            save_config(cfg, args.file)
            print(f"{args.file}: saved from {source}: {_counts(cfg)}")
        else:  # argparse only lets the actions above through
            raise AssertionError(args.action)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (ControlSocketError, RequestError) as e:
        print(f"nvmf config {args.action}: {e}", file=sys.stderr)
        return 1
    return 0


def _signal_reload(pid: int) -> None:
    """``SIGHUP`` to the target ``pid``; a failure is a RequestError naming the pid."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise RequestError(f"no process {pid}") from None
    except PermissionError:
        raise RequestError(f"not allowed to signal process {pid}") from None
    print(f"sent SIGHUP to {pid}; the target logs what changed")


def warning_line(warning: Problem, source: str) -> str:
    """A warning as one line: ``source: path: warning: message``."""
    return Problem(warning.path, f"warning: {warning.message}").render(source)


def _counts(cfg: TargetConfig) -> str:
    namespaces = sum(len(s.namespaces) for s in cfg.subsystems)
    return (
        f"{_plural(len(cfg.hosts), 'host')}, {_plural(len(cfg.subsystems), 'subsystem')} "
        f"({_plural(namespaces, 'namespace')}), {_plural(len(cfg.ports), 'port')}"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _size(size: int | None) -> str:
    if size is None:
        return ""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f" {size >> shift} {unit}"
    return f" {size} bytes"


def summary(cfg: TargetConfig, source: str) -> str:
    """A short human description of a valid configuration, for ``nvmf config check``."""
    lines = [f"{source}: OK: {_counts(cfg)}"]
    for host in cfg.hosts:
        lines.append(f"  host {host.nqn}")
    for sub in cfg.subsystems:
        access = "any host" if sub.allow_any_host else (", ".join(sub.allowed_hosts) or "no host")
        lines.append(f"  subsystem {sub.nqn} (access: {access})")
        for ns in sub.namespaces:
            try:
                kind = resolve_media_kind(ns)
            except ConfigError:  # checked with --no-path-check, for another machine
                kind = "path"
            where = f" {ns.path}" if ns.path else ""
            state = "" if ns.enable else " (disabled)"
            lines.append(f"    nsid {ns.nsid}: {kind}{where}{_size(ns.media.size)}{state}")
        if sub.passthru is not None:
            lines.append(f"    passthru {sub.passthru.path}")
    for port in cfg.ports:
        address = f"[{port.traddr}]" if ":" in port.traddr else port.traddr
        if port.trsvcid:
            address = f"{address}:{port.trsvcid}"
        lines.append(f"  port {port.portid}: {port.trtype} {address}".rstrip())
        for nqn in port.subsystems:
            lines.append(f"    -> {nqn}")
        for ref in port.referrals:
            lines.append(f"    referral {ref.name}: {ref.trtype} {ref.traddr}:{ref.trsvcid}")
    settings = cfg.nvmf
    lines.append(
        f"  nvmf: {settings.max_io_queues} I/O queues x {settings.queue_depth} entries, "
        f"{_size(settings.staging_bytes).strip()} staging per process, "
        f"{settings.offload_workers} offload workers{', CMB' if settings.cmb else ''}"
    )
    return "\n".join(lines)
