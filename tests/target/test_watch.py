"""Watching and reconfiguring a running target: its status snapshot, and configuration reloads
that reach connected hosts as Namespace Attribute Changed notices (Base 2.0 §5.2, Changed
Namespace List log page 04h) without dropping their connections.

Every test runs against the one-process target and the target with two offload workers (the
``target`` fixture), so a reload is proven to replace the I/O context the workers hold.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from nvmf.control.admin import AEN_NS_CHANGED
from nvmf.control.discovery import AEN_DISC_CHANGED
from nvmf.control.model import Namespace, NamespaceMedia, Port, TargetConfig
from nvmf.control.reconfigure import ReloadError, ReloadReport
from nvmf.wire.identify import IdentifyNamespace, NamespaceList
from nvmf.wire.logpage import ChangedNamespaceList, LogPageId
from nvmf.wire.opcodes import FeatureId, IoOpcode
from nvmf.wire.status import SC
from tests.target.conftest import ALLOWED_HOST, LOCKED_NQN, SUBNQN, RunningTarget
from tests.target.rawhost import HOSTNQN, RawHost, is_status, status_of
from tests.target.test_features_aer import aer_sqe, get_log, nothing_pending, set_features
from tests.target.test_tcp_target import DISC, admin, identify, io_queue, rw

T = TypeVar("T")
#: Asynchronous Event Configuration bit 8: Namespace Attribute Notices.
AEC_NS_ATTR = 1 << 8
#: Get Log Page CDW10 bit 15: Retain Asynchronous Event.
RAE = 1 << 15


def call(target: RunningTarget, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the target's event loop and wait for it."""
    return asyncio.run_coroutine_threadsafe(coro, target.loop).result(30)


def edited(target: RunningTarget) -> TargetConfig:
    """A copy of the running configuration to edit (the running one is never touched)."""
    return copy.deepcopy(target.service.config)


def reload(target: RunningTarget, cfg: TargetConfig) -> ReloadReport:
    """Reload with a copy of ``cfg`` (as a reload loads a fresh one from its file), so the test
    may go on editing ``cfg``."""
    return call(target, target.service.reload(copy.deepcopy(cfg)))


def sub_of(cfg: TargetConfig, nqn: str = SUBNQN) -> Any:
    return next(s for s in cfg.subsystems if s.nqn == nqn)


def armed(target: RunningTarget) -> RawHost:
    """An admin queue that enabled Namespace Attribute Notices and has an AER outstanding,
    as the Linux host's does."""
    host = admin(target)
    assert status_of(set_features(host, FeatureId.ASYNC_EVENT, AEC_NS_ATTR)).ok
    host.send(host.conn.capsule_cmd(aer_sqe(host).encode()))
    assert nothing_pending(host)
    return host


def changed_log(host: RawHost, *, rae: bool = False) -> list[int]:
    _, page = get_log(host, LogPageId.CHANGED_NS | (RAE if rae else 0), 4096)
    return ChangedNamespaceList.decode(page).nsids


def add_namespace(cfg: TargetConfig, nsid: int, size: int) -> None:
    sub_of(cfg).namespaces.append(Namespace(nsid=nsid, media=NamespaceMedia(kind="ram", size=size)))


# -- status ------------------------------------------------------------------------------------


def test_status_shows_the_connected_controller_its_queues_and_counts(
    target: RunningTarget,
) -> None:
    host = admin(target)
    q = io_queue(target, host)
    data = os.urandom(4096)
    for _ in range(3):
        assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 8, 4096), data)).ok
    status = call(target, target.service.status())
    (port,) = status["ports"]
    assert (port["traddr"], int(port["trsvcid"])) == target.addr
    sub = next(s for s in status["subsystems"] if s["nqn"] == SUBNQN)
    assert [ns["nsid"] for ns in sub["namespaces"]] == [1, 2]
    assert sub["namespaces"][1]["size"] == 8 << 20 and sub["namespaces"][1]["block_size"] == 4096
    (ctrl,) = sub["controllers"]
    assert ctrl["cntlid"] == host.cntlid and ctrl["hostnqn"] == HOSTNQN
    local = host.sock.getsockname()
    assert ctrl["address"].endswith(str(local[1])) and local[0] in ctrl["address"]
    queues = {q["qid"]: q for q in ctrl["queues"]}
    assert set(queues) == {0, 1}
    assert queues[0]["size"] == 32 and queues[1]["size"] == 128  # SQSIZE 31 and 127, 0's based
    assert queues[0]["worker"] == "control"
    workers = target.service.workers
    if workers is None:
        assert queues[1]["worker"] == "control"
    else:
        assert queues[1]["worker"] in (0, 1)
        assert len(status["workers"]) == 2
        serving = next(w for w in status["workers"] if w["worker"] == queues[1]["worker"])
        assert serving["commands"] >= 3
        assert serving["namespaces"][f"{SUBNQN}/1"]["write_cmds"] == 3
    assert queues[1]["commands"] == 4  # Connect and three writes, wherever they ran
    assert queues[0]["commands"] >= 2  # Connect, Property Set (CC.EN)


