"""Where each model field lives in nvmetcli's JSON and in the kernel's configfs: one table.

nvmetcli writes a node's configfs attributes grouped by their file-name prefix: the file
``attr_serial`` of a subsystem becomes ``"attr": {"serial": "..."}``, ``addr_trsvcid`` of a port
``"addr": {"trsvcid": "4420"}``, every value a string.  :data:`ATTRS` lists, per model class, which
field maps to which ``(group, name)`` and how its value is coded, so the loader, the saver, the
validator (for error paths) and the kernel writer all read the same table and cannot drift apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from nvmf.control.model import AnaGroup, Host, Namespace, Passthru, Port, Referral, Subsystem


class Codec(enum.Enum):
    """How a field's value is written as an nvmetcli attribute string."""

    #: A string, written as is.
    STR = "str"
    #: A string, or None for "not set" (left out of the JSON, not written to configfs).
    OPT_STR = "opt_str"
    #: An integer, written in decimal.
    INT = "int"
    #: An integer or None (not set).
    OPT_INT = "opt_int"
    #: A flag, written ``"1"`` or ``"0"``.
    BOOL = "bool"


#: Use the dataclass field's own default when the JSON leaves the attribute out.
DATACLASS_DEFAULT: Any = object()


@dataclass(frozen=True)
class Attr:
    """One model field stored as an nvmetcli attribute ``group.name`` (configfs ``group_name``)."""

    field: str
    group: str
    name: str
    codec: Codec
    #: Value when the JSON leaves the attribute out (the kernel's default where it matters).
    missing: Any = DATACLASS_DEFAULT

    @property
    def key(self) -> str:
        """The JSON path of the attribute below its node, ``attr.serial``."""
        return f"{self.group}.{self.name}"

    @property
    def filename(self) -> str:
        """The configfs attribute file, ``attr_serial``."""
        return f"{self.group}_{self.name}"


def _addr(field: str, codec: Codec = Codec.STR, missing: Any = "") -> Attr:
    return Attr(field, "addr", field, codec, missing)


ATTRS: dict[type, tuple[Attr, ...]] = {
    Subsystem: (
        # The kernel creates a subsystem closed to every host; absent means closed here too.
        Attr("allow_any_host", "attr", "allow_any_host", Codec.BOOL, False),
        Attr("serial", "attr", "serial", Codec.STR),
        Attr("model", "attr", "model", Codec.STR),
        Attr("version", "attr", "version", Codec.STR),
        Attr("cntlid_min", "attr", "cntlid_min", Codec.INT),
        Attr("cntlid_max", "attr", "cntlid_max", Codec.INT),
        Attr("qid_max", "attr", "qid_max", Codec.OPT_INT),
    ),
    Namespace: (
        Attr("path", "device", "path", Codec.STR),
        Attr("uuid", "device", "uuid", Codec.OPT_STR),
        Attr("nguid", "device", "nguid", Codec.OPT_STR),
        # nvmetcli also writes the top-level "ana_grpid"; both name the file ana_grpid.
        Attr("ana_grpid", "ana", "grpid", Codec.INT),
    ),
    Passthru: (Attr("path", "device", "path", Codec.STR),),
    Port: (
        _addr("trtype"),
        _addr("adrfam"),
        _addr("traddr"),
        _addr("trsvcid"),
        _addr("treq", missing="not specified"),
        Attr("inline_data_size", "param", "inline_data_size", Codec.INT),
    ),
    Referral: (
        _addr("trtype"),
        _addr("adrfam"),
        _addr("traddr"),
        _addr("trsvcid"),
        _addr("treq", missing="not specified"),
        _addr("portid", Codec.INT, 0),
    ),
    AnaGroup: (Attr("state", "ana", "state", Codec.STR),),
    Host: (),
}

#: Attribute groups nvmetcli always writes for a node, even when empty.
GROUPS: dict[type, tuple[str, ...]] = {
    Subsystem: ("attr",),
    Namespace: ("device", "ana"),
    Passthru: ("device",),
    Port: ("addr", "param"),
    Referral: ("addr",),
    AnaGroup: ("ana",),
    Host: (),
}

#: Attribute groups nvmetcli writes at the top level (``Root.attr_groups``): kept, not modelled.
ROOT_GROUPS = ("discovery",)

#: Keys of a node that are not attribute groups, per nvmetcli's dump of that node.
PLAIN_KEYS: dict[str, frozenset[str]] = {
    "root": frozenset({"hosts", "ports", "subsystems", "nvmf"}),
    "host": frozenset({"nqn"}),
    "subsystem": frozenset({"nqn", "namespaces", "allowed_hosts", "passthru"}),
    "namespace": frozenset({"nsid", "enable", "ana_grpid", "nvmf"}),
    "passthru": frozenset({"enable", "clear_ids", "admin_timeout", "io_timeout"}),
    "port": frozenset({"portid", "subsystems", "referrals", "ana_groups"}),
    "referral": frozenset({"name", "enable"}),
    "ana_group": frozenset({"grpid"}),
}


#: Every attribute nvmetcli writes, per node kind and group, as far as this version knows
#: (kernels up to 6.12 and the vendor_id/mdts additions after it).  A name close to one of these
#: is a typo and an error; any other is a newer kernel's attribute, kept with a warning.
KNOWN_ATTRS: dict[str, dict[str, frozenset[str]]] = {
    "root": {"discovery": frozenset({"nqn"})},
    "host": {"dhchap": frozenset({"key", "ctrl_key", "hash", "dhgroup"})},
    "subsystem": {
        "attr": frozenset(
            {
                "allow_any_host",
                "cntlid_max",
                "cntlid_min",
                "firmware",
                "ieee_oui",
                "model",
                "pi_enable",
                "qid_max",
                "serial",
                "subsys_vendor_id",
                "vendor_id",
                "version",
            }
        )
    },
    "namespace": {
        "device": frozenset({"path", "uuid", "nguid"}),
        "ana": frozenset({"grpid"}),
        "resv": frozenset({"enable"}),
    },
    "passthru": {"device": frozenset({"path"})},
    "port": {
        "addr": frozenset({"adrfam", "traddr", "treq", "trsvcid", "trtype", "tsas"}),
        "param": frozenset({"inline_data_size", "max_queue_size", "mdts", "pi_enable"}),
    },
    "referral": {
        "addr": frozenset({"adrfam", "traddr", "treq", "trsvcid", "trtype", "tsas", "portid"})
    },
    "ana_group": {"ana": frozenset({"state"})},
}


def attr_for(cls: type, field: str) -> Attr:
    """The table entry of ``cls.field`` (KeyError for a field that is not an attribute)."""
    for attr in ATTRS[cls]:
        if attr.field == field:
            return attr
    raise KeyError(f"{cls.__name__}.{field} is not an nvmetcli attribute")


def encode(attr: Attr, value: Any) -> str | None:
    """A field's value as the attribute string nvmetcli writes; None means "leave it out"."""
    if value is None:
        return None
    if attr.codec is Codec.BOOL:
        return "1" if value else "0"
    return str(value)
