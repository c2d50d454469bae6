"""Linear probes on cached frozen features.

The MoCo-v2 linear protocol (SGD with momentum 0.9, batch 256, 100 epochs, learning rate divided by
10 at 60 % and 80 % of training, no weight decay) applied to cached features: the features are
standardised with the training split's statistics (the role MoCo's large learning rate of 30 plays
on raw features), and no image augmentation is used, which makes a probe on a few thousand images
take seconds on a CPU. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ProbeConfig:
    epochs: int = 100
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    milestones: tuple[float, float] = (0.6, 0.8)
    seed: int = 0


@dataclass
class LinearProbe:
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor    # (C,)
    mean: torch.Tensor    # (D,)
    std: torch.Tensor     # (D,)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.float() - self.mean) / self.std
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
