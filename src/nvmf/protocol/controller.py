"""Sans-IO controller register state machine and keep-alive timer (Base 2.0 §3.5, §3.9).

:class:`ControllerRegisters` holds CAP, VS, CC and CSTS and applies a host's CC writes the way
the spec's initialization and shutdown sequences require: EN rising with a supported
configuration sets CSTS.RDY (an unsupported one sets CSTS.CFS); EN falling resets the controller;
SHN set completes the shutdown (CSTS.SHST = 10b).  It returns what the owner must do.

:class:`KeepAlive` is the Keep Alive Timer as pure arithmetic over timestamps the owner passes
in: with Traffic Based Keep Alive any command restarts it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nvmf.wire.fabrics import CC, CSTS

#: I/O SQ/CQ entry sizes (2^n) the NVM command set uses: 64-byte SQEs, 16-byte CQEs.
NVM_IOSQES = 6
NVM_IOCQES = 4


class CcEffect(enum.Enum):
    NONE = "none"
    ENABLED = "enabled"
    ENABLE_FAILED = "enable-failed"
    DISABLED = "disabled"
    SHUTDOWN = "shutdown"


@dataclass
class ControllerRegisters:
    """CAP, VS, CC, CSTS of one controller."""

    cap: int
    vs: int
    cc: int = 0
    csts: int = 0

    @property
    def ready(self) -> bool:
        return bool(self.csts & CSTS.RDY)

    def _config_supported(self, cc: int) -> bool:
        mpsmin = self.cap >> 48 & 0xF
        mpsmax = self.cap >> 52 & 0xF
        return (
            CC.iosqes(cc) == NVM_IOSQES
            and CC.iocqes(cc) == NVM_IOCQES
            and mpsmin <= CC.mps(cc) <= mpsmax
            and CC.ams(cc) == 0
            and CC.css(cc) == 0
        )

    def write_cc(self, value: int) -> CcEffect:
        """Apply a Property Set of CC; return the transition the controller must carry out."""
        old, self.cc = self.cc, value & 0xFFFFFFFF
        effect = CcEffect.NONE
        if value & CC.EN and not old & CC.EN:
            if self._config_supported(value):
                # A fresh enable: ready, and any earlier shutdown status is gone.
                self.csts = (self.csts & ~CSTS.SHST_MASK) | CSTS.RDY
                effect = CcEffect.ENABLED
            else:
                self.csts |= CSTS.CFS
                effect = CcEffect.ENABLE_FAILED
        elif old & CC.EN and not value & CC.EN:
            self.csts &= ~(CSTS.RDY | CSTS.CFS | CSTS.SHST_MASK)
            effect = CcEffect.DISABLED
        if CC.shn(value) and not CC.shn(old):
            self.csts = (self.csts & ~CSTS.SHST_MASK) | CSTS.SHST_CMPLT
            self.csts &= ~CSTS.RDY
            effect = CcEffect.SHUTDOWN
        elif not CC.shn(value) and CC.shn(old):
            self.csts &= ~CSTS.SHST_MASK
        return effect


@dataclass
class KeepAlive:
    """Keep Alive Timer: ``kato_ms`` 0 disables it.

    Traffic-based (CTRATT.TBKAS, Base 2.0 §3.9.4): every command on any of the controller's
    queues restarts the timer, not only Keep Alive; a host that sees completions may then send
    none.  Commands run elsewhere (offload workers) are counted there and compared at expiry
    (:meth:`remote_traffic`)."""

    kato_ms: int
    last: float = 0.0
    #: The commands counted elsewhere on the controller's queues at the last comparison.
    remote_commands: int = 0

    def touch(self, now: float) -> None:
        self.last = now

    def remote_traffic(self, seen: int, now: float) -> None:
        """``seen`` commands are now counted elsewhere: any change since the last comparison
        (a fall too: a queue closed) is traffic, so the timer restarts at ``now``."""
        if seen != self.remote_commands:
            self.remote_commands = seen
            self.touch(now)

    def expired(self, now: float) -> bool:
        return self.kato_ms > 0 and (now - self.last) * 1000 > self.kato_ms

    def remaining(self, now: float) -> float:
        """Seconds until expiry (for scheduling the next check)."""
        return max(0.0, self.last + self.kato_ms / 1000 - now)
