"""The watermark payload: what the invisible mark carries, and the code that protects it.

Every image sdkit makes carries a :class:`Payload` that links it to its C2PA manifest. On the wire
the payload is a fixed-length bit string, :data:`CODEWORD_BITS` long (layout version 1)::

    bits   0..3     version        4 bits   payload layout version (this decoder knows 1)
    bits   4..19    issuer_id     16 bits   which signing key / issuer
    bits  20..67    content_id    48 bits   random per image
    bits  68..83    CRC-16        16 bits   CRC-16/CCITT-FALSE of bits 0..67
    bits  84..159   BCH parity    76 bits   BCH(m=8, t=10) over bits 0..83

Bits are most significant first. The CRC is ``binascii.crc_hqx(b, 0xFFFF)`` (polynomial 0x1021,
initial value 0xFFFF, no reflection, no final XOR; check value 0x29B1 for ``b"123456789"``), where
``b`` is the 68 bits above it as a big-endian 9-byte integer (4 leading zero bits). The parity
comes from bchlib (the Linux kernel's BCH code), field order m = 8, correcting t = 10 bit errors; it
is a shortened binary BCH code [160, 84], minimum distance at least 21.

Why t = 10: the embedder spreads :data:`CODEWORD_BITS` over a fixed budget of image coefficients,
so every parity bit makes each bit weaker. Modelled as spread spectrum (bit error rate
``Q(sqrt(E / n))``), t = 9 to 11 fail least often near the threshold and t = 10 gives a round
160 bits; t = 16 (208 bits) fails more often at the same embedding strength. Below t = 10 the false
accept rate rises by ten times per step (t = 9 has 152 bits but 10 times the rate).

The decoder never invents a payload: it answers only when BCH decodes, the corrections stay inside
the transmitted bits, the CRC matches and the version is one it knows. On bits that carry no mark
the chance of an answer per attempt is at most :func:`false_accept_probability` (3.1e-14 with hard
bits, 9.8e-13 with soft values and the default five-bit Chase search).
"""

from __future__ import annotations

import binascii
import itertools
import math
import operator
import random
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import bchlib  # the Linux kernel's BCH code, wrapped (no type stubs)
import numpy as np
import numpy.typing as npt

from ..errors import WatermarkError

__all__ = [
    "BCH_M",
    "BCH_T",
    "CODEWORD_BITS",
    "DATA_BITS",
    "SUPPORTED_VERSIONS",
    "Payload",
    "decode_payload",
    "encode_payload",
    "false_accept_probability",
]

VERSION_BITS = 4
ISSUER_BITS = 16
CONTENT_BITS = 48
CRC_BITS = 16
INFO_BITS = VERSION_BITS + ISSUER_BITS + CONTENT_BITS  # 68: what the CRC covers
DATA_BITS = INFO_BITS + CRC_BITS  # 84: what BCH protects
BCH_M = 8  # Galois field GF(2^8): codewords up to 255 bits
BCH_T = 10  # bit errors BCH corrects
ECC_BITS = 76  # parity bits bchlib makes for (m=8, t=10): the generator polynomial's degree
CODEWORD_BITS = DATA_BITS + ECC_BITS  # 160: what the embedder carries
SUPPORTED_VERSIONS = frozenset({1})
MAX_CHASE_BITS = 5

# bchlib works on whole bytes: the data and the parity are each padded with zero bits at the end.
# The padding is not transmitted; a correction that lands in it means "no codeword near here".
_DATA_BYTES = math.ceil(DATA_BITS / 8)  # 11
_ECC_BYTES = math.ceil(ECC_BITS / 8)  # 10
_DATA_PAD = 8 * _DATA_BYTES - DATA_BITS  # 4
_ECC_PAD = 8 * _ECC_BYTES - ECC_BITS  # 4
_PAD_MASK_DATA = (1 << _DATA_PAD) - 1
_PAD_MASK_ECC = (1 << _ECC_PAD) - 1
# Where the transmitted bits sit in the padded, byte-aligned buffer (data bytes, then parity bytes).
_WIRE_POSITIONS = np.concatenate(
    [np.arange(DATA_BITS), 8 * _DATA_BYTES + np.arange(ECC_BITS)]
).astype(np.intp)
_BUFFER_BITS = 8 * (_DATA_BYTES + _ECC_BYTES)

