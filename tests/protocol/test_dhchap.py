"""DH-HMAC-CHAP secrets, key transformation, RFC 7919 groups and responses.

Vectors: the ``DHHC-1`` strings below were printed by nvme-cli 2.3 (``nvme gen-dhchap-key
--secret=... --hmac=N --nqn=...``), which transforms the key with the NQN before printing it, so
they check the parser, the CRC-32 and the transformation against an independent implementation.
The response formulas are recomputed with Python's own ``hmac``/``hashlib`` from the
specification's text (Base 2.0 §8.13.5.1-2), not with the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as stdlib_hmac

import pytest

from nvmf.protocol.dhchap import (
    FFDHE_GENERATOR,
    DhchapSecret,
    DhError,
    DhExchange,
    DhGroup,
    HashId,
    SecretError,
    augmented_challenge,
    controller_response,
    generate_secret,
    host_response,
)

NQN = "nqn.2014-08.org.nvmexpress:uuid:test"
RAW32 = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
#: nvme gen-dhchap-key --secret=RAW32 --hmac=0 / --hmac=1 --nqn=NQN (nvme-cli 2.3)
CLI_HMAC0 = "DHHC-1:00:ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8qDMNU:"
CLI_HMAC1 = "DHHC-1:01:ori7PyxLj4TmXH+U0H2n9n6JjwSLdjVnqGrxVBUqGc2r4Dkr:"
#: nvme gen-dhchap-key --secret=RAW32*2 --hmac=3 --key-length=64 --nqn=NQN
CLI_HMAC3 = (
    "DHHC-1:03:c/IKTzb63Gdjn6Qer4c5iVNQlb57M44vEyaTgLDuXv7IWkCWQjd+xiAdYt6Q35Bcq3eOpYQ3HzWUk4JgS"
    "OJlPqTVzFY=:"
)


def test_parse_nvme_cli_secrets() -> None:
    s0 = DhchapSecret.parse(CLI_HMAC0)
    assert (s0.key, s0.transform) == (RAW32, 0)
    s1 = DhchapSecret.parse(CLI_HMAC1)
    assert s1.transform == 1 and len(s1.key) == 32
    s3 = DhchapSecret.parse(CLI_HMAC3)
    assert s3.transform == 3 and len(s3.key) == 64
    for text in (CLI_HMAC0, CLI_HMAC1, CLI_HMAC3):
        assert DhchapSecret.parse(text).encode() == text


def test_generate_matches_nvme_cli() -> None:
    """nvme-cli prints the key transformed with the NQN when --hmac names a hash."""
    assert generate_secret(0, 32, NQN, RAW32) == CLI_HMAC0
    assert generate_secret(1, 32, NQN, RAW32) == CLI_HMAC1
    assert generate_secret(3, 64, NQN, RAW32 * 2) == CLI_HMAC3


def test_transformation_is_hmac_of_nqn_and_nvme_over_fabrics() -> None:
    secret = DhchapSecret(RAW32, 1)
    expected = stdlib_hmac.new(RAW32, NQN.encode() + b"NVMe-over-Fabrics", hashlib.sha256)
    assert secret.transformed(NQN) == expected.digest()
    # The nvme-cli vector: --hmac=1 printed exactly this transformation of RAW32.
    assert DhchapSecret.parse(CLI_HMAC1).key == expected.digest()
    assert DhchapSecret(RAW32, 0).transformed(NQN) == RAW32  # 00: the key as it is
    k48 = bytes(range(48))
    assert (
        DhchapSecret(k48, 2).transformed("x")
        == stdlib_hmac.new(k48, b"xNVMe-over-Fabrics", hashlib.sha384).digest()
    )


@pytest.mark.parametrize("length", [32, 48, 64])
def test_key_lengths(length: int) -> None:
    text = generate_secret(0, length)
    assert len(DhchapSecret.parse(text).key) == length


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("DHHC-1:00:" + _b64(RAW32 + b"\0\0\0\0") + ":", "CRC-32 does not match"),
        ("DHHC-1:00:" + _b64(bytes(20) + b"\0\0\0\0") + ":", "32, 48 or 64 bytes"),
        ("DHHC-1:04:" + CLI_HMAC0.split(":")[2] + ":", "00, 01, 02 or 03"),
        ("DHHC-2:00:" + CLI_HMAC0.split(":")[2] + ":", "must start with DHHC-1"),
        ("DHHC-1:00:!!!notbase64!!!:", "not valid base64"),
        ("ABEiM0RVZneImaq7zN3u", "not a DH-HMAC-CHAP secret"),
    ],
    ids=["crc", "length", "hash", "prefix", "base64", "format"],
)
def test_bad_secrets_name_the_field_never_the_secret(text: str, reason: str) -> None:
    with pytest.raises(SecretError) as info:
        DhchapSecret.parse(text, "hosts[0].dhchap.key")
    message = str(info.value)
    assert message.startswith("hosts[0].dhchap.key: ")
    assert reason in message
    assert text.split(":")[2 if text.count(":") >= 2 else 0] not in message


def test_repr_hides_the_key() -> None:
    secret = DhchapSecret.parse(CLI_HMAC0)
    assert RAW32.hex() not in repr(secret) and str(RAW32) not in repr(secret)
    assert "ABEiM0" not in str(secret)


def _e_times_power_of_two(bits: int) -> int:
    """floor(e * 2^bits) from the series sum 1/n!, with guard bits."""
    guard = 64
    term, total, n = 1 << (bits + guard), 0, 1
    while term:
        total += term
        term //= n
        n += 1
    return total >> guard


RFC7919_X = {
    DhGroup.FFDHE2048: 560316,
    DhGroup.FFDHE3072: 2625351,
    DhGroup.FFDHE4096: 5736041,
    DhGroup.FFDHE6144: 15705020,
    DhGroup.FFDHE8192: 10965728,
}


@pytest.mark.parametrize("group", list(RFC7919_X), ids=lambda g: g.config_name)
def test_ffdhe_primes_follow_rfc7919_from_e(group: DhGroup) -> None:
    """RFC 7919 Appendix A: p = 2^b - 2^{b-64} + {[2^{b-130} e] + X} * 2^64 - 1."""
    b = group.prime.bit_length()
    assert b == int(group.config_name[5:])
    middle = (_e_times_power_of_two(b - 130) + RFC7919_X[group]) << 64
    assert group.prime == (1 << b) - (1 << (b - 64)) + middle - 1
    assert group.value_length == b // 8
    assert FFDHE_GENERATOR == 2


def test_ffdhe2048_is_a_safe_prime_by_miller_rabin() -> None:
    p = DhGroup.FFDHE2048.prime
    q = (p - 1) // 2
    for n in (p, q):
        d, r = n - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for a in (2, 3, 5, 7, 11):
            x = pow(a, d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                pytest.fail(f"{a} witnesses that {n} is composite")


@pytest.mark.parametrize("group", [DhGroup.FFDHE2048, DhGroup.FFDHE3072], ids=str)
def test_dh_exchange_agrees_and_checks_the_peer(group: DhGroup) -> None:
    a, b = DhExchange(group), DhExchange(group)
    assert len(a.public_value) == group.value_length
    secret = a.shared_secret(b.public_value)
    assert secret == b.shared_secret(a.public_value)
    assert len(secret) == group.value_length
    y = int.from_bytes(b.public_value, "big")
    assert int.from_bytes(secret, "big") == pow(y, _private_of(a), group.prime)
    with pytest.raises(DhError):
        a.shared_secret(b.public_value[1:])
    with pytest.raises(DhError):
        a.shared_secret((1).to_bytes(group.value_length, "big"))


def _private_of(exchange: DhExchange) -> int:
    return int(exchange._private.private_numbers().x)


def test_responses_follow_the_specification() -> None:
    key, c1 = bytes(range(32)), bytes(range(100, 132))
    hostnqn, subnqn = "nqn.h", "nqn.s"
    seq, tid = 0x01020304, 0x0506
    tail = seq.to_bytes(4, "little") + tid.to_bytes(2, "little") + b"\0"
    host = stdlib_hmac.new(key, c1 + tail + b"HostHost" + b"nqn.h\0nqn.s", hashlib.sha256)
    assert host_response(HashId.SHA256, key, c1, seq, tid, hostnqn, subnqn) == host.digest()
    ctrl = stdlib_hmac.new(key, c1 + tail + b"Controller" + b"nqn.s\0nqn.h", hashlib.sha256)
    assert controller_response(HashId.SHA256, key, c1, seq, tid, hostnqn, subnqn) == ctrl.digest()
    skey = bytes(256)
    aug = stdlib_hmac.new(hashlib.sha384(skey).digest(), c1, hashlib.sha384).digest()
    assert augmented_challenge(HashId.SHA384, skey, c1) == aug


def test_names_as_configfs_spells_them() -> None:
    assert HashId.from_name("hmac(sha512)") is HashId.SHA512
    assert HashId.SHA384.hmac_name == "hmac(sha384)"
    assert DhGroup.from_name("ffdhe6144") is DhGroup.FFDHE6144
    assert DhGroup.from_name("null") is DhGroup.NULL
    with pytest.raises(ValueError):
        HashId.from_name("hmac(md5)")
    with pytest.raises(ValueError):
        DhGroup.from_name("ffdhe1024")
