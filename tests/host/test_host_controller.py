"""Controller bring-up, admin commands, keep alive, shutdown and discovery against the fake
controller on a loopback listener: the command sequence and its fields are the Linux host's."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from nvmf.host import ConnectOptions, connect, connect_with, discover
from nvmf.host.controller import CC_ENABLE
from nvmf.host.errors import NvmeError
from nvmf.host.identity import UUID_NQN_PREFIX, default_hostid
from nvmf.wire.fabrics import CC, CSTS, Prop, PropertyCommand
from nvmf.wire.opcodes import AdminOpcode, FabricsType, FeatureId, IoOpcode
from nvmf.wire.sqe import SGL_INCAPSULE
from nvmf.wire.status import SC
from tests.host.fake import BLOCK, FakeConfig, FakeController

T = TypeVar("T")
HOSTNQN = f"{UUID_NQN_PREFIX}0b5e1f3a-1111-4222-8333-444455556666"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def _admin_sequence(fake: FakeController) -> list[str]:
    """The admin queue's commands by name, Property Get/Set with the property."""
    names = []
    for s in fake.seen:
        if s.qid not in (None, 0):
            continue
        if s.sqe.opcode == AdminOpcode.FABRICS:
            raw = s.sqe.encode()
            fctype = raw[4]
            if fctype == FabricsType.CONNECT:
                names.append("Connect")
            else:
                prop = Prop(PropertyCommand.decode(raw).offset).name
                kind = "Get" if fctype == FabricsType.PROPERTY_GET else "Set"
                names.append(f"Property {kind} {prop}")
        else:
            names.append(AdminOpcode(s.sqe.opcode).name)
    return names


def test_bring_up_follows_the_linux_host_sequence() -> None:
    async def main() -> None:
        fake = FakeController()
        port = await fake.listen()
        ctrl = await connect(
            "127.0.0.1", fake.config.subnqn, trsvcid=port, hostnqn=HOSTNQN, nr_io_queues=3,
            queue_size=64, kato=7,
        )  # fmt: skip
        seq = _admin_sequence(fake)
        assert seq[:3] == ["Connect", "Property Get CAP", "Property Set CC"]
        assert seq[3] == "Property Get CSTS"
        assert seq[4:6] == ["IDENTIFY", "SET_FEATURES"]
        assert fake.cc == CC_ENABLE == 0x460001
        admin_connect, admin_data = fake.connects[0]
        assert (admin_connect.qid, admin_connect.sqsize, admin_connect.kato) == (0, 31, 7000)
        assert admin_data.cntlid == 0xFFFF and admin_data.hostnqn == HOSTNQN
        assert admin_data.subsysnqn == fake.config.subnqn
        assert uuid.UUID(bytes=admin_data.hostid) == default_hostid(HOSTNQN)
        # Connect data rides in the capsule on the admin queue and on I/O queues
        connects = [s for s in fake.seen if s.sqe.opcode == AdminOpcode.FABRICS and s.incapsule]
        assert len(connects) == 4 and all(s.sqe.sgl.type_byte == SGL_INCAPSULE for s in connects)
        (numq,) = fake.commands(AdminOpcode.SET_FEATURES)
        assert numq.sqe.cdw10 & 0xFF == FeatureId.NUM_QUEUES and numq.sqe.cdw11 == 0x00020002
        io = fake.connects[1:]
        assert [cmd.qid for cmd, _ in io] == [1, 2, 3]
        assert all(cmd.sqsize == 63 and cmd.kato == 0 for cmd, _ in io)
        assert all(data.cntlid == fake.cntlid == ctrl.cntlid for _, data in io)
        assert ctrl.id_ctrl is not None and ctrl.id_ctrl.mn == fake.config.model
        assert ctrl.io_incapsule_size == 8192 and ctrl.max_transfer == 1 << 20
        await ctrl.close()
        assert fake.cc & CC.SHN_MASK == CC.SHN_NORMAL
        assert fake.csts & CSTS.SHST_MASK == CSTS.SHST_CMPLT
        assert _admin_sequence(fake)[-2:] == ["Property Set CC", "Property Get CSTS"]
        await fake.close()

    run(main())


