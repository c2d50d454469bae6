"""DECREE (Feng et al., CVPR 2023): is this encoder backdoored? An inspection of a trained encoder.

With the encoder and unlabelled clean images only, DECREE searches for the smallest trigger (a mask ``m`` and a
pattern ``p``, stamped as ``(1 - m) * x + m * p``) that makes the encoder map every stamped image to nearly the
same embedding (mean pairwise cosine similarity above ``success``, 0.99). A backdoored encoder already has such
a trigger, so the search ends with a small mask; a clean one needs to paint over most of the image. The verdict
is the mask's L1 norm over the image area, PL1 (the share of the image the trigger covers): backdoored when
PL1 < ``threshold``. The paper's threshold is 0.1 (its detection figures draw the line there).

Our implementation of the paper and its public code (GiantSeaweed/DECREE ``main.py``): tanh-parameterised mask
and pattern from a random start, Adam (betas 0.5, 0.9), loss ``-mean pairwise cos + lambda * L1(mask)`` with the
L1 over the three colour channels, and lambda adapted as there: x5 after more than 5 steps in a row above
``success``, /5 after more than 5 below, reset to its start value when it has sat below ``lambda_min`` with
success for more than 10 steps; the best (smallest) mask among the successful steps is the result, and the
search stops at the end of a pass over the images once the best has not improved for ``patience`` steps (35 at
224 px, 10 at CIFAR size) and the pass averaged above ``success``. The public code counts epochs over its shadow
set (at most 1,000, lr 0.5 then 0.1 after 20 % and 0.05 after 50 % of them at 224 px); we count steps (``steps``
at most) and drop the rate at the same shares of the budget. Parameters scale with the preset (``PRESET_DEFAULTS``).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from corruptencoder.defend.base import DEFENCES, DefenceContext, DefenceOptions, EncoderDefence, EncoderResult
from corruptencoder.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The paper's verdict: an encoder whose inverted trigger covers less than this share of the image is backdoored.
PAPER_THRESHOLD = 0.1
#: The fewest images a pairwise similarity over a batch means anything on.
MIN_IMAGES = 4
EPS = 1e-7

#: Per-preset defaults, used where the user did not set an option. ``paper``: the public code's ImageNet setting
#: (a 10,000-image shadow set, 20 % of ImageNet's validation images, batch 32 and lr 0.5 as in its run script,
#: lambda_min 1e-7, patience 35); the CIFAR-sized presets take its CIFAR values (lambda_min 1e-5, patience 10).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu-tiny": {"images": 256, "steps": 300, "batch_size": 32, "lr": 0.5, "lambda_min": 1e-5, "patience": 10},
    "cpu-small": {"images": 1000, "steps": 1500, "batch_size": 64, "lr": 0.5, "lambda_min": 1e-5, "patience": 10},
    "gpu-small": {"images": 1000, "steps": 5000, "batch_size": 128, "lr": 0.5, "lambda_min": 1e-5, "patience": 10},
    "paper": {"images": 10000, "steps": 30000, "batch_size": 32, "lr": 0.5, "lambda_min": 1e-7, "patience": 35},
}


class DecreeOptions(DefenceOptions):
    images: int | None = Field(None, ge=MIN_IMAGES, description="clean images to optimise on (a seeded subset; "
                               "paper 10,000)")
    steps: int | None = Field(None, ge=1, description="most optimisation steps (default: the preset's)")
    batch_size: int | None = Field(None, ge=2, description="images per step (paper 32)")
    lr: float | None = Field(None, gt=0.0, description="Adam learning rate on mask and pattern (paper 0.5)")
    image_size: int | None = Field(None, ge=8, description="resolution of the trigger and the images (default: "
                                   "the encoder's training resolution)")
    threshold: float = Field(PAPER_THRESHOLD, gt=0.0, le=1.0, description="backdoored when PL1 is below this "
                             "(the paper: 0.1)")
    success: float = Field(0.99, gt=0.0, lt=1.0, description="mean pairwise cosine similarity a trigger must reach")
    lambda_init: float = Field(1e-3, gt=0.0, description="initial weight of the mask's L1 norm (the paper's 1e-3)")
    lambda_min: float | None = Field(None, gt=0.0, description="lambda below which it is reset (paper 1e-7 at "
                                     "224 px, 1e-5 at 32 px)")
    patience: int | None = Field(None, ge=1, description="steps without a smaller mask before stopping")


@dataclass(frozen=True)
class Params:
    images: int
    steps: int
    batch_size: int
    lr: float
    image_size: int
    threshold: float
    success: float
    lambda_init: float
    lambda_min: float
    patience: int


def resolve_params(opts: DecreeOptions, preset: str | None, image_size: int) -> Params:
    base = dict(PRESET_DEFAULTS.get(preset or "paper", PRESET_DEFAULTS["paper"]))
    values = base | {k: v for k, v in opts.model_dump().items() if v is not None}
    return Params(images=int(values["images"]), steps=int(values["steps"]), batch_size=int(values["batch_size"]),
                  lr=float(values["lr"]), image_size=int(values.get("image_size") or image_size),
                  threshold=float(values["threshold"]), success=float(values["success"]),
                  lambda_init=float(values["lambda_init"]), lambda_min=float(values["lambda_min"]),
                  patience=int(values["patience"]))


@dataclass
class Inversion:
    """The inverted trigger: mask (S, S) and pattern (3, S, S) in [0, 1], its PL1 norm, and the curve."""

    mask: torch.Tensor
    pattern: torch.Tensor
    pl1: float
    found: bool
    steps: int
    early_stop: bool
    first_success: int | None
    final_lambda: float
    best_similarity: float
    curve: list[dict[str, float]] = field(default_factory=list)


def _self_similarity(z: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over all pairs of different rows."""
    import torch.nn.functional as F

    z = F.normalize(z.float(), dim=1)
    n = len(z)
    sim = z @ z.T
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


