"""DH-HMAC-CHAP's cryptography (NVMe Base 2.0 §8.13.5): secrets, hashes, DH groups, responses.

Sans-IO and stateless (but for the sequence number counter, :func:`next_seqnum`): the
controller's per-queue state machine (:mod:`nvmf.control.auth`), the host's transaction
(:mod:`nvmf.host.auth`) and the configuration check (:mod:`nvmf.config.validate`) call these.
Every primitive comes from the ``cryptography`` package (HMAC, SHA-2, finite-field DH); nothing
here is hand-rolled.

* A secret is written ``DHHC-1:XX:BASE64:`` (NVMe Base 2.0 §8.13.5.8, what ``nvme
  gen-dhchap-key`` prints and the kernel's ``dhchap_key`` attribute holds): XX names the hash of
  the key transformation (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512); BASE64 is the 32, 48 or
  64 byte key followed by the CRC-32 of the key, little-endian.
* The transformed key (§8.13.5.7) is ``HMAC(XX hash, key, NQN || "NVMe-over-Fabrics")`` (the key
  itself when XX is 00): the host's key with the host NQN, the controller's with the subsystem
  NQN.
* The response (§8.13.5.1) is ``HMAC(hash, transformed key, Ca || seqnum || T_ID || 00h ||
  "HostHost" || NQNh || 00h || NQNc)`` for the host, ``... "Controller" || NQNc || 00h || NQNh``
  for the controller, where Ca is the challenge, or with a DH group the augmented challenge
  ``HMAC(hash, H(g^xy mod p), C)`` (§8.13.5.2).
* DH groups are RFC 7919's ffdhe2048..ffdhe8192 (generator 2); the public value and the shared
  secret travel as big-endian numbers as long as the prime.

Secrets never appear in a message, a ``repr`` or a log line: :class:`DhchapSecret` hides its
bytes and :class:`SecretError` names the field, never the value.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import os
import types
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# cryptography is imported where a computation needs it, not with this module: the config
# validator reads DHHC-1 secrets through here on every `nvmf config`/`serve` call, and
# importing cryptography costs seconds per process in the emulated test guest.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import dh


def _dh_module() -> types.ModuleType:
    """cryptography's finite-field DH module (its import may warn that FFDH is deprecated:
    see :func:`_ffdh_allowed`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cryptography.hazmat.primitives.asymmetric import dh
    return dh


@contextlib.contextmanager
def _ffdh_allowed() -> Iterator[None]:
    """cryptography marks finite-field DH deprecated; DH-HMAC-CHAP is defined on RFC 7919's
    finite-field groups, so this protocol has no other choice: keep the warning out of logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Diffie-Hellman over finite fields")
        yield


class HashId(enum.IntEnum):
    """Hash function identifiers (Base 2.0 Figure 594; Linux ``NVME_AUTH_HASH_*``)."""

    SHA256 = 0x01
    SHA384 = 0x02
    SHA512 = 0x03

    @property
    def length(self) -> int:
        """The digest length in bytes (HL in the messages)."""
        return _HASH_LEN[self]

    @property
    def hmac_name(self) -> str:
        """The name the kernel's ``dhchap_hash`` attribute uses: ``hmac(sha256)``."""
        return f"hmac({self.name.lower()})"

    def algorithm(self) -> hashes.HashAlgorithm:
        """cryptography's algorithm object for this hash (``hashes.SHA256()``...)."""
        from cryptography.hazmat.primitives import hashes

        algorithm: hashes.HashAlgorithm = getattr(hashes, self.name)()
        return algorithm

    @classmethod
    def from_name(cls, name: str) -> HashId:
        """``hmac(sha256)`` (configfs, nvmetcli) or ``sha256``; ValueError otherwise."""
        text = name.strip().lower()
        for member in cls:
            if text in (member.hmac_name, member.name.lower()):
                return member
        raise ValueError(f"unknown DH-HMAC-CHAP hash {name!r}: hmac(sha256|sha384|sha512)")


