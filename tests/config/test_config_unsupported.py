"""Settings this target cannot honour yet are refused by name, not silently ignored.

DH-HMAC-CHAP keys, a port requiring a secure channel or naming TLS, and enabled reservations
would look served and be less safe.  The kernel target has them all, so ``kernel=True`` (what
``nvmf config apply`` uses) accepts them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from nvmf.config import ConfigError, parse_config

Change = Callable[[dict[str, Any]], None]

REFUSED: list[tuple[Change, str]] = [
    (
        lambda o: o["hosts"][0]["dhchap"].update(key="DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqip"),
        "hosts[0].dhchap.key: is not supported yet: DH-HMAC-CHAP authentication",
    ),
    (
        lambda o: o["hosts"][0]["dhchap"].update(ctrl_key="DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY"),
        "hosts[0].dhchap.ctrl_key: is not supported yet: DH-HMAC-CHAP authentication",
    ),
    (
        lambda o: o["ports"][0]["addr"].update(treq="required"),
        "ports[0].addr.treq: is not supported yet: a required secure channel (TLS)",
    ),
    (
        lambda o: o["ports"][0]["addr"].update(tsas="tls1.3"),
        "ports[0].addr.tsas: is not supported yet: TLS (tls1.3)",
    ),
    (
        lambda o: o["subsystems"][0]["namespaces"][0]["resv"].update(enable="1"),
        "subsystems[0].namespaces[0].resv.enable: is not supported yet: reservations",
    ),
]
IDS = [message.split(":")[0] for _, message in REFUSED]


@pytest.mark.parametrize(("change", "expected"), REFUSED, ids=IDS)
def test_refused_with_a_message_naming_it(
    saved: dict[str, Any], change: Change, expected: str
) -> None:
    change(saved)
    with pytest.raises(ConfigError) as info:
        parse_config(saved, "saved.json", check_paths=False, warnings=[])
    lines = str(info.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"saved.json: {expected}")


@pytest.mark.parametrize(("change", "expected"), REFUSED, ids=IDS)
def test_the_kernel_target_accepts_them(
    saved: dict[str, Any], change: Change, expected: str
) -> None:
    change(saved)
    parse_config(saved, check_paths=False, warnings=[], kernel=True)


def test_empty_dhchap_group_and_disabled_reservations_load(saved: dict[str, Any]) -> None:
    """What nvmetcli on 6.12 saves for every host and namespace asks for nothing."""
    cfg = parse_config(saved, check_paths=False, warnings=[])
    assert cfg.hosts[0].extra_attrs["dhchap"]["key"] == ""
    assert cfg.subsystems[0].namespaces[0].extra_attrs["resv"] == {"enable": "0"}


def test_tsas_none_and_treq_not_required_load(saved: dict[str, Any]) -> None:
    saved["ports"][0]["addr"].update(tsas="none", treq="not required")
    cfg = parse_config(saved, check_paths=False, warnings=[])
    assert cfg.ports[0].treq == "not required"
