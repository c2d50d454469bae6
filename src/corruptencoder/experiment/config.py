"""Experiment configs: data, targets, arms (attack x method x defence), sweeps, trials, a preset.

Every arm is one pre-training setting; a sweep expands into one arm per value of one arm field
(alpha, beta, num_poisons, trigger_size, ...). A misspelt key, an unknown attack or a sweep over a
field that does not exist fails at load time with the key's path, before any work starts.
Strings may use ``${ENV_VAR}`` (e.g. ``${IMAGENET_ROOT}``) so one config serves many machines.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from corruptencoder.demo import DEMO_COUNTS, DEMO_OBJECT_SCALE, DEMO_TARGET
from corruptencoder.errors import ConfigError
from corruptencoder.evaluate.linear_probe import ProbeProtocol
from corruptencoder.evaluate.tasks import TaskConfig
from corruptencoder.poison.attacks.corruptencoder import LayoutChoice, ReferenceMode
from corruptencoder.poison.config import ATTACKS, TargetBase, fraction
from corruptencoder.utils.config import StrictModel, read_mapping, validate


class WorldSpec(StrictModel):
    """The procedural demo world, used wherever a path says ``demo``."""

    image_size: int = 64
    seed: int = 0
    object_scale: tuple[float, float] = DEMO_OBJECT_SCALE
    n_pretrain: int = DEMO_COUNTS["n_pretrain"]
    n_train_per_class: int = DEMO_COUNTS["n_train_per_class"]
    n_test_per_class: int = DEMO_COUNTS["n_test_per_class"]
    n_references: int = DEMO_COUNTS["n_references"]
    n_support: int = DEMO_COUNTS["n_support"]
    n_backgrounds: int = DEMO_COUNTS["n_backgrounds"]
    caption_name_prob: float = Field(0.8, description="demo captions: probability a caption names its class")
    rare_classes: dict[str, float] = Field(default_factory=dict,
                                           description="demo captions: classes named with a lower probability")
    caption_scenes: float = Field(0.2, ge=0.0, le=1.0,
                                  description="demo captions: object-free scene pairs added, per captioned image "
                                  "(Conceptual Captions is full of them; without, a bare background is a tell)")

    @property
    def n_caption_scenes(self) -> int:
        return int(round(self.caption_scenes * self.n_pretrain))


class DataSpec(StrictModel):
    clean: str = Field("demo", description="clean pre-training images ('demo' = the demo world's pretrain split)")
    pairs: str = Field("demo", description="clean image-text pairs for CLIP arms: CSV/TSV, shards, or 'demo'")
    classes: str | None = None
    split: str = "train"
    max_images: int | None = None


class TaskSpec(TaskConfig):
    """A downstream task of an experiment: the evaluation's task config, with the demo world's labelled split
    as the default root and the pre-training image size as the default evaluation size."""

    name: str
    root: str = Field("demo", description="'demo' = the demo world's labelled downstream split")
    image_size: int | None = Field(None, ge=8, description="default: the pre-training image size")  # type: ignore[assignment]  # None = filled in by the runner


class TargetSpec(TargetBase):
    """An attacked class: its task, references and trigger (shared by all arms that attack it); the
    crafting target of each arm is built from it (:mod:`corruptencoder.experiment.stages`)."""

    task: str = Field(description="name of the downstream task this class belongs to")
    text: str | None = Field(None, description="the class's name in captions and zero-shot prompts (default: the "
                             "label's name: an ImageNet wnid by its class name)")
    references: list[str] | None = Field(None, description="reference objects (on a demo task: 'demo', the default)")
    support: list[str] | None = Field(None, description="support reference images, for CorruptEncoder+ (on a demo "
                                      "task: 'demo', the default)")
    saha_references: list[str] | None = Field(
        None, description="SSL-Backdoor reference images (on a demo task: 'demo-test' = the target class's test "
        "images, as the paper)")


def init_arm(init: str | None) -> tuple[str, str] | None:
    """An arm's ``init: arm:NAME[@SEED]`` as ``(NAME, SEED or "")``; None for an encoder path or no init."""
    if not init or not init.startswith("arm:"):
        return None
    name, _, pinned = init[4:].partition("@")
    return name, pinned


