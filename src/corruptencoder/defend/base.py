"""The defence protocol: three kinds of defence, applied by the experiment runner (and the CLI) alike.

* :class:`ViewDefence` acts at view time: it changes how pre-training crops its views (localized
  cropping, no random cropping). It returns a patch of the pre-training config.
* :class:`DataDefence` acts on the data before training (poison search, e.g. PatchSearch): given the
  pre-training files and an encoder trained on them, it scores every file and keeps the ones it trusts;
  the runner pre-trains again on what is kept.
* :class:`EncoderDefence` acts on a trained encoder: it returns a new encoder (CompRess distillation)
  and/or a verdict (encoder inspection, e.g. DECREE).

A defence is one module of this package that registers a subclass with ``@DEFENCES.register``; its
options are a typed model, validated when an experiment config or the command line is read. Defence
modules import torch lazily, so listing them (CLI help) stays fast. Nothing here knows the experiment
runner: what a defence needs arrives in a :class:`DefenceContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

from corruptencoder.utils.config import StrictModel, validate
from corruptencoder.utils.registry import Registry

DefenceKind = Literal["views", "data", "encoder"]


class DefenceOptions(StrictModel):
    """A defence's own settings (``defence_args`` of an experiment arm, flags of ``corruptencoder defend``)."""

    # options added after caches of results existed: left at their default they stay out of the cache key, so
    # adding one does not retrain every cached defence
    unkeyed_defaults: ClassVar[tuple[str, ...]] = ()

    def key_fields(self) -> dict[str, Any]:
        """The options as they enter a cache key."""
        body = self.model_dump(mode="json")
        fields = type(self).model_fields
        return {k: v for k, v in body.items() if not (k in self.unkeyed_defaults and v == fields[k].default)}


@dataclass
class DefenceContext:
    """What a defence may use. ``pretrain`` is the undefended setting's pre-training config (a dict that
    validates as :class:`~corruptencoder.ssl.config.PretrainConfig`), so a defence that trains derives
    its own config from it; the ground truth (which files are poisons) is never part of it."""

    out: Path
    seed: int = 0
    preset: str | None = None
    pretrain: dict[str, Any] = field(default_factory=dict)
    encoder: Path | None = None
    files: list[str] = field(default_factory=list)
    clean_count: int = 0
    device: str = "auto"
    progress: bool = False
    resume: bool = False


@dataclass
class FilterResult:
    """A data defence's decision: the files to pre-train on and a poison score per file (higher = more
    suspicious), plus anything worth reporting (times, parameters, intermediate counts)."""

    keep: list[str]
    scores: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncoderResult:
    """An encoder defence's outcome: a new encoder to evaluate in place of the suspect one (None when
    the defence only inspects) and its report (e.g. a verdict)."""

    encoder: Path | None
    report: dict[str, Any] = field(default_factory=dict)


OptionsT = TypeVar("OptionsT", bound=DefenceOptions)


class Defence(Generic[OptionsT]):
    """Base of the three kinds; subclasses set ``name``, ``kind``, ``summary`` and ``options``."""

    name: ClassVar[str] = ""
    kind: ClassVar[DefenceKind]
    summary: ClassVar[str] = ""
    options: ClassVar[type[DefenceOptions]] = DefenceOptions
    #: the pre-training data it can defend: "images" (single-modal methods) and/or "pairs" (CLIP)
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "pairs")

    def __init__(self, opts: DefenceOptions | None = None) -> None:
        self.opts = cast(OptionsT, opts if opts is not None else self.options())

    @classmethod
    def from_args(cls, args: dict[str, Any], where: str = "defence_args") -> "Defence[Any]":
        """Validate ``args`` into the options model (one ``error:`` line naming ``where`` on a bad value)."""
        return cls(validate(cls.options, dict(args), where))

    @classmethod
    def cli_defaults(cls) -> dict[str, Any]:
        """Option values that differ on the command line from an experiment arm's (none by default)."""
        return {}

    def label(self) -> str:
        """How tables name this defence with its setting, e.g. 'localized cropping (delta 0.2)'."""
        return self.name

    def knob(self) -> float:
        """The setting tables order the defence's rows by (e.g. delta, the clean-data fraction)."""
        return 0.0


class ViewDefence(Defence[OptionsT]):
    kind: ClassVar[DefenceKind] = "views"

    def pretrain_patch(self) -> dict[str, Any]:
        """What to change in the pre-training config (its ``views`` section, usually)."""
        raise NotImplementedError


class DataDefence(Defence[OptionsT]):
    kind: ClassVar[DefenceKind] = "data"

    def filter(self, ctx: DefenceContext) -> FilterResult:
        raise NotImplementedError


class EncoderDefence(Defence[OptionsT]):
    kind: ClassVar[DefenceKind] = "encoder"

    def apply(self, ctx: DefenceContext) -> EncoderResult:
        raise NotImplementedError


DEFENCES: Registry[type[Defence[Any]]] = Registry("defence", "corruptencoder.defend")


def make_defence(name: str, args: dict[str, Any] | None = None, where: str = "defence_args") -> Defence[Any]:
    """The registered defence ``name`` with its options validated."""
    return DEFENCES.get(name).from_args(args or {}, where)
