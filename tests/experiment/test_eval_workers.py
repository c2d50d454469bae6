"""Probe feature extraction's loader workers: on a GPU host every core but one (at most 8) decodes; a CPU host
keeps its cores for the model (the loader runs in the main process)."""

from __future__ import annotations

import os

import pytest
import torch

from corruptencoder.experiment.runner import eval_workers


@pytest.mark.parametrize("cores,expected", [(16, 8), (9, 8), (4, 3), (2, 1), (1, 1), (None, 1)])
def test_a_gpu_device_gets_every_core_but_one(monkeypatch: pytest.MonkeyPatch, cores: int | None,
                                              expected: int) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert eval_workers("cuda") == expected
    assert eval_workers("cuda:1") == expected


@pytest.mark.parametrize("cuda", [False, True])
def test_auto_follows_the_visible_gpu_and_cpu_never_uses_workers(monkeypatch: pytest.MonkeyPatch,
                                                                 cuda: bool) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert eval_workers("auto") == (8 if cuda else 0)
    assert eval_workers("cpu") == 0  # even with a GPU present, a CPU run keeps its cores for the model
