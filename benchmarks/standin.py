"""A stand-in for the full Kaggle download, built from the 5,000-photo sample: each photo five
times (itself, mirrored, and centre crops of 90% and 80%, mirrored or not), re-encoded, so
25,000 files in the sample's layout (20,000 train, 5,000 test).

It is for planning and memory figures only (how the CPU plan sizes its screen and its long fit
at the real download's scale, and what the decoded cache takes): its copies are near-duplicates,
so accuracy on it means nothing. So it is prepared where --out says, as a prepared dataset of
its own, and never under data/prepared: the dataset prepared there last is what a bare
`make sweep` trains on, and the stand-in must not become it.

    python -m benchmarks.standin --data ../shared/data/dogs-vs-cats-mini --out /tmp/standin
    catdog sweep experiments/cpu.toml --data /tmp/standin --dry-run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
    p.add_argument("--out", type=Path, required=True, help="where the prepared stand-in goes")
    args = p.parse_args(argv)
    from catdog import log
    from catdog.data.prepare import prepare
    from catdog.data.resolve import DATA_ROOT
    from catdog.errors import CatdogError

    if args.out.resolve().is_relative_to((DATA_ROOT / "prepared").resolve()):
        p.error(
            f"--out {args.out} is in {DATA_ROOT / 'prepared'}, whose latest dataset a bare "
            "`make sweep` trains on; put the stand-in elsewhere, e.g. /tmp/standin"
        )
    log.setup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:  # the photos only until they are prepared: the prepared dataset has its own copies
        with tempfile.TemporaryDirectory(prefix=".standin-photos-", dir=args.out.parent) as tmp:
            written = build(args.data, Path(tmp) / "standin")
            prepare(Path(tmp) / "standin", args.out)
    except CatdogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written} photos, prepared as {args.out}: pass it as --data {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