def _to_param(v: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.atanh((v - 0.5) * (2 - EPS))


def _from_param(v: torch.Tensor) -> torch.Tensor:
    import torch

    return (torch.tanh(v) / (2 - EPS) + 0.5).clamp(0, 1)


def invert_trigger(model: nn.Module, images: torch.Tensor, p: Params, *, seed: int = 0, device: str = "cpu",
                   progress: bool = False) -> Inversion:
    """Optimise a mask and a pattern on ``images`` (uint8 or [0, 1], (N, 3, S, S)) so the stamped images'
    embeddings collapse; returns the smallest successful trigger (or the last one, ``found`` False)."""
    import torch
    from tqdm import tqdm

    from corruptencoder.ssl.augment import normalize_batch

    n, _, s, _ = images.shape
    if n < 2:
        raise UserError("DECREE needs at least 2 images to measure how similar their embeddings are")
    x_all = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    model = model.to(device).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    mask_p = _to_param(torch.rand(s, s, generator=g)).to(device).requires_grad_(True)
    pattern_p = _to_param(torch.rand(3, s, s, generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([mask_p, pattern_p], lr=p.lr, betas=(0.5, 0.9))
    batch = min(p.batch_size, n)
    per_pass = max(1, n // batch)
    milestones = (int(0.2 * p.steps), int(0.5 * p.steps))
    lam = p.lambda_init
    patience, factor = 5, 5.0
    up = down = low_count = 0
    best_reg = math.inf
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    stale = 0
    first_success: int | None = None
    best_sim = -1.0
    sims: list[float] = []
    curve: list[dict[str, float]] = []
    every = max(1, p.steps // 50)
    order = torch.randperm(n, generator=g)
    pos = 0
    early = False
    step = 0
    bar = tqdm(total=p.steps, desc="DECREE", unit="step", disable=not progress, leave=False)
    for step in range(1, p.steps + 1):
        lr = p.lr * (1.0 if step <= milestones[0] else 0.2 if step <= milestones[1] else 0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=g), 0
        x = x_all[order[pos: pos + batch]].to(device)
        pos += batch
        mask = _from_param(mask_p)
        pattern = _from_param(pattern_p)
        stamped = ((1 - mask) * x + mask * pattern).clamp(0, 1)
        sim = _self_similarity(model(normalize_batch(stamped)))
        reg = 3 * mask.sum()  # the public code's L1 runs over the mask repeated on three channels
        loss = -sim + lam * reg
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        v, r = float(sim.detach()), float(reg.detach())
        sims.append(v)
        best_sim = max(best_sim, v)
        ok = v > p.success
        improved = ok and r < best_reg
        if improved:
            best_reg, best = r, (mask.detach().cpu().clone(), pattern.detach().cpu().clone())
            first_success = first_success or step
        if best is not None:
            stale = 0 if improved else stale + 1
        # lambda: reset when stuck below lambda_min with success; x5 / 5 after runs of success / failure
        if lam < p.lambda_min and ok:
            low_count += 1
            if low_count > 2 * patience:
                lam, up, down = p.lambda_init, 0, 0
        else:
            low_count = 0
        up, down = (up + 1, 0) if ok else (0, down + 1)
        if up > patience:
            lam = lam * factor if lam < 1e5 else lam
            up = 0
        elif down > patience:
            lam = lam / factor if lam >= p.lambda_min else lam
            down = 0
        if step % every == 0 or step == 1:
            curve.append({"step": step, "similarity": round(v, 4), "pl1": round(r / (3 * s * s), 4),
                          "lambda": float(f"{lam:.3g}"), "lr": lr})
        bar.update()
        recent = sims[-per_pass:]  # checked at the end of a pass over the images, as the public code per epoch
        if step % per_pass == 0 and best is not None and stale > p.patience and sum(recent) / len(recent) > p.success:
            early = True
            break
    bar.close()
    if best is None:
        mask, pattern = _from_param(mask_p).detach().cpu(), _from_param(pattern_p).detach().cpu()
        pl1, found = 1.0, False
    else:
        mask, pattern = best
        pl1, found = best_reg / (3 * s * s), True
    if curve and curve[-1]["step"] != step:
        curve.append({"step": step, "similarity": round(sims[-1], 4), "pl1": round(float(mask.mean()), 4),
                      "lambda": float(f"{lam:.3g}"), "lr": lr})
    return Inversion(mask, pattern, float(pl1), found, step, early, first_success, float(lam), best_sim, curve)


def clean_images(pretrain: dict[str, Any], count: int, seed: int) -> list[Path]:
    """A seeded subset of the clean pre-training images (``data.clean``, its class list and split; or the images
    of a CLIP run's clean pairs, ``data.pairs`` as a CSV), never a file of a poison folder (``data.poisons`` or
    ``data.exclude``)."""
    from corruptencoder.data.folders import load_collection, read_class_list, stratified_subset
    from corruptencoder.poison.manifest import poison_files

    data = pretrain.get("data") or {}
    if not data.get("clean") and str(data.get("pairs") or "").lower().endswith((".csv", ".tsv")):
        # a CLIP suspect: the images of its clean image-text pairs
        from corruptencoder.data.captions import read_pairs_csv
        from corruptencoder.data.folders import ImageCollection

        root = Path(data["pairs"])
        pairs = read_pairs_csv(root, img_key=data.get("img_key", "filepath"),
                               caption_key=data.get("caption_key", "title"), sep=data.get("separator"))
        coll = ImageCollection(list(pairs.images), source=str(root))
    elif not data.get("clean"):
        raise UserError("DECREE needs clean images: the pre-training config has neither data.clean nor a CSV of "
                        "pairs (data.pairs); inspect the encoder with `corruptencoder defend decree --encoder E "
                        "--data DIR` on a folder of clean images")
    else:
        root = Path(data["clean"])
        classes = read_class_list(data["classes"]) if data.get("classes") else None
        if classes is not None and (root / data.get("split", "train")).is_dir():
            root = root / data.get("split", "train")
        coll = load_collection(root, classes, what="clean images for DECREE")
    banned = {str(f.resolve()) for folder in [*data.get("poisons", []), *data.get("exclude", [])]
              for f in poison_files(folder)}
    if banned:
        coll = coll.subset([i for i, f in enumerate(coll.files) if str(Path(f).resolve()) not in banned])
    if len(coll) < MIN_IMAGES:
        raise UserError(f"{root}: DECREE needs at least {MIN_IMAGES} clean images, found {len(coll)}; "
                        "give a folder with more images")
    if count < len(coll):
        coll = stratified_subset(coll, total=count, seed=seed)
    return list(coll.files)


def load_images(files: list[Path], size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size): shorter side to ``size``, the central square."""
    from corruptencoder.defend.patchsearch import Images

    images = Images.from_files([str(f) for f in files], size)
    import torch

    return torch.cat([b for _, b in images.batches(256)])


def save_trigger(inv: Inversion, out: Path) -> dict[str, str]:
    """mask (grey), pattern, mask * pattern as PNGs at the trigger's resolution, and an enlarged sheet of the
    three side by side."""
    import numpy as np
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    mask = (inv.mask.numpy() * 255).round().astype(np.uint8)
    pattern = (inv.pattern.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    fused = (inv.mask.unsqueeze(0) * inv.pattern).permute(1, 2, 0).numpy()
    fused = (fused * 255).round().astype(np.uint8)
    images = {"mask": Image.fromarray(mask, "L"), "pattern": Image.fromarray(pattern, "RGB"),
              "trigger": Image.fromarray(fused, "RGB")}
    names = {}
    for key, im in images.items():
        path = out / f"decree_{key}.png"
        im.save(path)
        names[key] = path.name
    s = mask.shape[0]
    scale = max(1, 128 // s)
    pad = 4
    sheet = Image.new("RGB", (3 * s * scale + 4 * pad, s * scale + 2 * pad), (255, 255, 255))
    for k, im in enumerate(images.values()):
        sheet.paste(im.convert("RGB").resize((s * scale, s * scale), Image.Resampling.NEAREST),
                    (pad + k * (s * scale + pad), pad))
    sheet.save(out / "decree_inverted.png")
    names["sheet"] = "decree_inverted.png"
    return names


def report_of(inv: Inversion, p: Params, images: int, seconds: float, files: dict[str, str]) -> dict[str, Any]:
    sims = [c["similarity"] for c in inv.curve]
    return {
        "defence": "decree", "pl1": round(inv.pl1, 5), "threshold": p.threshold,
        "backdoored": bool(inv.pl1 < p.threshold), "verdict": "backdoored" if inv.pl1 < p.threshold else "clean",
        "trigger_found": inv.found, "l1": round(inv.pl1 * p.image_size * p.image_size, 2),
        "image_size": p.image_size, "images": images,
        "optimisation": {"steps": inv.steps, "max_steps": p.steps, "early_stop": inv.early_stop,
                         "first_success_step": inv.first_success, "best_similarity": round(inv.best_similarity, 4),
                         "final_lambda": inv.final_lambda, "similarity_start": sims[0] if sims else None,
                         "similarity_end": sims[-1] if sims else None, "curve": inv.curve},
        "params": {k: v for k, v in p.__dict__.items()}, "files": files, "seconds": round(seconds, 1),
    }


@DEFENCES.register
class DECREE(EncoderDefence[DecreeOptions]):
    """DECREE (Feng et al., CVPR 2023): invert the smallest trigger that collapses the encoder's embeddings of
    clean images to one point; an encoder is called backdoored when the trigger's mask covers less than
    --threshold of the image (PL1; the paper: 0.1). Writes report.json and the inverted trigger as PNGs."""

    name = "decree"
    summary = "DECREE: is this encoder backdoored? (trigger inversion on clean images, PL1 norm verdict)"
    options = DecreeOptions

    def label(self) -> str:
        return "DECREE"

    def apply(self, ctx: DefenceContext) -> EncoderResult:
        """Inspection only: the suspect encoder is evaluated as it is, with the verdict beside it."""
        from corruptencoder.defend.patchsearch import resolve_device
        from corruptencoder.ssl.encoder import load_encoder

        if ctx.encoder is None:
            raise UserError("DECREE needs the encoder to inspect")
        size = int((ctx.pretrain.get("data") or {}).get("image_size") or 224)
        p = resolve_params(self.opts, ctx.preset, size)
        files = clean_images(ctx.pretrain, p.images, ctx.seed)
        model, _, _ = load_encoder(ctx.encoder)
        return EncoderResult(None, inspect(model, files, p, seed=ctx.seed, device=resolve_device(ctx.device),
                                           out=ctx.out, progress=ctx.progress))

    # -- command line: corruptencoder defend decree --------------------------------------------------------
    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--encoder", type=Path, required=True, help="the encoder.pt to inspect")
        p.add_argument("--data", required=True, help="clean images: folder, ImageFolder root or file list ('demo')")
        p.add_argument("--exclude", nargs="+", default=[], help="poison folders whose files must never be used")
        p.add_argument("--backbone", help="backbone of a plain state-dict encoder (an encoder.pt knows its own)")
        p.add_argument("--width", type=float, default=1.0, help="width of --backbone (default 1.0)")
        p.add_argument("--preset", choices=sorted(PRESET_DEFAULTS), help="scale of the defaults (default paper)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda")

    @classmethod
    def run_cli(cls, args: argparse.Namespace, options: DefenceOptions) -> str:
        assert isinstance(options, DecreeOptions)
        from corruptencoder.defend.patchsearch import cli_encoder, resolve_device
        from corruptencoder.utils.outputs import atomic_output_dir, check_output_dir, write_json_atomic

        check_output_dir(args.out, args.overwrite)
        data = args.data
        if data == "demo":
            from corruptencoder.demo import demo_world

            data = str(demo_world() / "pretrain")
        model, size = cli_encoder(args.encoder, args.backbone, args.width, options.image_size)
        p = resolve_params(options, args.preset, size)
        files = clean_images({"data": {"clean": data, "exclude": [str(e) for e in args.exclude]}}, p.images,
                             args.seed)
        with atomic_output_dir(args.out, args.overwrite) as tmp:
            report = inspect(model, files, p, seed=args.seed, device=resolve_device(args.device), out=tmp,
                             progress=not args.quiet)
            write_json_atomic(tmp / "report.json", report)
        return (f"DECREE: PL1 {report['pl1']:.4f} ({'<' if report['backdoored'] else '>='} {p.threshold:g}): "
                f"{report['verdict']} (mean pairwise cosine {report['optimisation']['best_similarity']:.3f}, "
                f"{report['optimisation']['steps']} steps on {report['images']} images, {report['seconds']:.0f} s) "
                f"-> {args.out / 'decree_inverted.png'}")


def inspect(model: nn.Module, files: list[Path], p: Params, *, seed: int, device: str, out: Path,
            progress: bool = False) -> dict[str, Any]:
    """DECREE on image files: invert, write the trigger PNGs into ``out``, return the report."""
    import torch

    t0 = time.perf_counter()
    images = load_images(files, p.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inv = invert_trigger(model, images, p, seed=seed, device=device, progress=progress)
    names = save_trigger(inv, out)
    return report_of(inv, p, len(images), time.perf_counter() - t0, names)
