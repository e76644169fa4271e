"""Generate tiny, distinct test images and Dogs-vs-Cats-shaped datasets, so tests need no real photos.

Every image is seeded noise: the same seed gives the same bytes, different seeds give
different bytes (and hashes).
"""

from __future__ import annotations

import random
import zipfile
from io import BytesIO
from pathlib import Path

from PIL import Image

LAYOUTS = ("salader", "petimages", "flat")


def image_bytes(
    seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB", fmt: str = "JPEG"
) -> bytes:
    """Seeded noise in `mode` (RGB, L, CMYK, RGBA, ...) encoded as `fmt` (JPEG, PNG, GIF, ...)."""
    channels = len(Image.new(mode, (1, 1)).getbands())
    noise = random.Random(seed).randbytes(size[0] * size[1] * channels)
    out = BytesIO()
    Image.frombytes(mode, size, noise).save(out, fmt)
    return out.getvalue()


def write_jpeg(
    path: str | Path, seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB"
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, size, mode))
    return path


def class_path(layout: str, label: str, number: int, split: str = "train") -> str:
    """Where image `number` of `label` lives in `layout` (relative to the dataset root)."""
    if layout == "salader":
        return f"{split}/{label}s/{label}.{number}.jpg"
    if layout == "petimages":
        return f"PetImages/{label.capitalize()}/{number}.jpg"
    if layout == "flat":
        return f"train/{label}.{number}.jpg"
    raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")


def make_layout(root: str | Path, layout: str, n_per_class: int, seed: int = 0) -> Path:
    """Write a dataset in `layout` under `root` and return `root`.

    n_per_class images per label in every split folder the layout has: salader gets train/ and
    test/ (numbered on from train, as in Kaggle), petimages and flat only their single folder.
    flat also gets an unlabeled test1/ folder, like the Kaggle competition download.
    """
    root = Path(root)
    splits = ("train", "test") if layout == "salader" else ("train",)
    n = 0
    for label in ("cat", "dog"):
        for s, split in enumerate(splits):
            for i in range(1, n_per_class + 1):
                number = s * n_per_class + i
                write_jpeg(root / class_path(layout, label, number, split), seed * 1_000_003 + n)
                n += 1
    if layout == "flat":
        for i in range(1, 3):
            write_jpeg(root / f"test1/{i}.jpg", seed * 1_000_003 + n)
            n += 1
    return root


def zip_dir(
    src_dir: str | Path, zip_path: str | Path, extra_members: dict[str, bytes] | None = None
) -> Path:
    """Zip every file below `src_dir` (names relative to it), plus `extra_members` written verbatim.

    Extra member names are not sanitised, so tests can plant '../evil.jpg' or '/abs.jpg'.
    """
    src_dir, zip_path = Path(src_dir), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(src_dir).as_posix())
        for name, data in (extra_members or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return zip_path


def write_digits(root: str | Path, size: int = 32) -> Path:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, classes 0-9) as PNG files
    in the plain layout `<class>/<n>.png`, upscaled to SIZE px: a real 10-class set, no network."""
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    for n, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        gray = Image.frombytes("L", (8, 8), bytes(int(v * 255 / 16) for v in pixels.ravel()))
        gray.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{n}.png")
    return root
