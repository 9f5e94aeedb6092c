"""Round trips over generated configurations: ``load(save(x)) == x``, and no crash on bad input.

The strategies build valid :class:`TargetConfig` objects of every shape nvmetcli can express
(tcp/rdma/loop/fc ports, referrals, ANA groups, allowed hosts, passthru, attributes of newer
kernels kept in ``extra_attrs``) plus this project's ``"nvmf"`` settings.  Media paths are not
checked (``check_paths=False``): they name devices of an imaginary machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvmf.config import (
    ConfigError,
    config_to_json,
    dump_config,
    load_config,
    parse_config,
    save_config,
    validate_config,
)
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

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=24)
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
ATTR_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


def nqns() -> st.SearchStrategy[str]:
    return st.one_of(
        NAME.map(lambda n: f"nqn.2024-01.io.nvmf:{n}"),
        st.uuids().map(lambda u: f"nqn.2014-08.org.nvmexpress:uuid:{u}"),
    )


def extras(groups: dict[str, list[str]]) -> st.SearchStrategy[dict[str, dict[str, str]]]:
    """Extra attributes: for each group, a non-empty subset of the names given, with values."""
    parts = [
        st.dictionaries(st.sampled_from(names), ATTR_VALUE, min_size=1).map(
            lambda d, g=group: {g: d}
        )
        for group, names in groups.items()
    ]

    def merge(chosen: list[dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for piece in chosen:
            out.update(piece)
        return out

    return st.lists(st.one_of(*parts), max_size=2).map(merge)


@st.composite
def media(draw: st.DrawFn) -> tuple[str, NamespaceMedia]:
    block_size = draw(st.sampled_from([512, 4096]))
    kind = draw(st.sampled_from([None, "ram", "null", "file", "block", "nvme_pci"]))
    size = None
    if kind in ("ram", "null") or (kind == "file" and draw(st.booleans())):
        size = block_size * draw(st.integers(1, 1 << 24))
    if kind == "nvme_pci":  # a PCI address; where the SSD's queues and staging buffers go
        bus, dev, fn = draw(st.integers(0, 255)), draw(st.integers(0, 31)), draw(st.integers(0, 7))
        placement = st.sampled_from(["dram", "cmb"])
        return f"0000:{bus:02x}:{dev:02x}.{fn}", NamespaceMedia(
            kind, None, block_size, False, draw(placement), draw(placement)
        )
    path = "" if kind in ("ram", "null") else draw(NAME.map(lambda n: f"/dev/{n}"))
    return path, NamespaceMedia(kind, size, block_size, draw(st.booleans()))


@st.composite
def namespaces(draw: st.DrawFn, nsid: int) -> Namespace:
    path, medium = draw(media())
    return Namespace(
        nsid=nsid,
        path=path,
        enable=draw(st.booleans()),
        uuid=draw(st.none() | st.uuids().map(str)),
        nguid=draw(st.none() | st.uuids().map(str)),
        ana_grpid=draw(st.integers(1, 1024)),
        media=medium,
        # Enabled reservations are refused (not served yet): only "0" or empty.
        extra_attrs=draw(
            extras({"resv": ["enable"], "device": ["eui64"]}).filter(
                lambda e: e.get("resv", {}).get("enable", "0") in ("", "0")
            )
        ),
    )


@st.composite
def subsystems(draw: st.DrawFn, nqn: str, hosts: list[str]) -> Subsystem:
    allowed = draw(st.lists(st.sampled_from(hosts), unique=True)) if hosts else []
    nsids = draw(st.lists(st.integers(1, 0xFFFFFFFE), unique=True, max_size=3))
    cntlid_min = draw(st.integers(1, 0xFFEF))
    passthru = None
    if not nsids and draw(st.booleans()):
        passthru = Passthru(
            path=draw(NAME.map(lambda n: f"/dev/{n}")),
            enable=draw(st.booleans()),
            clear_ids=draw(st.none() | st.integers(0, 1)),
            admin_timeout=draw(st.none() | st.integers(0, 600)),
            io_timeout=draw(st.none() | st.integers(0, 600)),
        )
    return Subsystem(
        nqn=nqn,
        allow_any_host=False if allowed else draw(st.booleans()),
        allowed_hosts=allowed,
        serial=draw(ASCII),
        model=draw(ASCII.filter(bool)),
        version=draw(st.from_regex(r"[12]\.[0-9](\.[0-9])?", fullmatch=True)),
        cntlid_min=cntlid_min,
        cntlid_max=draw(st.integers(cntlid_min, 0xFFEF)),
        qid_max=draw(st.none() | st.integers(1, 0xFFFF)),
        namespaces=[draw(namespaces(nsid)) for nsid in nsids],
        passthru=passthru,
        extra_attrs=draw(extras({"attr": ["pi_enable", "firmware", "ieee_oui"]})),
    )


@st.composite
def addresses(draw: st.DrawFn) -> dict[str, str]:
    trtype = draw(st.sampled_from(["tcp", "rdma", "loop", "fc"]))
    if trtype == "loop":
        return {"trtype": "loop", "adrfam": draw(st.sampled_from(["", "loop"])), "traddr": ""}
    if trtype == "fc":
        hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)
        traddr = f"nn-0x{draw(hex16)}:pn-0x{draw(hex16)}"
        return {"trtype": "fc", "adrfam": "fc", "traddr": traddr, "trsvcid": "none"}
    adrfam = draw(st.sampled_from(["ipv4", "ipv6"]))
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = draw(
        st.ip_addresses(v=4 if adrfam == "ipv4" else 6)
    )
    return {
        "trtype": trtype,
        "adrfam": adrfam,
        "traddr": str(ip),
        "trsvcid": str(draw(st.integers(1, 0xFFFF))),
    }


TREQ = st.sampled_from(["not specified", "required", "not required"])
#: A port that requires a secure channel is refused (TLS is not served yet); a referral may.
PORT_TREQ = st.sampled_from(["not specified", "not required"])
ANA_STATE = st.sampled_from(
    ["optimized", "non-optimized", "inaccessible", "persistent-loss", "change"]
)


@st.composite
def ports(draw: st.DrawFn, portid: int, subsystem_nqns: list[str]) -> Port:
    names = draw(st.lists(NAME.filter(lambda n: n not in (".", "..")), unique=True, max_size=2))
    referrals = [
        Referral(
            name=name,
            portid=draw(st.integers(0, 0xFFFF)),
            treq=draw(TREQ),
            enable=draw(st.booleans()),
            **{"trsvcid": "", **draw(addresses())},
        )
        for name in names
    ]
    grpids = draw(st.lists(st.integers(1, 1024), unique=True, max_size=3))
    chosen = draw(st.lists(st.sampled_from(subsystem_nqns), unique=True)) if subsystem_nqns else []
    return Port(
        portid=portid,
        treq=draw(PORT_TREQ),
        inline_data_size=draw(st.integers(-1, 1 << 20)),
        subsystems=chosen,
        referrals=referrals,
        ana_groups=[AnaGroup(g, draw(ANA_STATE)) for g in grpids],
        extra_attrs=draw(
            extras({"addr": ["tsas"], "param": ["pi_enable", "mdts"]}).filter(
                lambda e: "tls" not in e.get("addr", {}).get("tsas", "").lower()
            )
        ),
        **{"trsvcid": "", **draw(addresses())},
    )


@st.composite
def configs(draw: st.DrawFn) -> TargetConfig:
    host_nqns = draw(st.lists(nqns(), unique=True, max_size=3))
    sub_nqns = draw(st.lists(nqns(), unique=True, max_size=3))
    portids = draw(st.lists(st.integers(0, 0xFFFF), unique=True, max_size=3))
    cfg = TargetConfig(
        hosts=[Host(n) for n in host_nqns],
        subsystems=[draw(subsystems(n, host_nqns)) for n in sub_nqns],
        ports=[draw(ports(p, sub_nqns)) for p in portids],
        nvmf=NvmfSettings(
            max_io_queues=draw(st.integers(1, 0xFFFF)),
            queue_depth=draw(st.integers(2, 0x10000)),
            staging_bytes=draw(st.integers(8192, 1 << 30)),
            offload_workers=draw(st.integers(0, 64)),
            cmb=False,  # true is refused until the CMB can be used
            kato_min_ms=draw(st.integers(0, 120_000)),
            idle_timeout_ms=draw(st.integers(1, 120_000)),
            unpreempted_sends=draw(st.booleans()),
        ),
    )
    # Two listeners on one address are (rightly) invalid: keep the first.
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for port in cfg.ports:
        key = (port.trtype, port.traddr, port.trsvcid)
        if port.trtype in ("tcp", "rdma") and key in seen:
            continue
        seen.add(key)
        kept.append(port)
    cfg.ports = kept
    return cfg


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(configs())
def test_generated_configs_are_valid(cfg: TargetConfig) -> None:
    validate_config(cfg, check_paths=False)


@SETTINGS
@given(configs())
def test_load_of_save_is_identity(cfg: TargetConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        save_config(cfg, path)
        assert load_config(path, check_paths=False) == cfg
        assert os.listdir(tmp) == ["config.json"]  # no temporary file left behind


@SETTINGS
@given(configs())
def test_json_text_is_a_fixed_point(cfg: TargetConfig) -> None:
    text = config_to_json(cfg)
    again = parse_config(json.loads(text), check_paths=False)
    assert config_to_json(again) == text


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [path] + [p for k, v in obj.items() for p in _leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [path] + [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.data())
def test_any_damage_is_a_config_error(cfg: TargetConfig, data: st.DataObject) -> None:
    """Replace one node of a valid file by arbitrary JSON: a ConfigError or a valid config."""
    obj = dump_config(cfg)
    path = data.draw(st.sampled_from(_leaves(obj)[1:]))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(JSON)
    try:
        parse_config(obj, "fuzz.json", check_paths=False)
    except ConfigError as e:
        assert str(e).startswith("fuzz.json: ")
