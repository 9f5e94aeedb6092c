"""Controller registers (CC writes and their CSTS effects) and the Keep Alive Timer.

Spec: NVMe Base 2.0 §3.5.1 (initialization: EN 0->1 sets CSTS.RDY), §3.6 (shutdown: SHN set ->
CSTS.SHST = 10b), Figure 41/42; the Linux target's ``nvmet_update_cc``/``nvmet_start_ctrl``
(unsupported IOSQES/IOCQES/MPS/AMS/CSS -> CSTS.CFS; shutdown clears RDY).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nvmf.protocol.controller import (
    NVM_IOCQES,
    NVM_IOSQES,
    CcEffect,
    ControllerRegisters,
    KeepAlive,
)
from nvmf.wire.fabrics import CC, CSTS, Cap

CAP = Cap(mqes=127, mpsmin=0, mpsmax=0).encode()
GOOD = (6 << 16) | (4 << 20)  # IOSQES 64 B, IOCQES 16 B, MPS 4 KiB, AMS RR, CSS NVM


def regs(cap: int = CAP) -> ControllerRegisters:
    return ControllerRegisters(cap=cap, vs=0x10300)


def shst(r: ControllerRegisters) -> int:
    return r.csts & CSTS.SHST_MASK


def test_nvm_entry_sizes() -> None:
    assert (NVM_IOSQES, NVM_IOCQES) == (6, 4)


def test_enable_with_supported_configuration() -> None:
    r = regs()
    assert r.write_cc(GOOD) is CcEffect.NONE  # configuration without EN
    assert r.csts == 0 and r.cc == GOOD
    assert r.write_cc(GOOD | CC.EN) is CcEffect.ENABLED
    assert r.ready and r.csts == CSTS.RDY
    # Writing EN=1 again changes nothing.
    assert r.write_cc(GOOD | CC.EN) is CcEffect.NONE
    assert r.csts == CSTS.RDY


@pytest.mark.parametrize(
    ("what", "cc"),
    [
        ("iosqes 7", (7 << 16) | (4 << 20)),
        ("iosqes 0", 4 << 20),
        ("iocqes 5", (6 << 16) | (5 << 20)),
        ("iocqes 0", 6 << 16),
        ("mps 1 (8 KiB) above mpsmax", GOOD | (1 << 7)),
        ("ams weighted round robin", GOOD | (1 << 11)),
        ("ams vendor specific", GOOD | (7 << 11)),
        ("css admin only", GOOD | (7 << 4)),
        ("css 1 reserved", GOOD | (1 << 4)),
    ],
)
def test_enable_with_unsupported_configuration_sets_cfs(what: str, cc: int) -> None:
    r = regs()
    assert r.write_cc(cc | CC.EN) is CcEffect.ENABLE_FAILED, what
    assert r.csts & CSTS.CFS and not r.ready
    # Disabling clears CFS; a good configuration then enables.
    assert r.write_cc(cc) is CcEffect.DISABLED
    assert r.csts == 0
    assert r.write_cc(GOOD | CC.EN) is CcEffect.ENABLED


def test_mps_within_cap_range() -> None:
    r = regs(Cap(mqes=127, mpsmin=0, mpsmax=4).encode())
    assert r.write_cc(GOOD | (4 << 7) | CC.EN) is CcEffect.ENABLED
    r = regs(Cap(mqes=127, mpsmin=1, mpsmax=4).encode())
    assert r.write_cc(GOOD | CC.EN) is CcEffect.ENABLE_FAILED  # MPS 0 below MPSMIN


def test_disable_clears_ready() -> None:
    r = regs()
    r.write_cc(GOOD | CC.EN)
    assert r.write_cc(GOOD) is CcEffect.DISABLED
    assert r.csts == 0 and not r.ready


@pytest.mark.parametrize("shn", [CC.SHN_NORMAL, CC.SHN_ABRUPT, CC.SHN_MASK])
def test_shutdown_completes_and_clears_ready(shn: int) -> None:
    r = regs()
    r.write_cc(GOOD | CC.EN)
    assert r.write_cc(GOOD | CC.EN | shn) is CcEffect.SHUTDOWN
    assert shst(r) == CSTS.SHST_CMPLT and not r.ready
    # A second write with SHN still set is not a new shutdown.
    assert r.write_cc(GOOD | CC.EN | shn) is CcEffect.NONE
    assert shst(r) == CSTS.SHST_CMPLT
    # Clearing SHN clears SHST.
    assert r.write_cc(GOOD | CC.EN) is CcEffect.NONE
    assert shst(r) == 0


def test_shutdown_then_disable_then_enable_again() -> None:
    """The Linux host's sequence: shutdown, then (reset) EN=0, then EN=1."""
    r = regs()
    r.write_cc(GOOD | CC.EN)
    r.write_cc(GOOD | CC.EN | CC.SHN_NORMAL)
    assert r.write_cc(GOOD) is CcEffect.DISABLED
    assert r.csts == 0
    assert r.write_cc(GOOD | CC.EN) is CcEffect.ENABLED
    assert r.csts == CSTS.RDY


