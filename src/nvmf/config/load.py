"""Read nvmetcli's JSON into the target model, then validate it.

The input is what ``nvmetcli save`` writes (``Root.dump``): ``hosts``, ``ports`` and
``subsystems`` lists whose nodes keep their configfs attributes in groups named after the file
prefix (``"attr": {"allow_any_host": "1"}``, ``"addr": {"trsvcid": "4420"}``), values as strings,
``enable`` and IDs as integers.  Hand-written files may use plain numbers and ``true``/``false``
where nvmetcli writes strings; both are accepted.

What this reader is strict and lenient about:

* nvmetcli's top-level ``"discovery"`` group is kept verbatim in ``TargetConfig.extra_attrs``
  (``nvmetcli restore`` does not apply it either, so neither does :mod:`nvmf.config.kernel`).
* A key, attribute group or attribute name close to one nvmetcli writes (``alow_any_host``,
  ``trtyp``, ``namespace``) is a typo and an error that names the key meant
  (:data:`nvmf.config.schema.KNOWN_ATTRS` lists them).  Attributes nvmetcli writes that the model
  has no field for (``attr.pi_enable``, ``addr.tsas``, the ``resv`` group, ...) are kept verbatim
  in ``extra_attrs`` so that saving loses nothing; a name far from every known one is taken for a
  newer kernel's attribute and kept too, with a warning.
* Any unknown key inside this project's ``"nvmf"`` objects is an error: silently ignoring it
  would lose configuration.
* An attribute left out means what it means to ``nvmetcli restore`` where that matters:
  ``allow_any_host`` absent leaves the subsystem closed, ``enable`` absent leaves a namespace or
  referral disabled.  Other absent attributes take the model's defaults; absent ``addr`` fields
  are empty (a loop port has none), and the validator asks for the ones a transport needs.

Reading collects every shape and type problem of the file before raising, so one run of
``nvmf config check`` shows them all; :func:`nvmf.config.validate.validate_config` then checks
values and cross references.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

from nvmf.config.errors import ConfigError, Problem, show
from nvmf.config.schema import (
    ATTRS,
    DATACLASS_DEFAULT,
    GROUPS,
    KNOWN_ATTRS,
    PLAIN_KEYS,
    ROOT_GROUPS,
    Attr,
    Codec,
)
from nvmf.config.validate import int_problem, validate_config
from nvmf.config.values import parse_size
from nvmf.control.model import (
    AnaGroup,
    Host,
    Namespace,
    NamespaceMedia,
    NvmfSettings,
    Passthru,
    Port,
    Referral,
    Subsystem,
    TargetConfig,
)

_INT = re.compile(r"[-+]?[0-9]+")
_log = logging.getLogger(__name__)


def load_config(
    path: str | os.PathLike[str],
    *,
    check_paths: bool = True,
    warnings: list[Problem] | None = None,
    kernel: bool = False,
) -> TargetConfig:
    """Read, parse and validate the nvmetcli-style JSON file at ``path``.

    ``check_paths=False`` skips the checks that look at this machine's files (whether a
    namespace's ``device.path`` exists and is a file or a block device), for checking a
    configuration meant for another machine.  Raises :class:`ConfigError` for an unreadable
    file, invalid JSON, or an invalid configuration.  Warnings (problems that do not stop the
    file from loading) are appended to ``warnings``, or logged when it is None.  ``kernel``
    accepts settings only the Linux kernel target honours (see :func:`validate_config`).
    """
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(source, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(source, f"cannot read: not UTF-8 text (byte {e.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ConfigError(
            source, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except _DuplicateKey as e:
        raise ConfigError(
            source, f"invalid JSON: duplicate key {show(e.key)} in one object (which one counts?)"
        ) from None
    except RecursionError:
        raise ConfigError(source, "invalid JSON: nested too deeply") from None
    return parse_config(obj, source, check_paths=check_paths, warnings=warnings, kernel=kernel)


class _DuplicateKey(ValueError):
    """A JSON object names the same key twice (``json`` would silently keep the last)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads` that refuses a key given twice."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def parse_config(
    obj: Any,
    source: str = "<config>",
    *,
    check_paths: bool = True,
    warnings: list[Problem] | None = None,
    kernel: bool = False,
) -> TargetConfig:
    """Turn an already-decoded nvmetcli JSON object into a validated :class:`TargetConfig`.

    ``source`` names the configuration in error messages (usually its file name).  Warnings go
    to ``warnings`` when given, else to this module's logger (one ``logging.warning`` each).
    """
    reader = _Reader()
    cfg = reader.root(obj)
    if reader.problems or cfg is None:
        raise ConfigError(source, reader.problems or [Problem("", "must be a JSON object")])
    found = reader.warnings + validate_config(cfg, source, check_paths=check_paths, kernel=kernel)
    if warnings is not None:
        warnings.extend(found)
    else:
        for warning in found:
            _log.warning("%s", warning.render(source))
    return cfg


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def suggest(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` is most likely a typo of, if one is close enough."""
    matches = difflib.get_close_matches(key, sorted(known), n=1)
    return matches[0] if matches else None


def unknown_key(key: str, known: Iterable[str], listing: str) -> str:
    """``unknown key (did you mean X?)``, or ``unknown key (LISTING)`` when nothing is close."""
    match = suggest(key, known)
    return f"unknown key (did you mean {match}?)" if match else f"unknown key ({listing})"


class _Reader:
    """Maps JSON nodes onto model objects, recording problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem(path, message))

    # -- generic pieces ------------------------------------------------------------------------

    def is_object(self, obj: Any, path: str) -> bool:
        if isinstance(obj, dict):
            return True
        self.problem(path, f"must be a JSON object, got {show(obj)}")
        return False

    def items(self, obj: dict[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
        """``obj[key]`` as a list of ``(json path, element)``; absent means empty."""
        value = obj.get(key, [])
        where = _join(path, key)
        if not isinstance(value, list):
            self.problem(where, f"must be a list, got {show(value)}")
            return []
        return [(f"{where}[{i}]", element) for i, element in enumerate(value)]

    def strings(self, obj: dict[str, Any], key: str, path: str) -> list[str]:
        """``obj[key]`` as a list of strings (allowed_hosts, a port's subsystems)."""
        out = []
        for where, element in self.items(obj, key, path):
            if isinstance(element, str):
                out.append(element)
            else:
                self.problem(where, f"must be a string, got {show(element)}")
        return out

    def required_str(self, obj: dict[str, Any], key: str, path: str) -> str:
        value = obj.get(key)
        if isinstance(value, str):
            return value
        where = _join(path, key)
        self.problem(
            where, "is required" if value is None else f"must be a string, got {show(value)}"
        )
        return ""

    def integer(self, value: Any, where: str, cls: type, field: str) -> int | None:
        """An integer given as a JSON number or a decimal string; None (and a problem) if not."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
        self.problem(where, int_problem(cls, field, value))
        return None

    def required_int(self, obj: dict[str, Any], key: str, path: str, cls: type) -> int:
        if key not in obj:
            self.problem(_join(path, key), "is required")
            return 0
        value = self.integer(obj[key], _join(path, key), cls, key)
        return 0 if value is None else value

    def flag(self, value: Any, where: str) -> bool:
        """A flag: ``1``/``0``, ``"1"``/``"0"`` (nvmetcli) or ``true``/``false``."""
        if value in (0, 1, "0", "1") and not isinstance(value, float):
            return bool(int(value))
        self.problem(where, f'must be 0 or 1 (or "0"/"1", true/false), got {show(value)}')
        return False

    def enable(self, obj: dict[str, Any], path: str) -> bool:
        """nvmetcli's ``enable``: absent leaves the node disabled, as ``nvmetcli restore`` does."""
        return self.flag(obj["enable"], _join(path, "enable")) if "enable" in obj else False

    def scalar(self, value: Any, where: str) -> str | None:
        """An attribute value as nvmetcli writes it (a string); numbers and flags converted."""
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int | str):
            return str(value)
        self.problem(where, f"must be a string, got {show(value)}")
        return None

    def node(self, cls: type, obj: dict[str, Any], path: str, kind: str) -> dict[str, Any]:
        """Keyword arguments for ``cls`` from ``obj``'s attribute groups, plus ``extra_attrs``.

        Modelled attributes are decoded by their codec; nvmetcli's other attributes are kept as
        strings.  A key, group or attribute name close to a known one (``alow_any_host``,
        ``trtyp``) is a typo and an error; a group or attribute far from every known name is a
        newer kernel's, kept with a warning; a non-object key that is not plain is an error.
        """
        table = {(a.group, a.name): a for a in ATTRS[cls]}
        known = KNOWN_ATTRS[kind]
        keys = PLAIN_KEYS[kind] | set(known)
        kwargs: dict[str, Any] = {}
        extra: dict[str, dict[str, str]] = {}
        for key, value in obj.items():
            if key in PLAIN_KEYS[kind]:
                continue
            where = _join(path, key)
            if not isinstance(value, dict) and key in known:
                self.problem(where, f"must be a JSON object, got {show(value)}")
                continue
            if not isinstance(value, dict):
                self.problem(
                    where, unknown_key(key, keys, f"a {kind} has {', '.join(sorted(keys))}")
                )
                continue
            if key not in known:
                if suggest(key, keys):
                    self.problem(where, unknown_key(key, keys, ""))
                    continue
                self.warn(
                    where, "unknown attribute group, kept for nvmetcli; this target ignores it"
                )
            group_extra: dict[str, str] = {}
            for name, raw in value.items():
                attr = table.get((key, name))
                if attr is not None:
                    kwargs[attr.field] = self.decode(attr, raw, _join(where, name), cls)
                    continue
                if key in known and name not in known[key]:
                    if suggest(name, known[key]):
                        self.problem(_join(where, name), unknown_key(name, known[key], ""))
                        continue
                    self.warn(
                        _join(where, name),
                        "unknown attribute, kept for nvmetcli; this target ignores it",
                    )
                text = self.scalar(raw, _join(where, name))
                if text is not None:
                    group_extra[name] = text
            if group_extra or key not in GROUPS[cls]:
                extra[key] = group_extra
        for attr in ATTRS[cls]:
            if attr.field not in kwargs and attr.missing is not DATACLASS_DEFAULT:
                kwargs[attr.field] = attr.missing
        kwargs["extra_attrs"] = extra
        return kwargs

    def decode(self, attr: Attr, raw: Any, where: str, cls: type) -> Any:
        codec = attr.codec
        if codec in (Codec.OPT_STR, Codec.OPT_INT) and (raw is None or raw == ""):
            return None
        if codec is Codec.BOOL:
            return self.flag(raw, where)
        if codec in (Codec.INT, Codec.OPT_INT):
            value = self.integer(raw, where, cls, attr.field)
            return 0 if value is None and codec is Codec.INT else value
        if isinstance(raw, str):
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)
        self.problem(where, f"must be a string, got {show(raw)}")
        return ""

    # -- the nodes -----------------------------------------------------------------------------

    def root(self, obj: Any) -> TargetConfig | None:
        if not isinstance(obj, dict):
            return None
        extra: dict[str, dict[str, str]] = {}
        for key, value in obj.items():
            if key in ROOT_GROUPS:
                if self.is_object(value, key):
                    extra[key] = self.group(value, key, KNOWN_ATTRS["root"][key])
            elif key not in PLAIN_KEYS["root"]:
                keys = PLAIN_KEYS["root"] | set(ROOT_GROUPS)
                listing = f"the top level has {', '.join(sorted(keys))}"
                self.problem(key, unknown_key(key, keys, listing))
        cfg = TargetConfig(
            hosts=[
                self.host(o, p) for p, o in self.items(obj, "hosts", "") if self.is_object(o, p)
            ],
            subsystems=[
                self.subsystem(o, p)
                for p, o in self.items(obj, "subsystems", "")
                if self.is_object(o, p)
            ],
            ports=[
                self.port(o, p) for p, o in self.items(obj, "ports", "") if self.is_object(o, p)
            ],
        )
        if "nvmf" in obj and self.is_object(obj["nvmf"], "nvmf"):
            cfg.nvmf = self.settings(obj["nvmf"], "nvmf")
        cfg.extra_attrs = extra
        return cfg

    def group(self, obj: dict[str, Any], path: str, known: frozenset[str]) -> dict[str, str]:
        """An attribute group this reader does not model, as strings (kept for saving)."""
        out: dict[str, str] = {}
        for name, raw in obj.items():
            where = _join(path, name)
            if name not in known:
                if suggest(name, known):
                    self.problem(where, unknown_key(name, known, ""))
                    continue
                self.warn(where, "unknown attribute, kept for nvmetcli; this target ignores it")
            text = self.scalar(raw, where)
            if text is not None:
                out[name] = text
        return out

    def host(self, obj: dict[str, Any], path: str) -> Host:
        kwargs = self.node(Host, obj, path, "host")
        return Host(nqn=self.required_str(obj, "nqn", path), **kwargs)

    def subsystem(self, obj: dict[str, Any], path: str) -> Subsystem:
        kwargs = self.node(Subsystem, obj, path, "subsystem")
        sub = Subsystem(nqn=self.required_str(obj, "nqn", path), **kwargs)
        sub.allowed_hosts = self.strings(obj, "allowed_hosts", path)
        sub.namespaces = [
            self.namespace(o, p)
            for p, o in self.items(obj, "namespaces", path)
            if self.is_object(o, p)
        ]
        passthru = self.items(obj, "passthru", path)
        if len(passthru) > 1:
            self.problem(_join(path, "passthru"), "must hold at most one passthru controller")
        for p, o in passthru[:1]:
            if self.is_object(o, p):
                sub.passthru = self.passthru(o, p)
        return sub

    def namespace(self, obj: dict[str, Any], path: str) -> Namespace:
        kwargs = self.node(Namespace, obj, path, "namespace")
        ns = Namespace(nsid=self.required_int(obj, "nsid", path, Namespace), **kwargs)
        ns.enable = self.enable(obj, path)
        if "ana_grpid" in obj:
            grpid = self.integer(obj["ana_grpid"], _join(path, "ana_grpid"), Namespace, "ana_grpid")
            if grpid is not None:
                ana = obj.get("ana")
                if isinstance(ana, dict) and "grpid" in ana and grpid != ns.ana_grpid:
                    self.problem(
                        _join(path, "ana_grpid"),
                        f"is {grpid} but ana.grpid is {show(obj['ana']['grpid'])}; they name "
                        "the same kernel attribute",
                    )
                ns.ana_grpid = grpid
        if "nvmf" in obj and self.is_object(obj["nvmf"], _join(path, "nvmf")):
            ns.media = self.media(obj["nvmf"], _join(path, "nvmf"))
        return ns

    def passthru(self, obj: dict[str, Any], path: str) -> Passthru:
        kwargs = self.node(Passthru, obj, path, "passthru")
        pt = Passthru(**kwargs)
        pt.enable = self.enable(obj, path)
        for key in ("clear_ids", "admin_timeout", "io_timeout"):
            if obj.get(key) is not None:
                setattr(pt, key, self.integer(obj[key], _join(path, key), Passthru, key))
        return pt

    def port(self, obj: dict[str, Any], path: str) -> Port:
        kwargs = self.node(Port, obj, path, "port")
        port = Port(portid=self.required_int(obj, "portid", path, Port), **kwargs)
        port.subsystems = self.strings(obj, "subsystems", path)
        port.referrals = [
            self.referral(o, p)
            for p, o in self.items(obj, "referrals", path)
            if self.is_object(o, p)
        ]
        if "ana_groups" in obj:
            port.ana_groups = [
                self.ana_group(o, p)
                for p, o in self.items(obj, "ana_groups", path)
                if self.is_object(o, p)
            ]
        return port

    def referral(self, obj: dict[str, Any], path: str) -> Referral:
        kwargs = self.node(Referral, obj, path, "referral")
        ref = Referral(name=self.required_str(obj, "name", path), **kwargs)
        ref.enable = self.enable(obj, path)
        return ref

    def ana_group(self, obj: dict[str, Any], path: str) -> AnaGroup:
        kwargs = self.node(AnaGroup, obj, path, "ana_group")
        return AnaGroup(grpid=self.required_int(obj, "grpid", path, AnaGroup), **kwargs)

    # -- this project's own keys ---------------------------------------------------------------

    def settings(self, obj: dict[str, Any], path: str) -> NvmfSettings:
        settings = NvmfSettings()
        fields = {f.name for f in dataclasses.fields(NvmfSettings)}
        for key, value in obj.items():
            where = _join(path, key)
            if key not in fields:
                listing = f"the nvmf settings are {', '.join(sorted(fields))}"
                self.problem(where, unknown_key(key, fields, listing))
            elif isinstance(getattr(settings, key), bool):  # a switch: JSON true or false
                setattr(settings, key, self.json_bool(value, where))
            elif key == "staging_bytes":
                settings.staging_bytes = self.size(value, where, NvmfSettings, key)
            else:
                number = self.integer(value, where, NvmfSettings, key)
                if number is not None:
                    setattr(settings, key, number)
        return settings

    def media(self, obj: dict[str, Any], path: str) -> NamespaceMedia:
        media = NamespaceMedia()
        fields = {f.name for f in dataclasses.fields(NamespaceMedia)}
        for key, value in obj.items():
            where = _join(path, key)
            if key not in fields:
                listing = f"a namespace's nvmf has {', '.join(sorted(fields))}"
                self.problem(where, unknown_key(key, fields, listing))
            elif key == "kind":
                if value is None or isinstance(value, str):
                    media.kind = value
                else:
                    self.problem(where, f"must be a string, got {show(value)}")
            elif key in ("sq_placement", "staging_placement"):
                if isinstance(value, str):
                    setattr(media, key, value)
                else:
                    self.problem(where, f"must be dram or cmb, got {show(value)}")
            elif key == "io_engine":
                if isinstance(value, str):
                    media.io_engine = value
                else:
                    self.problem(where, f"must be auto, threads or io_uring, got {show(value)}")
            elif key == "size":
                media.size = None if value is None else self.size(value, where, NamespaceMedia, key)
            elif key == "block_size":
                media.block_size = self.integer(value, where, NamespaceMedia, key) or 0
            else:
                media.direct = self.json_bool(value, where)
        return media

    def json_bool(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        self.problem(where, f"must be true or false, got {show(value)}")
        return False

    def size(self, value: Any, where: str, cls: type, field: str) -> int:
        size = parse_size(value)
        if size is None:
            self.problem(where, f'must be a size in bytes or like "512M", "1G", got {show(value)}')
            return 0
        return size