_HASH_LEN = {HashId.SHA256: 32, HashId.SHA384: 48, HashId.SHA512: 64}


class DhGroup(enum.IntEnum):
    """Diffie-Hellman group identifiers (Base 2.0 Figure 595; Linux ``NVME_AUTH_DHGROUP_*``)."""

    NULL = 0x00
    FFDHE2048 = 0x01
    FFDHE3072 = 0x02
    FFDHE4096 = 0x03
    FFDHE6144 = 0x04
    FFDHE8192 = 0x05

    @property
    def config_name(self) -> str:
        """The name the kernel's ``dhchap_dhgroup`` attribute uses: ``null``, ``ffdhe2048``."""
        return self.name.lower()

    @classmethod
    def from_name(cls, name: str) -> DhGroup:
        text = name.strip().lower()
        for member in cls:
            if text == member.config_name:
                return member
        raise ValueError(f"unknown DH-HMAC-CHAP DH group {name!r}: null or ffdhe2048..ffdhe8192")

    @property
    def prime(self) -> int:
        """The RFC 7919 prime (generator 2); the null group has none."""
        return FFDHE_PRIMES[self]

    @property
    def value_length(self) -> int:
        """Bytes of a public value or shared secret (the prime's length), 0 for the null group."""
        return 0 if self is DhGroup.NULL else (self.prime.bit_length() + 7) // 8


