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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are computed per split of the batch: split ``j`` holds
    samples ``[j n / k, (j + 1) n / k)``, as a device holds its slice of the global batch. Each split is
    normalised by its own ``F.batch_norm`` call on a contiguous slice, which keeps channels-last memory
    (an interleaved reshape would not: measured 35 %+ slower); evaluation is plain batch norm."""

    def __init__(self, num_features: int, splits: int = 2, **kw: Any) -> None:
        super().__init__(num_features, **kw)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.splits
        n = x.shape[0]
        if not self.training or k <= 1 or n % k or n // k < 2:
            return super().forward(x)  # eval, or a batch that does not split evenly: ordinary BN
        factor = 0.0
        if self.track_running_stats:
            assert self.num_batches_tracked is not None  # BatchNorm registers it when tracking statistics
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        outs, means, variances = [], [], []
        for chunk in x.chunk(k):
            rm = self.running_mean.clone() if self.running_mean is not None else None
            rv = self.running_var.clone() if self.running_var is not None else None
            outs.append(F.batch_norm(chunk, rm, rv, self.weight, self.bias, True, factor, self.eps))
            means.append(rm)
            variances.append(rv)
        if self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():  # each split updated its copy; the module keeps their mean
                self.running_mean.copy_(torch.stack(means).mean(0))  # type: ignore[arg-type]  # not None here
                self.running_var.copy_(torch.stack(variances).mean(0))  # type: ignore[arg-type]  # not None here
        return torch.cat(outs)


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
