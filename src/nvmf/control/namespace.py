"""A namespace at run time: its media and the identity the host sees (Identify, descriptors)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from nvmf.control.model import Namespace
from nvmf.media.base import Media
from nvmf.media.factory import open_media
from nvmf.wire.identify import (
    Csi,
    IdentifyNamespace,
    LbaFormat,
    Nidt,
    encode_ns_id_descriptors,
)

#: Identify Namespace NMIC bit 0 (SHRNS): the namespace may be attached to two or more
#: controllers of the NVM subsystem.
NMIC_SHARED = 1 << 0


@dataclass
class NamespaceRuntime:
    """One enabled namespace: geometry, identifiers and its open media."""

    nsid: int
    media: Media
    uuid: bytes
    nguid: bytes
    ana_grpid: int

    @property
    def block_size(self) -> int:
        return self.media.block_size

    @property
    def nsze(self) -> int:
        """Size in logical blocks."""
        return self.media.size // self.media.block_size

    @classmethod
    def open(cls, ns: Namespace, subnqn: str) -> NamespaceRuntime:
        """Open the media; identifiers come from the config or are derived stably from the NQN,
        so a restarted target presents the same namespace to the host's multipath code."""
        media = open_media(ns)
        derived = uuid.uuid5(uuid.NAMESPACE_URL, f"{subnqn}/ns/{ns.nsid}")
        ns_uuid = uuid.UUID(ns.uuid).bytes if ns.uuid else derived.bytes
        nguid = bytes.fromhex(ns.nguid.replace("-", "")) if ns.nguid else ns_uuid
        return cls(ns.nsid, media, ns_uuid, nguid, ns.ana_grpid)

    def identify(self) -> bytes:
        """Identify Namespace (CNS 00h)."""
        lbads = self.block_size.bit_length() - 1
        ident = IdentifyNamespace(
            nsze=self.nsze,
            ncap=self.nsze,
            nuse=self.nsze,
            nsfeat=0,
            # NMIC bit 0: every controller of the subsystem reaches the namespace (CMIC bit 1),
            # so a host joins its paths; the Linux host refuses a second controller's namespace
            # that is not shared ("duplicate IDs in subsystem for nsid").
            nmic=NMIC_SHARED,
            nlbaf=0,
            flbas=0,
            dlfeat=0x1 | 0x8,  # reads of deallocated blocks return zeroes; Write Zeroes DEAC
            nguid=self.nguid,
            # ANA reporting is not offered (Identify Controller CMIC bit 3 clear, no ANA log
            # page), so ANAGRPID is 0 (Base 2.0 Identify Namespace) whatever group the
            # configuration names: a host that saw a group would look for its state.
            anagrpid=0,
            lbaf=[LbaFormat(ms=0, lbads=lbads, rp=0)],
        )
        return ident.encode()

    def descriptors(self) -> bytes:
        """Namespace Identification Descriptor list (CNS 03h): NGUID, UUID, CSI.

        An identifier that is all zeros is not one (Identify Namespace NGUID 0h: none), so it
        gets no descriptor, as Linux's nvmet omits it; ``nvmetcli save`` writes an NGUID of
        zeros for every namespace the kernel gave none, and a host would list it as an ID."""
        ids = [(Nidt.NGUID, self.nguid), (Nidt.UUID, self.uuid)]
        return encode_ns_id_descriptors(
            [*((t, nid) for t, nid in ids if any(nid)), (Nidt.CSI, bytes([Csi.NVM]))]
        )

    def close(self) -> None:
        self.media.close()
