"""The peak-memory meter a pre-training stage writes to run.json: per stage, though arms share one process."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from corruptencoder.utils.hardware import PeakMemory


def test_a_stage_reports_its_own_peak() -> None:
    first = PeakMemory()
    big = np.ones(40_000_000)  # 305 MiB, touched
    during = first.read()["peak_rss_mb"]
    del big
    second = PeakMemory()
    after = second.read()
    assert during is not None and during > 300
    if not sys.platform.startswith("linux") or not after["peak_rss_since_stage_start"]:
        pytest.skip("this kernel keeps one peak per process (no /proc/self/clear_refs)")
    assert after["peak_rss_mb"] < during - 250  # the first stage's array is not the second's peak
