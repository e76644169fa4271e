"""Decode one image file and normalise it to an RGB JPEG of at most MAX_SIDE pixels a side.

`prepare` runs every training file through `check_image`, and `catdog predict` runs user files
through it too, so a photo is converted exactly the same way at training and at prediction time.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from PIL import Image, UnidentifiedImageError

MIN_SIDE = 8
# The largest image size catdog trains at (the CLI's --image-size limit): a larger photo is stored
# downscaled to this on its longer side, so no step after `check_image` holds a 100 MP image.
MAX_SIDE = 1024
# Most pixels decoded at once (256 MB as RGBA), checked before decoding. JPEGs count at the reduced
# scale libjpeg decodes them at, so only a huge PNG, TIFF, WebP, ... can exceed it; PIL refuses
# anything above 2 * Image.MAX_IMAGE_PIXELS (179 MP) already when opening it.
MAX_PIXELS = 8000 * 8000
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


def _fit(width: int, height: int) -> tuple[int, int] | None:
    """The size within MAX_SIDE x MAX_SIDE with the same aspect ratio, or None if it fits already."""
    longer = max(width, height)
    if longer <= MAX_SIDE:
        return None
    return max(1, round(width * MAX_SIDE / longer)), max(1, round(height * MAX_SIDE / longer))


def check_image(raw: bytes) -> ImageCheck:
    """Fully decode `raw` and return it as an RGB JPEG, or say why it is unusable.

    Reasons: "empty", "not an image", "corrupt", "truncated", "too small", "too large".
    RGB JPEGs up to MAX_SIDE keep their original bytes; every other mode or format is converted to
    RGB (alpha composited on white), anything larger downscaled to MAX_SIDE on its longer side,
    and re-encoded as JPEG quality 95. width and height are those of the returned image.
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
        target = _fit(width, height)
        if target and img.format in ("JPEG", "MPO"):
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients: a
            # 10000x10000 photo then costs 1250x1250 pixels of memory instead of 400 MB.
            img.draft("RGB", target)
        if img.width * img.height > MAX_PIXELS:  # the size about to be decoded
            return _rejected("too large", width, height)
        try:
            # Decoding every pixel is the only way to notice a file cut off mid-scan.
            img.load()
        except Image.DecompressionBombError:  # some plugins check frame sizes only while loading
            return _rejected("too large", width, height)
        except OSError as exc:
            return _rejected("truncated" if "truncated" in str(exc).lower() else "corrupt", width, height)
        except Exception:
            return _rejected("corrupt", width, height)
        # MPO (camera multi-picture) files start with a plain JPEG that every decoder reads.
        if not target and img.format in ("JPEG", "MPO") and img.mode == "RGB":
            return ImageCheck(True, None, raw, width, height, None)
        converted_from = f"{img.format}/{img.mode}"
        rgb = _to_rgb(img)
        if target:
            rgb.thumbnail(target, Image.Resampling.LANCZOS)
            converted_from += f" downscaled from {width}x{height}"
        out = BytesIO()
        rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    return ImageCheck(True, None, out.getvalue(), rgb.width, rgb.height, converted_from)
