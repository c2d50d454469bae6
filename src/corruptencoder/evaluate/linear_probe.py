"""Linear probes on frozen features, two protocols.

* ``fast`` (the small presets): the MoCo-v2 linear protocol (SGD with momentum 0.9, batch 256, 100 epochs,
  learning rate divided by 10 at 60 % and 80 % of training, no weight decay) on cached centre-crop
  features, standardised with the training split's statistics (the role MoCo's large learning rate of 30
  plays on raw features), no image augmentation: a probe on a few thousand images takes seconds on a CPU.
* ``authors`` (the paper configs): the authors' ``eval_linear.py`` (the code behind the paper's tables):
  random-resized crops (scale 0.08-1) and flips of the training images, features computed anew every
  epoch, L2-normalised then standardised with the statistics of the L2-normalised centre-crop training
  features, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 256, 40 epochs, lr / 10 after epochs 15
  and 30. Their script keeps the epoch with the best clean test accuracy; we keep the last (selecting on
  the test set would bend CA and BA), which the report says.

Both are deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

ProbeProtocol = Literal["fast", "authors"]


@dataclass
class ProbeConfig:
    epochs: int = 100
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    milestones: tuple[float, ...] = (0.6, 0.8)
    seed: int = 0
    protocol: ProbeProtocol = "fast"

    @classmethod
    def for_protocol(cls, protocol: ProbeProtocol, seed: int = 0, epochs: int | None = None) -> "ProbeConfig":
        """The protocol's settings (``epochs`` overrides its default: 100 fast, 40 authors)."""
        if protocol == "authors":
            n = epochs or 40
            return cls(epochs=n, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=256,
                       milestones=(15 / 40, 30 / 40), seed=seed, protocol="authors")
        return cls(epochs=epochs or 100, seed=seed)


@dataclass
class LinearProbe:
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor    # (C,)
    mean: torch.Tensor    # (D,)
    std: torch.Tensor     # (D,)
    l2: bool = field(default=False)  # L2-normalise features before standardising (the authors' protocol)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float()
        if self.l2:
            x = nn.functional.normalize(x, dim=1)
        z = (x - self.mean) / self.std
        return z @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long)
        return self.logits(features).argmax(dim=1)


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int,
                       config: ProbeConfig = ProbeConfig()) -> LinearProbe:  # noqa: B008  # read, never mutated
    x = features.float()
    y = labels.long()
    mean = x.mean(dim=0)
    std = x.std(dim=0).clamp_min(1e-6)
    z = (x - mean) / std
    g = torch.Generator().manual_seed(config.seed)
    layer = nn.Linear(z.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=g)
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    n = z.shape[0]
    bs = min(config.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = config.epochs * steps_per_epoch
    marks = [int(m * total) for m in config.milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, marks, 0.1)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(steps_per_epoch):
            idx = perm[s * bs:(s + 1) * bs]
            loss = loss_fn(layer(z[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return LinearProbe(layer.weight.detach().clone(), layer.bias.detach().clone(), mean, std)


def train_augmented_probe(batches: Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]],
                          centre_features: torch.Tensor, n_classes: int, config: ProbeConfig) -> LinearProbe:
    """The authors' protocol: ``batches(epoch)`` yields (features of freshly augmented training images,
    labels) for one epoch; ``centre_features`` (centre crops) give the standardisation statistics."""
    x = nn.functional.normalize(centre_features.float(), dim=1)
    mean = x.mean(dim=0)
    std = torch.sqrt(x.var(dim=0, unbiased=True) + 1e-5)  # their FullBatchNorm: 1 / sqrt(var + 1e-5)
    g = torch.Generator().manual_seed(config.seed)
    layer = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():  # torch's default init, drawn from the probe's own generator
        bound = 1.0 / x.shape[1] ** 0.5
        layer.weight.uniform_(-bound, bound, generator=g)
        layer.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.SGD(layer.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    marks = [round(m * config.epochs) for m in config.milestones]  # stepped per epoch, as their MultiStepLR
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, marks, 0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config.epochs):
        for feats, labels in batches(epoch):
            z = (nn.functional.normalize(feats.float(), dim=1) - mean) / std
            loss = loss_fn(layer(z), labels.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return LinearProbe(layer.weight.detach().clone(), layer.bias.detach().clone(), mean, std, l2=True)
