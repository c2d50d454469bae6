"""Optimizers and schedules of the SSL recipes: SGD, LARS (lightly's), AdamW; linear warm-up then cosine.

Written here, and why: ``warmup_cosine`` is the learning-rate multiplier every method uses. lightly's
``cosine_warmup_schedule`` reaches its final value one step early (it divides by ``max_steps - 1``);
ours keeps the schedule that trained every encoder this toolkit has published, so same seed, same bytes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightly.utils.lars import LARS
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, exclude_norm_bias: bool) -> list[dict[str, Any]]:
    """Trainable parameters; with ``exclude_norm_bias`` biases and norm layers get no weight decay (and
    so, with lightly's LARS, no layer-wise adaptation: the SimCLR/BYOL convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if exclude_norm_bias and (p.ndim <= 1 or name.endswith(".bias")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    if name == "lars":
        # lightly's LARS (trust coefficient 0.001) scales each layer by |w| / (|g| + wd |w|); the SimCLR
        # paper's TF code uses |w| / |g + wd w|, a bound of the same quantity
        return LARS(param_groups(model, weight_decay, True), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        # open_clip's training: no weight decay on biases, norm gains and the logit scale (ndim < 2)
        return torch.optim.AdamW(param_groups(model, weight_decay, True), lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(param_groups(model, weight_decay, False), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def warmup_cosine(step: int, total: int, warmup: int, final_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then cosine down to ``final_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