# -- namespaces --------------------------------------------------------------------------------


def test_added_namespace_is_announced_and_served_without_reconnecting(
    target: RunningTarget,
) -> None:
    host = armed(target)
    q = io_queue(target, host)
    cfg = edited(target)
    add_namespace(cfg, 3, 4 << 20)
    report = reload(target, cfg)
    assert report.namespaces_added == [f"{SUBNQN}/3"] and report.notices_sent == 1
    assert (
        report.summary() == f"namespaces added {SUBNQN}/3; namespace change notice to 1 controller"
    )
    cqe, _ = host.wait_response()
    assert status_of(cqe).ok and cqe.dw0 == AEN_NS_CHANGED == 0x040002
    assert changed_log(host) == [3]
    _, data = identify(host, 2)
    assert NamespaceList.decode(data).nsids == [1, 2, 3]
    _, data = identify(host, 0, nsid=3)
    assert IdentifyNamespace.decode(data).nsze == (4 << 20) // 512
    # The same I/O queue (in its worker, with the two-worker target) serves the new namespace.
    data = os.urandom(8192)
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 3, 10, 16, 8192), data)).ok
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 3, 10, 16, 8192))
    assert status_of(cqe).ok and back == data
    # Namespace 1 kept its data and its medium.
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 1, 512), data[:512])).ok


def test_removed_and_resized_namespaces_are_announced(target: RunningTarget) -> None:
    host = armed(target)
    q = io_queue(target, host)
    cfg = edited(target)
    sub = sub_of(cfg)
    sub.namespaces = [ns for ns in sub.namespaces if ns.nsid != 2]
    sub.namespaces[0].media.size = 128 << 20
    report = reload(target, cfg)
    assert report.namespaces_removed == [f"{SUBNQN}/2"]
    assert report.namespaces_changed == [f"{SUBNQN}/1"]
    cqe, _ = host.wait_response()
    assert cqe.dw0 == AEN_NS_CHANGED
    assert changed_log(host) == [1, 2]
    _, data = identify(host, 2)
    assert NamespaceList.decode(data).nsids == [1]
    _, data = identify(host, 0, nsid=1)
    assert IdentifyNamespace.decode(data).nsze == (128 << 20) // 512
    cqe = q.command(rw(q.next_cid(), IoOpcode.READ, 2, 0, 1, 4096))
    assert is_status(cqe, SC.INVALID_NS)
    # The grown namespace takes I/O beyond its old end.
    data = os.urandom(512)
    lba = (100 << 20) // 512
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, lba, 1, 512), data)).ok


def test_disabled_namespace_is_removed(target: RunningTarget) -> None:
    host = armed(target)
    cfg = edited(target)
    sub_of(cfg).namespaces[1].enable = False
    assert reload(target, cfg).namespaces_removed == [f"{SUBNQN}/2"]
    cqe, _ = host.wait_response()
    assert cqe.dw0 == AEN_NS_CHANGED
    _, data = identify(host, 2)
    assert NamespaceList.decode(data).nsids == [1]


def test_one_notice_until_the_log_is_read_without_rae(target: RunningTarget) -> None:
    """After a Namespace Attribute Changed event the controller sends no other until the host
    reads log page 04h with RAE clear (Base 2.0 §5.2; nvmet's aen_masked)."""
    host = armed(target)
    host.send(host.conn.capsule_cmd(aer_sqe(host).encode()))  # a second AER outstanding
    cfg = edited(target)
    add_namespace(cfg, 3, 1 << 20)
    reload(target, cfg)
    cqe, _ = host.wait_response()
    assert cqe.dw0 == AEN_NS_CHANGED
    add_namespace(cfg, 4, 1 << 20)
    assert reload(target, cfg).notices_sent == 0  # masked: the page was not read yet
    assert nothing_pending(host)
    assert changed_log(host, rae=True) == [3, 4]  # RAE set: still masked
    add_namespace(cfg, 5, 1 << 20)
    assert reload(target, cfg).notices_sent == 0
    assert changed_log(host) == [5]  # RAE clear: unmasked
    add_namespace(cfg, 6, 1 << 20)
    assert reload(target, cfg).notices_sent == 1
    cqe, _ = host.wait_response()
    assert cqe.dw0 == AEN_NS_CHANGED
    assert changed_log(host) == [6]


