"""Typed crafting configuration: one run, one or more targets, each with its own attack and trigger.

A target has the fields every attack shares (its class, references, backgrounds, trigger, budget) and
the options of its attack, declared by the attack's own module (``poison/attacks/<name>.py``). In YAML
the options are written flat beside the shared fields (``alpha: 0.5`` under a target); an option the
target's attack does not have is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    Field,
    SerializationInfo,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from corruptencoder.utils.config import NestedError, StrictModel
from corruptencoder.utils.registry import Registry

if TYPE_CHECKING:
    from corruptencoder.poison.base import ImageAttack

#: Attacks, one module each in ``corruptencoder/poison/attacks`` (numpy + Pillow only: no torch).
ATTACKS: Registry[type[ImageAttack[Any]]] = Registry("attack", "corruptencoder.poison.attacks")
_NEEDS = {"references": "at least one folder or file of reference images/objects",
          "backgrounds": "background images", "support": "support reference images"}
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: the widest feathering of an object's mask, in px (wider blurs a poison's object into its background)
MAX_SOFT_EDGE = 50.0


def fraction(name: str, v: float) -> float:
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name}={v} is outside (0, 1); use e.g. 0.5")
    return v


class AttackOptions(StrictModel):
    """Base of an attack's own options (an attack without options uses it as is)."""


class TargetBase(StrictModel):
    """What names a target class and its trigger, in a crafting run and in an experiment alike."""

    name: str = Field(description="target class name; also the poisons' sub-folder")
    task: str | None = Field(None, description="downstream task this target belongs to")
    label: str | None = Field(None, description="the target's class in the downstream task (default: name)")
    trigger: str = Field("random", description="random | random:N | smooth[:N] | white | purple | black | image path")
    trigger_seed: int | None = Field(None, description="seed of a random trigger; default: from the target name")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SAFE.match(v):
            raise ValueError(f"target name {v!r} must be letters, digits, '.', '_', '+' or '-' (it names a folder)")
        return v


class CraftTarget(TargetBase):
    """One target class (of one downstream task) with its attack, references, trigger and poison budget."""

    attack: str = "corruptencoder"
    num: int = Field(650, description="number of poisoned images N for this target")
    references: list[str] = Field(default_factory=list, description="reference objects/images: folders, files or lists")
    backgrounds: list[str] = Field(default_factory=list, description="background images")
    support: list[str] = Field(default_factory=list, description="support reference images (CorruptEncoder+)")
    trigger_size: list[int] | None = Field(None, description="pixels: 40 or 40x20 ([w, h] once parsed); default: the "
                                           "attack's (40, or Carlini & Terzis' 16)")
    object_labels: list[str] | None = Field(None, description="labelme labels of the object; default: all but cut")
    cut_labels: list[str] = Field(default_factory=lambda: ["nmask"], description="labelme labels that cut holes")
    options: SerializeAsAny[AttackOptions] = Field(default_factory=AttackOptions,
                                                   description="the attack's own options (written flat in YAML)")

    @model_validator(mode="before")
    @classmethod
    def _route_options(cls, data: Any) -> Any:
        """Flat keys that are not shared fields belong to the attack's options model."""
        if not isinstance(data, dict):
            return data
        attack = data.get("attack", "corruptencoder")
        if not isinstance(attack, str) or attack not in ATTACKS:
            raise ValueError(f"attack: unknown attack {attack!r}; use one of {', '.join(ATTACKS.names())}")
        shared = set(cls.model_fields) - {"options"}
        given = data.get("options") or {}
        if isinstance(given, AttackOptions):
            given = given.model_dump(exclude_unset=True)
        opts = {**given, **{k: v for k, v in data.items() if k not in shared and k != "options"}}
        try:
            options = ATTACKS.get(attack).options.model_validate(opts)
        except ValidationError as exc:
            raise NestedError(exc) from None
        return {**{k: v for k, v in data.items() if k in shared}, "options": options}

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        options = out.pop("options", None) or {}
        return {**out, **options}

    @field_validator("trigger_size", mode="before")
    @classmethod
    def _trigger_size(cls, v: object) -> list[int] | None:
        from corruptencoder.errors import ConfigError
        from corruptencoder.poison.triggers import parse_size

        try:
            size = parse_size(v)  # type: ignore[arg-type]  # parse_size says what it accepts
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return list(size) if size else None

    @field_validator("num")
    @classmethod
    def _num(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"num={v}: the number of poisons must be at least 1")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "CraftTarget":
        attack = ATTACKS.get(self.attack)
        if self.trigger_size is None:
            object.__setattr__(self, "trigger_size", list(attack.default_trigger_size))
        for key in sorted(attack.needs):
            if not getattr(self, key):
                raise ValueError(f"{key}: the {self.attack} attack needs {_NEEDS[key]} (--{key})")
        return self

    def opt(self, name: str) -> Any:
        """One of the attack's options, by name."""
        return getattr(self.options, name)