def test_io_queue_count_is_min_of_wanted_and_granted() -> None:
    async def main() -> None:
        fake = FakeController(FakeConfig(granted_queues=2, mqes=15))
        port = await fake.listen()
        async with await connect(
            "127.0.0.1", fake.config.subnqn, trsvcid=port, nr_io_queues=6, queue_size=128
        ) as ctrl:
            assert ctrl.granted_io_queues == 2 and len(ctrl.io_queues) == 2
            # the queue size is clamped to CAP.MQES + 1
            assert [cmd.sqsize for cmd, _ in fake.connects[1:]] == [15, 15]
            assert all(q.depth == 15 for q in ctrl.io_queues)
        await fake.close()

    run(main())


def test_keep_alive_sent_every_half_kato() -> None:
    async def main() -> None:
        fake = FakeController()
        port = await fake.listen()
        async with await connect(
            "127.0.0.1", fake.config.subnqn, trsvcid=port, nr_io_queues=1, kato=0.2
        ):
            await asyncio.sleep(0.55)
            assert 4 <= fake.keep_alives <= 6
        await fake.close()

    run(main())


def test_io_api_round_trip_and_splitting_above_mdts() -> None:
    async def main() -> None:
        # MDTS 2: 16 KiB per command, so a 64 KiB write is four commands
        fake = FakeController(FakeConfig(mdts=2))
        port = await fake.listen()
        async with await connect(
            "127.0.0.1", fake.config.subnqn, trsvcid=port, nr_io_queues=2
        ) as ctrl:
            assert ctrl.max_transfer == 16384
            data = os.urandom(65536)
            await ctrl.write(1, 10, 128, data, fua=True)
            writes = fake.commands(IoOpcode.WRITE)
            assert [(w.sqe.slba, w.sqe.nlb + 1) for w in writes] == [
                (10, 32), (42, 32), (74, 32), (106, 32)
            ]  # fmt: skip
            assert all(w.sqe.fua for w in writes)
            assert bytes(await ctrl.read(1, 10, 128)) == data
            assert await ctrl.read(1, 10, 8, fua=True) == data[:4096]
            assert fake.commands(IoOpcode.READ)[-1].sqe.fua
            assert await ctrl.compare(1, 10, 8, data[:4096])
            assert not await ctrl.compare(1, 10, 8, bytes(4096))
            await ctrl.write_zeroes(1, 10, 8)
            assert fake.data[10 * BLOCK : 18 * BLOCK] == bytes(4096)
            await ctrl.deallocate(1, [(18, 8), (40, 2)])
            assert fake.data[18 * BLOCK : 26 * BLOCK] == bytes(4096)
            await ctrl.flush(1)
            with pytest.raises(ValueError, match="outside namespace"):
                await ctrl.read(1, fake.config.nsze - 1, 2)
            with pytest.raises(ValueError, match="buffer is"):
                await ctrl.write(1, 0, 2, b"short")
            assert await ctrl.active_namespaces() == [1]
            geo = await ctrl.namespace(1)
            assert (geo.block_size, geo.nsze) == (512, fake.config.nsze)
            with pytest.raises(NvmeError) as info:
                await ctrl.get_features(FeatureId.ARBITRATION)
            assert info.value.code == SC.INVALID_OPCODE
        await fake.close()

    run(main())


def test_discovery_rereads_when_genctr_changes() -> None:
    async def main() -> None:
        fake = FakeController(FakeConfig(genctr_bumps=1))
        port = await fake.listen()
        log = await discover("127.0.0.1", port, HOSTNQN)
        assert log.genctr == 6 and log.numrec == 1
        assert log.entries[0].subnqn == fake.config.subnqn
        reads = fake.commands(AdminOpcode.GET_LOG_PAGE)
        # header, entries, header (GENCTR changed), then header, entries, header again
        offsets = [r.sqe.cdw12 for r in reads]
        assert offsets == [0, 1024, 0, 0, 1024, 0]
        assert all(r.sqe.cdw10 & 0xFF == 0x70 for r in reads)
        connect_cmd, data = fake.connects[0]
        assert data.subsysnqn == "nqn.2014-08.org.nvmexpress.discovery"
        assert connect_cmd.kato == 0
        assert len(fake.connects) == 1  # no I/O queues
        await fake.close()

    run(main())


def test_connect_refused_is_a_transport_error() -> None:
    async def main() -> None:
        fake = FakeController()
        port = await fake.listen()
        await fake.close()
        await asyncio.sleep(0.05)
        opts = ConnectOptions("127.0.0.1", "nqn.x", trsvcid=port, timeout=2)
        with pytest.raises(ConnectionError, match="cannot connect"):
            await connect_with(opts)

    run(main())
