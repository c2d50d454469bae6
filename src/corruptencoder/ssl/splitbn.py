"""Shuffled BN on one device: batch-norm statistics per *virtual device* (a split of the batch).

MoCo's key encoder must not see the query's batch statistics, or the contrastive task can be solved
through them (He et al. 2020, "shuffling BN"). On several GPUs each device normalises its own
sub-batch and the keys are shuffled across devices. On one device we do the same with ``K`` virtual
devices: every ``BatchNorm2d`` computes its training statistics per split, and the key batch is
shuffled before the key encoder (the MoCo authors' CIFAR demo does this with lightly-style split BN).

Unlike ``lightly.models.batchnorm.SplitBatchNorm`` the running statistics keep the ordinary shape
(``C``, the mean over splits), so the state dict is exactly a ``BatchNorm2d``'s and ``encoder.pt``
loads into the plain backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are computed per split of the batch (sample ``i`` is in
    split ``i % splits``); evaluation is plain batch norm with the running statistics."""

    def __init__(self, num_features: int, splits: int = 2, **kw: object) -> None:
        super().__init__(num_features, **kw)  # type: ignore[arg-type]  # BatchNorm2d's own keywords
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.splits
        n = x.shape[0]
        if not self.training or k <= 1 or n % k or n // k < 2:
            return super().forward(x)  # eval, or a batch that does not split evenly: ordinary BN
        c = x.shape[1]
        factor = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        rm = self.running_mean.repeat(k) if self.running_mean is not None else None
        rv = self.running_var.repeat(k) if self.running_var is not None else None
        w = self.weight.repeat(k) if self.weight is not None else None
        b = self.bias.repeat(k) if self.bias is not None else None
        y = F.batch_norm(x.reshape(n // k, c * k, *x.shape[2:]), rm, rv, w, b, True, factor, self.eps)
        if rm is not None and rv is not None and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():  # each split updated its copy; the module keeps their mean
                self.running_mean.copy_(rm.view(k, c).mean(0))
                self.running_var.copy_(rv.view(k, c).mean(0))
        return y.reshape(x.shape)


def use_split_batchnorm(module: nn.Module, splits: int) -> int:
    """Replace every ``BatchNorm2d`` in ``module`` by a :class:`SplitBatchNorm2d` (weights and statistics
    kept); returns how many were replaced. ``splits <= 1`` changes nothing."""
    if splits <= 1:
        return 0
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            new = SplitBatchNorm2d(child.num_features, splits, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
            count += 1
        else:
            count += use_split_batchnorm(child, splits)
    return count


def set_splits(module: nn.Module, splits: int) -> None:
    """Change the number of virtual devices of every split BN in ``module`` (1 = ordinary BN)."""
    for m in module.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.splits = splits