# Chase flip patterns: for k bits, the 2**k - 1 non-empty subsets as rows of 0/1 flags.
_CHASE_PATTERNS = {
    k: np.array(list(itertools.product((0, 1), repeat=k))[1:], dtype=np.uint8)
    for k in range(1, MAX_CHASE_BITS + 1)
}

_local = threading.local()  # a bchlib.BCH keeps state between decode() and correct()


@dataclass(frozen=True)
class Payload:
    """What an sdkit watermark carries.

    Attributes:
        content_id: 48 random bits chosen per image; the key to the image's C2PA manifest.
        issuer_id: 16 bits naming the signing key / issuer (0 for the default).
        version: the payload layout version, 4 bits (this module writes and reads layout 1).

    Raises:
        WatermarkError: a field is not an integer or does not fit in its bits.

    Example:
        >>> p = Payload(content_id=0x0123456789AB, issuer_id=7)
        >>> p.hex
        '0123456789ab'
        >>> p.to_dict()
        {'content_id': 1250999896491, 'issuer_id': 7, 'version': 1, 'hex': '0123456789ab'}
    """

    content_id: int
    issuer_id: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        for name, n_bits in (
            ("content_id", CONTENT_BITS),
            ("issuer_id", ISSUER_BITS),
            ("version", VERSION_BITS),
        ):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise WatermarkError(
                    f"Payload.{name} must be an integer, not {value!r}",
                    hint=f"pass an int in [0, {(1 << n_bits) - 1}]",
                )
            try:
                number = operator.index(value)
            except TypeError:
                raise WatermarkError(
                    f"Payload.{name} must be an integer, not {type(value).__name__}",
                    hint=f"pass an int in [0, {(1 << n_bits) - 1}]",
                ) from None
            if not 0 <= number < (1 << n_bits):
                raise WatermarkError(
                    f"Payload.{name}={number} does not fit in {n_bits} bits",
                    hint=f"use a value in [0, {(1 << n_bits) - 1}] (0x{(1 << n_bits) - 1:X})",
                )
            object.__setattr__(self, name, number)  # numpy integers become plain ints

    @classmethod
    def random(
        cls, issuer_id: int = 0, rng: random.Random | np.random.Generator | None = None
    ) -> Payload:
        """A payload with a fresh random ``content_id``.

        Args:
            issuer_id: the issuer to record.
            rng: a seeded generator for reproducible tests; ``None`` (the default) draws from
                :mod:`secrets`, which is what real images should use.

        Returns:
            The new payload (layout version 1).

        Example:
            >>> Payload.random(issuer_id=3, rng=random.Random(0)).hex
            '629fd82c07cd'
        """
        if rng is None:
            content_id = secrets.randbits(CONTENT_BITS)
        elif isinstance(rng, np.random.Generator):
            content_id = int(rng.integers(0, 1 << CONTENT_BITS, dtype=np.int64))
        else:
            content_id = rng.getrandbits(CONTENT_BITS)
        return cls(content_id=content_id, issuer_id=issuer_id)

    @property
    def hex(self) -> str:
        """``content_id`` as 12 lower-case hex digits: the stable text form used in manifests."""
        return f"{self.content_id:012x}"

    def to_dict(self) -> dict[str, Any]:
        """The payload as plain JSON-ready values (``content_id`` also as :attr:`hex`)."""
        return {
            "content_id": self.content_id,
            "issuer_id": self.issuer_id,
            "version": self.version,
            "hex": self.hex,
        }


def encode_payload(payload: Payload) -> npt.NDArray[np.uint8]:
    """The bits an embedder writes for ``payload``.

    Args:
        payload: what to carry; its ``version`` must be in :data:`SUPPORTED_VERSIONS`.

    Returns:
        A ``uint8`` array of 0s and 1s, :data:`CODEWORD_BITS` long (layout in the module docstring).

    Raises:
        WatermarkError: the payload's layout version is not one this module can write.

    Example:
        >>> bits = encode_payload(Payload(content_id=0x0123456789AB, issuer_id=7))
        >>> bits.shape, bits.dtype.name
        ((160,), 'uint8')
        >>> bits[[3, 40, 150]] ^= 1  # three bit errors
        >>> decode_payload(bits)
        (Payload(content_id=1250999896491, issuer_id=7, version=1), 3)
    """
    if payload.version not in SUPPORTED_VERSIONS:
        raise WatermarkError(
            f"payload layout version {payload.version} is not supported",
            hint=f"use version {max(SUPPORTED_VERSIONS)}, the layout this module writes",
        )
    info = (
        payload.version << (ISSUER_BITS + CONTENT_BITS)
        | payload.issuer_id << CONTENT_BITS
        | payload.content_id
    )
    return _bch_codeword(info << CRC_BITS | _crc16(info))


