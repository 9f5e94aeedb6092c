"""Asymmetric Namespace Access is not offered, and nothing says otherwise (issue 8).

The target serves every namespace the same way on every port, so it does not report ANA (Base
2.0 §8.1.1 "Asymmetric Namespace Access Reporting"): CMIC bit 3 clear, ANACAP, ANATT, ANAGRPMAX,
NANAGRPID zero, no ANA Change notices (OAES bit 11), the ANA log page (LID 0Ch) refused as an
Invalid Log Page, and ANAGRPID zero in every Identify Namespace.  The Linux host then treats each
path as optimized and never asks for the log (``nvme_ctrl_use_ana``, ``nvme_mpath_add_disk``);
a host that found a group ID but no log page would look for one.
"""

from __future__ import annotations

from nvmf.wire.identify import IdentifyController, IdentifyNamespace, NamespaceList
from nvmf.wire.logpage import LogPageId
from nvmf.wire.status import SC
from tests.target.conftest import RunningTarget
from tests.target.rawhost import is_status
from tests.target.test_features_aer import get_log, sct_sc
from tests.target.test_tcp_target import admin, identify

#: Identify Controller CMIC bit 3: ANA reporting supported (Linux NVME_CTRL_CMIC_ANA).
CMIC_ANA = 1 << 3
#: OAES bit 11: Asymmetric Namespace Access Change Notices (Linux NVME_AEN_CFG_ANA_CHANGE).
OAES_ANA_CHANGE = 1 << 11


def test_identify_controller_claims_no_ana(target: RunningTarget) -> None:
    host = admin(target)
    status, data = identify(host, 1)
    assert status == 0
    ctrl = IdentifyController.decode(data)
    assert not ctrl.cmic & CMIC_ANA
    assert (ctrl.anatt, ctrl.anacap, ctrl.anagrpmax, ctrl.nanagrpid) == (0, 0, 0, 0)
    assert not ctrl.oaes & OAES_ANA_CHANGE


def test_every_namespace_has_no_ana_group(target: RunningTarget) -> None:
    host = admin(target)
    status, data = identify(host, 2)
    nsids = NamespaceList.decode(data).nsids
    assert status == 0 and nsids
    for nsid in nsids:
        status, data = identify(host, 0, nsid=nsid)
        assert status == 0
        assert IdentifyNamespace.decode(data).anagrpid == 0, nsid


def test_ana_log_page_is_an_invalid_log_page(target: RunningTarget) -> None:
    host = admin(target)
    cqe, _ = get_log(host, LogPageId.ANA, 4096)
    assert is_status(cqe, SC.INVALID_LOG_PAGE)
    assert sct_sc(cqe) == (1, 0x09)