#: RFC 7919 Appendix A: p = 2^b - 2^{b-64} + {[2^{b-130} e] + X} * 2^64 - 1, g = 2.
#: (tests/protocol/test_dhchap.py recomputes each from e.)
FFDHE_GENERATOR = 2
FFDHE_PRIMES: dict[DhGroup, int] = {
    DhGroup.FFDHE2048: int(
        "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FB"
        "CC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0"
        "856365553DED1AF3B557135E7F57C935984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE735"
        "30ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
        "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F619172FE9CE98583FF"
        "8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
        "886B423861285C97FFFFFFFFFFFFFFFF",
        16,
    ),
    DhGroup.FFDHE3072: int(
        "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FB"
        "CC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0"
        "856365553DED1AF3B557135E7F57C935984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE735"
        "30ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
        "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F619172FE9CE98583FF"
        "8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
        "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE"
        "598CB0FAC186D91CAEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
        "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF"
        "3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
        16,
    ),
    DhGroup.FFDHE4096: int(
        "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FB"
        "CC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0"
        "856365553DED1AF3B557135E7F57C935984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE735"
        "30ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
        "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F619172FE9CE98583FF"
        "8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
        "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE"
        "598CB0FAC186D91CAEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
        "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF"
        "3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB7930E9E4E58857B6AC7D5F42D69F6D18"
        "7763CF1D5503400487F55BA57E31CC7A7135C886EFB4318AED6A1E012D9E6832A907600A918130C4"
        "6DC778F971AD0038092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF"
        "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E655F6AFFFFFFFFFFFFFFFF",
        16,
    ),
    DhGroup.FFDHE6144: int(
        "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FB"
        "CC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0"
        "856365553DED1AF3B557135E7F57C935984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE735"
        "30ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
        "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F619172FE9CE98583FF"
        "8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
        "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE"
        "598CB0FAC186D91CAEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
        "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF"
        "3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB7930E9E4E58857B6AC7D5F42D69F6D18"
        "7763CF1D5503400487F55BA57E31CC7A7135C886EFB4318AED6A1E012D9E6832A907600A918130C4"
        "6DC778F971AD0038092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF"
        "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A4E677D2C38532A3A"
        "23BA4442CAF53EA63BB454329B7624C8917BDD64B1C0FD4CB38E8C334C701C3ACDAD0657FCCFEC71"
        "9B1F5C3E4E46041F388147FB4CFDB477A52471F7A9A96910B855322EDB6340D8A00EF092350511E3"
        "0ABEC1FFF9E3A26E7FB29F8C183023C3587E38DA0077D9B4763E4E4B94B2BBC194C6651E77CAF992"
        "EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538CD72B03746AE77F5E"
        "62292C311562A846505DC82DB854338AE49F5235C95B91178CCF2DD5CACEF403EC9D1810C6272B04"
        "5B3B71F9DC6B80D63FDD4A8E9ADB1E6962A69526D43161C1A41D570D7938DAD4A40E329CD0E40E65"
        "FFFFFFFFFFFFFFFF",
        16,
    ),
    DhGroup.FFDHE8192: int(
        "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FB"
        "CC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0"
        "856365553DED1AF3B557135E7F57C935984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE735"
        "30ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
        "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F619172FE9CE98583FF"
        "8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
        "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE"
        "598CB0FAC186D91CAEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
        "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF"
        "3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB7930E9E4E58857B6AC7D5F42D69F6D18"
        "7763CF1D5503400487F55BA57E31CC7A7135C886EFB4318AED6A1E012D9E6832A907600A918130C4"
        "6DC778F971AD0038092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF"
        "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E0DD9020BFD64B645036C7A4E677D2C38532A3A"
        "23BA4442CAF53EA63BB454329B7624C8917BDD64B1C0FD4CB38E8C334C701C3ACDAD0657FCCFEC71"
        "9B1F5C3E4E46041F388147FB4CFDB477A52471F7A9A96910B855322EDB6340D8A00EF092350511E3"
        "0ABEC1FFF9E3A26E7FB29F8C183023C3587E38DA0077D9B4763E4E4B94B2BBC194C6651E77CAF992"
        "EEAAC0232A281BF6B3A739C1226116820AE8DB5847A67CBEF9C9091B462D538CD72B03746AE77F5E"
        "62292C311562A846505DC82DB854338AE49F5235C95B91178CCF2DD5CACEF403EC9D1810C6272B04"
        "5B3B71F9DC6B80D63FDD4A8E9ADB1E6962A69526D43161C1A41D570D7938DAD4A40E329CCFF46AAA"
        "36AD004CF600C8381E425A31D951AE64FDB23FCEC9509D43687FEB69EDD1CC5E0B8CC3BDF64B10EF"
        "86B63142A3AB8829555B2F747C932665CB2C0F1CC01BD70229388839D2AF05E454504AC78B758282"
        "2846C0BA35C35F5C59160CC046FD8251541FC68C9C86B022BB7099876A460E7451A8A93109703FEE"
        "1C217E6C3826E52C51AA691E0E423CFC99E9E31650C1217B624816CDAD9A95F9D5B8019488D9C0A0"
        "A1FE3075A577E23183F81D4A3F2FA4571EFC8CE0BA8A4FE8B6855DFE72B0A66EDED2FBABFBE58A30"
        "FAFABE1C5D71A87E2F741EF8C1FE86FEA6BBFDE530677F0D97D11D49F7A8443D0822E506A9F4614E"
        "011E2A94838FF88CD68C8BB7C5C6424CFFFFFFFFFFFFFFFF",
        16,
    ),
}

#: Key lengths a secret may have (Base 2.0 §8.13.5.8).
KEY_LENGTHS = (32, 48, 64)
SECRET_PREFIX = "DHHC-1"
NVME_OVER_FABRICS = b"NVMe-over-Fabrics"