def test_no_notice_unless_the_host_enabled_it(target: RunningTarget) -> None:
    host = admin(target)
    host.send(host.conn.capsule_cmd(aer_sqe(host).encode()))
    cfg = edited(target)
    add_namespace(cfg, 3, 1 << 20)
    assert reload(target, cfg).notices_sent == 0
    assert nothing_pending(host)
    assert changed_log(host) == [3]  # the list is kept all the same


def test_a_medium_that_cannot_open_changes_nothing(target: RunningTarget, tmp_path: Any) -> None:
    host = armed(target)
    cfg = edited(target)
    add_namespace(cfg, 3, 1 << 20)
    missing = tmp_path / "no-such-dir" / "ns.img"
    sub_of(cfg).namespaces.append(Namespace(nsid=4, path=str(missing)))
    with pytest.raises(ReloadError, match="no-such-dir"):
        reload(target, cfg)
    assert nothing_pending(host)
    _, data = identify(host, 2)
    assert NamespaceList.decode(data).nsids == [1, 2]
    assert len(sub_of(target.service.config).namespaces) == 2


# -- hosts, subsystems, ports ------------------------------------------------------------------


def test_a_host_removed_from_allowed_hosts_loses_its_controller(target: RunningTarget) -> None:
    host = RawHost(target.addr)
    host.initialize()
    assert status_of(host.connect(LOCKED_NQN, hostnqn=ALLOWED_HOST)).ok
    cfg = edited(target)
    sub_of(cfg, LOCKED_NQN).allowed_hosts = []
    assert reload(target, cfg).controllers_deleted == 1
    assert host.is_closed()
    again = RawHost(target.addr)
    again.initialize()
    assert is_status(again.connect(LOCKED_NQN, hostnqn=ALLOWED_HOST), SC.CONNECT_INVALID_HOST)


def test_a_host_added_to_allowed_hosts_may_connect(target: RunningTarget) -> None:
    cfg = edited(target)
    sub_of(cfg, LOCKED_NQN).allowed_hosts.append(HOSTNQN)
    reload(target, cfg)
    host = RawHost(target.addr)
    host.initialize()
    assert status_of(host.connect(LOCKED_NQN)).ok


def test_ports_added_and_removed_keep_other_connections(target: RunningTarget) -> None:
    host = admin(target)
    q = io_queue(target, host)
    cfg = edited(target)
    cfg.ports.append(Port(portid=2, trsvcid="0", subsystems=[SUBNQN]))
    report = reload(target, cfg)
    assert report.ports_added == [2]
    port2 = target.service.ports[1]
    addr2 = target.service.transports["tcp"].bound_address(port2)
    other = RawHost(addr2)
    other.initialize()
    assert status_of(other.connect(SUBNQN)).ok
    cfg.ports = cfg.ports[:1]
    assert reload(target, cfg).ports_removed == [2]
    assert other.is_closed()
    # The first port's host never noticed.
    data = os.urandom(512)
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 1, 512), data)).ok


def test_a_port_of_a_transport_the_target_lacks_is_left_to_the_kernel(
    target: RunningTarget,
) -> None:
    """A reloaded file may name a port of a transport this target does not have (nvmetcli
    saves fc ports): it is the kernel target's, as at start; the reload applies the rest
    instead of failing on it."""
    host = admin(target)
    cfg = edited(target)
    cfg.ports.append(
        Port(
            portid=2,
            trtype="fc",
            adrfam="fc",
            traddr="nn-0x1000000044001123:pn-0x2000000055001123",
            trsvcid="none",
            subsystems=[SUBNQN],
        )
    )
    report = reload(target, cfg)
    assert report.ports_added == []
    assert [p.trtype for p in target.service.ports] == ["tcp"]
    assert "fc" not in target.service.transports
    assert status_of(host.prop_get(0x1C)).ok  # CSTS: the admin queue still serves


def test_an_rdma_port_with_no_rdma_device_fails_the_reload_naming_the_port(
    target: RunningTarget,
) -> None:
    """rdma ports are this target's now: one on an address no RDMA device has (this machine
    has none) cannot listen, and the reload says which port and why, changing nothing."""
    host = admin(target)
    cfg = edited(target)
    cfg.ports.append(
        Port(portid=2, trtype="rdma", traddr="10.99.0.1", trsvcid="4420", subsystems=[SUBNQN])
    )
    with pytest.raises(ReloadError, match=r"port 2: cannot listen with RDMA CM on 10\.99\.0\.1"):
        reload(target, cfg)
    assert [p.trtype for p in target.service.ports] == ["tcp"]
    assert status_of(host.prop_get(0x1C)).ok


