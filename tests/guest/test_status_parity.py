"""Our target answers malformed commands as the Linux kernel target does, except where the spec
says otherwise.

The kernel target (nvmet-tcp, Linux 6.1, a loop device namespace) answers every case of
:mod:`tests.guest.status_probe` in the host-kernel-target boot (``tests/host/test_host_guest.py``);
the same cases run here against our target, in one process and with two workers.  Every answer
must agree, but for :data:`DIFFERENCES`: each names both answers and why ours is the one NVMe
Base 2.0, the NVM Command Set 1.0 or NVMe/TCP 1.0 asks for.  A difference not listed fails, and
so does a listed one that went away, so the list stays the whole truth.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

from tests.guest.status_probe import probe
from tests.host.test_host_guest import host_kernel_target
from tests.target.conftest import SUBNQN, running_target


class Difference(NamedTuple):
    kernel: str
    ours: str
    why: str


_RANGE = (
    "SLBA + NLB past NSZE is LBA Out of Range (NVM Command Set 1.0); Linux 6.1 "
    "passes the range to the block layer, which fails it with Internal Error"
)
DIFFERENCES = {
    "identify namespace: NSID 0": Difference(
        "SC 0x000",
        "SC 0x00b DNR",
        "NSID 0 is never a valid NSID: Invalid Namespace or Format (Base 2.0); Linux "
        "returns a zeroed structure as for an inactive NSID",
    ),
    "get log page: reserved LID": Difference(
        "SC 0x002 DNR",
        "SC 0x109 DNR",
        "an unsupported log page is Get Log Page's own Invalid Log Page (Base 2.0); "
        "Linux answers Invalid Field in Command",
    ),
    "keep alive": Difference(
        "SC 0x01a",
        "SC 0x000",
        "with KATO 0 there is no timer for a Keep Alive to restart, and we complete it as SPDK "
        "does; Linux answers Keep Alive Timeout Invalid",
    ),
    "read: past the namespace's end": Difference("SC 0x006 DNR", "SC 0x080 DNR", _RANGE),
    "read: SLBA 2^63": Difference("SC 0x006 DNR", "SC 0x080 DNR", _RANGE),
    "write: past the namespace's end": Difference("SC 0x006 DNR", "SC 0x080 DNR", _RANGE),
    "write zeroes: past the namespace's end": Difference("SC 0x006 DNR", "SC 0x080 DNR", _RANGE),
    "dataset management: range past the end": Difference("SC 0x006 DNR", "SC 0x080 DNR", _RANGE),
    "read: data in the capsule": Difference(
        "SC 0x002 DNR",
        "SC 0x00f DNR",
        "in-capsule data goes from host to controller only (NVMe/TCP 1.0), so a Read's "
        "data SGL cannot describe it: Data SGL Length Invalid; Linux says Invalid Field",
    ),
    "read: keyed SGL on TCP": Difference(
        "SC 0x00f DNR",
        "SC 0x011 DNR",
        "NVMe/TCP takes only a Transport SGL Data Block or an in-capsule Data Block "
        "(NVMe/TCP 1.0): SGL Descriptor Type Invalid; Linux does not check the type",
    ),
    "write: in-capsule SGL with an offset": Difference(
        "SC 0x000",
        "SC 0x016 DNR",
        "the offset (SGLS bit 20, which both advertise) puts the 512-byte block past the "
        "capsule's 512 bytes of data: SGL Offset Invalid rather than other bytes written than "
        "the host described; Linux ignores the offset and writes the data from the capsule's "
        "start",
    ),
    "identify: before Connect": Difference(
        "SC 0x001 DNR",
        "SC 0x00c DNR",
        "a queue takes commands only after its Connect, a rule of the sequence of commands "
        "and not of the opcode: Command Sequence Error (a protocol violation in a "
        "multi-command sequence, Base 2.0), as SPDK's target answers; Linux says Invalid Opcode",
    ),
    "connect: admin SQSIZE 127": Difference(
        "SC 0x000",
        "SC 0x182 DNR dw0 0x0000002c",
        "our admin queues hold 32 entries, the Linux host's size; a larger SQSIZE is more than "
        "the controller supports: Connect Invalid Parameters naming SQSIZE (NVMe-oF), as SPDK "
        "refuses one above its admin depth; Linux takes any size",
    ),
    "connect: data by R2T": Difference(
        "timeout",
        "SC 0x000",
        "the Connect's SGL says its data comes by R2T, so we ask for it and connect; Linux 6.1 "
        "waits for data in the capsule that never comes and never answers",
    ),
    "connect: I/O queue, another host ID": Difference(
        "SC 0x000",
        "SC 0x182 DNR dw0 0x00010000",
        "an I/O queue's Connect carries the Host Identifier of its controller's admin "
        "Connect; another one names no controller of this host: Connect Invalid Parameters "
        "naming HOSTID; Linux compares the host NQN only",
    ),
    "connect: I/O queue before CC.EN": Difference(
        "SC 0x000",
        "SC 0x00c DNR dw0 0x00000000",
        "I/O queues are created once the controller is enabled (the host's initialization "
        "sequence, Base 2.0): before, Command Sequence Error (SPDK refuses it too, with "
        "Connect Invalid Parameters); Linux creates the queue",
    ),
    "discovery: SMART log": Difference(
        "SC 0x002 DNR",
        "SC 0x109 DNR",
        "a discovery controller has only the Discovery log page: any other is Get Log "
        "Page's own Invalid Log Page (Base 2.0); Linux answers Invalid Field in Command",
    ),
    "discovery: error log": Difference(
        "SC 0x002 DNR",
        "SC 0x109 DNR",
        "as for the SMART log: not a log page of our discovery controller, Invalid Log Page",
    ),
    "discovery: get features host identifier": Difference(
        "SC 0x00f DNR",
        "SC 0x002 DNR",
        "a discovery controller has no Host Identifier feature (as in Linux): Invalid Field "
        "in Command for the FID; Linux first checks the 16-byte SGL against the no data it "
        "would return and says Data SGL Length Invalid",
    ),
    "flush: NSID FFFFFFFFh": Difference(
        "SC 0x00b DNR",
        "SC 0x000",
        "a Flush of NSID FFFFFFFFh applies to every attached namespace (NVM Command Set "
        "1.0); Linux 6.1 refuses it",
    ),
}


@pytest.fixture(scope="module")
def kernel_answers() -> dict[str, str]:
    result = host_kernel_target()
    result.finished()
    assert result.read("status-probe.rc").strip() == "0", result.read("status-probe.err")[-3000:]
    answers: dict[str, str] = json.loads(result.read("status-kernel.json"))
    return answers


@pytest.mark.guest
@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-workers"])
def test_our_target_answers_malformed_commands_as_the_kernel_target_does(
    kernel_answers: dict[str, str], workers: int
) -> None:
    with running_target(workers) as target:
        ours = probe(target.addr, SUBNQN)
    assert set(ours) == set(kernel_answers)
    differ = {
        name: (kernel_answers[name], ours[name])
        for name in ours
        if ours[name] != kernel_answers[name]
    }
    listed = {name: (d.kernel, d.ours) for name, d in DIFFERENCES.items()}
    assert differ == listed