def decode_payload(
    bits: npt.ArrayLike, *, chase_bits: int = MAX_CHASE_BITS
) -> tuple[Payload, int] | None:
    """Read a payload back from extracted bits, or ``None`` when there is none to trust.

    Args:
        bits: :data:`CODEWORD_BITS` values in embedding order. Either hard bits (``bool`` or
            integers, each 0 or 1), or soft values (floats): ``> 0`` reads as bit 1, ``<= 0`` (and
            NaN) as bit 0, and the magnitude is the reliability. Pass hard bits as integers: floats
            0.0/1.0 also decode, but their "reliabilities" mean nothing.
        chase_bits: for soft values only; when plain BCH decoding fails, retry with every
            combination of flips of this many least reliable bits (a Chase-2 search, 2**k - 1 more
            attempts). 0 turns it off; at most 5.

    Returns:
        ``(payload, bits_corrected)`` when BCH decodes, the CRC matches and the version is known;
        ``bits_corrected`` is how many of the hard-decision bits differ from the codeword (at most
        ``BCH_T``, or ``BCH_T + chase_bits`` after a Chase retry). ``None`` otherwise: random bits
        give an answer with probability at most :func:`false_accept_probability`.

    Raises:
        WatermarkError: ``bits`` is not a 1-D array of :data:`CODEWORD_BITS` values, integers are
            not 0 or 1, the dtype is neither boolean, integer nor float, or ``chase_bits`` is out of
            range. Any values of the right shape and type never raise.
    """
    if not 0 <= chase_bits <= MAX_CHASE_BITS:
        raise WatermarkError(
            f"chase_bits={chase_bits} is out of range",
            hint=f"use 0 (off) to {MAX_CHASE_BITS}",
        )
    hard, reliability = _hard_decisions(bits)

    # 1. Plain hard-decision BCH.
    words = hard[np.newaxis, :]
    # 2. Chase: also try flipping the least reliable bits, likeliest patterns first.
    if reliability is not None and chase_bits > 0:
        words = np.concatenate([words, _chase_words(hard, reliability, chase_bits)])

    buffers = np.zeros((len(words), _BUFFER_BITS), dtype=np.uint8)
    buffers[:, _WIRE_POSITIONS] = words
    packed = np.packbits(buffers, axis=1)
    for row in packed:
        payload = _decode_buffer(row)
        if payload is not None:
            bits_corrected = int(np.count_nonzero(encode_payload(payload) != hard))
            return payload, bits_corrected
    return None


def false_accept_probability(chase_bits: int = 0) -> float:
    """Upper bound on the chance that one decode of unmarked (random) bits returns a payload.

    A random word lies within BCH's radius t of some codeword with probability
    ``V(n, t) / 2**(n - k)`` (V is the Hamming-ball volume, n = 160, n - k = 76 parity bits), and
    the decoded data then passes the CRC with probability ``2**-16`` and names the known version
    with probability ``1/16``. A Chase search makes ``2**chase_bits`` attempts (union bound).

    Args:
        chase_bits: the Chase search size used by :func:`decode_payload` (0 for hard bits).

    Returns:
        The bound, per call of :func:`decode_payload`.

    Example:
        >>> f"{false_accept_probability():.2g}", f"{false_accept_probability(3):.2g}"
        ('3.1e-14', '2.5e-13')
    """
    ball = sum(math.comb(CODEWORD_BITS, i) for i in range(BCH_T + 1))
    per_attempt = ball / 2**ECC_BITS * 2.0**-CRC_BITS * len(SUPPORTED_VERSIONS) / 2**VERSION_BITS
    return float(2**chase_bits * per_attempt)


# --------------------------------------------------------------------------------------------
# helpers


def _crc16(info: int) -> int:
    """CRC-16/CCITT-FALSE of the 68 info bits, packed big-endian into 9 bytes."""
    return binascii.crc_hqx(info.to_bytes(math.ceil(INFO_BITS / 8), "big"), 0xFFFF)


