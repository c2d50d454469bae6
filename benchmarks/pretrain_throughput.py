"""Pre-training throughput: model-only steps vs real training steps with the data pipeline.

For each (method, backbone) at ``--image-size`` (default 32 px, the figures in README) prints one JSON line
with images/s of
  (a) model-only: forward + backward + optimizer step on random uint8 views (colour stage included),
  (b) pipeline: ``corruptencoder.ssl.train.pretrain`` on the demo world, or on ``--data`` (decode, crops,
      colour, step, Lightning loop), measured by its Throughput callback,
and the pipeline's share of model-only (``ratio``, also as ``pipeline_share_pct``; target >= 0.8 on CPU,
>= 0.9 on a GPU: augmentation must not dominate). On a CUDA machine both run on the GPU (bf16 autocast, the
trainer's automatic precision there); there is no separate CPU baseline in that case.

``--loader-only`` measures the data pipeline alone at ``--image-size`` (default 224 px here; decode +
MoCo-v2's two crops, the work a loader worker does per image) on a folder of JPEGs (default: the Places365
backgrounds of the shared assets, else the demo world): images/s in one process, then in total and per worker
with 1..``--workers`` loader processes, for each of ``--decoders``: ``pil`` (Pillow + a copy, the previous host
path), ``auto`` (the host path: torchvision's JPEG decoder), ``bytes`` (``data.decode: device``, the workers' half:
read the bytes, draw the boxes) and ``device`` (the same, then decode + crop every batch in the main process on
the GPU, or on the CPU where there is none).

    python benchmarks/pretrain_throughput.py [--threads 2] [--steps 12] [--methods moco simclr]
    python benchmarks/pretrain_throughput.py --image-size 224 --data DIR --backbones resnet18 --methods moco
    python benchmarks/pretrain_throughput.py --loader-only [--image-size 224] [--data DIR] [--workers 2]
    python benchmarks/pretrain_throughput.py --image-size 224 --data DIR --decode host device --compile 0 1  # GPU

A small ``--data`` folder is repeated in a file list up to the images a measurement needs; at 224 px nothing is
cached in memory (as for ImageNet-100). ``benchmarks/gpu/check.sh`` runs the 224 px measurements on a GPU machine.

A 224 px pipeline run wants real photos (``--data``, e.g. an ImageNet class folder or the Places365
backgrounds): the demo world's images are 64 px and would be upsampled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from corruptencoder.demo import demo_world
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.train import method_class, prefetch_depth, pretrain, resolve_runtime

BACKBONES = {"small_cnn": {"name": "small_cnn", "width": 1.0},
             "resnet18": {"name": "resnet18", "width": 1.0},
             "resnet18-w0.25": {"name": "resnet18", "width": 0.25}}


def config(method: str, backbone: str, batch: int, data: str, epochs: int, max_images: int, workers: int | None,
           accelerator: str, image_size: int = 32, decode: str = "auto", compile: bool = False) -> PretrainConfig:
    # at 224 px nothing is cached in memory, as for ImageNet-100 (126k photos): every image is decoded each time
    return PretrainConfig.model_validate({
        "method": {"name": method, **({"queue_size": 4096} if method == "moco" else {})},
        "data": {"clean": data, "image_size": image_size, "max_images": max_images, "workers": workers,
                 "decode": decode, "cache": "none" if image_size >= 128 else "auto"},
        "backbone": BACKBONES[backbone], "views": {"blur": False},
        "optim": {"batch_size": batch, "epochs": epochs},
        "trainer": {"progress": False, "accelerator": accelerator, "compile": compile},
    })


def enough_images(data: str, needed: int, folder: Path) -> str:
    """``data``, or a file list repeating its images up to ``needed`` (a small folder such as the 650 Places365
    backgrounds would otherwise end an epoch every 2-3 batches at batch 256, and each epoch's first batch is not
    counted)."""
    from corruptencoder.utils.files import list_images

    files = [str(f.resolve()) for f in list_images(Path(data))] if Path(data).is_dir() else []  # list is elsewhere
    if not files or len(files) >= needed:
        return data
    listing = folder / "images.txt"
    listing.write_text("".join(f"{f}\n" for f in (files * (needed // len(files) + 1))[:needed]))
    return str(listing)


def model_only(cfg: PretrainConfig, steps: int, device: str) -> float:
    model = method_class(cfg.method.name)(cfg).to(device)
    if cfg.trainer.compile:  # as train.py does
        model.backbone = torch.compile(model.backbone)
    opt = model.configure_optimizers()["optimizer"]
    bs = cfg.optim.batch_size
    views = [torch.randint(0, 256, (bs, 3, v.size, v.size), dtype=torch.uint8, device=device) for v in model.plan.views]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    t = 0.0
    warm = 2 + (3 if cfg.trainer.compile else 0)  # compiling takes the first steps (and recompiles once)
    for i in range(steps + warm):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch, _ = model.on_after_batch_transfer(([v.clone() for v in views], None), 0)
        with amp:
            loss, _ = model.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warm:  # warm-up steps excluded
            t += time.perf_counter() - t0
    return steps * bs / t


def loader_only(files: list[str], image_size: int, decoder: str, workers: int, n: int) -> float:
    """Images/s of decode + two MoCo-v2 crops over ``n`` images with ``workers`` loader processes (0: here).

    ``decoder``: ``pil`` (Pillow, then a copy into a CHW tensor: the previous host path), ``auto`` (the host
    path: torchvision's decoder for JPEGs), ``bytes`` (``data.decode: device`` without the device half: workers
    read JPEG bytes and draw the boxes) or ``device`` (the same, then decode and crop each batch here, on the GPU
    when there is one)."""
    from torch.utils.data import DataLoader

    import corruptencoder.data.datasets as ds
    from corruptencoder.data.datasets import ImageStore, ViewDataset, collate_views
    from corruptencoder.data.encoded import EncodedViewDataset, collate_encoded
    from corruptencoder.ssl.views import view_plan
    from corruptencoder.utils.imageio import load_rgb

    cfg = PretrainConfig.model_validate({"method": {"name": "moco"}, "data": {"clean": "x", "image_size": image_size}})
    if decoder == "pil":
        ds.decode_tensor = lambda path, short: ds.to_tensor(load_rgb(path, draft_short_side=short), short)
    store = ImageStore((files * (n // len(files) + 1))[:n], 4 * image_size, cache=False)
    plan = view_plan(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoded = decoder in ("bytes", "device")
    dataset: Any = EncodedViewDataset(store, plan) if encoded else ViewDataset(store, plan.crop)
    collate = collate_encoded(tuple(v.size for v in plan.views)) if encoded else collate_views
    loader = DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=collate)
    # the clock starts once every worker has handed over its first batch: process start-up is excluded (with 15
    # workers and a few thousand images it was most of the time, and the figure read far below the pipeline's)
    warm = max(1, workers)
    t0 = time.perf_counter()
    count = 0
    for i, batch in enumerate(loader):
        if decoder == "device":
            views, _ = batch.decode(device)
            got = int(views[0].shape[0])
        else:
            got = len(batch.items) if decoder == "bytes" else int(batch[0][0].shape[0])
        if i + 1 == warm:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        elif i + 1 > warm:
            count += got
    if device == "cuda":
        torch.cuda.synchronize()
    if count == 0:
        raise SystemExit(f"--images {n}: too few for {workers} workers; give at least {32 * (warm + 4)}")
    return count / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=["moco", "simclr"])
    ap.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18"])
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: the toolkit's choice)")
    ap.add_argument("--loader-only", action="store_true", help="time the data pipeline alone (see above)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="crop size (default: 32 for model-only and pipeline, 224 for --loader-only)")
    ap.add_argument("--data", help="folder of images (default: the demo world; for --loader-only the Places365 "
                    "backgrounds of the shared assets when present)")
    ap.add_argument("--images", type=int, default=400, help="images per --loader-only measurement")
    ap.add_argument("--decoders", nargs="+", default=["pil", "auto", "bytes", "device"],
                    choices=["pil", "auto", "bytes", "device"],
                    help="--loader-only: the paths to time (see loader_only)")
    ap.add_argument("--decode", nargs="+", choices=["auto", "host", "device"], default=["auto"],
                    help="pipeline: data.decode of the pre-training runs (several: one line each)")
    ap.add_argument("--compile", nargs="+", type=int, choices=[0, 1], default=[0],
                    help="pipeline and model-only: trainer.compile off (0) and/or on (1), one line each")
    ap.add_argument("--worker-counts", nargs="+", type=int,
                    help="--loader-only: these numbers of loader workers (default 1..--workers)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.loader_only:
        import subprocess

        from corruptencoder.utils.files import list_images

        args.image_size = args.image_size or 224
        shared = Path(__file__).resolve().parents[2] / "shared/data/corruptencoder-assets/backgrounds-places365"
        folder = Path(args.data) if args.data else (shared if shared.is_dir() else demo_world() / "pretrain")
        files = [str(f) for f in list_images(folder)]
        for decoder in args.decoders:
            # a fresh process per measurement: the decoder switch and loader workers start clean
            here = str(Path(__file__).parent)
            counts = [0, *(args.worker_counts or range(1, (args.workers or 2) + 1))]
            code = (f"import json, sys; sys.path.insert(0, {here!r}); from pretrain_throughput import loader_only; "
                    f"print(json.dumps([loader_only(json.loads(sys.argv[1]), {args.image_size}, {decoder!r}, w, "
                    f"{args.images}) for w in {counts!r}]))")
            out = subprocess.run([sys.executable, "-c", code, json.dumps(files)], capture_output=True, text=True,
                                 check=True).stdout
            rates = json.loads(out.strip().splitlines()[-1])
            pooled = [(w, r) for w, r in zip(counts, rates, strict=True) if w]
            print(json.dumps({"benchmark": "loader_only", "data": str(folder), "images": len(files),
                              "image_size": args.image_size, "decoder": decoder,
                              "in_process_img_s": round(rates[0], 1),
                              "workers_img_s": {str(w): round(r, 1) for w, r in pooled},
                              "per_worker_img_s": {str(w): round(r / w, 1) for w, r in pooled}}),
                  flush=True)
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = args.image_size or 32
    data = args.data or str(demo_world() / "pretrain")
    for backbone in args.backbones:
        for method in args.methods:
            for compiled in args.compile:  # uncompiled first: a call cut short by its time limit keeps those
                for decode in args.decode:
                    # ResNet-18 at full width is ~45 img/s on 2 CPU threads: fewer steps there
                    steps = args.steps if (device == "cuda" or backbone != "resnet18") else max(4, args.steps // 3)
                    bs = args.batch
                    with tempfile.TemporaryDirectory() as tmp:
                        accel = "gpu" if device == "cuda" else "cpu"
                        # the steps timed come after the batches the workers prefetch during the first (Throughput)
                        probe = config(method, backbone, bs, data, 1, bs, args.workers, accel, size, decode)
                        needed = bs * (steps + 2 + prefetch_depth(resolve_runtime(probe)["workers"]))
                        cfg = config(method, backbone, bs, enough_images(data, needed, Path(tmp)), 1, needed,
                                     args.workers, accel, size, decode, bool(compiled))
                        a = model_only(cfg, steps, device)
                        res = pretrain(cfg, Path(tmp) / "run", progress=False)
                        ran = json.loads((Path(tmp) / "run" / "run.json").read_text())
                    b = res.images_per_second
                    print(json.dumps({"benchmark": "pretrain_throughput", "device": device,
                                      "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                                      "threads": args.threads, "method": method, "backbone": backbone,
                                      "image_size": size, "data": data, "batch": bs, "decode": decode,
                                      "compile": bool(compiled), "workers": ran.get("loader_workers"),
                                      "decode_on": ran.get("decode_on"), "precision": ran.get("precision"),
                                      "model_only_img_s": round(a, 1), "pipeline_img_s": round(b, 1),
                                      "ratio": round(b / a, 3), "pipeline_share_pct": round(100 * b / a, 1)}),
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
