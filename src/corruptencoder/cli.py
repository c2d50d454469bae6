"""The ``corruptencoder`` command: one verb per stage of the data flow.

Heavy imports (torch, Lightning) happen inside the verbs that need them, so ``craft`` and
``--help`` start fast and work without PyTorch. Bad input ends with one ``error:`` line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from corruptencoder import __version__
from corruptencoder.errors import ConfigError, UserError

log = logging.getLogger("corruptencoder")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes are one line like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------
# craft


def _add_craft(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "craft",
        help="craft poisons (CorruptEncoder, CorruptEncoder+, SSL-Backdoor, multi-modal, Carlini-Terzis)",
        description="Craft poisoned images into an output folder with manifest.jsonl, poisons.txt and the "
        "triggers. Give an attack and its options, or --config FILE for several targets.",
    )
    p.add_argument("attack", nargs="?", choices=["corruptencoder", "corruptencoder-plus", "ssl-backdoor",
                                                 "corruptencoder-mm", "carlini-terzis"],
                   help="attack to craft (omit with --config); -mm and carlini-terzis make image-text pairs")
    p.add_argument("--config", type=Path, help="YAML/JSON crafting config (several targets); options below override it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set targets.0.alpha=0.4 (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="output folder (refused if it exists, see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    g = p.add_argument_group("target")
    g.add_argument("--target", help="target class name (default: the references folder's name)")
    g.add_argument("--task", help="downstream task the target belongs to (recorded in the manifest)")
    g.add_argument("--label", help="the target's class in the downstream task, e.g. a wnid (default: --target)")
    g.add_argument("--references", nargs="+", help="reference objects/images: folders, files or file lists; "
                   "'builtin' for the offline demo assets")
    g.add_argument("--backgrounds", nargs="+", help="background images: folders (recursive) or file lists")
    g.add_argument("--support", nargs="+", help="support reference images (corruptencoder-plus)")
    g.add_argument("--num", type=int, help="number of poisoned images N (default 650)")
    g.add_argument("--trigger", help="random (default) | white | purple | black | path to an image")
    g.add_argument("--trigger-size", help="trigger size in pixels: 40 (default) or WxH")
    g.add_argument("--trigger-seed", type=int, help="seed of a random trigger (default: from the target name)")
    g.add_argument("--alpha", type=float, help="object bbox area / poison area, in (0, 1) (default 0.5)")
    g.add_argument("--beta", type=float, help="central fraction of the free rectangle for the trigger (default 0.5)")
    g.add_argument("--layout", choices=["random", "wide", "high", "wide-left", "wide-right"],
                   help="Algorithm 2 layout (default random)")
    g.add_argument("--reference-mode", choices=["object", "image"],
                   help="embed the masked object (default) or the whole reference image (Table 7)")
    g.add_argument("--support-ratio", type=float, help="fraction of N that are support poisons (default 0.2)")
    g.add_argument("--location", nargs=2, type=float, metavar=("LO", "HI"),
                   help="SSL-Backdoor trigger range as image fractions (default 0.25 0.75)")
    g.add_argument("--prompts", help="multi-modal caption templates: imagenet80 (default) | simple | a file")
    g.add_argument("--class-text", help="the class name written in captions (default: from --target/--label)")
    g.add_argument("--type1-size", type=int, help="multi-modal Type-I images: square side in px (default 224)")
    g.add_argument("--object-label", action="append", help="labelme label(s) of the object (default: all but cut)")
    g.add_argument("--cut-label", action="append", help="labelme label(s) that cut holes (default: nmask)")
    o = p.add_argument_group("output")
    o.add_argument("--seed", type=int, help="random seed (default 0); same seed, same bytes")
    o.add_argument("--workers", type=int, help=f"parallel processes (default {_default_workers()})")
    o.add_argument("--format", choices=["png", "jpeg"], help="image format (default png)")
    o.add_argument("--max-size", type=int, help="cap on a poison's longer side in px (default 800)")
    o.add_argument("--soft-edge", type=float, help="Gaussian radius feathering the object mask (default 1; 0 = hard)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_craft)


_TARGET_FLAGS = {
    "target": "name", "task": "task", "label": "label", "references": "references", "backgrounds": "backgrounds",
    "support": "support", "num": "num", "trigger": "trigger", "trigger_size": "trigger_size",
    "trigger_seed": "trigger_seed", "alpha": "alpha", "beta": "beta", "layout": "layout",
    "reference_mode": "reference_mode", "support_ratio": "support_ratio", "location": "location",
    "object_label": "object_labels", "cut_label": "cut_labels", "prompts": "prompts", "class_text": "class_text",
    "type1_size": "type1_size",
}
_FLAG_OF = {dest: "--" + flag.replace("_", "-") for flag, dest in _TARGET_FLAGS.items()}
_RUN_FLAGS = {"seed": "seed", "workers": "workers", "format": "format", "max_size": "max_size",
              "soft_edge": "soft_edge"}


def craft_config_from_args(args: argparse.Namespace) -> Any:
    from corruptencoder.assets import resolve_builtin
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.utils.config import apply_overrides, read_mapping, validate

    data: dict[str, Any] = read_mapping(args.config) if args.config else {}
    target_flags = {dest: getattr(args, flag) for flag, dest in _TARGET_FLAGS.items() if getattr(args, flag) is not None}
    if args.attack:
        target_flags["attack"] = args.attack
    if args.config:
        if target_flags:
            targets = data.get("targets") or []
            if len(targets) != 1:
                raise UserError(f"{args.config}: target options on the command line need exactly one target in "
                                "the config; use --set targets.N.key=value instead")
            targets[0].update(target_flags)
    else:
        if not args.attack:
            raise UserError("craft needs an attack (corruptencoder, corruptencoder-plus, ssl-backdoor) or --config")
        if "references" not in target_flags and args.attack != "carlini-terzis":
            raise UserError("craft needs --references (a folder, files or 'builtin')")
        target_flags.setdefault("name", _default_target_name(target_flags.get("references") or ["target"]))
        data["targets"] = [target_flags]
    for flag, dest in _RUN_FLAGS.items():
        if getattr(args, flag) is not None:
            data[dest] = getattr(args, flag)
    data.setdefault("workers", _default_workers())
    data = apply_overrides(data, args.overrides)
    for t in data.get("targets") or []:
        if isinstance(t, dict):
            name = t.get("name") or "target"
            for key in ("references", "backgrounds", "support"):
                if key in t:
                    vals = [t[key]] if isinstance(t[key], str) else t[key]
                    t[key] = [str(resolve_builtin(v, key, name)) for v in vals]
    if args.config:
        return validate(CraftConfig, data, str(args.config))
    try:
        return validate(CraftConfig, data, "craft")
    except ConfigError as exc:  # name the flag the user typed, not the config path it became
        message = re.sub(r"targets\.0\.(\w+)", lambda m: _FLAG_OF.get(m.group(1), m.group(1)), str(exc))
        raise ConfigError(message.replace("craft: ", "", 1).replace("targets.0: ", "")) from None


def _default_target_name(references: Sequence[str]) -> str:
    first = Path(references[0])
    if str(references[0]).startswith("builtin"):
        from corruptencoder.assets import BUILTIN_TARGET

        return BUILTIN_TARGET
    name = first.name if first.is_dir() else first.parent.name
    return "".join(ch if ch.isalnum() or ch in "._+-" else "-" for ch in name).strip("-.") or "target"


def _cmd_craft(args: argparse.Namespace) -> int:
    from corruptencoder.poison.craft import craft

    config = craft_config_from_args(args)
    summary = craft(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    per = ", ".join(f"{k}: {v}" for k, v in summary.per_target.items())
    print(f"crafted {summary.num} poisons ({per}) in {summary.seconds:.1f} s "
          f"({summary.per_second:.0f}/s) -> {summary.out}")
    if summary.skipped_backgrounds:
        print(f"skipped {len(summary.skipped_backgrounds)} unreadable background(s); listed in {summary.out}/craft.json")
    return 0


# ---------------------------------------------------------------------------------------------
# show


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw a grid of poisons with object and trigger boxes outlined",
                       description="Draw a contact sheet of crafted poisons: object boxes green, triggers red.")
    p.add_argument("poisons", type=Path, help="a folder written by 'corruptencoder craft'")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--num", type=int, default=16, help="how many poisons (default 16)")
    p.add_argument("--cols", type=int, default=4, help="grid columns (default 4)")
    p.add_argument("--cell", type=int, default=192, help="cell size in px (default 192)")
    p.add_argument("--target", help="only this target's poisons")
    p.add_argument("--seed", type=int, default=0, help="which poisons to sample (default 0)")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    from corruptencoder.poison.show import poison_grid

    if args.num < 1 or args.cols < 1 or args.cell < 16:
        raise UserError("--num and --cols must be at least 1 and --cell at least 16")
    grid = poison_grid(args.poisons, num=args.num, cols=args.cols, cell=args.cell, target=args.target, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out} ({grid.size[0]}x{grid.size[1]})")
    return 0



# ---------------------------------------------------------------------------------------------
# pretrain


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pre-train an encoder (MoCo-v2, SimCLR, SwAV, MSF, BYOL, CLIP) on clean + poisoned data",
        description="Contrastive pre-training with Lightning (CPU or GPUs with DDP). Writes OUT/encoder.pt, "
        "checkpoints (for --resume), logs/metrics.csv and run.json. Flags override the config file, which "
        "overrides the --preset.")
    p.add_argument("--config", type=Path, help="YAML/JSON pre-training config")
    p.add_argument("--preset", help="scale preset: cpu-tiny | cpu-small | gpu-small | paper")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set method.queue_size=4096 (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    g = p.add_argument_group("shortcuts for common keys")
    g.add_argument("--method", choices=["moco", "simclr", "swav", "msf", "byol", "clip"],
                   help="method.name (default moco; clip trains on image-text pairs, see --pairs)")
    g.add_argument("--pairs", help="data.pairs: image-text pairs for clip (open_clip CSV/TSV or tar shards)")
    g.add_argument("--data", help="data.clean: ImageFolder root, folder or file list ('demo' = the demo world)")
    g.add_argument("--classes", help="data.classes: class list, e.g. imagenet100_A.txt")
    g.add_argument("--poisons", nargs="+", help="data.poisons: folders written by 'craft'")
    g.add_argument("--image-size", type=int, help="data.image_size")
    g.add_argument("--backbone", help="backbone.name: resnet18 | resnet34 | resnet50 | small_cnn | timm:<name>")
    g.add_argument("--width", type=float, help="backbone.width multiplier")
    g.add_argument("--epochs", type=int, help="optim.epochs")
    g.add_argument("--batch-size", type=int, help="optim.batch_size")
    g.add_argument("--lr", type=float, help="optim.lr per 256 images")
    g.add_argument("--crop", choices=["random", "localized", "none"], help="views.crop (defences: localized, none)")
    g.add_argument("--delta", type=float, help="views.delta for localized cropping (default 0.2)")
    g.add_argument("--devices", help="trainer.devices (DDP when > 1)")
    g.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], help="trainer.accelerator")
    g.add_argument("--seed", type=int, help="trainer.seed")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)


_PRETRAIN_FLAGS = {
    "method": "method.name", "data": "data.clean", "pairs": "data.pairs", "classes": "data.classes", "poisons": "data.poisons",
    "image_size": "data.image_size", "backbone": "backbone.name", "width": "backbone.width", "epochs": "optim.epochs",
    "batch_size": "optim.batch_size", "lr": "optim.lr", "crop": "views.crop", "delta": "views.delta",
    "devices": "trainer.devices", "accelerator": "trainer.accelerator", "seed": "trainer.seed",
}


def flags_to_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    import json as _json

    out = []
    for flag, key in mapping.items():
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={_json.dumps(value) if isinstance(value, list) else value}")
    return out


def pretrain_config_from_args(args: argparse.Namespace) -> Any:
    from corruptencoder.presets import apply_preset
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.utils.config import apply_overrides, read_mapping, validate

    data: dict[str, Any] = read_mapping(args.config) if args.config else {}
    data = apply_overrides(data, flags_to_overrides(args, _PRETRAIN_FLAGS) + list(args.overrides))
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    clean = (data.get("data") or {}).get("clean")
    if clean == "demo":
        from corruptencoder.demo import demo_world

        data["data"]["clean"] = str(demo_world() / "pretrain")
    data = apply_preset(args.preset, data)
    return validate(PretrainConfig, data, str(args.config) if args.config else "pretrain options")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from corruptencoder.ssl.train import pretrain

    cfg = pretrain_config_from_args(args)
    res = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(f"pre-trained {cfg.method.name} for {res.epochs} epochs on {res.num_images} images "
          f"({res.num_poisons} poisons) in {res.seconds:.0f} s ({res.images_per_second:.0f} img/s) -> {res.encoder}")
    return 0


# ---------------------------------------------------------------------------------------------
# analyze


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyses that need no training (crop pairs)",
                       description="Analyses of poisons and defences that need no training.")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", parser_class=_Parser)
    c = asub.add_parser(
        "crops", help="Monte-Carlo: how often one view is the object and the other holds the trigger",
        description="Estimate, with the pre-training crop samplers, the probability that one view covers mainly "
        "the reference object while the other contains the trigger (split) and that one view contains both, for a "
        "poison folder's manifest boxes and/or a grid of alpha and beta; compare random crops, localized cropping "
        "and no cropping.")
    c.add_argument("poisons", nargs="?", type=Path, help="poison folder from 'craft' (omit for the alpha/beta grid only)")
    c.add_argument("--method", default="moco", choices=["moco", "simclr", "swav", "msf", "byol"],
                   help="whose crop scale to use (default moco: 0.2-1.0)")
    c.add_argument("--policies", nargs="+", default=["random", "localized", "none"],
                   choices=["random", "localized", "none"], help="view policies to compare")
    c.add_argument("--delta", type=float, default=0.2, help="localized cropping delta (default 0.2)")
    c.add_argument("--pairs", type=int, default=200, help="view pairs per poison (default 200)")
    c.add_argument("--alphas", nargs="+", type=float, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    c.add_argument("--betas", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7, 0.9])
    c.add_argument("--no-grid", action="store_true", help="skip the alpha/beta grid")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", type=Path, help="also write the numbers as JSON")
    c.set_defaults(func=_cmd_analyze_crops)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _cmd_analyze_crops(args: argparse.Namespace) -> int:
    import json as _json

    from corruptencoder.analysis.crop_pairs import estimate, poisons_from_manifest, policy_for, sweep
    from corruptencoder.poison.manifest import read_manifest

    result: dict[str, Any] = {"method": args.method, "delta": args.delta}
    if args.pairs < 1:
        raise UserError("--pairs must be at least 1")
    if args.poisons:
        boxes = poisons_from_manifest(read_manifest(args.poisons))
        if not boxes:
            raise UserError(f"{args.poisons}: no poison with both an object box and a trigger box "
                            "(SSL-Backdoor and support poisons have no object box)")
        print(f"{args.poisons}: {len(boxes)} poisons, {args.pairs} view pairs each, {args.method} crops")
        print(f"{'policy':<12}{'split':>8}{'both':>8}{'P(obj view)':>13}{'P(trig view)':>14}{'P(one obj)':>12}")
        result["folder"] = {}
        for pol in args.policies:
            s = estimate(boxes, policy_for(args.method, pol, args.delta), args.pairs, args.seed)
            result["folder"][pol] = s.as_dict()
            print(f"{pol:<12}{s.split:>8.3f}{s.both:>8.3f}{s.object_view:>13.3f}{s.trigger_view:>14.3f}{s.one_object:>12.3f}")
    if not args.no_grid:
        for pol in args.policies:
            rows = sweep(args.alphas, args.betas, policy_for(args.method, pol, args.delta), max(20, args.pairs // 2),
                         args.seed)
            result.setdefault("grid", {})[pol] = rows
            print(f"\nP(split) / P(both) over alpha (rows) and beta (columns), {pol} crops; "
                  "last column: 2*alpha*(1-alpha) vs measured P(exactly one object view)")
            print("alpha " + "".join(f"{'beta=' + format(b, 'g'):>14}" for b in args.betas) + f"{'2a(1-a) | meas':>18}")
            for a in args.alphas:
                cells = [r for r in rows if r["alpha"] == a]
                txt = "".join(f"{r['split']:>7.3f}/{r['both']:<6.3f}" if r["split"] == r["split"] else f"{'n/a':>14}"
                              for r in cells)
                meas = next((r.get("one_object") for r in cells if r.get("one_object") == r.get("one_object")), float("nan"))
                print(f"{a:<6g}{txt}{2 * a * (1 - a):>10.3f} | {meas:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(_json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="linear probe on frozen features: CA/BA, ASR per target, diagnostics",
        description="Train a linear probe on a downstream task's train split with the encoder frozen; report "
        "accuracy (BA, and CA with --clean-encoder), ASR per target on the triggered test images (target-class "
        "images and the attacker's reference images excluded), the no-attack ASR, the reference accuracy and the "
        "feature-space pull. Writes OUT/metrics.json.")
    p.add_argument("--encoder", type=Path, required=True, help="encoder.pt (or a torchvision/timm state dict)")
    p.add_argument("--clean-encoder", type=Path, help="the clean encoder of the same setting (CA, no-attack ASR)")
    p.add_argument("--backbone", help="backbone of plain state-dict encoders (encoder.pt knows its own): "
                   "resnet18 | resnet34 | resnet50 | small_cnn | timm:<name>")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier for --backbone")
    p.add_argument("--task", required=True, help="task YAML, or 'demo' for the demo world's downstream split")
    p.add_argument("--poisons", nargs="+", type=Path, default=[],
                   help="poison folders: their targets, triggers and reference images")
    p.add_argument("--target", action="append", default=[], metavar="NAME[=CLASS]",
                   help="a target class (with --trigger; repeatable)")
    p.add_argument("--trigger", action="append", default=[], type=Path, help="trigger image for each --target")
    p.add_argument("--trigger-size", help="paste the trigger at this size in test images (pixels, or WxH)")
    p.add_argument("--location", nargs=2, type=float, default=[0.25, 0.75], metavar=("LO", "HI"),
                   help="triggers go wholly inside this central box of test images (default 0.25 0.75)")
    p.add_argument("--image-size", type=int, help="override the task's evaluation image size")
    p.add_argument("--zero-shot", type=Path, help="a clip.pt: also score zero-shot classification with its text tower")
    p.add_argument("--clean-zero-shot", type=Path, help="the clean setting's clip.pt (zero-shot CA, no-attack ASR)")
    p.add_argument("--prompts", default="imagenet80", help="zero-shot prompt templates (imagenet80 | simple | file)")
    p.add_argument("--probe-epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, help="folder for metrics.json (and the feature cache)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


def load_task_arg(spec: str, image_size: int | None = None) -> Any:
    from corruptencoder.evaluate.tasks import TaskConfig, load_task
    from corruptencoder.utils.config import load_config

    if spec == "demo":
        from corruptencoder.demo import demo_task_config

        cfg = demo_task_config()
    else:
        cfg = load_config(TaskConfig, spec)
    if image_size:
        cfg = cfg.model_copy(update={"image_size": image_size})
    return load_task(cfg)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json as _json

    from corruptencoder.evaluate.linear_probe import ProbeConfig
    from corruptencoder.evaluate.run import EvalSettings, EvalTarget, evaluate, format_table, targets_from_poisons
    from corruptencoder.poison.triggers import load_trigger_file, parse_size
    from corruptencoder.utils.outputs import write_json_atomic

    task = load_task_arg(args.task, args.image_size)
    targets = []
    for folder in args.poisons:
        targets += targets_from_poisons(folder, task.config.name if task.config.name != "task" else None)
    if len(args.target) != len(args.trigger):
        raise UserError("give one --trigger per --target")
    for name, trig in zip(args.target, args.trigger):
        nm, _, cls = name.partition("=")
        targets.append(EvalTarget(nm, cls or nm, load_trigger_file(trig), str(trig)))
    if not targets:
        raise UserError("no target to attack-score: give --poisons DIR or --target NAME --trigger FILE")
    spec = None
    if args.backbone:
        from corruptencoder.ssl.backbones import backbone_spec

        spec = backbone_spec(args.backbone, args.width, None, task.config.image_size)
    settings = EvalSettings(probe=ProbeConfig(epochs=args.probe_epochs, seed=args.seed), seed=args.seed, backbone=spec,
                            location=tuple(args.location), trigger_size=parse_size(args.trigger_size),
                            batch_size=args.batch_size, device=args.device,
                            cache_dir=str(args.out / "features") if args.out else None, progress=not args.quiet)
    result = evaluate(args.encoder, task, targets, clean_encoder=args.clean_encoder, settings=settings)
    print(format_table(result))
    if args.zero_shot:
        from corruptencoder.evaluate.zeroshot import zero_shot

        kw = {"prompts": args.prompts, "seed": args.seed, "location": tuple(args.location),
              "trigger_size": settings.trigger_size, "device": settings.resolved_device()}
        result["zero_shot"] = {"encoder": zero_shot(args.zero_shot, task, targets, **kw)}
        if args.clean_zero_shot:
            result["zero_shot"]["clean_encoder"] = zero_shot(args.clean_zero_shot, task, targets, **kw)
        z = result["zero_shot"]
        print(f"zero-shot accuracy {z['encoder']['accuracy']:.2f}" +
              (f" (clean {z['clean_encoder']['accuracy']:.2f})" if "clean_encoder" in z else "") + "; ASR " +
              ", ".join(f"{t['name']} {t['asr']:.2f}" for t in z["encoder"]["targets"]))
    if args.out:
        write_json_atomic(args.out / "metrics.json", result)
        print(f"wrote {args.out / 'metrics.json'}")
    else:
        _json.dumps(result)
    return 0



# ---------------------------------------------------------------------------------------------
# defend


def _add_defend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("defend", help="defences that act on a trained encoder (CompRess distillation)",
                       description="Defences applied after pre-training. The cropping defences are pre-training "
                       "options: 'pretrain --crop localized' and 'pretrain --crop none'.")
    dsub = p.add_subparsers(dest="defence", metavar="DEFENCE", parser_class=_Parser)
    c = dsub.add_parser(
        "compress", help="distil a (possibly backdoored) encoder into a fresh student on clean data",
        description="CompRess distillation (Table 4): a fresh student learns the frozen teacher's similarity "
        "distributions over a memory bank, on a clean subset (a fraction or a file list) of the pre-training data. "
        "Writes OUT/encoder.pt, which 'evaluate' scores like any encoder, and OUT/train_files.txt (the subset).")
    c.add_argument("--teacher", type=Path, required=True, help="the suspect encoder.pt")
    c.add_argument("--data", required=True, help="clean data: ImageFolder root, folder or file list ('demo')")
    c.add_argument("--fraction", type=float, help="seeded fraction of --data to use (the paper: 0.05 or 0.2)")
    c.add_argument("--exclude", nargs="+", default=[], help="poison folders whose files must never be used")
    c.add_argument("--variant", choices=["2q", "1q"], help="CompRess-2q (default) or -1q")
    c.add_argument("--teacher-backbone", help="backbone of a plain state-dict teacher (an encoder.pt knows its own)")
    c.add_argument("--config", type=Path, help="pre-training config for the student (backbone, schedule, ...)")
    c.add_argument("--preset", help="scale preset: cpu-tiny | cpu-small | gpu-small | paper")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--backbone", help="student backbone (default: the teacher's)")
    c.add_argument("--width", type=float, help="student width multiplier (default: the teacher's)")
    c.add_argument("--epochs", type=int)
    c.add_argument("--image-size", type=int)
    c.add_argument("--seed", type=int)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--resume", action="store_true")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_cmd_defend_compress)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _cmd_defend_compress(args: argparse.Namespace) -> int:
    from corruptencoder.presets import apply_preset
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.ssl.encoder import read_checkpoint
    from corruptencoder.ssl.train import pretrain
    from corruptencoder.utils.config import apply_overrides, read_mapping, validate

    if args.fraction is not None and not 0.0 < args.fraction <= 1.0:
        raise UserError(f"--fraction {args.fraction} is outside (0, 1]; the paper uses 0.05 and 0.2")
    teacher = read_checkpoint(args.teacher)  # refuses pickles that need code, before any work
    spec = teacher.get("backbone", {}) if isinstance(teacher, dict) else {}
    if args.teacher_backbone:
        from corruptencoder.ssl.backbones import backbone_spec
        from corruptencoder.ssl.encoder import load_encoder

        load_encoder(args.teacher, backbone_spec(args.teacher_backbone, args.width or 1.0))  # fits, or says why
    meta = teacher.get("meta", {}) if isinstance(teacher, dict) else {}
    data: dict[str, Any] = read_mapping(args.config) if args.config else {}
    clean = args.data
    if clean == "demo":
        from corruptencoder.demo import demo_world

        clean = str(demo_world() / "pretrain")
    over = ["method.name=compress", f"method.teacher={args.teacher}", f"data.clean={clean}"]
    if args.fraction is not None:
        over.append(f"data.fraction={args.fraction}")
    for flag, key, default in (("backbone", "backbone.name", spec.get("name")), ("width", "backbone.width", spec.get("width")),
                               ("image_size", "data.image_size", meta.get("image_size")), ("epochs", "optim.epochs", None),
                               ("seed", "trainer.seed", None), ("variant", "method.variant", None),
                               ("teacher_backbone", "method.teacher_backbone", None)):
        value = getattr(args, flag)
        value = value if value is not None else default
        if value is not None:
            over.append(f"{key}={value}")
    data = apply_overrides(data, over + list(args.overrides))
    data.setdefault("data", {})["exclude"] = [str(p) for p in args.exclude]
    data = apply_preset(args.preset, data)
    cfg = validate(PretrainConfig, data, str(args.config) if args.config else "defend compress options")
    res = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(f"distilled {args.teacher} into a {cfg.backbone.name} student on {res.num_images} clean images "
          f"({cfg.data.fraction or 1.0:.0%} of the data) in {res.seconds:.0f} s -> {res.encoder}")
    return 0

# ---------------------------------------------------------------------------------------------
# run, report, demo


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run an experiment config end to end (craft, pre-train, probe, score, report)",
        description="Run every arm and trial of an experiment config. Each stage is cached by a hash of its "
        "inputs under RUN_DIR/cache, so a re-run skips finished work and an interrupted run resumes. Writes "
        "results.json, results.csv, report.md and figures/.")
    p.add_argument("config", type=Path, help="experiment YAML (see configs/)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<experiment name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set seeds=[0,1,2] (repeatable)")
    p.add_argument("--device", default="auto", help="evaluation device: auto | cpu | cuda")
    p.add_argument("--cache", type=Path, help="stage cache folder (default RUN_DIR/cache); runs that share one "
                   "reuse each other's poisons, encoders and scores wherever the inputs are the same")
    p.add_argument("--arms", action="append", metavar="PATTERN",
                   help="run only the arms whose names match this glob, e.g. 'none/*' (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from corruptencoder.experiment.config import load_experiment
    from corruptencoder.experiment.runner import run_experiment

    cfg = load_experiment(args.config, args.overrides)
    out = args.out or Path("runs") / cfg.name
    result = run_experiment(cfg, out, progress=not args.quiet, device=args.device, only=args.arms or (),
                            cache=args.cache)
    _print_summary(result, out)
    return 0


def _print_summary(result: dict[str, Any], out: Path) -> None:
    from corruptencoder.experiment.report import main_table

    print()
    print("\n".join(main_table(result["aggregates"])))
    for c in result.get("checks") or []:
        print(f"  [{'met' if c['ok'] else 'NOT met'}] {c['check']}: {c.get('value')} {c.get('detail', '')}")
    print(f"\nreport: {out / 'report.md'}   results: {out / 'results.json'}, {out / 'results.csv'}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the offline demo world: five arms, table, report (~10 min on 2 cores)",
        description="Run No attack, SSL-Backdoor, CorruptEncoder, CorruptEncoder+ and CorruptEncoder under localized "
        "cropping with the same poison budget on the procedurally generated demo world (no download), then print "
        "the table, the diagnostics and where the report is. Re-running reuses every finished stage.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the demo config, e.g. --set defaults.epochs=30")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    from corruptencoder.experiment.config import load_experiment
    from corruptencoder.experiment.runner import run_experiment

    cfg = load_experiment(Path(str(files("corruptencoder") / "configs" / "demo.yaml")), args.overrides)
    print(f"demo: {len(cfg.expanded_arms())} arms on the demo world -> {args.out} (first run generates the world)")
    result = run_experiment(cfg, args.out, progress=not args.quiet)
    _print_summary(result, args.out)
    from corruptencoder.experiment.report import demo_verdict

    print("\n" + demo_verdict(result))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild report.md and figures from a run's results.json",
                       description="Rebuild RUN_DIR/report.md and RUN_DIR/figures/*.png from results.json alone.")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from corruptencoder.experiment.report import rebuild_report

    print(f"wrote {rebuild_report(args.run_dir)}")
    return 0

# ---------------------------------------------------------------------------------------------

VERBS: list[Callable[[argparse._SubParsersAction], None]] = [_add_craft, _add_show, _add_pretrain, _add_evaluate, _add_demo, _add_run, _add_report, _add_defend, _add_analyze]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="corruptencoder", description="Data-poisoning backdoor attacks and defences for "
                     "contrastive learning: craft, pre-train, defend, evaluate, run experiments, report.")
    parser.add_argument("--version", action="version", version=f"corruptencoder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for add in VERBS:
        add(sub)
    return parser


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("PIL", "matplotlib", "lightning", "lightning.pytorch", "lightning.fabric", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
