"""CompRess distillation defence (Section 5, Table 4): distil a suspect encoder on clean data.

The defender holds a clean subset of the pre-training data (5 % or 20 % in the paper) and trains a
fresh student to reproduce the frozen teacher's similarity structure (Koohpayegani, Tejankar,
Pirsiavash, NeurIPS 2020, as Saha et al. 2022 used it). The training loop is the ``compress`` method
(``ssl/methods/compress.py``); this module decides what it trains on and with which settings.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from corruptencoder.defend.base import DEFENCES, DefenceContext, DefenceOptions, EncoderDefence, EncoderResult
from corruptencoder.errors import UserError


class CompRessOptions(DefenceOptions):
    fraction: float = Field(0.2, gt=0.0, le=1.0, description="share of the clean pre-training images the "
                            "defender distils on (the paper: 0.05 and 0.2)")
    variant: Literal["2q", "1q"] = Field("2q", description="CompRess-2q (each network its queue) or -1q")
    queue_size: int | None = Field(None, ge=1, description="memory bank size (default: half the clean subset, "
                                   "256 to 16,384)")
    epochs: int | None = Field(None, ge=1, description="the student's epochs (default: the suspect's schedule; a "
                               "suspect refreshed for a few epochs from a base needs a longer student)")

    unkeyed_defaults = ("epochs",)


@DEFENCES.register
class CompRessDefence(EncoderDefence[CompRessOptions]):
    name = "compress"
    summary = "CompRess: distil a (possibly backdoored) encoder into a fresh student on clean data"
    options = CompRessOptions

    def label(self) -> str:
        return f"CompRess, {100 * self.opts.fraction:g} % clean data"

    def knob(self) -> float:
        return self.opts.fraction

    def queue_size(self, clean_count: int) -> int:
        return self.opts.queue_size or min(16384, max(256, int(clean_count * self.opts.fraction) // 2))

    def apply(self, ctx: DefenceContext) -> EncoderResult:
        """The student trains with the suspect encoder's own settings (backbone, schedule, views' size) on
        a seeded ``fraction`` of the clean images; never on a poison."""
        from corruptencoder.ssl.config import PretrainConfig
        from corruptencoder.ssl.train import pretrain
        from corruptencoder.utils.config import validate

        if ctx.encoder is None:
            raise UserError("CompRess needs the suspect encoder to distil")
        body = copy.deepcopy(ctx.pretrain)
        suspect = body.get("method") or {}
        if (body.get("data") or {}).get("pairs") and suspect.get("model", "custom") != "custom":
            # a CLIP suspect's image tower (open_clip): the student is the same tower, trained on the clean pairs'
            # images (pre-training reads the images of data.pairs for an image method)
            body["backbone"] = {"name": "openclip", "clip_model": suspect["model"]}
        body["method"] = {"name": "compress", "teacher": str(ctx.encoder),
                          "queue_size": self.queue_size(ctx.clean_count), "variant": self.opts.variant}
        body.setdefault("data", {}).update(fraction=self.opts.fraction, poisons=[])
        body.get("backbone", {}).pop("init", None)  # a fresh student
        if self.opts.epochs:
            body.setdefault("optim", {})["epochs"] = self.opts.epochs
        cfg = validate(PretrainConfig, body, "CompRess student")
        t0 = time.perf_counter()
        res = pretrain(cfg, ctx.out, resume=ctx.resume, overwrite=not ctx.resume, progress=ctx.progress)
        return EncoderResult(res.encoder, {"defence": self.name, "fraction": self.opts.fraction,
                                           "clean_images": res.num_images,
                                           "seconds": round(time.perf_counter() - t0, 1)})

    # -- command line: corruptencoder defend compress ------------------------------------------------
    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--teacher", "--encoder", dest="teacher", type=Path, required=True,
                       help="the suspect encoder.pt")
        p.add_argument("--data", required=True, help="clean data: ImageFolder root, folder or file list ('demo')")
        p.add_argument("--exclude", nargs="+", default=[], help="poison folders whose files must never be used")
        p.add_argument("--teacher-backbone",
                       help="backbone of a plain state-dict teacher (an encoder.pt knows its own)")
        p.add_argument("--config", type=Path, help="pre-training config for the student (backbone, schedule, ...)")
        p.add_argument("--preset", help="scale preset: cpu-tiny | cpu-small | gpu-small | paper")
        p.add_argument("--backbone", help="student backbone (default: the teacher's)")
        p.add_argument("--width", type=float, help="student width multiplier (default: the teacher's)")
        p.add_argument("--image-size", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    @classmethod
    def cli_defaults(cls) -> dict[str, Any]:
        return {"fraction": 1.0}  # on the command line --data is the defender's clean set: all of it

    @classmethod
    def run_cli(cls, args: argparse.Namespace, options: DefenceOptions) -> str:
        assert isinstance(options, CompRessOptions)
        res, cfg = distil(args.teacher, args.data, options, exclude=args.exclude,
                          teacher_backbone=args.teacher_backbone, config=args.config, preset=args.preset,
                          overrides=args.overrides, backbone=args.backbone, width=args.width,
                          image_size=args.image_size, seed=args.seed, out=args.out, resume=args.resume,
                          overwrite=args.overwrite, progress=not args.quiet)
        return (f"distilled {args.teacher} into a {cfg.backbone.name} student on {res.num_images} clean images "
                f"({cfg.data.fraction or 1.0:.0%} of the data) in {res.seconds:.0f} s -> {res.encoder}")


def distil(teacher: Path, data: str, opts: CompRessOptions, *, out: Path, exclude: list[str] | None = None,
           teacher_backbone: str | None = None, config: Path | None = None, preset: str | None = None,
           overrides: list[str] | None = None, backbone: str | None = None, width: float | None = None,
           image_size: int | None = None, seed: int | None = None, resume: bool = False,
           overwrite: bool = False, progress: bool = True) -> tuple[Any, Any]:
    """CompRess on a user's clean data: the student defaults to the teacher's backbone and image size."""
    from corruptencoder.presets import apply_preset
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.ssl.encoder import read_checkpoint
    from corruptencoder.ssl.train import pretrain
    from corruptencoder.utils.config import apply_overrides, read_mapping, validate

    stored = read_checkpoint(teacher)  # refuses pickles that need code, before any work
    spec = stored.get("backbone", {}) if isinstance(stored, dict) else {}
    meta = stored.get("meta", {}) if isinstance(stored, dict) else {}
    if teacher_backbone:
        from corruptencoder.ssl.backbones import backbone_spec
        from corruptencoder.ssl.encoder import load_encoder

        load_encoder(teacher, backbone_spec(teacher_backbone, width or 1.0))  # fits, or says why
    body: dict[str, Any] = read_mapping(config) if config else {}
    if data == "demo":
        from corruptencoder.demo import demo_world

        data = str(demo_world() / "pretrain")
    over = ["method.name=compress", f"method.teacher={teacher}", f"data.clean={data}",
            f"data.fraction={opts.fraction}", f"method.variant={opts.variant}"]
    if opts.queue_size:
        over.append(f"method.queue_size={opts.queue_size}")
    clip_model = (spec.get("clip") or {}).get("model") if not backbone and spec.get("name") == "openclip" else None
    for key, value in (("backbone.name", backbone or spec.get("name")), ("backbone.width", width or spec.get("width")),
                       ("backbone.clip_model", clip_model),  # a CLIP image tower's student: the same tower
                       ("data.image_size", image_size or meta.get("image_size")),
                       ("optim.epochs", opts.epochs),
                       ("trainer.seed", seed), ("method.teacher_backbone", teacher_backbone)):
        if value is not None:
            over.append(f"{key}={value}")
    body = apply_overrides(body, over + list(overrides or []))
    body.setdefault("data", {})["exclude"] = [str(p) for p in exclude or []]
    body = apply_preset(preset, body)
    cfg = validate(PretrainConfig, body, str(config) if config else "defend compress options")
    return pretrain(cfg, out, resume=resume, overwrite=overwrite, progress=progress), cfg