def _discovery_host(target: RunningTarget, hostnqn: str) -> RawHost:
    """A discovery controller for ``hostnqn`` with Discovery Log Page Change notices enabled
    and an Asynchronous Event Request outstanding."""
    disc = RawHost(target.addr)
    disc.initialize()
    assert status_of(disc.connect(DISC, hostnqn=hostnqn)).ok
    disc.enable()
    assert status_of(set_features(disc, FeatureId.ASYNC_EVENT, 1 << 31)).ok
    disc.send(disc.conn.capsule_cmd(aer_sqe(disc).encode()))
    return disc


def test_unexporting_a_subsystem_deletes_its_controllers_and_tells_discovery(
    target: RunningTarget,
) -> None:
    """The host whose discovery log loses the subsystem is told (Discovery Log Page Change);
    a host that was never allowed to see it reads the same log as before and is not, as
    Linux's nvmet skips hosts the subsystem does not allow."""
    seer = _discovery_host(target, ALLOWED_HOST)
    other = _discovery_host(target, HOSTNQN)
    locked = RawHost(target.addr)
    locked.initialize()
    assert status_of(locked.connect(LOCKED_NQN, hostnqn=ALLOWED_HOST)).ok
    genctr = target.service.genctr
    cfg = edited(target)
    cfg.ports[0].subsystems = [SUBNQN]
    report = reload(target, cfg)
    assert report.controllers_deleted == 1
    assert report.discovery_changed and report.discovery_notices_sent == 1
    assert "discovery log changed, notice to 1 controller" in report.summary()
    assert locked.is_closed()
    cqe, _ = seer.wait_response()
    assert cqe.dw0 == AEN_DISC_CHANGED == 0x70F002
    assert target.service.genctr == genctr + 1
    assert nothing_pending(other)


def test_discovery_change_notices_wait_for_the_log_to_be_read(target: RunningTarget) -> None:
    """After a Discovery Log Page Change notice, no other is sent until the host reads the
    discovery log with RAE clear (Base 2.0 §5.2; nvmet's aen_masked); reading it with RAE set
    keeps them masked."""
    disc = _discovery_host(target, ALLOWED_HOST)
    cfg = edited(target)
    exported = list(cfg.ports[0].subsystems)
    for i in range(2):  # the first notice, then none though the log changed again
        cfg.ports[0].subsystems = [SUBNQN] if i % 2 == 0 else exported
        assert reload(target, cfg).discovery_notices_sent == (i == 0)
        if i == 0:
            assert disc.wait_response()[0].dw0 == AEN_DISC_CHANGED
            disc.send(disc.conn.capsule_cmd(aer_sqe(disc).encode()))
    assert nothing_pending(disc)
    cqe, _ = get_log(disc, LogPageId.DISC | RAE, 1024)
    assert status_of(cqe).ok
    cfg.ports[0].subsystems = [SUBNQN]
    reload(target, cfg)
    assert nothing_pending(disc)  # RAE set: still masked
    cqe, _ = get_log(disc, LogPageId.DISC, 1024)
    assert status_of(cqe).ok
    cfg.ports[0].subsystems = exported
    reload(target, cfg)
    assert disc.wait_response()[0].dw0 == AEN_DISC_CHANGED  # read with RAE clear: unmasked


def test_removed_subsystem_goes_and_added_one_serves(target: RunningTarget) -> None:
    host = admin(target)
    cfg = edited(target)
    new = copy.deepcopy(sub_of(cfg, LOCKED_NQN))
    new.nqn = "nqn.2024-01.io.nvmf:added"
    new.allow_any_host, new.allowed_hosts = True, []
    cfg.subsystems = [sub_of(cfg, LOCKED_NQN), new]
    cfg.ports[0].subsystems = [LOCKED_NQN, new.nqn]
    report = reload(target, cfg)
    assert report.subsystems_removed == [SUBNQN] and report.subsystems_added == [new.nqn]
    assert host.is_closed()
    other = RawHost(target.addr)
    other.initialize()
    assert status_of(other.connect(new.nqn)).ok
    other.enable()
    q = RawHost(target.addr)
    q.initialize()
    cqe = q.connect(new.nqn, qid=1, cntlid=other.cntlid, sqsize=127)
    assert status_of(cqe).ok
    data = os.urandom(512)
    assert status_of(q.command(rw(q.next_cid(), IoOpcode.WRITE, 1, 0, 1, 512), data)).ok
    cqe, back = q.command_data(rw(q.next_cid(), IoOpcode.READ, 1, 0, 1, 512))
    assert back == data


def test_settings_changes_wait_for_a_restart(target: RunningTarget) -> None:
    cfg = edited(target)
    cfg.nvmf.queue_depth = 64
    report = reload(target, cfg)
    assert report.settings_kept == ["nvmf.queue_depth"]
    assert target.service.config.nvmf.queue_depth == 128
    assert "restart needed for nvmf.queue_depth" in report.summary()
