"""The CLIP BPE vocabulary, rebuilt offline from the file that open_clip ships.

Stable Diffusion's tokenizers (SD 1.x, SD 2.x, both SDXL tokenizers) all use OpenAI CLIP's
byte-level BPE with 49,408 tokens. Hugging Face stores it as ``vocab.json`` + ``merges.txt``;
open_clip ships the same merges as ``bpe_simple_vocab_16e6.txt.gz``. The token order is fixed by
CLIP's ``simple_tokenizer``: the 256 byte characters, the same with ``</w>``, one token per merge,
then ``<|startoftext|>`` and ``<|endoftext|>``. Rebuilding the Hugging Face files from it lets us
make a tokenizer with no download.
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources
from pathlib import Path

__all__ = ["clip_tokenizer", "write_clip_tokenizer_files"]

_N_MERGES = 49152 - 256 - 2
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    # CLIP/GPT-2 map: printable bytes stand for themselves, the rest are shifted past 255.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@functools.cache
def _merges() -> tuple[tuple[str, str], ...]:
    source = resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        lines = text.read().split("\n")
    pairs = lines[1 : _N_MERGES + 1]
    return tuple((a, b) for a, b in (line.split() for line in pairs))


def _vocab() -> dict[str, int]:
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(pair) for pair in _merges()]
    tokens += list(_SPECIALS)
    return {token: i for i, token in enumerate(tokens)}


def write_clip_tokenizer_files(folder: str | Path, *, pad_token: str = "<|endoftext|>") -> Path:
    """Write a Hugging Face CLIP tokenizer folder (vocab, merges, configs) into ``folder``.

    Args:
        folder: destination; created if missing.
        pad_token: ``"<|endoftext|>"`` for OpenAI CLIP (SD 1.x, SDXL's first encoder),
            ``"!"`` for OpenCLIP encoders (SD 2.x, SDXL's second encoder).

    Returns:
        The folder, which ``CLIPTokenizer.from_pretrained`` can load.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(_vocab(), ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in _merges()) + "\n"
    (out / "merges.txt").write_text(merges, encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": _SPECIALS[0],
        "eos_token": _SPECIALS[1],
        "unk_token": _SPECIALS[1],
        "pad_token": pad_token,
        "errors": "replace",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = {
        "bos_token": _SPECIALS[0],
        "eos_token": _SPECIALS[1],
        "unk_token": _SPECIALS[1],
        "pad_token": pad_token,
    }
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return out


def clip_tokenizer(folder: str | Path, *, pad_token: str = "<|endoftext|>") -> object:
    """Write the tokenizer files into ``folder`` (if needed) and load a ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    out = Path(folder)
    if not (out / "vocab.json").is_file():
        write_clip_tokenizer_files(out, pad_token=pad_token)
    return CLIPTokenizer.from_pretrained(str(out))
