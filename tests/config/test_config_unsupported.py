"""Settings this target cannot honour yet are refused by name, not silently ignored.

A port requiring a secure channel or naming TLS, and enabled reservations would look served
and be less safe.  The kernel target has them all, so ``kernel=True`` (what ``nvmf config
apply`` uses) accepts them.  DH-HMAC-CHAP keys are honoured: well-formed ones load, malformed
ones are refused (for either target) with the field named and the secret left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from nvmf.config import ConfigError, parse_config
from nvmf.protocol.dhchap import generate_secret

Change = Callable[[dict[str, Any]], None]

REFUSED: list[tuple[Change, str]] = [
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


KEY = generate_secret(1, 32, "nqn.2014-08.org.nvmexpress:uuid:x")
CTRL_KEY = generate_secret(0, 64)


def test_dhchap_keys_load(saved: dict[str, Any]) -> None:
    saved["hosts"][0]["dhchap"].update(
        key=KEY, ctrl_key=CTRL_KEY, hash="hmac(sha512)", dhgroup="ffdhe4096"
    )
    cfg = parse_config(saved, check_paths=False, warnings=[])
    assert cfg.hosts[0].extra_attrs["dhchap"]["key"] == KEY


MALFORMED: list[tuple[str, str, str]] = [
    ("key", KEY[:-8] + "AAAAAAA:", "hosts[0].dhchap.key: the key's CRC-32 does not match"),
    ("key", "DHHC-1:07:" + KEY.split(":")[2] + ":", "hosts[0].dhchap.key: the key hash"),
    ("ctrl_key", "hunter2hunter2", "hosts[0].dhchap.ctrl_key: not a DH-HMAC-CHAP secret"),
    ("hash", "hmac(md5)", "hosts[0].dhchap.hash: unknown DH-HMAC-CHAP hash"),
    ("dhgroup", "ffdhe1024", "hosts[0].dhchap.dhgroup: unknown DH-HMAC-CHAP DH group"),
]


@pytest.mark.parametrize(
    ("name", "value", "expected"), MALFORMED, ids=[m[0] + str(i) for i, m in enumerate(MALFORMED)]
)
@pytest.mark.parametrize("kernel", [False, True], ids=["ours", "kernel"])
def test_malformed_dhchap_settings_name_the_field_not_the_secret(
    saved: dict[str, Any], name: str, value: str, expected: str, kernel: bool
) -> None:
    dhchap = saved["hosts"][0]["dhchap"]
    dhchap["key"] = KEY
    dhchap[name] = value
    with pytest.raises(ConfigError) as info:
        parse_config(saved, "saved.json", check_paths=False, warnings=[], kernel=kernel)
    message = str(info.value)
    assert f"saved.json: {expected}" in message
    assert KEY.split(":")[2][:16] not in message
    if name in ("key", "ctrl_key"):
        assert value.split(":")[-2 if value.count(":") > 1 else 0][:12] not in message


def test_controller_key_needs_a_host_key(saved: dict[str, Any]) -> None:
    saved["hosts"][0]["dhchap"].update(key="", ctrl_key=CTRL_KEY)
    with pytest.raises(ConfigError) as info:
        parse_config(saved, "saved.json", check_paths=False, warnings=[])
    assert "hosts[0].dhchap.ctrl_key: a controller key needs a host key" in str(info.value)
