"""Typed crafting configuration: one run, one or more targets, each with its own attack and trigger."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from corruptencoder.utils.config import StrictModel

AttackName = Literal["corruptencoder", "corruptencoder-plus", "ssl-backdoor", "corruptencoder-mm", "carlini-terzis"]
LayoutChoice = Literal["random", "wide", "high", "wide-left", "wide-right"]
ATTACKS: tuple[str, ...] = ("corruptencoder", "corruptencoder-plus", "ssl-backdoor", "corruptencoder-mm",
                            "carlini-terzis")
MULTIMODAL = ("corruptencoder-mm", "carlini-terzis")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _fraction(name: str, v: float) -> float:
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name}={v} is outside (0, 1); use e.g. 0.5")
    return v


class TargetSpec(StrictModel):
    """One target class (of one downstream task) with its references, trigger and poison budget."""

    name: str = Field(description="target class name; also the poisons' sub-folder")
    attack: AttackName = "corruptencoder"
    task: str | None = Field(None, description="downstream task this target belongs to (free text)")
    label: str | None = Field(None, description="the target's class in the downstream task (default: name)")
    num: int = Field(650, description="number of poisoned images N for this target")
    references: list[str] = Field(default_factory=list, description="reference objects/images: folders, files or lists")
    backgrounds: list[str] = Field(default_factory=list, description="background images (CorruptEncoder)")
    support: list[str] = Field(default_factory=list, description="support reference images (CorruptEncoder+)")
    support_ratio: float = Field(0.2, description="fraction of N that are support poisons (CorruptEncoder+)")
    trigger: str = Field("random", description="random | white | purple | black | path to an image")
    trigger_size: list[int] | None = Field([40, 40], description="pixels: 40 or 40x20 ([w, h] once parsed)")
    trigger_seed: int | None = Field(None, description="seed of a random trigger; default: from the target name")
    alpha: float = Field(0.5, description="object bounding-box area / poisoned-image area")
    beta: float = Field(0.5, description="trigger lies in the central beta fraction of the free rectangle")
    layout: LayoutChoice = "random"
    reference_mode: Literal["object", "image"] = Field(
        "object", description="embed the masked reference object (paper) or the whole reference image (Table 7)")
    location: tuple[float, float] = Field((0.25, 0.75), description="SSL-Backdoor trigger range (fractions)")
    object_labels: list[str] | None = Field(None, description="labelme labels of the object; default: all but cut")
    cut_labels: list[str] = Field(default_factory=lambda: ["nmask"], description="labelme labels that cut holes")
    prompts: str = Field("imagenet80", description="caption templates (multi-modal): imagenet80 | simple | a file")
    class_text: str | None = Field(None, description="the class name written in captions (default: from name)")
    type1_size: int | None = Field(224, description="multi-modal Type-I images: square side in px (null = keep)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SAFE.match(v):
            raise ValueError(f"target name {v!r} must be letters, digits, '.', '_', '+' or '-' (it names a folder)")
        return v

    @field_validator("trigger_size", mode="before")
    @classmethod
    def _trigger_size(cls, v: object) -> list[int] | None:
        from corruptencoder.errors import ConfigError
        from corruptencoder.poison.triggers import parse_size

        try:
            size = parse_size(v)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return list(size) if size else None

    @field_validator("num")
    @classmethod
    def _num(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"num={v}: the number of poisons must be at least 1")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        return _fraction("alpha", v)

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: float) -> float:
        return _fraction("beta", v)

    @field_validator("support_ratio")
    @classmethod
    def _support_ratio(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"support_ratio={v} is outside [0, 1]; the paper uses 0.2 (130 of 650)")
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"location {list(v)} must satisfy 0 <= lo < hi <= 1, e.g. [0.25, 0.75]")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "TargetSpec":
        if self.attack in MULTIMODAL and "trigger_size" not in self.model_fields_set:
            object.__setattr__(self, "trigger_size", [16, 16])  # Carlini & Terzis' 16 x 16 patch
        if self.attack in MULTIMODAL and not self.backgrounds:
            raise ValueError(f"backgrounds: the {self.attack} attack needs background images (--backgrounds)")
        if not self.references and self.attack != "carlini-terzis":
            raise ValueError("references: give at least one folder or file of reference images/objects")
        if self.attack in ("corruptencoder", "corruptencoder-plus") and not self.backgrounds:
            raise ValueError(f"backgrounds: the {self.attack} attack needs background images (--backgrounds)")
        if self.attack == "corruptencoder-plus" and not self.support:
            raise ValueError("support: corruptencoder-plus needs support reference images (--support)")
        return self


class CraftConfig(StrictModel):
    """A crafting run: shared output options plus the list of targets."""

    seed: int = 0
    workers: int = Field(1, ge=0, description="parallel processes; 0 or 1 = in this process")
    format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level; 1 is ~3x faster than 6, ~5% larger")
    max_size: int | None = Field(800, description="cap on a poison's longer side (the authors' script: 800)")
    soft_edge: float = Field(1.0, ge=0.0, description="Gaussian radius (px) feathering the object matte; 0 = hard")
    targets: list[TargetSpec] = Field(min_length=1)

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
