"""Misspelt keys are errors naming the key, its JSON path and the key meant.

A name close to one nvmetcli writes (``alow_any_host``, ``trtyp``, ``inline_data_sise``) is a
typo: loading it as an extra attribute would silently drop the setting meant.  A name far from
every known one is a newer kernel's attribute: it is kept for nvmetcli, with a warning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from nvmf.config import ConfigError, Problem, dump_config, parse_config


def errors(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(obj, check_paths=False, warnings=[])
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def rename(group: dict[str, Any], old: str, new: str) -> None:
    group[new] = group.pop(old)


TYPOS: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (
        lambda o: rename(o["subsystems"][0]["attr"], "allow_any_host", "alow_any_host"),
        "subsystems[0].attr.alow_any_host: unknown key (did you mean allow_any_host?)",
    ),
    (
        lambda o: rename(o["ports"][0]["param"], "inline_data_size", "inline_data_sise"),
        "ports[0].param.inline_data_sise: unknown key (did you mean inline_data_size?)",
    ),
    (
        lambda o: rename(o["ports"][0]["addr"], "trtype", "trtyp"),
        "ports[0].addr.trtyp: unknown key (did you mean trtype?)",
    ),
    (
        lambda o: rename(o["subsystems"][0]["namespaces"][0]["device"], "path", "paht"),
        "subsystems[0].namespaces[0].device.paht: unknown key (did you mean path?)",
    ),
    (
        lambda o: rename(o["subsystems"][0]["namespaces"][0]["resv"], "enable", "enabel"),
        "subsystems[0].namespaces[0].resv.enabel: unknown key (did you mean enable?)",
    ),
    (
        lambda o: rename(o["hosts"][0]["dhchap"], "ctrl_key", "ctrl_kye"),
        "hosts[0].dhchap.ctrl_kye: unknown key (did you mean ctrl_key?)",
    ),
    (
        lambda o: rename(o["discovery"], "nqn", "nqm"),
        "discovery.nqm: unknown key (did you mean nqn?)",
    ),
    (
        lambda o: rename(o["subsystems"][0], "namespaces", "namespace"),
        "subsystems[0].namespace: unknown key (did you mean namespaces?)",
    ),
    (
        lambda o: rename(o["subsystems"][0], "attr", "atr"),
        "subsystems[0].atr: unknown key (did you mean attr?)",
    ),
    (
        lambda o: rename(o["ports"][0], "param", "params"),
        "ports[0].params: unknown key (did you mean param?)",
    ),
    (lambda o: rename(o, "subsystems", "subsystem"), "subsystem: unknown key (did you mean "),
    (
        lambda o: o.update(nvmf={"queue_dept": 64}),
        "nvmf.queue_dept: unknown key (did you mean queue_depth?)",
    ),
]


@pytest.mark.parametrize(("change", "expected"), TYPOS, ids=[e.split(":")[0] for _, e in TYPOS])
def test_typo_is_an_error_with_a_suggestion(
    saved: dict[str, Any], change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    change(saved)
    assert any(line.startswith(expected) for line in errors(saved)), errors(saved)


def test_misspelt_required_key_is_reported_as_unknown(saved: dict[str, Any]) -> None:
    """Not only "trtype is required": the line names the typo and what was meant."""
    rename(saved["ports"][0]["addr"], "trtype", "trtyp")
    assert errors(saved) == ["ports[0].addr.trtyp: unknown key (did you mean trtype?)"]


def test_far_unknown_attribute_is_kept_with_a_warning(saved: dict[str, Any]) -> None:
    """A newer kernel's attribute still loads, and saving gives it back."""
    saved["subsystems"][0]["attr"]["zoned_append_limit"] = "4"
    saved["subsystems"][0]["namespaces"][0]["zns"] = {"max_active": "8"}
    warnings: list[Problem] = []
    cfg = parse_config(copy.deepcopy(saved), check_paths=False, warnings=warnings)
    assert [w.path for w in warnings] == [
        "subsystems[0].attr.zoned_append_limit",
        "subsystems[0].namespaces[0].zns",
    ]
    out = dump_config(cfg)["subsystems"][0]
    assert out["attr"]["zoned_append_limit"] == "4"
    assert out["namespaces"][0]["zns"] == {"max_active": "8"}


def test_every_known_attribute_loads_without_warnings(saved: dict[str, Any]) -> None:
    warnings: list[Problem] = []
    parse_config(saved, check_paths=False, warnings=warnings)
    assert warnings == []
