"""A queue pair's connection attributes as plain data, to cross to the process that owns it.

RDMA CM computes what a connection's QP needs for INIT, RTR and RTS (``rdma_init_qp_attr``:
P_Key index, port, the host's QP number and PSN, path MTU, the address vector with the host's
GID, timeouts, RDMA READ depth) in the process that holds the connection's CM ID: the control
plane.  The QP of an I/O queue is created in an offload worker, in its own device context and
protection domain, so these attributes go to the worker over its channel, pickled as
:class:`QpTransition` values, and the worker applies them with ``ibv_modify_qp``.  A QP cannot
be moved between processes (Soft-RoCE has no ``ibv_import_device``); its attributes can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyverbs.addr import GID, AHAttr, GlobalRoute
from pyverbs.qp import QPAttr

#: The scalar ``ibv_qp_attr`` fields a connected QP's transitions use (alternate paths and
#: rate limits are not part of RDMA CM's attributes for these).
SCALARS = (
    "qp_state",
    "cur_qp_state",
    "path_mtu",
    "path_mig_state",
    "qkey",
    "rq_psn",
    "sq_psn",
    "dest_qp_num",
    "qp_access_flags",
    "pkey_index",
    "en_sqd_async_notify",
    "max_rd_atomic",
    "max_dest_rd_atomic",
    "min_rnr_timer",
    "port_num",
    "timeout",
    "retry_cnt",
    "rnr_retry",
)
#: The address vector's fields, and its global route's (RoCE always has one).
AH_FIELDS = ("dlid", "sl", "src_path_bits", "static_rate", "is_global", "port_num")
GRH_FIELDS = ("dgid", "flow_label", "sgid_index", "hop_limit", "traffic_class")


@dataclass(frozen=True)
class QpTransition:
    """One ``ibv_modify_qp`` call: the attribute values and the mask saying which count."""

    values: dict[str, int]
    #: The address vector (RTR), or None.
    ah: dict[str, Any] | None
    mask: int

    @classmethod
    def of(cls, attr: QPAttr, mask: int) -> QpTransition:
        """The plain form of what ``CMID.init_qp_attr`` returned."""
        values = {name: int(getattr(attr, name)) for name in SCALARS}
        ah: dict[str, Any] | None = None
        av = attr.ah_attr
        if av is not None and (av.is_global or av.dlid):
            ah = {name: int(getattr(av, name)) for name in AH_FIELDS}
            if av.is_global:
                ah.update({name: getattr(av, name) for name in GRH_FIELDS})
                ah["dgid"] = str(ah["dgid"])
        return cls(values, ah, int(mask))

    def attr(self) -> QPAttr:
        """The pyverbs attributes to modify a QP with."""
        attr = QPAttr()
        for name, value in self.values.items():
            setattr(attr, name, value)
        ah = self.ah
        if ah is not None:
            route = None
            if ah["is_global"]:
                route = GlobalRoute(
                    dgid=GID(ah["dgid"]),
                    flow_label=ah["flow_label"],
                    sgid_index=ah["sgid_index"],
                    hop_limit=ah["hop_limit"],
                    traffic_class=ah["traffic_class"],
                )
            attr.ah_attr = AHAttr(
                dlid=ah["dlid"],
                sl=ah["sl"],
                src_path_bits=ah["src_path_bits"],
                static_rate=ah["static_rate"],
                is_global=ah["is_global"],
                port_num=ah["port_num"],
                gr=route,
            )
        return attr

    def with_rd_atomic(self, limit: int) -> QpTransition:
        """The same transition with the RDMA READ depth capped at ``limit`` (a device's
        ``max_qp_init_rd_atom``): RDMA CM reports the host's responder resources."""
        values = dict(self.values)
        values["max_rd_atomic"] = min(values["max_rd_atomic"], limit)
        return QpTransition(values, self.ah, self.mask)
