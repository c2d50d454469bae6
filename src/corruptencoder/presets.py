"""Scale presets: the same experiment at CPU-demo, CPU-hour, one-GPU-hour and paper scale.

A preset is a partial pre-training config merged *under* the user's config (the user's keys win).
Method-specific entries are applied only to the method they name. ``paper`` is the published
setting (ImageNet-100 at 224 px, ResNet-18, 200 epochs, batch 256).
"""

from __future__ import annotations

import copy
from typing import Any

from corruptencoder.errors import ConfigError

#: SGD learning rates (per 256 images) that train each method at the small presets (measured on the
#: demo world: LARS at the published rates barely moves at batch 128-512 on these small models).
SGD_LRS: dict[str, dict[str, float]] = {
    "optim:moco": {"lr": 0.12}, "optim:simclr": {"lr": 0.5}, "optim:swav": {"lr": 0.5}, "optim:byol": {"lr": 0.5},
    "optim:msf": {"lr": 0.1}, "optim:compress": {"lr": 0.1},
}

def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores, the demo world at 32 px, minutes per encoder
    "cpu-tiny": {
        "data": {"image_size": 32},
        "backbone": {"name": "small_cnn", "width": 1.0},
        "views": {"blur": False},
        "optim": {"batch_size": 128, "epochs": 30, "optimizer": "sgd"},
        "trainer": {"precision": "32-true", "accelerator": "cpu"},
        # queues and banks well below the data set size (a queue holding most images' own stale keys
        # stalls MoCo on 5,000 images: measured), SGD rather than LARS at batch 128 (measured)
        "method:moco": {"queue_size": 512, "proj_hidden": 512, "temperature": 0.2, "momentum": 0.99},
        "method:simclr": {"temperature": 0.2, "proj_hidden": 512},
        "method:swav": {"n_prototypes": 100, "queue_size": 0, "n_local": 0, "proj_hidden": 512},
        "method:byol": {"proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512},
        "method:msf": {"bank_size": 2048, "proj_hidden": 512, "proj_dim": 128, "pred_hidden": 512},
        "method:compress": {"queue_size": 1024, "momentum": 0.99},
        "method:clip": {"model": "custom", "embed_dim": 128, "text_width": 64, "text_layers": 2, "context_length": 32},
        **SGD_LRS,
    },
    # one GPU, under an hour: full ResNet-18 on CIFAR-sized data, 200 epochs
    "gpu-small": {
        "data": {"image_size": 32},
        "backbone": {"name": "resnet18", "width": 1.0},
        "views": {"blur": False},
        "optim": {"batch_size": 512, "epochs": 200, "optimizer": "sgd"},
        "trainer": {"precision": "bf16-mixed", "accelerator": "gpu"},
        "method:moco": {"queue_size": 4096, "temperature": 0.2, "momentum": 0.99},
        "method:simclr": {"temperature": 0.2},
        "method:swav": {"n_prototypes": 300, "queue_size": 0, "n_local": 0},
        "method:msf": {"bank_size": 8192},
        "method:compress": {"queue_size": 4096, "momentum": 0.99},
        **SGD_LRS,
    },
    # the paper: ImageNet100-A at 224 px, ResNet-18, 200 epochs, batch 256 (method defaults otherwise)
    "paper": {
        "data": {"image_size": 224},
        "backbone": {"name": "resnet18", "width": 1.0},
        "optim": {"batch_size": 256, "epochs": 200},
    },
}


#: 2 CPU cores, about an hour per encoder: cpu-tiny's schedule and heads with a quarter-width ResNet-18
#: (MoCo-v2: ~9 s per epoch on the demo world's 5,500 images, 78.8 % linear probe after 100 epochs:
#: measured) and larger prototype sets, banks and CLIP towers
PRESETS["cpu-small"] = _merge(PRESETS["cpu-tiny"], {
    "backbone": {"name": "resnet18", "width": 0.25},
    "optim": {"epochs": 100},
    "method:swav": {"n_prototypes": 300},
    "method:byol": {"proj_hidden": 1024, "pred_hidden": 1024},
    "method:msf": {"bank_size": 4096, "proj_hidden": 1024, "pred_hidden": 1024},
    "method:compress": {"queue_size": 2048},
    "method:clip": {"embed_dim": 256, "text_width": 128, "text_layers": 4},
})


def apply_preset(name: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """Return ``config`` with the preset's values filled in where the config is silent."""
    if not name:
        return config
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is unknown; use one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    method = (config.get("method") or {}).get("name", "moco") if isinstance(config.get("method"), dict) else "moco"
    base: dict[str, Any] = {k: v for k, v in preset.items() if ":" not in k}
    base = _merge(base, {"method": {"name": method, **preset.get(f"method:{method}", {})}})
    if f"optim:{method}" in preset:
        base = _merge(base, {"optim": preset[f"optim:{method}"]})
    return _merge(base, config)
