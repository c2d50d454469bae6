"""An arm's stage configs, built as pure functions of the experiment config (no I/O, no training).

The runner calls them with a resolver that turns ``demo`` into the demo world's folders; loading an
experiment calls them with a placeholder resolver, so every arm's crafting and pre-training config,
and its defence's options, are validated (through the shared ``validate``) before any work starts:
a wrong value anywhere in an experiment is one ``error:`` line at load time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corruptencoder.experiment.config import ArmSpec, ExperimentConfig, TargetSpec
from corruptencoder.utils.config import validate

#: (value, kind, target) -> a path; kind is clean | backgrounds | task | references | support
Resolve = Callable[[str, str, "TargetSpec | None"], str]
DEFAULT_POISONS = 650


def placeholder(value: str, kind: str, target: TargetSpec | None = None) -> str:
    """The resolver used to validate a config before any world or data set is touched."""
    return value


#: what a target's input list means when it is not given, on a task of the demo world
DEMO_INPUTS = {"references": ["demo"], "support": ["demo"], "saha_references": ["demo-test"]}


def target_inputs(cfg: ExperimentConfig, target: TargetSpec, field: str, attack: str = "",
                  required: bool = True) -> list[str]:
    """A target's references / support / saha_references: as given, or the demo world's on a demo task;
    on real data a missing list is an error naming the target (it would otherwise fail mid-run), or
    empty when not ``required`` (e.g. scoring a no-attack arm)."""
    value = getattr(target, field)
    if value is not None:
        return list(value)
    task = next((t for t in cfg.tasks if t.name == target.task), None)
    if task is not None and task.root == "demo":
        return DEMO_INPUTS[field]
    if not required:
        return []
    from corruptencoder.errors import ConfigError

    who = f"the {attack} attack" if attack else "the arm's attack"
    raise ConfigError(f"target {target.name}: {who} needs '{field}' (a folder, files or a "
                      f"file list); only targets of the demo world have a default")


def arm_targets(cfg: ExperimentConfig, arm: ArmSpec) -> list[TargetSpec]:
    names = arm.targets or [t.name for t in cfg.targets]
    return [t for t in cfg.targets if t.name in names]


def num_poisons(arm: ArmSpec, n_clean: Callable[[], int]) -> int:
    if arm.num_poisons is not None:
        return arm.num_poisons
    if arm.poison_ratio is not None:
        return max(1, int(round(arm.poison_ratio * n_clean())))
    return DEFAULT_POISONS


def type1_size(cfg: ExperimentConfig, arm: ArmSpec) -> int:
    """Type-I images at the arm's pre-training image size (224 at the paper's settings).

    CLIP's views keep 90-100 % of an image, so a Type-I image made at the training size shows the trigger
    at its stated size. Made at the demo world's 64 px and trained at 32 (the default until 2026-12-06),
    every trigger was halved in the views and no backdoor formed (README, "On image-text pairs")."""
    return int(pretrain_body(cfg, arm, cfg.seeds[0], None, placeholder, progress=False)["data"]["image_size"])


def craft_config(cfg: ExperimentConfig, arm: ArmSpec, seed: int, resolve: Resolve, n_clean: Callable[[], int],
                 *, list_files: bool = True, where: str = "") -> Any:
    """The arm's crafting config (a validated ``CraftConfig``), or None for an arm without poisons.

    The attack's declaration says which of a target's inputs it takes and which options it has; the
    arm's fields of the same names (alpha, beta, layout, ...) and ``attack_args`` fill the options."""
    from corruptencoder.poison.config import ATTACKS, CraftConfig

    if arm.attack == "none" or num_poisons(arm, n_clean) == 0:
        return None
    attack = ATTACKS.get(arm.attack)
    provided: dict[str, Any] = {k: getattr(arm, k) for k in ArmSpec.model_fields if k in attack.options.model_fields}
    provided["prompts"] = cfg.evaluation.prompts
    if "type1_size" in attack.options.model_fields:  # the multi-modal attacks only
        provided["type1_size"] = type1_size(cfg, arm)
    options = {k: v for k, v in provided.items() if k in attack.options.model_fields}
    options.update(arm.attack_args)
    targets = []
    for t in arm_targets(cfg, arm):
        refs = [resolve(r, "references", t) for r in target_inputs(cfg, t, attack.reference_source, arm.attack)]
        if arm.n_references and list_files:
            from corruptencoder.poison.objects import discover_references

            refs = [s.path for s in discover_references(refs)][: arm.n_references]
        spec: dict[str, Any] = {
            "name": t.name, "attack": arm.attack, "task": t.task, "label": t.label or t.name,
            "num": num_poisons(arm, n_clean), "references": refs, "trigger": arm.trigger_type or t.trigger,
            "trigger_size": arm.trigger_size, "trigger_seed": t.trigger_seed, **options,
        }
        if t.text and "class_text" in attack.options.model_fields and "class_text" not in arm.attack_args:
            spec["class_text"] = t.text
        if "backgrounds" in attack.needs:
            spec["backgrounds"] = [resolve(b, "backgrounds", None) for b in arm.backgrounds or cfg.backgrounds]
        if "support" in attack.needs:
            support = [resolve(s, "support", t) for s in target_inputs(cfg, t, "support", arm.attack)]
            if arm.n_support and list_files:
                from corruptencoder.utils.files import list_images

                support = [str(p) for p in list_images(support, what="support image")][: arm.n_support]
            spec["support"] = support
        targets.append(spec)
    run: dict[str, Any] = {"seed": seed, "workers": 1, "targets": targets}
    if arm.max_size is not None:
        run["max_size"] = arm.max_size
    return validate(CraftConfig, run, f"{where}arm {arm.name}: crafting")