def _bch() -> Any:
    """This thread's ``bchlib.BCH`` (it keeps error locations between calls)."""
    bch = getattr(_local, "bch", None)
    if bch is None:
        bch = bchlib.BCH(BCH_T, m=BCH_M)
        if bch.ecc_bits != ECC_BITS:  # pragma: no cover - a different bchlib would break the layout
            raise WatermarkError(
                f"bchlib makes {bch.ecc_bits} parity bits for m={BCH_M}, t={BCH_T}, not {ECC_BITS}",
                hint="install bchlib>=2.1 (the Linux kernel BCH code)",
            )
        _local.bch = bch
    return bch


def _bch_codeword(data: int) -> npt.NDArray[np.uint8]:
    """The transmitted bits for ``DATA_BITS`` bits of data: the data, then its BCH parity."""
    data_bytes = (data << _DATA_PAD).to_bytes(_DATA_BYTES, "big")
    ecc = bytes(_bch().encode(data_bytes))
    buffer = np.unpackbits(np.frombuffer(data_bytes + ecc, dtype=np.uint8))
    return np.ascontiguousarray(buffer[_WIRE_POSITIONS])


def _hard_decisions(
    bits: npt.ArrayLike,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64] | None]:
    """Validate ``bits``; return hard 0/1 decisions and, for soft input, their reliabilities."""
    array = np.asarray(bits)
    if array.shape != (CODEWORD_BITS,):
        raise WatermarkError(
            f"expected {CODEWORD_BITS} watermark bits, got an array of shape {array.shape}",
            hint="pass the 1-D array of CODEWORD_BITS values the extractor returned",
        )
    if array.dtype == np.bool_:
        return array.astype(np.uint8), None
    if np.issubdtype(array.dtype, np.integer):
        if np.any((array != 0) & (array != 1)):
            raise WatermarkError(
                "hard watermark bits must be 0 or 1",
                hint="pass soft values as floats (> 0 means bit 1), or threshold them first",
            )
        return array.astype(np.uint8), None
    if np.issubdtype(array.dtype, np.floating):
        soft = array.astype(np.float64)
        finite_or_inf = ~np.isnan(soft)
        hard = (soft > 0).astype(np.uint8)  # NaN > 0 is False: NaN reads as 0 ...
        reliability = np.where(finite_or_inf, np.abs(soft), 0.0)  # ... with no reliability
        return hard, reliability
    raise WatermarkError(
        f"watermark bits must be boolean, integer or float, not {array.dtype}",
        hint="pass hard bits as uint8 0/1 or soft values as floats",
    )


def _chase_words(
    hard: npt.NDArray[np.uint8], reliability: npt.NDArray[np.float64], chase_bits: int
) -> npt.NDArray[np.uint8]:
    """``hard`` with every non-empty subset of its ``chase_bits`` least reliable bits flipped."""
    weakest = np.argpartition(reliability, chase_bits - 1)[:chase_bits]
    patterns = _CHASE_PATTERNS[chase_bits]
    # likeliest first: the patterns that flip the least total reliability
    patterns = patterns[np.argsort(patterns @ reliability[weakest], kind="stable")]
    words = np.repeat(hard[np.newaxis, :], len(patterns), axis=0)
    words[:, weakest] ^= patterns
    return words


def _decode_buffer(packed: npt.NDArray[np.uint8]) -> Payload | None:
    """BCH-decode one padded buffer; the payload if the corrected data is fully valid."""
    data = bytearray(packed[:_DATA_BYTES].tobytes())
    ecc = bytearray(packed[_DATA_BYTES:].tobytes())
    bch = _bch()
    if bch.decode(data, ecc) < 0:
        return None
    bch.correct(data, ecc)
    if data[-1] & _PAD_MASK_DATA or ecc[-1] & _PAD_MASK_ECC:
        return None  # the nearest codeword needs untransmitted bits set: not ours
    value = int.from_bytes(data, "big") >> _DATA_PAD
    info, crc = value >> CRC_BITS, value & ((1 << CRC_BITS) - 1)
    if _crc16(info) != crc:
        return None
    version = info >> (ISSUER_BITS + CONTENT_BITS)
    if version not in SUPPORTED_VERSIONS:
        return None
    return Payload(
        content_id=info & ((1 << CONTENT_BITS) - 1),
        issuer_id=(info >> CONTENT_BITS) & ((1 << ISSUER_BITS) - 1),
        version=version,
    )