def test_cc_is_stored_as_32_bits() -> None:
    r = regs()
    r.write_cc((1 << 40) | GOOD)
    assert r.cc == GOOD


# -- rule-based: any sequence of CC writes keeps CSTS consistent ------------------------------

cc_values = st.builds(
    lambda en, css, mps, ams, shn, sq, cq: (
        en | css << 4 | mps << 7 | ams << 11 | shn << 14 | sq << 16 | cq << 20
    ),
    st.integers(0, 1),
    st.sampled_from([0, 0, 0, 1, 6, 7]),
    st.sampled_from([0, 0, 0, 1, 15]),
    st.sampled_from([0, 0, 0, 1, 7]),
    st.integers(0, 3),
    st.sampled_from([6, 6, 6, 0, 7, 15]),
    st.sampled_from([4, 4, 4, 0, 5, 15]),
)


def supported(cc: int) -> bool:
    return (
        CC.iosqes(cc) == 6
        and CC.iocqes(cc) == 4
        and CC.mps(cc) == 0
        and CC.ams(cc) == 0
        and CC.css(cc) == 0
    )


class CcWrites(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.r = regs()

    @rule(value=cc_values)
    def write(self, value: int) -> None:
        old = self.r.cc
        before = self.r.csts
        effect = self.r.write_cc(value)
        en_rise = bool(value & CC.EN) and not old & CC.EN
        en_fall = bool(old & CC.EN) and not value & CC.EN
        shn_rise = bool(CC.shn(value)) and not CC.shn(old)
        csts = self.r.csts
        assert self.r.cc == value
        if shn_rise:
            assert effect is CcEffect.SHUTDOWN
            assert csts & CSTS.SHST_MASK == CSTS.SHST_CMPLT and not csts & CSTS.RDY
        elif en_rise:
            if supported(value):
                assert effect is CcEffect.ENABLED and csts & CSTS.RDY
                assert not csts & CSTS.CFS
            else:
                assert effect is CcEffect.ENABLE_FAILED and csts & CSTS.CFS
                assert not csts & CSTS.RDY
        elif en_fall:
            assert effect is CcEffect.DISABLED
            assert not csts & (CSTS.RDY | CSTS.CFS | CSTS.SHST_MASK)
        else:
            assert effect is CcEffect.NONE
            if CC.shn(value) or not CC.shn(old):
                assert csts == before  # nothing moved
            else:
                assert csts == before & ~CSTS.SHST_MASK  # SHN cleared: SHST cleared

    @precondition(lambda self: self.r.ready)
    @rule()
    def disable(self) -> None:
        assert self.r.write_cc(self.r.cc & ~CC.EN) is CcEffect.DISABLED
        assert self.r.csts == 0

    @invariant()
    def ready_implies_enabled(self) -> None:
        if self.r.csts & CSTS.RDY:
            assert self.r.cc & CC.EN

    @invariant()
    def never_ready_and_fatal(self) -> None:
        assert self.r.csts & (CSTS.RDY | CSTS.CFS) != (CSTS.RDY | CSTS.CFS)

    @invariant()
    def fatal_implies_enabled(self) -> None:
        if self.r.csts & CSTS.CFS:
            assert self.r.cc & CC.EN

    @invariant()
    def shst_is_none_or_complete_and_follows_shn(self) -> None:
        """SHST is 00b or 10b (shutdown is instantaneous) and only while SHN is set.

        RDY may be set alongside SHST = 10b only if the host set SHN on a disabled controller
        and then set EN without clearing SHN: the spec leaves commands after a shutdown without
        an EN 1->0 reset undefined (Base 2.0 §3.6.1), so that is not checked here.
        """
        status = self.r.csts & CSTS.SHST_MASK
        assert status in (0, CSTS.SHST_CMPLT)
        if status:
            assert CC.shn(self.r.cc)

    @invariant()
    def only_known_bits(self) -> None:
        assert self.r.csts & ~(CSTS.RDY | CSTS.CFS | CSTS.SHST_MASK) == 0


CcWrites.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
TestCcWrites = CcWrites.TestCase


# -- Keep Alive --------------------------------------------------------------------------------


def test_keep_alive_zero_never_expires() -> None:
    ka = KeepAlive(0, last=100.0)
    for now in (100.0, 101.0, 1e9):
        assert not ka.expired(now)


def test_keep_alive_expiry_and_remaining() -> None:
    ka = KeepAlive(1500, last=10.0)
    assert not ka.expired(10.0)
    assert not ka.expired(11.5)  # exactly KATO: not yet
    assert ka.expired(11.5 + 1 / 1024)
    assert ka.remaining(10.0) == pytest.approx(1.5)
    assert ka.remaining(11.0) == pytest.approx(0.5)
    assert ka.remaining(12.0) == 0.0
    ka.touch(12.0)  # a command arrived: the timer restarts
    assert not ka.expired(13.0) and ka.remaining(13.0) == pytest.approx(0.5)
    assert ka.last == 12.0


def test_keep_alive_remote_traffic_restarts_the_timer_on_any_change() -> None:
    """Commands counted in the workers: a rise is traffic, and so is a fall (a queue closed and
    took its count with it); the same count is none, and the timer runs on."""
    ka = KeepAlive(1000, last=0.0)
    ka.remote_traffic(0, now=1.5)
    assert ka.expired(1.5) and ka.last == 0.0
    ka.remote_traffic(40, now=1.5)
    assert ka.last == 1.5 and not ka.expired(2.0)
    ka.remote_traffic(40, now=2.6)
    assert ka.last == 1.5 and ka.expired(2.6)
    ka.remote_traffic(12, now=2.6)
    assert ka.last == 2.6 and ka.remote_commands == 12


@given(
    kato=st.integers(1, 3_600_000),
    last=st.integers(0, 1 << 30),
    elapsed=st.integers(0, 1 << 32),
)
def test_keep_alive_arithmetic(kato: int, last: int, elapsed: int) -> None:
    """Times in 1/1024 s steps (exact in binary floating point)."""
    ka = KeepAlive(kato, last=last / 1024)
    now = (last + elapsed) / 1024
    expired = elapsed * 1000 > kato * 1024
    assert ka.expired(now) is expired
    remaining = ka.remaining(now)
    assert remaining >= 0.0
    if expired:
        assert remaining == 0.0
    else:
        assert remaining == pytest.approx(kato / 1000 - elapsed / 1024, abs=1e-6)


def test_enable_after_shutdown_clears_the_shutdown_status() -> None:
    """Linux's nvmet_start_ctrl sets CSTS to RDY alone: no stale SHST after a re-enable."""
    from nvmf.protocol.controller import ControllerRegisters as Regs
    from nvmf.wire.fabrics import CC as CCBits
    from nvmf.wire.fabrics import CSTS as CstsBits

    cap = 127 | (1 << 37)
    regs = Regs(cap=cap, vs=0x10300)
    regs.write_cc(CCBits.SHN_NORMAL)
    assert regs.csts & CstsBits.SHST_MASK == CstsBits.SHST_CMPLT
    regs.write_cc(CCBits.SHN_NORMAL | CCBits.EN | (6 << 16) | (4 << 20))
    assert regs.csts & CstsBits.RDY and not regs.csts & CstsBits.SHST_MASK
