"""The watermark payload codec: layout, error correction, and no payload invented from noise."""

from __future__ import annotations

import binascii
import math
import random

import numpy as np
import pytest

from provenance.errors import WatermarkError
from provenance.watermark.payload import (
    BCH_T,
    CODEWORD_BITS,
    DATA_BITS,
    MAX_CHASE_BITS,
    Payload,
    _bch_codeword,
    _crc16,
    decode_payload,
    encode_payload,
    false_accept_probability,
)


def _flip(bits: np.ndarray, n_errors: int, rng: np.random.Generator) -> np.ndarray:
    noisy = bits.copy()
    noisy[rng.choice(CODEWORD_BITS, size=n_errors, replace=False)] ^= 1
    return noisy


# --- layout --------------------------------------------------------------------------------


def test_layout_constants() -> None:
    assert DATA_BITS == 4 + 16 + 48 + 16
    assert CODEWORD_BITS == 160
    bits = encode_payload(Payload(content_id=1))
    assert bits.shape == (CODEWORD_BITS,)
    assert bits.dtype == np.uint8
    assert set(np.unique(bits).tolist()) <= {0, 1}


def test_crc_is_ccitt_false() -> None:
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1  # the catalogued check value
    # the CRC covers the 68 info bits as a 9-byte big-endian integer
    info = 0x1_0007_0123456789AB  # version 1, issuer 7, content 0x0123456789AB
    assert _crc16(info) == binascii.crc_hqx(b"\x01\x00\x07\x01\x23\x45\x67\x89\xab", 0xFFFF)


def test_data_bits_are_readable_in_the_clear() -> None:
    p = Payload(content_id=0x0123456789AB, issuer_id=0xBEEF)
    bits = encode_payload(p)
    value = int("".join(map(str, bits[:DATA_BITS].tolist())), 2)
    assert value >> 80 == 1  # version
    assert (value >> 64) & 0xFFFF == 0xBEEF
    assert (value >> 16) & (2**48 - 1) == 0x0123456789AB
    assert value & 0xFFFF == _crc16(value >> 16)


# --- Payload -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        Payload(content_id=0),
        Payload(content_id=2**48 - 1),
        Payload(content_id=2**48 - 1, issuer_id=0xFFFF),
        Payload(content_id=0, issuer_id=0xFFFF),
    ],
)
def test_boundaries_round_trip(payload: Payload) -> None:
    assert decode_payload(encode_payload(payload)) == (payload, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content_id": -1},
        {"content_id": 2**48},
        {"content_id": 1, "issuer_id": -1},
        {"content_id": 1, "issuer_id": 0x10000},
        {"content_id": 1, "version": 16},
        {"content_id": 1, "version": -1},
        {"content_id": 1.5},
        {"content_id": "12"},
        {"content_id": True},
    ],
)
def test_bad_fields_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(WatermarkError) as info:
        Payload(**kwargs)  # type: ignore[arg-type]
    assert info.value.hint


def test_numpy_integers_become_ints() -> None:
    p = Payload(content_id=np.uint64(5), issuer_id=np.int32(2))  # type: ignore[arg-type]
    assert type(p.content_id) is int and type(p.issuer_id) is int


def test_hex_and_to_dict() -> None:
    p = Payload(content_id=0xAB, issuer_id=2)
    assert p.hex == "0000000000ab"
    assert p.to_dict() == {"content_id": 0xAB, "issuer_id": 2, "version": 1, "hex": "0000000000ab"}
    assert len(Payload(content_id=2**48 - 1).hex) == 12


def test_random_payloads() -> None:
    a, b = Payload.random(), Payload.random(issuer_id=9)
    assert a != b and b.issuer_id == 9 and a.version == 1
    assert Payload.random(rng=random.Random(1)) == Payload.random(rng=random.Random(1))
    g1, g2 = np.random.default_rng(2), np.random.default_rng(2)
    assert Payload.random(rng=g1) == Payload.random(rng=g2)
    with pytest.raises(WatermarkError):
        Payload.random(issuer_id=0x10000)


def test_unknown_layout_version_is_not_written() -> None:
    with pytest.raises(WatermarkError, match="version 2"):
        encode_payload(Payload(content_id=1, version=2))


# --- round trip and error correction -------------------------------------------------------


def test_round_trip_many_random_payloads() -> None:
    rng = random.Random(0)
    for _ in range(500):
        p = Payload.random(issuer_id=rng.randrange(2**16), rng=rng)
        assert decode_payload(encode_payload(p)) == (p, 0)


def test_corrects_up_to_t_errors() -> None:
    rng = np.random.default_rng(1)
    for trial in range(400):
        p = Payload.random(issuer_id=trial, rng=rng)
        n_errors = trial % (BCH_T + 1)
        assert decode_payload(_flip(encode_payload(p), n_errors, rng)) == (p, n_errors)