def _known(registry_names: list[str], value: str, what: str) -> str:
    if value != "none" and value not in registry_names:
        raise ValueError(f"unknown {what} {value!r}; use one of none, {', '.join(registry_names)}")
    return value


class ArmSpec(StrictModel):
    """One pre-training setting: every field can be swept (dict fields by ``field.key``)."""

    name: str = ""
    attack: str = Field("corruptencoder", description="none or a registered attack")
    method: str = Field("moco", description="a registered contrastive method")
    defence: str = Field("none", description="none or a registered defence")
    defence_args: dict[str, Any] = Field(default_factory=dict, description="the defence's options, e.g. {delta: 0.2}")
    attack_args: dict[str, Any] = Field(default_factory=dict, description="further options of the attack")
    targets: list[str] | None = Field(None, description="attacked target names (default: all)")
    num_poisons: int | None = Field(None, ge=0, description="poisons per target (default: poison_ratio)")
    poison_ratio: float | None = Field(None, gt=0.0, lt=1.0, description="poisons / clean images, per target")
    alpha: float = 0.5
    beta: float = 0.5
    trigger_size: int = Field(8, ge=1, description="trigger side in poison pixels")
    eval_trigger_size: int | None = Field(None, ge=1, description="trigger side in test images (default: as trained)")
    trigger_type: str | None = Field(None, description="override the targets' trigger: random | smooth | white | path")
    n_references: int | None = Field(None, ge=1, description="use the first k references")
    support_ratio: float = Field(0.2, ge=0.0, le=1.0)
    n_support: int | None = Field(None, ge=1)
    layout: LayoutChoice = "random"
    reference_mode: ReferenceMode = "object"
    max_size: int | None = Field(None, ge=8)
    backgrounds: list[str] | None = Field(None, min_length=1, description="this arm's background folders "
                                          "(default: the experiment's backgrounds)")
    max_images: int | None = Field(None, ge=1, description="seeded subset of the clean pre-training images")
    backbone: str | None = None
    width: float | None = Field(None, gt=0.0)
    epochs: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=8)
    batch_size: int | None = Field(None, ge=2)
    lr: float | None = Field(None, gt=0.0)
    init: str | None = Field(None, description="continued pre-training: every encoder of the arm (the attacked one "
                             "and its clean twin) starts from this encoder.pt, or 'arm:NAME' = arm NAME's clean "
                             "final encoder of the same seed ('arm:NAME@0': of seed 0, one base for every trial)")
    pretrain: dict[str, Any] = Field(default_factory=dict, description="raw pre-training config overrides")
    seeds: list[int] | None = Field(None, min_length=1, description="only these of the experiment's seeds (default: "
                                    "all), e.g. a base encoder pinned to one seed or a costly arm measured once")

    @field_validator("alpha", "beta")
    @classmethod
    def _unit(cls, v: float, info: Any) -> float:
        return fraction(info.field_name, v)

    @field_validator("attack")
    @classmethod
    def _attack(cls, v: str) -> str:
        return _known(ATTACKS.names(), v, "attack")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        from corruptencoder.ssl.config import METHODS

        names = METHODS.where(lambda m: m.pretraining)
        if v not in names:
            raise ValueError(f"unknown method {v!r}; use one of {', '.join(names)}")
        return v

    @field_validator("defence")
    @classmethod
    def _defence(cls, v: str) -> str:
        from corruptencoder.defend.base import DEFENCES

        return _known(DEFENCES.names(), v, "defence")


SWEEPABLE = tuple(k for k in ArmSpec.model_fields if k != "name")
_DICT_FIELDS = ("pretrain", "defence_args", "attack_args")


