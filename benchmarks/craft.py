"""Crafting speed against the physical limit (decode the inputs + encode the outputs).

Crafts 650 CorruptEncoder poisons from the real assets (hunting-dog references, the 650 Places365
backgrounds, trigger_10 at 40 px) and prints one JSON line:

    seconds, poisons_per_s, limit_seconds (pure decode of every background used + encode of every
    poison, with the same number of processes), ratio_to_limit, and the single-process limit.

Target: ratio_to_limit <= 1.25. For scale: the paper's own script needs ~28 s for the same 650
poisons on this machine (single process).

    python benchmarks/craft.py [--assets ../shared/data/corruptencoder-assets] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from corruptencoder.poison.config import CraftConfig
from corruptencoder.poison.craft import craft
from corruptencoder.poison.manifest import read_manifest

DEFAULT_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corruptencoder-assets"


def _decode_encode(args: tuple[str, tuple[int, int], bytes, int]) -> None:
    """Decode one background and encode one output image: the irreducible work of one poison."""
    background, size, raw, level = args
    Image.open(background).load()
    Image.frombytes("RGB", size, raw).save(io.BytesIO(), format="PNG", compress_level=level)


def limit_seconds(items: list[tuple[str, tuple[int, int], bytes, int]], workers: int) -> float:
    t = time.perf_counter()
    if workers <= 1:
        for it in items:
            _decode_encode(it)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(_decode_encode, items, chunksize=8)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=DEFAULT_ASSETS)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--num", type=int, default=650)
    args = ap.parse_args()
    if not args.assets.is_dir():
        print(json.dumps({"skipped": f"assets not found at {args.assets}"}))
        return 0
    cfg = CraftConfig.model_validate({
        "seed": 0, "workers": args.workers,
        "targets": [{
            "name": "hunting-dog", "num": args.num,
            "references": [str(args.assets / "references" / "hunting-dog")],
            "backgrounds": [str(args.assets / "backgrounds-places365")],
            "trigger": str(args.assets / "triggers" / "trigger_10.png"), "trigger_size": 40,
        }],
    })
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "poisons"
        t0 = time.perf_counter()
        summary = craft(cfg, out, progress=False)
        seconds = time.perf_counter() - t0
        records = read_manifest(out)
        mean_kb = sum((out / r["file"]).stat().st_size for r in records) / len(records) / 1024
        items = []
        for r in records:  # outputs decoded up front: only background decode + output encode are timed
            im = Image.open(out / r["file"])
            items.append((r["background"], im.size, im.convert("RGB").tobytes(), cfg.png_compress_level))
    limit = limit_seconds(items, args.workers)
    limit_1 = limit_seconds(items, 1) if args.workers > 1 else limit
    print(json.dumps({
        "benchmark": "craft", "poisons": summary.num, "workers": args.workers,
        "seconds": round(seconds, 2), "poisons_per_s": round(summary.num / seconds, 1),
        "limit_seconds": round(limit, 2), "ratio_to_limit": round(seconds / limit, 3),
        "limit_seconds_1_process": round(limit_1, 2), "mean_poison_kb": round(mean_kb, 1),
        "paper_script_seconds_reference": 28.0, "python": sys.version.split()[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
