"""Write a :class:`TargetConfig` as nvmetcli's JSON, atomically.

The layout is what ``nvmetcli save`` writes (``Root.dump``): attribute groups of strings
(``"attr": {"allow_any_host": "1"}``), ``enable`` and IDs as integers, keys sorted, two-space
indent, so ``nvmetcli restore`` takes the file and a diff against nvmetcli's own output stays
small.  Attributes the model has no field for come back from ``extra_attrs``; this project's
settings go under ``"nvmf"`` keys, which nvmetcli ignores.

The file is replaced atomically (temporary file in the same directory, fsync, rename, fsync of
the directory), so a crash leaves either the old configuration or the new one, never half.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

from nvmf.config.errors import ConfigError
from nvmf.config.schema import ATTRS, GROUPS, encode
from nvmf.config.validate import validate_config
from nvmf.control.model import (
    AnaGroup,
    Host,
    Namespace,
    NamespaceMedia,
    Passthru,
    Port,
    Referral,
    Subsystem,
    TargetConfig,
)


def dump_config(cfg: TargetConfig) -> dict[str, Any]:
    """``cfg`` as the JSON object nvmetcli would write, plus this project's ``"nvmf"`` keys."""
    return {
        **{group: dict(attrs) for group, attrs in cfg.extra_attrs.items()},
        "hosts": [_host(h) for h in cfg.hosts],
        "ports": [_port(p) for p in cfg.ports],
        "subsystems": [_subsystem(s) for s in cfg.subsystems],
        "nvmf": dataclasses.asdict(cfg.nvmf),
    }


def config_to_json(cfg: TargetConfig) -> str:
    """The text :func:`save_config` writes: sorted keys, two-space indent, final newline."""
    return json.dumps(dump_config(cfg), sort_keys=True, indent=2) + "\n"


def save_config(cfg: TargetConfig, path: str | os.PathLike[str]) -> None:
    """Validate ``cfg`` and write it to ``path`` atomically.

    The configuration is checked first (without looking at media paths, which may belong to
    another machine) so that a file this writes always loads again.  An existing file keeps its
    permission bits; a new one is created 0600, as nvmetcli does (host keys may live in it).
    Raises :class:`ConfigError` for an invalid configuration or a failed write.
    """
    target = os.fspath(path)
    validate_config(cfg, target, check_paths=False)
    text = config_to_json(cfg)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600
    except OSError as e:
        raise ConfigError(target, f"cannot write: {e.strerror or e}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=directory)
    except OSError as e:
        raise ConfigError(target, f"cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(target, f"cannot write: {e.strerror or e}") from None
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (best effort: some file systems refuse to fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _groups(obj: Any) -> dict[str, Any]:
    """``obj``'s attribute groups: nvmetcli's standard ones, the extras, the modelled fields."""
    cls = type(obj)
    out: dict[str, dict[str, str]] = {group: {} for group in GROUPS.get(cls, ())}
    for group, attrs in obj.extra_attrs.items():
        out.setdefault(group, {}).update(attrs)
    for attr in ATTRS.get(cls, ()):
        text = encode(attr, getattr(obj, attr.field))
        if text is not None:
            out.setdefault(attr.group, {})[attr.name] = text
    return dict(out)


def _host(host: Host) -> dict[str, Any]:
    return {**_groups(host), "nqn": host.nqn}


def _subsystem(sub: Subsystem) -> dict[str, Any]:
    out = {
        **_groups(sub),
        "nqn": sub.nqn,
        "allowed_hosts": list(sub.allowed_hosts),
        "namespaces": [_namespace(ns) for ns in sub.namespaces],
    }
    if sub.passthru is not None:
        out["passthru"] = [_passthru(sub.passthru)]
    return out


def _namespace(ns: Namespace) -> dict[str, Any]:
    out = {**_groups(ns), "nsid": ns.nsid, "enable": int(ns.enable), "ana_grpid": ns.ana_grpid}
    media = _media(ns.media)
    if media:
        out["nvmf"] = media
    return out


def _media(media: NamespaceMedia) -> dict[str, Any]:
    """The fields of a namespace's ``"nvmf"`` key that differ from the defaults."""
    default = NamespaceMedia()
    return {
        f.name: getattr(media, f.name)
        for f in dataclasses.fields(NamespaceMedia)
        if getattr(media, f.name) != getattr(default, f.name)
    }


def _passthru(pt: Passthru) -> dict[str, Any]:
    out = {**_groups(pt), "enable": int(pt.enable)}
    for key in ("clear_ids", "admin_timeout", "io_timeout"):
        value = getattr(pt, key)
        if value is not None:
            out[key] = value
    return out


def _port(port: Port) -> dict[str, Any]:
    return {
        **_groups(port),
        "portid": port.portid,
        "subsystems": list(port.subsystems),
        "referrals": [_referral(r) for r in port.referrals],
        "ana_groups": [_ana_group(g) for g in port.ana_groups],
    }


def _referral(ref: Referral) -> dict[str, Any]:
    return {**_groups(ref), "name": ref.name, "enable": int(ref.enable)}


def _ana_group(group: AnaGroup) -> dict[str, Any]:
    return {**_groups(group), "grpid": group.grpid}
