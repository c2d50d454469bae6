"""Pre-training throughput: model-only steps vs real training steps with the data pipeline.

For each (method, backbone) at 32 px prints one JSON line with images/s of
  (a) model-only: forward + backward + optimizer step on random uint8 views (colour stage included),
  (b) pipeline: ``corruptencoder.ssl.train.pretrain`` on the demo world (decode, crops, colour,
      step, Lightning loop), measured by its Throughput callback,
and their ratio (target >= 0.8: augmentation must not dominate). On a CUDA machine the same runs
use the GPU (pass --device-only to skip the CPU baselines).

    python benchmarks/pretrain_throughput.py [--threads 2] [--steps 12] [--methods moco simclr]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from corruptencoder.demo import demo_world
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.train import method_class, pretrain

BACKBONES = {"small_cnn": {"name": "small_cnn", "width": 1.0},
             "resnet18": {"name": "resnet18", "width": 1.0},
             "resnet18-w0.25": {"name": "resnet18", "width": 0.25}}


def config(method: str, backbone: str, batch: int, data: str, epochs: int, max_images: int, workers: int | None,
           accelerator: str) -> PretrainConfig:
    return PretrainConfig.model_validate({
        "method": {"name": method, **({"queue_size": 4096} if method == "moco" else {})},
        "data": {"clean": data, "image_size": 32, "max_images": max_images, "workers": workers},
        "backbone": BACKBONES[backbone], "views": {"blur": False},
        "optim": {"batch_size": batch, "epochs": epochs},
        "trainer": {"progress": False, "accelerator": accelerator},
    })


def model_only(cfg: PretrainConfig, steps: int, device: str) -> float:
    model = method_class(cfg.method.name)(cfg).to(device)
    opt = model.configure_optimizers()["optimizer"]
    bs = cfg.optim.batch_size
    views = [torch.randint(0, 256, (bs, 3, v.size, v.size), dtype=torch.uint8, device=device) for v in model.plan.views]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    t = 0.0
    for i in range(steps + 2):
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
        if i >= 2:  # warm-up steps excluded
            t += time.perf_counter() - t0
    return steps * bs / t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=["moco", "simclr"])
    ap.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18"])
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: the toolkit's choice)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    world = demo_world()
    for backbone in args.backbones:
        for method in args.methods:
            # ResNet-18 at full width is ~45 img/s on 2 CPU threads: fewer steps there
            steps = args.steps if (device == "cuda" or backbone != "resnet18") else max(4, args.steps // 3)
            bs = args.batch
            cfg = config(method, backbone, bs, str(world / "pretrain"), 1, bs * (steps + 2), args.workers,
                         "gpu" if device == "cuda" else "cpu")
            a = model_only(cfg, steps, device)
            with tempfile.TemporaryDirectory() as tmp:
                res = pretrain(cfg, Path(tmp) / "run", progress=False)
            b = res.images_per_second
            print(json.dumps({"benchmark": "pretrain_throughput", "device": device,
                              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                              "threads": args.threads, "method": method, "backbone": backbone, "image_size": 32,
                              "batch": bs, "model_only_img_s": round(a, 1), "pipeline_img_s": round(b, 1),
                              "ratio": round(b / a, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
