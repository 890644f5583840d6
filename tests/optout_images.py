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


#: Photos registered in the registry tests (skimage ships them).
REGISTERED = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
)
# Other skimage photos, never registered ("cat" is chelsea again, so it is left out).
_OTHERS = (
    "brick",
    "clock",
    "coins",
    "grass",
    "gravel",
    "horse",
    "moon",
    "page",
    "text",
    "colorwheel",
    "cell",
)


def skimage_photo(name: str) -> Image.Image:
    """One of scikit-image's sample photos, as RGB."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def unrelated_images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` images unrelated to :data:`REGISTERED`: a quarter each of random crops of other
    photos, faces (LFW subset), smooth colour fields and drawn shapes."""
    import skimage.data
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    others = [skimage_photo(name) for name in _OTHERS]
    faces = skimage.data.lfw_subset()
    out: list[Image.Image] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            src = others[int(rng.integers(len(others)))]
            side = int(rng.integers(64, min(src.size)))
            x, y = (
                int(rng.integers(0, src.width - side + 1)),
                int(rng.integers(0, src.height - side + 1)),
            )
            out.append(src.crop((x, y, x + side, y + side)).resize((128, 128)))
        elif kind == 1:
            face = (faces[int(rng.integers(len(faces)))] * 255).astype(np.uint8)
            out.append(Image.fromarray(face).resize((128, 128)).convert("RGB"))
        elif kind == 2:
            field = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).resize(
                (128, 128), Image.Resampling.BICUBIC
            )
            out.append(field.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 6)))))
        else:
            canvas = Image.new("RGB", (128, 128), tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(canvas)
            for _ in range(int(rng.integers(2, 8))):
                x0, x1 = sorted(int(v) for v in rng.integers(0, 128, 2))
                y0, y1 = sorted(int(v) for v in rng.integers(0, 128, 2))
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
                    (x0, y0, x1 + 1, y1 + 1), fill=colour
                )
            out.append(canvas)
    return out


def edits() -> dict[str, Any]:
    """The edits a registered work must survive: resize 0.5x, JPEG q70, 5% crops."""

    def jpeg70(im: Image.Image) -> Image.Image:
        return Image.open(io.BytesIO(encode(im, "jpeg", quality=70))).convert("RGB")

    def crop(left: float, top: float, right: float, bottom: float) -> Any:
        def cut(im: Image.Image) -> Image.Image:
            w, h = im.size
            return im.crop(
                (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
            )

        return cut

    return {
        "resize 0.5x": lambda im: im.resize(
            (im.width // 2, im.height // 2), Image.Resampling.LANCZOS
        ),
        "JPEG q70": jpeg70,
        "crop 5% top-left": crop(0.05, 0.05, 0, 0),
        "crop 5% centred": crop(0.025, 0.025, 0.025, 0.025),
        "crop 5% bottom-right": crop(0, 0, 0.05, 0.05),
        "crop 3% left + 4% bottom": crop(0.03, 0, 0, 0.04),
        "resize + crop 5% + JPEG q70": lambda im: jpeg70(
            crop(0.05, 0.05, 0, 0)(im.resize((im.width // 2, im.height // 2)))
        ),
    }
