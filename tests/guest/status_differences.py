"""Where our target's answers to :mod:`tests.guest.status_probe` differ from the Linux kernel
target's, on purpose: each entry names both answers and why ours is the one NVMe Base 2.0, the
NVM Command Set 1.0, NVMe/TCP 1.0 or NVMe/RDMA 1.0 asks for.

:data:`DIFFERENCES` holds for NVMe/TCP (``test_status_parity.py``), :data:`RDMA_DIFFERENCES`
for NVMe/RDMA (``test_rdma_target_guest.py``); most entries are the same on both, being about
commands rather than the fabric.  :func:`unexplained` is the check both make: a difference not
listed fails, and so does a listed one that went away, so each list stays the whole truth.
"""

from __future__ import annotations

from typing import NamedTuple


class Difference(NamedTuple):
    kernel: str
    ours: str
    why: str


_RANGE = (
    "SLBA + NLB past NSZE is LBA Out of Range (NVM Command Set 1.0); Linux 6.1 "
    "passes the range to the block layer, which fails it with Internal Error"
)
_NOT_RDMA = (
    "NVMe/RDMA takes a Keyed SGL Data Block, or a Data Block with the Offset sub type for "
    "data in the capsule (NVMe/RDMA 1.0): any other is SGL Descriptor Type Invalid, as SPDK's "
    "target answers for a command with data (it does not look at the SGL of one without); "
    "Linux says Invalid Field"
)
_CM_HSQSIZE = (
    "HSQSIZE is the SQSIZE the Connect will carry; 0 (a one-entry queue) or more than the "
    "controller's MQES is rejected with Invalid HSQSIZE (NVMe/RDMA 1.0), before any queue is "
    "made; Linux accepts 0 and fails the Connect naming SQSIZE, and cannot allocate 65536 "
    "entries (No Resources)"
)
_AS_REQUESTED = (
    "NVMe/RDMA 1.0b has the connect request's QID be the queue's and its HSQSIZE \"set to\" "
    "the Connect's SQSIZE, and the queue was made for them (its in-capsule buffers, its place "
    "in a worker, HSQSIZE + 1 receives): a Connect saying otherwise is Connect Invalid "
    "Parameters naming the field; Linux (and SPDK) take the Connect's values"
)
#: On both fabrics.
_COMMON = {
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
        "in-capsule data goes from host to controller only (NVMe/TCP 1.0, NVMe/RDMA 1.0), so a "
        "Read's data SGL cannot describe it: Data SGL Length Invalid; Linux says Invalid "
        "Field",
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
#: NVMe/TCP: its own cases, and one Connect the Linux RDMA target rejects as we do.
DIFFERENCES = {
    **_COMMON,
    "read: keyed SGL on TCP": Difference(
        "SC 0x00f DNR",
        "SC 0x011 DNR",
        "NVMe/TCP takes only a Transport SGL Data Block or an in-capsule Data Block "
        "(NVMe/TCP 1.0): SGL Descriptor Type Invalid; Linux does not check the type",
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
}
#: NVMe/RDMA: its own SGL rules, and connect requests refused before any queue exists.
RDMA_DIFFERENCES = {
    **_COMMON,
    "property get: zeroed SGL": Difference("SC 0x002 DNR", "SC 0x011 DNR", _NOT_RDMA),
    "flush: zeroed SGL": Difference("SC 0x002 DNR", "SC 0x011 DNR", _NOT_RDMA),
    "read: data block SGL": Difference("SC 0x002 DNR", "SC 0x011 DNR", _NOT_RDMA),
    "read: keyed SGL, reserved sub type": Difference(
        "SC 0x002 DNR",
        "SC 0x011 DNR",
        "a Keyed SGL Data Block has the sub types Address (0h) and Invalidate Key (Fh); 3h is "
        "reserved, so the descriptor's type is not one we support: SGL Descriptor Type "
        "Invalid, as SPDK's target answers; Linux says Invalid Field",
    ),
    # A connect request the target cannot serve is rejected with the NVMe/RDMA status for
    # it, before any queue exists; Linux accepts it and fails the Connect command, or cannot
    # allocate what it asks for.
    "connect: admin SQSIZE 0": Difference(
        "SC 0x182 DNR dw0 0x0000002c", "rejected INVALID_HSQSIZE", _CM_HSQSIZE
    ),
    "connect: I/O queue, SQSIZE 0": Difference(
        "SC 0x182 DNR dw0 0x0000002c", "rejected INVALID_HSQSIZE", _CM_HSQSIZE
    ),
    "connect: I/O queue, SQSIZE 65535": Difference(
        "rejected NO_RSC", "rejected INVALID_HSQSIZE", _CM_HSQSIZE
    ),
    "connect: I/O queue, QID other than the connect request's": Difference(
        "SC 0x000", "SC 0x182 DNR dw0 0x0000002a", _AS_REQUESTED
    ),
    "connect: admin queue on an I/O queue's connection": Difference(
        "SC 0x000", "SC 0x182 DNR dw0 0x0000002a", _AS_REQUESTED
    ),
    "connect: I/O queue on an admin queue's connection": Difference(
        "SC 0x000", "SC 0x182 DNR dw0 0x0000002a", _AS_REQUESTED
    ),
    "connect: I/O queue, SQSIZE above the connect request's HSQSIZE": Difference(
        "SC 0x000", "SC 0x182 DNR dw0 0x0000002c", _AS_REQUESTED
    ),
    "connect: I/O queue, SQSIZE below the connect request's HSQSIZE": Difference(
        "SC 0x000", "SC 0x182 DNR dw0 0x0000002c", _AS_REQUESTED
    ),
    "connect: I/O queue, QID 65535": Difference(
        "SC 0x182 DNR dw0 0x0000002a",
        "rejected INVALID_QID",
        "QID 65535 is past the I/O queues the controller grants: the connect request is "
        "rejected with Invalid QID (NVMe/RDMA 1.0); Linux accepts it and refuses the Connect "
        "with Connect Invalid Parameters naming QID",
    ),
}


def unexplained(
    kernel: dict[str, str], ours: dict[str, str], listed: dict[str, Difference]
) -> dict[str, tuple[str | None, str | None]]:
    """Each case whose answers differ in another way than ``listed`` says (a listed
    difference that went away included), with the kernel's answer and ours."""
    names = set(kernel) | set(ours) | set(listed)
    wrong = {}
    for name in sorted(names):
        k, o = kernel.get(name), ours.get(name)
        expected = listed.get(name)
        if (expected is None and k != o) or (
            expected is not None and (k, o) != (expected.kernel, expected.ours)
        ):
            wrong[name] = (k, o)
    return wrong