def pretrain_body(cfg: ExperimentConfig, arm: ArmSpec, seed: int, poisons: Path | None, resolve: Resolve, *,
                  init: Path | None = None, pairs: str | None = None, progress: bool = True) -> dict[str, Any]:
    """The arm's pre-training config as a dict (the preset filled in), its view defence applied."""
    from corruptencoder.defend.base import make_defence
    from corruptencoder.presets import apply_preset, merge
    from corruptencoder.ssl.config import METHODS

    d = cfg.data
    data: dict[str, Any] = {"clean": resolve(d.clean, "clean", None), "classes": d.classes, "split": d.split,
                            "max_images": arm.max_images or d.max_images,
                            "poisons": [str(poisons)] if poisons else []}
    if METHODS.get(arm.method).data_kind == "pairs":
        data.update(clean=None, classes=None, pairs=pairs or d.pairs)
    body: dict[str, Any] = {"method": {"name": arm.method}, "data": data}
    body = merge(body, copy.deepcopy(cfg.pretrain))
    body = merge(body, copy.deepcopy(arm.pretrain))
    if arm.defence != "none":
        defence = make_defence(arm.defence, arm.defence_args)
        if defence.kind == "views":
            body = merge(body, defence.pretrain_patch())  # type: ignore[attr-defined]  # a ViewDefence's
    body = merge(body, {"trainer": {"seed": seed}})
    for key, (section, name) in {"backbone": ("backbone", "name"), "width": ("backbone", "width"),
                                 "epochs": ("optim", "epochs"), "batch_size": ("optim", "batch_size"),
                                 "lr": ("optim", "lr"), "image_size": ("data", "image_size")}.items():
        v = getattr(arm, key)
        if v is not None:
            body = merge(body, {section: {name: v}})
    if cfg.evaluation.checkpoints_every:
        body = merge(body, {"trainer": {"snapshot_every": cfg.evaluation.checkpoints_every}})
    if init is not None:
        body = merge(body, {"backbone": {"init": str(init)}})
    body = apply_preset(cfg.preset, body)
    body.setdefault("trainer", {})["progress"] = progress
    return body


def pretrain_config(cfg: ExperimentConfig, arm: ArmSpec, seed: int, poisons: Path | None, resolve: Resolve, *,
                    init: Path | None = None, pairs: str | None = None, progress: bool = True,
                    where: str = "") -> Any:
    from corruptencoder.ssl.config import PretrainConfig

    body = pretrain_body(cfg, arm, seed, poisons, resolve, init=init, pairs=pairs, progress=progress)
    return validate(PretrainConfig, body, f"{where}arm {arm.name}: pre-training")


def check_stages(cfg: ExperimentConfig, source: str) -> None:
    """Build and validate every arm's stage configs now (placeholder paths), so nothing fails later."""
    from corruptencoder.defend.base import make_defence

    arms = cfg.expanded_arms()
    for arm in arms:
        where = f"{source}: "
        if arm.defence != "none":
            make_defence(arm.defence, arm.defence_args, f"{where}arm {arm.name}: defence_args")
        craft_config(cfg, arm, cfg.seeds[0], placeholder, lambda: 1000, list_files=False, where=where)
        init = Path("initial-encoder.pt") if arm.init else None
        pretrain_config(cfg, arm, cfg.seeds[0], None, placeholder, init=init, where=where)
