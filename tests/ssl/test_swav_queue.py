"""SwAV's feature queue under DDP: ``queue_size`` is the global queue, each process keeps its share (as in
SwAV's main_swav.py), and a checkpoint from another number of processes restarts the queue instead of failing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.methods.swav import SwAV, queue_rows_per_rank


def tiny_swav(queue_size: int = 24) -> SwAV:
    cfg = PretrainConfig.model_validate({
        "method": {"name": "swav", "n_prototypes": 8, "queue_size": queue_size, "queue_start_epoch": 0, "n_local": 0,
                   "proj_hidden": 16, "proj_dim": 8},
        "data": {"clean": "unused", "image_size": 16}, "backbone": {"name": "small_cnn", "width": 0.25},
        "optim": {"batch_size": 8, "epochs": 1}, "trainer": {"channels_last": False}})
    torch.manual_seed(0)
    return SwAV(cfg)


@pytest.mark.parametrize("size,world,rows", [(3840, 1, 3840), (3840, 2, 1920), (3840, 8, 480), (3840, 3, 1280),
                                             (10, 4, 2), (3, 8, 1), (0, 1, 0), (0, 4, 0)])
def test_rows_per_rank_split_the_global_queue(size: int, world: int, rows: int) -> None:
    assert queue_rows_per_rank(size, world) == rows
    if size >= world:
        assert world * rows <= size < world * (rows + 1)  # the ranks' queues together: the configured size


def test_rows_per_rank_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        queue_rows_per_rank(3840, 0)


def test_setup_keeps_this_ranks_share_and_it_still_trains() -> None:
    model = tiny_swav(24)
    initial = [q.bank.clone() for q in model.queues]
    model._trainer = SimpleNamespace(world_size=1)  # type: ignore[assignment]
    model.setup("fit")
    assert all(torch.equal(q.bank, b) for q, b in zip(model.queues, initial, strict=True))  # one process: as is
    model._trainer = SimpleNamespace(world_size=2, current_epoch=0)  # type: ignore[assignment]
    model.setup("fit")
    for q, b in zip(model.queues, initial, strict=True):
        assert q.bank.shape == (12, 8) and q.size[0] == 12 and int(q.bank_ptr) == 0
        assert torch.equal(q.bank, b[:12])  # its first rows: no random draw
    state = model.state_dict()
    assert state["queues.0.bank"].shape == (12, 8) and "queues.1.bank_ptr" in state  # still in checkpoints
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(8, 3, 16, 16, generator=g) for _ in model.plan.views]
    loss, _ = model.compute_loss(views)  # 8 per-rank features into a queue of 12
    assert torch.isfinite(loss) and all(int(q.bank_ptr) == 8 for q in model.queues)
    model.setup("fit")  # a second call changes nothing
    assert all(q.bank.shape == (12, 8) and int(q.bank_ptr) == 8 for q in model.queues)


def test_a_checkpoint_from_another_world_size_restarts_the_queue(caplog: pytest.LogCaptureFixture) -> None:
    one = tiny_swav(24)
    saved = {"state_dict": {k: v.clone() for k, v in one.state_dict().items()}}
    two = tiny_swav(24)
    two.split_queues(2)
    fresh = two.queues[0].bank.clone()
    two.on_load_checkpoint(saved)
    two.load_state_dict(saved["state_dict"])  # would fail on the queue's shape without the hook
    assert torch.equal(two.queues[0].bank, fresh) and "starts again" in caplog.text
    # the same number of processes: the saved queue is loaded as it is
    same = {"state_dict": {k: v.clone() for k, v in two.state_dict().items()}}
    same["state_dict"]["queues.0.bank"][:] = 0.5
    again = tiny_swav(24)
    again.split_queues(2)
    again.on_load_checkpoint(same)
    again.load_state_dict(same["state_dict"])
    assert torch.equal(again.queues[0].bank, torch.full((12, 8), 0.5))