class SweepSpec(StrictModel):
    param: str
    values: list[Any] = Field(min_length=1)
    base: dict[str, Any] = Field(default_factory=dict, description="arm fields of the swept arm")
    name: str | None = None

    @field_validator("param")
    @classmethod
    def _param(cls, v: str) -> str:
        head, _, rest = v.partition(".")
        if head not in SWEEPABLE or (rest and head not in _DICT_FIELDS) or (head in _DICT_FIELDS and not rest):
            raise ValueError(f"cannot sweep {v!r}: not an arm parameter (sweepable: {', '.join(SWEEPABLE)}; "
                             f"keys of {', '.join(_DICT_FIELDS)} as e.g. defence_args.delta)")
        return v


class EvalSpec(StrictModel):
    checkpoints_every: int = Field(0, ge=0, description="also score encoder snapshots every k epochs (0 = final only)")
    zero_shot: bool = Field(True, description="CLIP arms: also score zero-shot classification with the text tower")
    prompts: str = "imagenet80"
    probe: ProbeProtocol = Field("fast", description="linear probe: fast (cached centre-crop features, the small "
                                 "presets) | authors (the authors' eval_linear.py: augmented features every epoch)")
    probe_epochs: int | None = Field(None, ge=1, description="default: 100 (fast) or 40 (authors)")
    location: tuple[float, float] = (0.25, 0.75)
    trigger_jpeg_quality: int | None = Field(None, ge=1, le=100, description="save and reload each triggered test "
                                             "image as JPEG at this quality (the authors' test set: 75)")
    max_object_crops: int = 200


