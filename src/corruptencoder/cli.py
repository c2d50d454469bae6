"""The ``corruptencoder`` command: one verb per stage of the data flow.

Each verb parses its flags, calls one library function (the same one the experiment runner uses) and
prints what came back. Attack and defence options are flags generated from their registered option
models. Heavy imports (torch, Lightning) happen inside the verbs that need them, so ``craft`` and
``--help`` start fast and work without PyTorch. Bad input ends with one ``error:`` line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from corruptencoder import __version__
from corruptencoder.errors import UserError

log = logging.getLogger("corruptencoder")
Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"


#: stands for the pre-training methods in a help text. Which methods pre-train is a class flag of each method
#: (``SSLMethod.pretraining``: CompRess is a defence's training loop), and reading it imports the methods and
#: torch, so the list is filled in only when such a help text is printed (``pretrain --help``).
_PRETRAINING_METHODS = "<pre-training methods>"


class _HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text is not None and _PRETRAINING_METHODS in text:
            from corruptencoder.ssl.config import METHODS

            text = text.replace(_PRETRAINING_METHODS, " | ".join(METHODS.where(lambda m: m.pretraining)))
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes are one line like every other error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's returns NoReturn via exit
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Flags several verbs share, declared once."""
    quiet = _Parser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    overrides = _Parser(add_help=False)
    overrides.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key, e.g. --set optim.epochs=50 (repeatable)")
    out = _Parser(add_help=False)
    out.add_argument("--out", type=Path, required=True, help="output folder (refused if it exists, see --overwrite)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return {"quiet": quiet, "set": overrides, "out": out}


# ---------------------------------------------------------------------------------------------
# craft, show


def _add_craft(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    from corruptencoder.poison.config import ATTACKS, TARGET_FLAGS, CraftTarget
    from corruptencoder.utils.cli_flags import add_model_flags

    attacks = ATTACKS.items()
    p = sub.add_parser(
        "craft", help="craft poisons (" + ", ".join(n for n, _ in attacks) + ")",
        parents=[parents["set"], parents["out"], parents["quiet"]],
        description="Craft poisoned images into an output folder with manifest.jsonl, poisons.txt and the "
        "triggers. Give an attack and its options, or --config FILE for several targets.")
    p.add_argument("attack", nargs="?", choices=[n for n, _ in attacks],
                   help="; ".join(f"{n}: {a.summary}" for n, a in attacks))
    p.add_argument("--config", type=Path, help="YAML/JSON crafting config (several targets); options below override it")
    g = p.add_argument_group("target")
    g.add_argument("--target", dest="name", help="target class name (default: the references folder's name)")
    add_model_flags(g, CraftTarget, skip=("name", "attack", "options", "object_labels", "cut_labels", "trigger_size"))
    g.add_argument("--trigger-size", help="trigger size in pixels: 40 or WxH (default: the attack's, 40 or 16)")
    g.add_argument("--object-label", dest="object_labels", action="append",
                   help="labelme label(s) of the object (default: all but cut)")
    g.add_argument("--cut-label", dest="cut_labels", action="append", help="labelme label(s) that cut holes")
    a = p.add_argument_group("attack options (each applies to the attacks that have it)")
    seen: set[str] = set(TARGET_FLAGS)
    option_fields: list[str] = []
    for _, attack in attacks:
        option_fields += add_model_flags(a, attack.options, seen=seen)
    o = p.add_argument_group("output")
    o.add_argument("--seed", type=int, help="random seed (default 0); same seed, same bytes")
    o.add_argument("--workers", type=int, help=f"parallel processes (default {_default_workers()})")
    o.add_argument("--format", choices=["png", "jpeg"], help="image format (default png)")
    o.add_argument("--max-size", type=int, help="cap on a poison's longer side in px (default 800)")
    o.add_argument("--soft-edge", type=float, help="Gaussian radius feathering the object mask (default 1; 0 = hard)")
    p.set_defaults(func=_cmd_craft, option_fields=option_fields)


def _cmd_craft(args: argparse.Namespace) -> int:
    from corruptencoder.assets import BUILTIN_TARGET, resolve_builtin
    from corruptencoder.poison.config import RUN_FLAGS, TARGET_FLAGS, build_craft_config
    from corruptencoder.poison.craft import craft
    from corruptencoder.utils.cli_flags import given

    config = build_craft_config(args.attack, given(args, (*TARGET_FLAGS, *args.option_fields)),
                                given(args, RUN_FLAGS), config=args.config, overrides=args.overrides,
                                default_workers=_default_workers(), resolve=resolve_builtin,
                                default_name=BUILTIN_TARGET)
    summary = craft(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    per = ", ".join(f"{k}: {v}" for k, v in summary.per_target.items())
    print(f"crafted {summary.num} poisons ({per}) in {summary.seconds:.1f} s "
          f"({summary.per_second:.0f}/s) -> {summary.out}")
    if summary.skipped_backgrounds:
        print(f"skipped {len(summary.skipped_backgrounds)} unreadable background(s); "
              f"listed in {summary.out}/craft.json")
    return 0


def _add_show(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
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
    from corruptencoder.poison.show import save_poison_grid

    path, size = save_poison_grid(args.poisons, args.out, num=args.num, cols=args.cols, cell=args.cell,
                                  target=args.target, seed=args.seed)
    print(f"wrote {path} ({size[0]}x{size[1]})")
    return 0


# ---------------------------------------------------------------------------------------------
# pretrain, analyze


#: pretrain's shortcut flags and the config keys they set
_PRETRAIN_FLAGS = {
    "method": "method.name", "data": "data.clean", "pairs": "data.pairs", "classes": "data.classes",
    "poisons": "data.poisons",
    "image_size": "data.image_size", "backbone": "backbone.name", "width": "backbone.width", "init": "backbone.init",
    "epochs": "optim.epochs", "batch_size": "optim.batch_size", "lr": "optim.lr", "crop": "views.crop",
    "delta": "views.delta", "devices": "trainer.devices", "nodes": "trainer.num_nodes",
    "accelerator": "trainer.accelerator", "seed": "trainer.seed",
}


def _method_names() -> list[str]:
    from corruptencoder.ssl.config import METHODS

    return METHODS.module_names()  # the module name is the method name: no torch import for the help text


def _add_pretrain(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pretrain", help="pre-train an encoder (a contrastive method: see its --help)",
        parents=[parents["set"], parents["out"], parents["quiet"]],
        description="Contrastive pre-training with Lightning (CPU or GPUs with DDP). Writes OUT/encoder.pt, "
        "checkpoints (for --resume), logs/metrics.csv and run.json. Flags override the config file, which "
        "overrides the --preset.")
    p.add_argument("--config", type=Path, help="YAML/JSON pre-training config")
    p.add_argument("--preset", help="scale preset: cpu-tiny | cpu-small | gpu-small | paper")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = p.add_argument_group("shortcuts for common keys")
    g.add_argument("--method", help=f"method.name: {_PRETRAINING_METHODS} (default moco; clip trains on "
                   "image-text pairs, see --pairs)")
    g.add_argument("--pairs", help="data.pairs: image-text pairs for clip (open_clip CSV/TSV or tar shards)")
    g.add_argument("--data", help="data.clean: ImageFolder root, folder or file list ('demo' = the demo world)")
    g.add_argument("--classes", help="data.classes: class list, e.g. imagenet100_A.txt")
    g.add_argument("--poisons", nargs="+", help="data.poisons: folders written by 'craft'")
    g.add_argument("--image-size", type=int, help="data.image_size")
    g.add_argument("--backbone", help="backbone.name: resnet18 | resnet34 | resnet50 | small_cnn | timm:<name>")
    g.add_argument("--width", type=float, help="backbone.width multiplier")
    g.add_argument("--init", help="backbone.init: continue pre-training from this encoder.pt")
    g.add_argument("--epochs", type=int, help="optim.epochs")
    g.add_argument("--batch-size", type=int, help="optim.batch_size")
    g.add_argument("--lr", type=float, help="optim.lr per 256 images")
    g.add_argument("--crop", choices=["random", "localized", "none"], help="views.crop (defences: localized, none)")
    g.add_argument("--delta", type=float, help="views.delta for localized cropping (default 0.2)")
    g.add_argument("--devices", help="trainer.devices (DDP when > 1)")
    g.add_argument("--nodes", type=int, help="trainer.num_nodes: nodes of a torchrun / SLURM launch (docs/launch.md)")
    g.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], help="trainer.accelerator")
    g.add_argument("--seed", type=int, help="trainer.seed")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from corruptencoder.presets import build_pretrain_config
    from corruptencoder.ssl.train import pretrain

    settings = {key: getattr(args, flag) for flag, key in _PRETRAIN_FLAGS.items() if getattr(args, flag) is not None}
    flags = {key: "--" + flag.replace("_", "-") for flag, key in _PRETRAIN_FLAGS.items() if key in settings}
    cfg = build_pretrain_config(str(args.config) if args.config else None, args.preset, settings, args.overrides,
                                flags=flags)
    res = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(f"pre-trained {cfg.method.name} for {res.epochs} epochs on {res.num_images} images "
          f"({res.num_poisons} poisons) in {res.seconds:.0f} s ({res.images_per_second:.0f} img/s) -> {res.encoder}")
    return 0


def _add_analyze(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("analyze", help="analyses that need no training (crop pairs)",
                       description="Analyses of poisons and defences that need no training.")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", parser_class=_Parser)
    c = asub.add_parser(
        "crops", help="Monte-Carlo: how often one view is the object and the other holds the trigger",
        description="Estimate, with the pre-training crop samplers, the probability that one view covers mainly "
        "the reference object while the other contains the trigger (split) and that one view contains both, for a "
        "poison folder's manifest boxes and/or a grid of alpha and beta; compare random crops, localized cropping "
        "and no cropping.")
    c.add_argument("poisons", nargs="?", type=Path,
                   help="poison folder from 'craft' (omit for the alpha/beta grid only)")
    c.add_argument("--method", default="moco", choices=_method_names(), help="whose crop scale to use (default moco)")
    c.add_argument("--policies", nargs="+", default=["random", "localized", "none"],
                   choices=["random", "localized", "none"], help="view policies to compare")
    c.add_argument("--delta", type=float, default=0.2, help="localized cropping delta (default 0.2)")
    c.add_argument("--pairs", type=int, default=200, help="view pairs per poison (default 200)")
    c.add_argument("--alphas", nargs="+", type=float, default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    c.add_argument("--betas", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7, 0.9])
    c.add_argument("--scale", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="crop-scale range of the views instead of the method's (a config's views.scale)")
    c.add_argument("--no-grid", action="store_true", help="skip the alpha/beta grid")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", type=Path, help="also write the numbers as JSON")
    c.set_defaults(func=_cmd_analyze_crops)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _cmd_analyze_crops(args: argparse.Namespace) -> int:
    from corruptencoder.analysis.crop_pairs import crop_report
    from corruptencoder.utils.outputs import check_writable, write_json_atomic

    if args.json:
        check_writable(args.json, "--json")
    lines, result = crop_report(str(args.poisons) if args.poisons else None, args.method, args.policies, args.delta,
                                args.pairs, args.alphas, args.betas, not args.no_grid, args.seed,
                                tuple(args.scale) if args.scale else None)
    print("\n".join(lines))
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate


def _add_evaluate(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate", help="linear probe on frozen features: CA/BA, ASR per target, diagnostics",
        parents=[parents["quiet"]],
        description="Train a linear probe on a downstream task's train split with the encoder frozen; report "
        "accuracy (BA, and CA with --clean-encoder), ASR per target on the triggered test images (target-class "
        "images and the attacker's reference images excluded), the no-attack ASR, the reference accuracy and the "
        "feature-space pull. Writes OUT/metrics.json.")
    p.add_argument("--encoder", type=Path, required=True, help="encoder.pt (or a torchvision/timm state dict)")
    p.add_argument("--clean-encoder", type=Path, help="the clean encoder of the same setting (CA, no-attack ASR)")
    p.add_argument("--backbone", help="backbone of plain state-dict encoders (encoder.pt knows its own): "
                   "resnet18 | resnet34 | resnet50 | small_cnn | timm:<name>")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier for --backbone")
    p.add_argument("--task", required=True, help="task YAML, an ImageFolder root (train/ and test/ or val/ "
                   "inside), or 'demo' for the demo world's downstream split")
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
    p.add_argument("--probe", choices=["fast", "authors"], default="fast",
                   help="fast: cached centre-crop features (default); authors: the authors' eval_linear.py protocol "
                   "(augmented features every epoch, L2-normalised, SGD 0.01, 40 epochs)")
    p.add_argument("--probe-epochs", type=int, help="default: 100 (fast) or 40 (authors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, help="folder for metrics.json (and the feature cache)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from corruptencoder.demo import task_from_spec
    from corruptencoder.evaluate.linear_probe import ProbeConfig
    from corruptencoder.evaluate.run import EvalSettings, evaluate_encoder, format_table, format_zero_shot
    from corruptencoder.poison.triggers import parse_size

    if len(args.target) != len(args.trigger):
        raise UserError("give one --trigger per --target")
    if args.probe_epochs is not None and args.probe_epochs < 1:  # not "0 = the default": an untrained probe
        raise UserError(f"probe epochs (--probe-epochs) = {args.probe_epochs}: train the probe for at least 1 epoch")
    settings = EvalSettings(probe=ProbeConfig.for_protocol(args.probe, args.seed, args.probe_epochs), seed=args.seed,
                            location=tuple(args.location), trigger_size=parse_size(args.trigger_size),
                            batch_size=args.batch_size, device=args.device,
                            cache_dir=str(args.out / "features") if args.out else None, progress=not args.quiet)
    result = evaluate_encoder(args.encoder, task_from_spec(args.task, args.image_size),
                              clean_encoder=args.clean_encoder, poisons=args.poisons,
                              targets=list(zip(args.target, args.trigger, strict=True)),
                              backbone=args.backbone, width=args.width, settings=settings, zero_shot=args.zero_shot,
                              clean_zero_shot=args.clean_zero_shot, prompts=args.prompts, out=args.out)
    print(format_table(result))
    zs = format_zero_shot(result)
    if zs:
        print(zs)
    if args.out:
        print(f"wrote {args.out / 'metrics.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# defend: one sub-verb per registered data or encoder defence


def _add_defend(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    from corruptencoder.defend.base import DEFENCES
    from corruptencoder.utils.cli_flags import add_model_flags

    runnable = [(n, d) for n, d in DEFENCES.items() if d.kind != "views" and hasattr(d, "run_cli")]
    views = [n for n, d in DEFENCES.items() if d.kind == "views"]
    p = sub.add_parser("defend", help="defences on the data or on a trained encoder (" +
                       ", ".join(n for n, _ in runnable) + ")",
                       description="Defences applied outside pre-training. The view-time defences (" +
                       ", ".join(views) + ") are pre-training options: 'pretrain --crop localized' and "
                       "'pretrain --crop none'.")
    dsub = p.add_subparsers(dest="defence", metavar="DEFENCE", parser_class=_Parser)
    for name, defence in runnable:
        d = dsub.add_parser(name, help=defence.summary, description=(defence.__doc__ or defence.summary).strip(),
                            parents=[parents["set"], parents["out"], parents["quiet"]])
        defence.add_arguments(d)  # type: ignore[attr-defined]  # runnable defences define it
        fields = add_model_flags(d.add_argument_group(f"{name} options"), defence.options)
        d.set_defaults(func=_cmd_defend, defence_cls=defence, option_fields=fields)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def _cmd_defend(args: argparse.Namespace) -> int:
    from corruptencoder.utils.cli_flags import flag, given
    from corruptencoder.utils.config import validate

    cls = args.defence_cls
    options = validate(cls.options, cls.cli_defaults() | given(args, args.option_fields), "", rename=flag)
    print(cls.run_cli(args, options))
    return 0


# ---------------------------------------------------------------------------------------------
# run, report, demo


def _add_run(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run", help="run an experiment config end to end (craft, pre-train, probe, score, report)",
        parents=[parents["set"], parents["quiet"]],
        description="Run every arm and trial of an experiment config. Each stage is cached by a hash of its "
        "inputs under RUN_DIR/cache, so a re-run skips finished work and an interrupted run resumes. Writes "
        "results.json, results.csv, report.md and figures/.")
    p.add_argument("config", type=Path, help="experiment YAML (see configs/)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<experiment name>)")
    p.add_argument("--device", default="auto", help="evaluation device: auto | cpu | cuda")
    p.add_argument("--cache", type=Path, help="stage cache folder (default RUN_DIR/cache); runs that share one "
                   "reuse each other's poisons, encoders and scores wherever the inputs are the same")
    p.add_argument("--arms", action="append", metavar="PATTERN",
                   help="run only the arms whose names match this glob, e.g. 'none/*' (repeatable)")
    p.add_argument("--plan", action="store_true", help="print every stage the run would do (poisons, encoders "
                   "with method / epochs / batch / lr, defences, evaluations), which are cached, and an estimate of "
                   "the pre-training time from a throughput measured here; nothing is crafted or trained")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from corruptencoder.experiment.config import load_experiment
    from corruptencoder.experiment.runner import run_experiment

    cfg = load_experiment(args.config, args.overrides)
    out = args.out or Path("runs") / cfg.name
    if args.plan:
        from corruptencoder.experiment.plan import plan_experiment

        lines, _ = plan_experiment(cfg, out, only=args.arms or (), cache=args.cache, device=args.device)
        print("\n".join(lines))
        return 0
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


def _add_demo(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the offline demo world: five arms, table, report (~10 min on 2 cores after a "
        "clean base encoder trained once, ~15 min)",
        parents=[parents["set"], parents["quiet"]],
        description="Run No attack, SSL-Backdoor, CorruptEncoder, CorruptEncoder+ and CorruptEncoder under localized "
        "cropping with the same poison budget on the procedurally generated demo world (no download), each arm a "
        "short refresh of one clean base encoder (trained on the first run and cached in OUT/cache), then print "
        "the table, the diagnostics and where the report is. Re-running reuses every finished stage.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from corruptencoder.experiment.report import demo_verdict
    from corruptencoder.experiment.runner import demo_config, run_experiment

    cfg = demo_config(args.overrides)
    print(f"demo: {len(cfg.expanded_arms())} arms on the demo world -> {args.out} (the first run generates the world "
          "and trains the clean base encoder every arm continues from, about 15 minutes on 2 cores, once)")
    result = run_experiment(cfg, args.out, progress=not args.quiet)
    _print_summary(result, args.out)
    print("\n" + demo_verdict(result))
    return 0


def _add_report(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="rebuild report.md and figures from a run's results.json",
                       description="Rebuild RUN_DIR/report.md and RUN_DIR/figures/*.png from results.json alone.")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from corruptencoder.experiment.report import rebuild_report

    print(f"wrote {rebuild_report(args.run_dir)}")
    return 0


# ---------------------------------------------------------------------------------------------

VERBS: list[Callable[[Any, dict[str, argparse.ArgumentParser]], None]] = [
    _add_craft, _add_show, _add_pretrain, _add_evaluate, _add_demo, _add_run, _add_report, _add_defend, _add_analyze]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="corruptencoder", description="Data-poisoning backdoor attacks and defences for "
                     "contrastive learning: craft, pre-train, defend, evaluate, run experiments, report.")
    parser.add_argument("--version", action="version", version=f"corruptencoder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    parents = _parents()
    for add in VERBS:
        add(sub, parents)
    return parser


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("PIL", "matplotlib", "lightning", "lightning.pytorch", "lightning.fabric", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _crash_file(text: str) -> Path | None:
    """Write a traceback where a user can find it: $CORRUPTENCODER_CACHE/crashes (default
    ~/.cache/corruptencoder/crashes), else the system temp folder."""
    import tempfile
    import time

    cache = os.environ.get("CORRUPTENCODER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "corruptencoder")
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (Path(cache) / "crashes", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _os_error(exc: OSError) -> str:
    """An OSError that escaped the library (a path that cannot be read or written) as one sentence."""
    import errno

    where = exc.filename if exc.filename is not None else ""
    what = exc.strerror or str(exc)
    fix = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
           errno.EACCES: "check the permissions or choose another path", errno.EPERM: "check the permissions or "
           "choose another path", errno.EROFS: "the filesystem is read-only: choose another path",
           errno.ENOENT: "check the path", errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
           errno.EISDIR: "give a file, not a folder", errno.ENOMEM: "use smaller inputs or a machine with more "
           "memory"}.get(exc.errno or 0, "check the path and try again")
    return f"{where}: {what}; {fix}" if where else f"{what}; {fix}"


def _fail(exc: BaseException, verbose: bool) -> int:
    """Every way a verb can fail, as one ``error:`` line on stderr and an exit status: 2 for bad input
    or an unusable environment (a path, a device), 128 + N for signal N, 1 for a bug (whose traceback
    goes to a file, and to stderr too with -v)."""
    import traceback

    from pydantic import ValidationError

    from corruptencoder.errors import Interrupted
    from corruptencoder.utils.config import format_validation_error

    def say(line: str) -> None:
        print("error: " + " ".join(line.split()), file=sys.stderr, flush=True)

    if isinstance(exc, UserError):
        say(str(exc))
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):  # raised where our handler was not installed (another thread)
        exc = Interrupted(2)
    if type(exc).__name__ == "SIGTERMException":  # Lightning's (a SystemExit with code None: success!)
        exc = Interrupted(15)
    if isinstance(exc, Interrupted):
        say(f"interrupted by {exc.signal_name}; " + (exc.note or "nothing half-written was left behind"))
        return exc.exit_code
    if isinstance(exc, ValidationError):
        say(format_validation_error(exc, ""))
        return 2
    if isinstance(exc, OSError):
        say(_os_error(exc))
        return 2
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
            isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))):
        say("out of memory; use smaller inputs (fewer or smaller images, a smaller batch) or a machine with more "
            "memory")
        return 2
    text = "".join(traceback.format_exception(exc))
    if verbose:
        print(text, file=sys.stderr, end="", flush=True)
    path = _crash_file(f"corruptencoder {__version__}\nargv: {sys.argv!r}\n\n{text}")
    where = f"the traceback is in {path}" if path else "the traceback could not be saved"
    message = " ".join(str(exc).split())[:300] or "no message"
    say(f"internal error ({type(exc).__name__}: {message}); this is a bug in corruptencoder, "
        f"please report it: {where}" + ("" if verbose else " (run with -v to print it)"))
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    from corruptencoder.utils.signals import interrupts_raise

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    with interrupts_raise():
        try:
            return int(args.func(args) or 0)
        except SystemExit as exc:
            if type(exc).__name__ != "SIGTERMException":
                raise
            failure: BaseException = exc
        except BaseException as exc:  # noqa: BLE001 - the one place every failure becomes one line
            failure = exc
        with _signals_ignored():  # the cleanup already ran: a second Ctrl-C must not turn into a traceback
            return _fail(failure, args.verbose)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
