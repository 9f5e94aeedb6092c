"""nvmf.config: nvmetcli-compatible JSON configuration (see docs/architecture.md).

* :func:`load_config` / :func:`parse_config`: nvmetcli's JSON (plus this project's ``"nvmf"``
  keys) into a validated :class:`~nvmf.control.model.TargetConfig`.
* :func:`validate_config`: every value and cross reference of a model built in Python.
* :func:`save_config` / :func:`dump_config` / :func:`config_to_json`: back to nvmetcli's layout,
  atomically on disk; ``load_config(save_config(x)) == x``.
* :func:`resolve_media_kind`: ``ram``/``file``/``block``/``null`` for a namespace.
* :mod:`nvmf.config.kernel`: apply a configuration to, or clear, the Linux kernel target.

Every failure is a :class:`ConfigError` naming the file, the JSON path and what is wrong.
"""

from nvmf.config.errors import ConfigError, Problem
from nvmf.config.load import load_config, parse_config
from nvmf.config.media import resolve_media_kind
from nvmf.config.save import config_to_json, dump_config, save_config
from nvmf.config.validate import validate_config

__all__ = [
    "ConfigError",
    "Problem",
    "config_to_json",
    "dump_config",
    "load_config",
    "parse_config",
    "resolve_media_kind",
    "save_config",
    "validate_config",
]