class SecretError(ValueError):
    """A secret that cannot be used; the message names ``field`` and never holds the secret."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class DhchapSecret:
    """A parsed ``DHHC-1`` secret: the key and the hash of its transformation (0: none)."""

    key: bytes = field(repr=False)
    transform: int = 0

    def __repr__(self) -> str:  # the dataclass repr hides the key already; say so plainly
        return f"DhchapSecret(<{len(self.key)} bytes>, transform={self.transform})"

    __str__ = __repr__

    @classmethod
    def parse(cls, text: str, field: str = "secret") -> DhchapSecret:
        """Parse ``DHHC-1:XX:BASE64:``: the CRC-32 must match and the key be 32, 48 or 64 bytes.
        Raises :class:`SecretError` naming ``field``."""
        parts = text.strip().split(":")
        if len(parts) == 3 or (len(parts) == 4 and parts[3] == ""):
            prefix, hmac_text, encoded = parts[:3]
        else:
            raise SecretError(field, "not a DH-HMAC-CHAP secret (expected DHHC-1:XX:BASE64:)")
        if prefix != SECRET_PREFIX:
            raise SecretError(field, f"must start with {SECRET_PREFIX}:")
        if len(hmac_text) != 2 or not hmac_text.isdigit() or int(hmac_text) > 3:
            raise SecretError(field, "the key hash (XX in DHHC-1:XX:) must be 00, 01, 02 or 03")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(field, "the key is not valid base64") from None
        if len(raw) - 4 not in KEY_LENGTHS:
            raise SecretError(
                field, f"the key must be 32, 48 or 64 bytes plus a CRC-32, not {len(raw)} bytes"
            )
        key, crc = raw[:-4], int.from_bytes(raw[-4:], "little")
        if zlib.crc32(key) != crc:
            raise SecretError(field, "the key's CRC-32 does not match (a typo in the secret?)")
        return cls(key, int(hmac_text))

    def encode(self) -> str:
        """The ``DHHC-1:XX:BASE64:`` text (key followed by its CRC-32, little-endian)."""
        crc = zlib.crc32(self.key).to_bytes(4, "little")
        return f"{SECRET_PREFIX}:{self.transform:02x}:{base64.b64encode(self.key + crc).decode()}:"

    def transformed(self, nqn: str) -> bytes:
        """The transformed key for ``nqn`` (Base 2.0 §8.13.5.7; Linux
        ``nvme_auth_transform_key``): the key itself when the secret names no hash."""
        if self.transform == 0:
            return self.key
        return hmac_digest(HashId(self.transform), self.key, nqn.encode(), NVME_OVER_FABRICS)


def generate_secret(
    hmac_id: int = 0, key_length: int = 32, nqn: str = "", secret: bytes | None = None
) -> str:
    """A new secret as ``nvme gen-dhchap-key`` prints it: random (or ``secret``) key bytes,
    transformed with ``nqn`` when ``hmac_id`` names a hash (as nvme-cli does), then encoded."""
    if key_length not in KEY_LENGTHS:
        raise ValueError(f"key length must be 32, 48 or 64, not {key_length}")
    if hmac_id not in (0, 1, 2, 3):
        raise ValueError(f"hmac must be 0 (none), 1, 2 or 3, not {hmac_id}")
    key = os.urandom(key_length) if secret is None else secret
    if len(key) != key_length:
        raise ValueError(f"the secret has {len(key)} bytes, the key length is {key_length}")
    if hmac_id:
        hash_id = HashId(hmac_id)
        if hash_id.length != key_length:
            raise ValueError(f"{hash_id.hmac_name} makes {hash_id.length}-byte keys")
        key = DhchapSecret(key, hmac_id).transformed(nqn)
    return DhchapSecret(key, hmac_id).encode()


def hmac_digest(hash_id: HashId, key: bytes, *parts: bytes) -> bytes:
    """HMAC of the concatenated ``parts``."""
    from cryptography.hazmat.primitives import hmac

    mac = hmac.HMAC(key, hash_id.algorithm())
    for part in parts:
        mac.update(part)
    return mac.finalize()


def digest(hash_id: HashId, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    h = hashes.Hash(hash_id.algorithm())
    h.update(data)
    return h.finalize()


def augmented_challenge(hash_id: HashId, session_key: bytes, challenge: bytes) -> bytes:
    """Ca = HMAC(H(g^xy mod p), C) (Base 2.0 §8.13.5.2; Linux
    ``nvme_auth_augmented_challenge``)."""
    return hmac_digest(hash_id, digest(hash_id, session_key), challenge)


def host_response(
    hash_id: HashId,
    key: bytes,
    challenge: bytes,
    seqnum: int,
    t_id: int,
    hostnqn: str,
    subsysnqn: str,
) -> bytes:
    """The host's response R1 to challenge C1 (``key``: the host key transformed with NQNh;
    ``challenge``: C1, or Ca with a DH group)."""
    return hmac_digest(
        hash_id,
        key,
        challenge,
        seqnum.to_bytes(4, "little"),
        t_id.to_bytes(2, "little"),
        b"\0HostHost",
        hostnqn.encode(),
        b"\0",
        subsysnqn.encode(),
    )


def controller_response(
    hash_id: HashId,
    key: bytes,
    challenge: bytes,
    seqnum: int,
    t_id: int,
    hostnqn: str,
    subsysnqn: str,
) -> bytes:
    """The controller's response R2 to challenge C2 (``key``: the controller key transformed
    with NQNc)."""
    return hmac_digest(
        hash_id,
        key,
        challenge,
        seqnum.to_bytes(4, "little"),
        t_id.to_bytes(2, "little"),
        b"\0Controller",
        subsysnqn.encode(),
        b"\0",
        hostnqn.encode(),
    )


_seqnum = 0


def next_seqnum() -> int:
    """The next sequence number of a challenge (S1 or S2): random start, then increasing, never
    0 (0 means "no challenge"), as Linux ``nvme_auth_get_seqnum``."""
    global _seqnum
    if not _seqnum:
        _seqnum = int.from_bytes(os.urandom(4), "little") or 1
    else:
        _seqnum = (_seqnum + 1) & 0xFFFFFFFF or 1
    return _seqnum


class DhError(ValueError):
    """The peer's DH public value is not usable (wrong length, out of range)."""


