"""A stand-in for the full Kaggle download, built from the 5,000-photo sample: each photo five
times (itself, mirrored, and centre crops of 90% and 80%, mirrored or not), re-encoded, so
25,000 files in the sample's layout (20,000 train, 5,000 test).

It is for planning and memory figures only (how the CPU plan sizes its screen and its long fit
at the real download's scale, and what the decoded cache takes): its copies are near-duplicates,
so accuracy on it means nothing.

    python -m benchmarks.standin --data ../shared/data/dogs-vs-cats-mini --out /tmp/standin
    catdog sweep experiments/cpu.toml --data /tmp/standin --dry-run
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageOps

VARIANTS = (
    ("orig", 1.0, False),
    ("flip", 1.0, True),
    ("c90", 0.9, False),
    ("c90f", 0.9, True),
    ("c80", 0.8, False),
)


def variant(img: Image.Image, crop: float, flip: bool) -> Image.Image:
    if crop < 1.0:
        w, h = img.size
        cw, ch = int(w * crop), int(h * crop)
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    return ImageOps.mirror(img) if flip else img


def build(data: Path, out: Path) -> int:
    """Write the stand-in under OUT; the number of files written."""
    written = 0
    for src in sorted(data.rglob("*.jpg")):
        rel = src.relative_to(data)
        with Image.open(src) as img:
            img = img.convert("RGB")
            for tag, crop, flip in VARIANTS:
                dest = out / rel.parent / f"{src.stem}.{tag}.jpg"
                dest.parent.mkdir(parents=True, exist_ok=True)
                variant(img, crop, flip).save(dest, "JPEG", quality=90)
                written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/dogs-vs-cats-mini"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    print(f"wrote {build(args.data, args.out)} files under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