class CraftConfig(StrictModel):
    """A crafting run: shared output options plus the list of targets."""

    seed: int = 0
    workers: int = Field(1, ge=0, description="parallel processes; 0 or 1 = in this process")
    format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level; 1 is ~3x faster than 6, ~5% larger")
    max_size: int | None = Field(800, description="cap on a poison's longer side (the authors' script: 800)")
    soft_edge: float = Field(1.0, ge=0.0, description="Gaussian radius (px) feathering the object matte; 0 = hard")
    targets: list[CraftTarget] = Field(min_length=1)

    @field_validator("soft_edge")
    @classmethod
    def _soft_edge(cls, v: float) -> float:
        if not v <= MAX_SOFT_EDGE:  # also refuses nan
            raise ValueError(f"{v:g} px would blur the object away; use at most {MAX_SOFT_EDGE:g} "
                             "(the authors' script uses 1; 0 = a hard edge)")
        return v

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v > 1024:
            raise ValueError(f"{v} processes are far more than any machine has cores; use e.g. the number "
                             "of cores (the output is the same for any number)")
        return v

    @field_validator("max_size")
    @classmethod
    def _max_size(cls, v: int | None) -> int | None:
        if v is not None and v < 8:
            raise ValueError(f"max_size={v} is too small; use e.g. 800 or null for no cap")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "CraftConfig":
        names = [t.name for t in self.targets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"targets: names must be unique, repeated: {', '.join(dup)}")
        return self


#: The shared target fields the ``craft`` command offers as flags (attack options come from the attacks).
TARGET_FLAGS = ("name", "task", "label", "references", "backgrounds", "support", "num", "trigger", "trigger_size",
                "trigger_seed", "object_labels", "cut_labels")
RUN_FLAGS = ("seed", "workers", "format", "max_size", "soft_edge")


def build_craft_config(attack: str | None, target: dict[str, Any], run: dict[str, Any], *,
                       config: str | None = None, overrides: list[str] | None = None, default_workers: int = 1,
                       resolve: Callable[[str, str, str], str] | None = None,
                       default_name: str = "target") -> CraftConfig:
    """A crafting config from a YAML/JSON file and/or one target's settings (the ``craft`` command's
    flags): ``target`` and ``run`` hold only what the user gave; ``resolve(value, kind, target)`` maps
    input paths (e.g. 'builtin' to the offline assets, whose target is ``default_name``). Without a
    file, error messages name the flags (``--alpha``), not the config keys."""
    from pathlib import Path

    from corruptencoder.errors import UserError
    from corruptencoder.utils.config import apply_overrides, read_mapping, validate

    data: dict[str, Any] = read_mapping(config) if config else {}
    target = dict(target)
    if attack:
        target["attack"] = attack
    if config:
        if target:
            targets = data.get("targets") or []
            if len(targets) != 1:
                raise UserError(f"{config}: target options on the command line need exactly one target in the "
                                "config; use --set targets.N.key=value instead")
            targets[0].update(target)
    else:
        if not attack:
            raise UserError("craft needs an attack (" + ", ".join(ATTACKS.names()) + ") or --config")
        if "references" not in target and "references" in ATTACKS.get(attack).needs:
            raise UserError("craft needs --references (a folder, files or 'builtin')")
        if "name" not in target:
            first = str((target.get("references") or ["target"])[0])
            if first.startswith("builtin"):
                target["name"] = default_name
            else:
                p = Path(first)
                stem = p.name if p.is_dir() else p.parent.name
                target["name"] = "".join(c if c.isalnum() or c in "._+-" else "-" for c in stem).strip("-.") or "target"
        data["targets"] = [target]
    data.update(run)
    data.setdefault("workers", default_workers)
    data = apply_overrides(data, overrides or [])
    for t in data.get("targets") or [] if resolve else []:
        if isinstance(t, dict):
            name = t.get("name") or "target"
            for key in ("references", "backgrounds", "support"):
                if key in t:
                    vals = [t[key]] if isinstance(t[key], str) else t[key]
                    assert resolve is not None  # the loop runs only with a resolver
                    t[key] = [resolve(str(v), key, name) for v in vals]
    if config:
        return validate(CraftConfig, data, str(config))

    def flag(loc: str) -> str:
        key = loc.removeprefix("targets.0.") if loc.startswith("targets.0.") else loc
        return "--" + key.split(".")[0].replace("_", "-") if key != loc or loc in RUN_FLAGS else loc

    return validate(CraftConfig, data, "", rename=flag)