class DhExchange:
    """One side's ephemeral DH key in an RFC 7919 group."""

    def __init__(self, group: DhGroup) -> None:
        if group is DhGroup.NULL:
            raise ValueError("the null DH group has no exchange")
        self.group = group
        self._parameters = _parameters(group)
        with _ffdh_allowed():
            self._private = self._parameters.generate_private_key()

    @property
    def public_value(self) -> bytes:
        """g^x mod p, big-endian, as long as the prime."""
        y = self._private.public_key().public_numbers().y
        return y.to_bytes(self.group.value_length, "big")

    def shared_secret(self, peer_value: bytes) -> bytes:
        """g^xy mod p from the peer's public value, big-endian, as long as the prime."""
        if len(peer_value) != self.group.value_length:
            raise DhError(
                f"DH value of {len(peer_value)} bytes, {self.group.config_name} needs "
                f"{self.group.value_length}"
            )
        y = int.from_bytes(peer_value, "big")
        p = self.group.prime
        if not 1 < y < p - 1:
            raise DhError("DH value out of range")
        dh = _dh_module()
        try:
            with _ffdh_allowed():
                numbers = dh.DHPublicNumbers(y, self._parameters.parameter_numbers())
                secret = self._private.exchange(numbers.public_key())
        except ValueError as exc:
            raise DhError(f"DH value rejected: {exc}") from None
        return secret.rjust(self.group.value_length, b"\0")


_PARAMETERS: dict[DhGroup, dh.DHParameters] = {}


def _parameters(group: DhGroup) -> dh.DHParameters:
    params = _PARAMETERS.get(group)
    if params is None:
        dh = _dh_module()
        with _ffdh_allowed():
            numbers = dh.DHParameterNumbers(group.prime, FFDHE_GENERATOR)
            params = _PARAMETERS[group] = numbers.parameters()
    return params
