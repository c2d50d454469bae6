"""Scale presets: the same experiment at CPU-demo, CPU-hour, one-GPU-hour and paper scale.

A preset is a typed partial pre-training config (:class:`~corruptencoder.ssl.config.Patch`) merged
*under* the user's config (the user's keys win), plus what each method declares for that preset in its
own file (``presets = {"cpu-tiny": Patch(...)}``). A preset may extend another (``cpu-small`` is
``cpu-tiny`` with a quarter-width ResNet-18), and the method deltas follow the same chain. ``paper`` is
the published setting (ImageNet-100 at 224 px, ResNet-18, 200 epochs, batch 256).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from corruptencoder.errors import ConfigError
from corruptencoder.ssl.config import (
    METHODS,
    BackboneConfig,
    DataConfig,
    OptimConfig,
    Patch,
    TrainerConfig,
    ViewsConfig,
)


@dataclass(frozen=True)
class Preset:
    name: str
    patch: Patch
    parent: str | None = None
    summary: str = ""


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two config dicts; ``over`` wins."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("cpu-tiny", Patch(
        data=DataConfig(image_size=32),
        backbone=BackboneConfig(name="small_cnn", width=1.0),
        views=ViewsConfig(blur=False),
        # SGD rather than LARS at batch 128 (measured: LARS at the published rates barely moves there)
        optim=OptimConfig(batch_size=128, epochs=30, optimizer="sgd"),
        trainer=TrainerConfig(precision="32-true", accelerator="cpu"),
    ), summary="2 CPU cores, the demo world at 32 px, minutes per encoder"),
    # MoCo-v2: ~9 s per epoch on the demo world's 5,500 images, 78.8 % linear probe after 100 epochs (measured)
    Preset("cpu-small", Patch(backbone=BackboneConfig(name="resnet18", width=0.25), optim=OptimConfig(epochs=100)),
           parent="cpu-tiny", summary="2 CPU cores, about an hour per encoder: a quarter-width ResNet-18"),
    Preset("gpu-small", Patch(
        data=DataConfig(image_size=32),
        backbone=BackboneConfig(name="resnet18", width=1.0),
        views=ViewsConfig(blur=False),
        optim=OptimConfig(batch_size=512, epochs=200, optimizer="sgd"),
        trainer=TrainerConfig(precision="bf16-mixed", accelerator="gpu"),
    ), summary="one GPU, under an hour: full ResNet-18 on CIFAR-sized data, 200 epochs"),
    Preset("paper", Patch(
        data=DataConfig(image_size=224),
        backbone=BackboneConfig(name="resnet18", width=1.0),
        optim=OptimConfig(batch_size=256, epochs=200),
        # compiled backbone: 16 % more images/s through the whole pipeline on an H200 (ResNet-18 MoCo-v2, 224 px,
        # batch 256: 4,858 vs 4,202; docs/launch.md), after about 30 s of compilation
        trainer=TrainerConfig(compile=True),
    ), summary="the paper: ImageNet100-A at 224 px, ResNet-18, 200 epochs, batch 256 (method defaults otherwise)"),
)}


def chain(name: str) -> list[Preset]:
    """The preset and its ancestors, root first."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is unknown; use one of {', '.join(PRESETS)}")
    out = [PRESETS[name]]
    while out[0].parent:
        out.insert(0, PRESETS[out[0].parent])
    return out


def preset_body(name: str, method: str) -> dict[str, Any]:
    """The preset's partial config for ``method`` (generic sections, then the method's own deltas)."""
    cls = METHODS.get(method)
    body: dict[str, Any] = {}
    for p in chain(name):
        body = merge(body, p.patch.as_dict())
    for p in chain(name):
        delta = cls.presets.get(p.name)
        if delta is not None:
            body = merge(body, delta.as_dict())
    return merge(body, {"method": {"name": method}})


def apply_preset(name: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """Return ``config`` with the preset's values filled in where the config is silent."""
    if not name:
        return config
    m = config.get("method")
    method = (m.get("name") or "moco") if isinstance(m, dict) else (m if isinstance(m, str) else "moco")
    if method not in METHODS:
        return config  # the config's own validation names the unknown method
    return merge(preset_body(name, method), config if not isinstance(m, str) else {**config, "method": {"name": m}})


def build_pretrain_config(config: str | None, preset: str | None, settings: dict[str, Any],
                          overrides: list[str] | None = None, source: str = "pretrain options",
                          flags: dict[str, str] | None = None) -> Any:
    """A pre-training config from a YAML/JSON file, ``settings`` (dotted keys -> values, e.g. the
    ``pretrain`` command's flags), ``--set`` overrides and a preset under all of them; ``flags`` maps a
    dotted key to the flag that set it, so an error names what the user typed."""
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.utils.config import apply_overrides, read_mapping, set_key, validate

    data: dict[str, Any] = read_mapping(config) if config else {}
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    for key, value in settings.items():
        set_key(data, key, value)
    data = apply_overrides(data, overrides or [])
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    if (data.get("data") or {}).get("clean") == "demo":
        from corruptencoder.demo import demo_world

        data["data"]["clean"] = str(demo_world() / "pretrain")
    data = apply_preset(preset, data)
    names = flags or {}
    return validate(PretrainConfig, data, str(config) if config else source,
                    rename=lambda key: f"{names[key]} ({key})" if key in names else key)
