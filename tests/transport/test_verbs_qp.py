"""QP attributes cross from the control plane to a worker as plain data (:mod:`nvmf.transport.
verbs_qp`): what the worker rebuilds must be what RDMA CM computed, address vector included.
pyverbs builds these structures without a device, so this runs anywhere pyverbs imports; the
whole path (CM attributes applied to a worker's QP) runs in the guest."""

from __future__ import annotations

import pickle

import pyverbs.enums as ve
from pyverbs.addr import GID, AHAttr, GlobalRoute
from pyverbs.qp import QPAttr

from nvmf.transport.verbs_qp import QpTransition

#: The RoCE v2 GID of 10.99.0.2 (an IPv4-mapped IPv6 address).
DGID = "0000:0000:0000:0000:0000:ffff:0a63:0002"
RTR_MASK = 0x1FD81  # state, AV, path MTU, dest QPN, RQ PSN, max dest RD atomic, min RNR timer


def rtr_attr() -> QPAttr:
    attr = QPAttr(qp_state=ve.IBV_QPS_RTR, path_mtu=ve.IBV_MTU_4096)
    attr.dest_qp_num = 0x11
    attr.rq_psn = 0xABCDE
    attr.max_dest_rd_atomic = 0
    attr.min_rnr_timer = 12
    route = GlobalRoute(dgid=GID(DGID), flow_label=7, sgid_index=1, hop_limit=64)
    attr.ah_attr = AHAttr(is_global=1, port_num=1, sl=3, gr=route)
    return attr


def test_a_transition_survives_pickling_and_rebuilds_the_same_attributes() -> None:
    sent = QpTransition.of(rtr_attr(), RTR_MASK)
    received = pickle.loads(pickle.dumps(sent))  # what the worker's channel does
    rebuilt = received.attr()
    assert rebuilt.qp_state == ve.IBV_QPS_RTR and rebuilt.path_mtu == ve.IBV_MTU_4096
    assert (rebuilt.dest_qp_num, rebuilt.rq_psn, rebuilt.min_rnr_timer) == (0x11, 0xABCDE, 12)
    av = rebuilt.ah_attr
    assert (av.is_global, av.port_num, av.sl) == (1, 1, 3)
    assert (av.dgid, av.sgid_index, av.hop_limit, av.flow_label) == (DGID, 1, 64, 7)
    assert QpTransition.of(rebuilt, RTR_MASK) == sent
    assert received.mask == RTR_MASK


def test_a_transition_without_an_address_vector_has_none() -> None:
    init = QPAttr(qp_state=ve.IBV_QPS_INIT)
    init.pkey_index = 0
    init.qp_access_flags = ve.IBV_ACCESS_REMOTE_READ
    transition = QpTransition.of(init, 0x31)
    assert transition.ah is None
    assert transition.attr().qp_access_flags == ve.IBV_ACCESS_REMOTE_READ


def test_the_rdma_read_depth_is_capped_by_the_device() -> None:
    rts = QPAttr(qp_state=ve.IBV_QPS_RTS)
    rts.max_rd_atomic = 128  # the host's responder resources
    transition = QpTransition.of(rts, 0x4000)
    assert transition.with_rd_atomic(16).values["max_rd_atomic"] == 16
    assert transition.with_rd_atomic(255).values["max_rd_atomic"] == 128
    assert transition.values["max_rd_atomic"] == 128  # the original is left as it was
