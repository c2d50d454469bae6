"""The benchmark's JPEGs again at ImageNet's usual size, for the GPU check (benchmarks/gpu/check.sh).

Most ImageNet train images are 500x375 or 500x333; the Places365 backgrounds of the attack assets are mostly
683x512 or 768x512. Decoding costs about in proportion to the pixels and the bytes, so the same scenes with their
longer side at 500 px (Lanczos, quality 97, 4:2:0) say what the loader gives on the paper's data; the originals are
the harder case. Quality 97 gives 0.47 bytes a pixel (82 KB an image); ImageNet's train JPEGs are about 0.6 (108 KB
on average), so these are a little cheaper to entropy-decode than ImageNet's. Written on the machine that measures
(made in seconds there) to keep the carried folder small.

    python benchmarks/gpu/imagenet_size.py SRC_DIR DST_DIR
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

LONGER_SIDE = 500
QUALITY = 97


def shrink(src: Path, dst: Path) -> None:
    with Image.open(src) as im:
        im = im.convert("RGB")
        s = LONGER_SIDE / max(im.size)
        if s < 1:
            im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.Resampling.LANCZOS)
        im.save(dst / src.name, quality=QUALITY, subsampling=2)


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    files = sorted(src.glob("*.jpg"))
    if not files:
        sys.exit(f"error: no .jpg files in {src}; run benchmarks/gpu/prepare.sh first")
    dst.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(shrink, files, [dst] * len(files)))
    print(f"wrote {len(files)} JPEGs at ImageNet's size to {dst}")


if __name__ == "__main__":
    main()