def test_beyond_the_radius_gives_none() -> None:
    rng = np.random.default_rng(2)
    answers = []
    for trial in range(600):
        p = Payload.random(rng=rng)
        n_errors = BCH_T + 1 + trial % 40
        answers.append(decode_payload(_flip(encode_payload(p), n_errors, rng)))
    assert answers.count(None) == len(answers)  # neither the true payload nor a wrong one


def test_valid_bch_word_with_bad_crc_or_version_gives_none() -> None:
    p = Payload(content_id=0x123, issuer_id=4)
    info = 1 << 64 | 4 << 48 | 0x123
    assert decode_payload(_bch_codeword(info << 16 | _crc16(info))) == (p, 0)
    assert decode_payload(_bch_codeword(info << 16 | (_crc16(info) ^ 1))) is None
    info2 = 2 << 64 | 4 << 48 | 0x123  # well-formed, but layout version 2 is unknown here
    assert decode_payload(_bch_codeword(info2 << 16 | _crc16(info2))) is None


def test_crc_rejects_random_bch_codewords() -> None:
    # Random data under valid BCH parity: only the CRC and the version stand in the way
    # (expected accepts: 20000 * 2**-20 = 0.02).
    rng = random.Random(3)
    accepted = sum(
        decode_payload(_bch_codeword(rng.getrandbits(DATA_BITS))) is not None for _ in range(20000)
    )
    assert accepted == 0


# --- soft input ----------------------------------------------------------------------------


def test_soft_values_decode() -> None:
    rng = np.random.default_rng(4)
    p = Payload.random(rng=rng)
    bits = encode_payload(p)
    soft = (2.0 * bits - 1.0) * rng.uniform(0.2, 1.0, CODEWORD_BITS)
    assert decode_payload(soft) == (p, 0)
    assert decode_payload(soft.astype(np.float32)) == (p, 0)
    assert decode_payload(bits.astype(bool)) == (p, 0)
    assert decode_payload(bits.astype(np.int64).tolist()) == (p, 0)
    soft[:5] *= -1  # five confident errors: plain BCH handles them
    assert decode_payload(soft) == (p, 5)


def test_chase_recovers_weak_errors_beyond_the_radius() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        p = Payload.random(rng=rng)
        bits = encode_payload(p)
        soft = (2.0 * bits - 1.0) * rng.uniform(0.5, 1.0, CODEWORD_BITS)
        wrong = rng.choice(CODEWORD_BITS, size=BCH_T + 3, replace=False)
        soft[wrong] *= -1
        soft[wrong[:3]] *= 0.01  # three of the errors are the least reliable bits
        assert decode_payload(soft, chase_bits=0) is None
        assert decode_payload(soft) == (p, BCH_T + 3)


def test_nan_and_inf_do_not_raise() -> None:
    p = Payload(content_id=77)
    soft = 2.0 * encode_payload(p) - 1.0
    soft[[0, 1]] = np.nan
    soft[[2, 3]] = np.inf * soft[[2, 3]]
    result = decode_payload(soft)
    assert result is not None and result[0] == p
    assert decode_payload(np.full(CODEWORD_BITS, np.nan)) is None


# --- input checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bits",
    [
        np.zeros(CODEWORD_BITS - 1, dtype=np.uint8),
        np.zeros(CODEWORD_BITS + 1, dtype=np.uint8),
        np.zeros((2, CODEWORD_BITS), dtype=np.uint8),
        np.full(CODEWORD_BITS, 2, dtype=np.uint8),
        np.full(CODEWORD_BITS, -1, dtype=np.int8),
        np.array(["1"] * CODEWORD_BITS),
    ],
)
def test_bad_input_raises(bits: np.ndarray) -> None:
    with pytest.raises(WatermarkError):
        decode_payload(bits)


def test_bad_chase_bits_raise() -> None:
    with pytest.raises(WatermarkError, match="chase_bits"):
        decode_payload(np.zeros(CODEWORD_BITS), chase_bits=MAX_CHASE_BITS + 1)


# --- false positives -----------------------------------------------------------------------


def test_false_accept_probability() -> None:
    ball = sum(math.comb(160, i) for i in range(BCH_T + 1))
    assert false_accept_probability() == pytest.approx(ball / 2**76 / 2**16 / 16)
    assert false_accept_probability() < 1e-13
    assert false_accept_probability(3) == pytest.approx(8 * false_accept_probability())


def test_no_payload_from_random_bits() -> None:
    rng = np.random.default_rng(6)
    words = rng.integers(0, 2, size=(200_000, CODEWORD_BITS), dtype=np.uint8)
    assert sum(decode_payload(word) is not None for word in words) == 0
    for constant in (0, 1):
        assert decode_payload(np.full(CODEWORD_BITS, constant, dtype=np.uint8)) is None


def test_no_payload_from_random_soft_values() -> None:
    # Each vector costs 8 BCH attempts with the Chase search: 400,000 attempts in all.
    rng = np.random.default_rng(7)
    values = rng.standard_normal((50_000, CODEWORD_BITS))
    assert sum(decode_payload(value) is not None for value in values) == 0
