"""Real image files carrying opt-outs, for the opt-out tests: C2PA manifests signed with
c2pa-python (sdkit's own Stamper, and hand-built training-and-mining assertions) and IPTC
``plus:DataMining`` written into XMP with Pillow (JPEG, WebP ``xmp=``; PNG iTXt)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from provenance.credentials import Credentials, init_development_credentials
from provenance.manifest import sign_asset
from provenance.stamp import Stamper

PLUS_VOCAB = "http://ns.useplus.org/ldf/vocab/"
CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def credentials(folder: Path) -> Credentials:
    """Development credentials made in ``folder``."""
    paths = init_development_credentials(folder)
    return Credentials.from_files(paths.certificate_chain, paths.private_key)


def picture(seed: int = 0, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A small textured picture (smooth random colour field), different for each seed."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """Encoded bytes (``fmt``: png, jpeg, webp)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def sdkit_signed(creds: Credentials, fmt: str = "png", **stamper: Any) -> bytes:
    """An image signed exactly as sdkit signs its outputs (Stamper; no watermark for speed)."""
    stamp = Stamper(creds, watermark=False, **stamper)
    image = picture(1)
    marked, record = stamp.watermark(image)
    return stamp.sign(encode(marked, fmt), fmt, title=f"out.{fmt}", record=record)


def c2pa_signed(
    creds: Credentials, label: str, entries: dict[str, Any], fmt: str = "jpeg"
) -> bytes:
    """A photo whose C2PA manifest has one training-and-mining assertion with ``entries``."""
    definition = {
        "claim_generator_info": [{"name": "optout-tests", "version": "1"}],
        "title": f"photo.{fmt}",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": CAPTURE}]},
            },
            {"label": label, "data": {"entries": entries}},
        ],
    }
    signed, _ = sign_asset(encode(picture(2), fmt), fmt, definition, creds)
    return signed


def xmp_packet(code: str) -> bytes:
    """An XMP packet stating ``plus:DataMining`` = ``code`` (a PLUS vocabulary code)."""
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/">'
        f'<plus:DataMining rdf:resource="{PLUS_VOCAB}{code}"/>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def with_xmp(code: str, fmt: str = "jpeg", *, compressed: bool = False) -> bytes:
    """A picture carrying ``plus:DataMining`` = ``code`` in its XMP (written by Pillow)."""
    packet = xmp_packet(code)
    if fmt == "png":
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode(), zip=compressed)
        return encode(picture(3), "png", pnginfo=info)
    return encode(picture(3), fmt, xmp=packet)
