"""Memory banks that survive ``--resume``.

lightly's ``MemoryBankModule`` (MoCo's queue inside ``NTXentLoss``, SwAV's feature queues, MSF's and
CompRess's banks) registers its bank and pointer as *non-persistent* buffers, so a checkpoint would
lack them and a resumed run would train against random negatives until the queue refills. Re-register
them as persistent so ``last.ckpt`` carries them.
"""

from __future__ import annotations

from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn


def persistent_banks(module: nn.Module) -> int:
    """Make every memory bank in ``module`` part of its state dict; returns how many were found."""
    count = 0
    for m in module.modules():
        if isinstance(m, MemoryBankModule):
            for name in ("bank", "bank_ptr"):
                m.register_buffer(name, getattr(m, name), persistent=True)
            count += 1
    return count


def bank(size: int, dim: int, gather: bool = False) -> MemoryBankModule:
    """A persistent (size, dim) ring of L2-normalised vectors, read as (size, dim); ``gather``: enqueue
    every device's batch (DDP)."""
    m = MemoryBankModule(size=(size, dim), gather_distributed=gather, feature_dim_first=False)
    persistent_banks(m)
    return m