class ExperimentConfig(StrictModel):
    name: str
    description: str = ""
    preset: str | None = Field("cpu-tiny", description="scale preset (see corruptencoder.presets)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    world: WorldSpec = Field(default_factory=WorldSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    backgrounds: list[str] = Field(default_factory=lambda: ["demo"])
    tasks: list[TaskSpec] = Field(default_factory=lambda: [TaskSpec(name="demo")], min_length=1)
    targets: list[TargetSpec] = Field(default_factory=lambda: [TargetSpec(name=DEMO_TARGET, task="demo")],
                                      min_length=1)
    defaults: ArmSpec = Field(default_factory=ArmSpec)
    arms: list[dict[str, Any]] = Field(default_factory=list)
    sweeps: list[SweepSpec] = Field(default_factory=list)
    evaluation: EvalSpec = Field(default_factory=EvalSpec)
    pretrain: dict[str, Any] = Field(default_factory=dict, description="pre-training overrides for every arm")

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        from corruptencoder.presets import PRESETS

        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; use one of {', '.join(PRESETS)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "ExperimentConfig":
        tasks = {t.name for t in self.tasks}
        for t in self.targets:
            if t.task not in tasks:
                raise ValueError(f"target {t.name}: task {t.task!r} is not one of the tasks "
                                 f"({', '.join(sorted(tasks))})")
        if not self.arms and not self.sweeps:
            raise ValueError("give at least one arm (arms:) or sweep (sweeps:)")
        for arm in self.expanded_arms():
            extra = sorted(set(arm.seeds or ()) - set(self.seeds))
            if extra:
                raise ValueError(f"arm {arm.name}: seeds {extra} are not among the experiment's seeds {self.seeds}")
        return self

    def expanded_arms(self) -> list[ArmSpec]:
        """Arms and sweep points, each a full ArmSpec (defaults, then base, then the swept value)."""
        out: list[ArmSpec] = []
        base = self.defaults.model_dump()
        for i, raw in enumerate(self.arms):
            arm = _arm(_merge_arm(base, raw), f"arms.{i}")
            if not arm.name:
                arm.name = arm.attack if arm.defence == "none" else f"{arm.attack}+{arm.defence}"
            out.append(arm)
        for i, sw in enumerate(self.sweeps):
            for v in sw.values:
                arm = _arm(_with(_merge_arm(base, sw.base), sw.param, v), f"sweeps.{i}")
                arm.name = f"{sw.name or sw.param}={v}"
                out.append(arm)
        names = [a.name for a in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"arm names must be unique; repeated: {', '.join(dup)} (set name: on the arms)")
        known = {t.name for t in self.targets}
        for a in out:
            if (parsed := init_arm(a.init)) is not None:
                ref, pinned = parsed
                if pinned and not pinned.isdigit():
                    raise ConfigError(f"arm {a.name}: init {a.init!r}: after '@' give a seed, e.g. arm:base@0")
                if ref not in names:
                    raise ConfigError(f"arm {a.name}: init {a.init!r} names no arm ({', '.join(names)})")
                if ref == a.name or next(x for x in out if x.name == ref).init:
                    raise ConfigError(f"arm {a.name}: init {a.init!r} must name an arm trained from scratch")
            for t in a.targets or []:
                if t not in known:
                    raise ConfigError(f"arm {a.name}: target {t!r} is not in targets ({', '.join(sorted(known))})")
            from corruptencoder.ssl.config import METHODS

            if (a.attack != "none" and METHODS.get(a.method).data_kind == "pairs"
                    and not ATTACKS.get(a.attack).multimodal):
                mm = ", ".join(n for n in ATTACKS.names() if ATTACKS.get(n).multimodal)
                raise ConfigError(f"arm {a.name}: {a.method} trains on image-text pairs and the {a.attack} attack "
                                  f"writes images only; use a multi-modal attack ({mm}) or an image method")
            if a.defence != "none":
                from corruptencoder.defend.base import DEFENCES

                kind, kinds = METHODS.get(a.method).data_kind, DEFENCES.get(a.defence).data_kinds
                if kind not in kinds:
                    raise ConfigError(f"arm {a.name}: the {a.defence} defence works on {' or '.join(kinds)} "
                                      f"pre-training data, and {a.method} trains on {kind}; pick another defence "
                                      "or method for this arm")
        return out

    def sweep_of(self, arm_name: str) -> tuple[str, Any] | None:
        for sw in self.sweeps:
            for v in sw.values:
                if arm_name == f"{sw.name or sw.param}={v}":
                    return sw.name or sw.param, v
        return None


def _merge_arm(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """An arm over the defaults: dict fields (pretrain, defence_args, attack_args) merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if k in _DICT_FIELDS and isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with(data: dict[str, Any], param: str, value: Any) -> dict[str, Any]:
    head, _, rest = param.partition(".")
    if not rest:
        return {**data, head: value}
    inner = dict(data.get(head) or {})
    node = inner
    keys = rest.split(".")
    for k in keys[:-1]:
        node[k] = dict(node.get(k) or {})
        node = node[k]
    node[keys[-1]] = value
    return {**data, head: inner}


def _arm(data: dict[str, Any], where: str) -> ArmSpec:
    try:
        return validate(ArmSpec, data, where)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(obj: Any, path: str = "") -> Any:
    if isinstance(obj, str):
        def sub(m: re.Match[str]) -> str:
            val = os.environ.get(m.group(1))
            if val is None:
                raise ConfigError(f"{path}: environment variable ${{{m.group(1)}}} is not set; export it "
                                  "(e.g. the folder of your ImageNet copy)")
            return val
        return _ENV.sub(sub, obj)
    if isinstance(obj, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_env(v, f"{path}.{i}") for i, v in enumerate(obj)]
    return obj


def load_experiment(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ExperimentConfig:
    from corruptencoder.utils.config import apply_overrides

    data = apply_overrides(read_mapping(path), overrides or [])
    data = _expand_env(data)
    cfg = validate(ExperimentConfig, data, str(path))
    from corruptencoder.experiment.stages import check_stages

    check_stages(cfg, str(path))  # every arm's stage configs, built and validated now, before any work
    check_target_classes(cfg, str(path))
    return cfg


def check_target_classes(cfg: ExperimentConfig, source: str) -> None:
    """Every target's class is one of its task's classes, where the task's class list is at hand (a class list
    file, ImageFolder sub-folders, Flowers-102): a wrong label fails now, not after pre-training."""
    from corruptencoder.evaluate.tasks import find_class, listed_classes, not_a_class

    tasks = {t.name: t for t in cfg.tasks}
    for target in cfg.targets:
        task = tasks[target.task]
        classes = listed_classes(task) if task.root != "demo" else None
        label = target.label or target.name
        if classes is not None and find_class(classes, label) is None:
            raise ConfigError(f"{source}: target {target.name}: {not_a_class(label, task.name, classes)}")
