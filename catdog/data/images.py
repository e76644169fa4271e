"""Decode one image file and normalise it to an RGB JPEG.

`prepare` runs every training file through `check_image`, and `catdog predict` runs user files
through it too, so a photo is converted exactly the same way at training and at prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from PIL import Image, UnidentifiedImageError

LABELS = ("cat", "dog")  # index 0 = cat, 1 = dog

MIN_SIDE = 8
JPEG_QUALITY = 95

# Signatures of formats PIL reads: a file that starts like an image but fails to parse is
# "corrupt"; anything else is "not an image".
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of `check_image`: `data` is an RGB JPEG when `ok`, else `reason` says why not."""

    ok: bool
    reason: str | None
    data: bytes | None
    width: int
    height: int
    converted_from: str | None


def _rejected(reason: str, width: int = 0, height: int = 0) -> ImageCheck:
    return ImageCheck(False, reason, None, width, height, None)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.has_transparency_data:
        # Transparent pixels are black or garbage underneath; white is what a viewer shows.
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def check_image(raw: bytes) -> ImageCheck:
    """Fully decode `raw` and return it as an RGB JPEG, or say why it is unusable.

    Reasons: "empty", "not an image", "corrupt", "truncated", "too small", "too large".
    RGB JPEGs keep their original bytes; every other mode or format is converted to RGB
    (alpha composited on white) and re-encoded as JPEG quality 95.
    """
    if not raw:
        return _rejected("empty")
    try:
        img = Image.open(BytesIO(raw))
    except Image.DecompressionBombError:
        return _rejected("too large")
    except UnidentifiedImageError:
        return _rejected("corrupt" if raw.startswith(_IMAGE_MAGIC) else "not an image")
    except Exception:  # PIL plugins raise assorted errors on malformed headers
        return _rejected("corrupt")
    with img:
        width, height = img.size
        if width < MIN_SIDE or height < MIN_SIDE:
            return _rejected("too small", width, height)
        try:
            # Decoding every pixel is the only way to notice a file cut off mid-scan.
            img.load()
        except OSError as exc:
            return _rejected("truncated" if "truncated" in str(exc).lower() else "corrupt", width, height)
        except Exception:
            return _rejected("corrupt", width, height)
        # MPO (camera multi-picture) files start with a plain JPEG that every decoder reads.
        if img.format in ("JPEG", "MPO") and img.mode == "RGB":
            return ImageCheck(True, None, raw, width, height, None)
        converted_from = f"{img.format}/{img.mode}"
        out = BytesIO()
        _to_rgb(img).save(out, "JPEG", quality=JPEG_QUALITY)
    return ImageCheck(True, None, out.getvalue(), width, height, converted_from)
