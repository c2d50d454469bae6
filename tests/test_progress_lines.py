"""Progress a log file can hold: when stderr is not a terminal (``> log.txt``, a scheduler, a pipe), pre-training
prints one plain line per epoch instead of Lightning's bars, and no carriage return anywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import class_folder


def test_pretraining_prints_one_line_per_epoch_without_carriage_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.ssl.train import pretrain
    from corruptencoder.utils.progress import bars_wanted

    monkeypatch.delenv("CORRUPTENCODER_PROGRESS", raising=False)  # auto: decided by the streams
    assert not bars_wanted()  # pytest's captured stdout/stderr are files, not terminals
    data = class_folder(tmp_path / "data", ["c0", "c1"], 6, (20, 20))
    cfg = PretrainConfig.model_validate({
        "method": {"name": "moco", "queue_size": 16, "proj_hidden": 16, "proj_dim": 8},
        "data": {"clean": str(data), "image_size": 16},
        "backbone": {"name": "small_cnn", "width": 0.25},
        "optim": {"batch_size": 6, "epochs": 2},
        "trainer": {"threads": 1},
    })
    capfd.readouterr()
    pretrain(cfg, tmp_path / "run", progress=True)
    out, err = capfd.readouterr()
    assert "\r" not in err and "\r" not in out, "a progress bar's carriage returns reached a file"
    epochs = [ln for ln in err.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 2, err
    for n, line in enumerate(epochs, 1):
        assert re.fullmatch(rf"epoch {n}/2: loss \d+\.\d{{4}}, \d+ img/s, [^,]+ s, [^,]+ left", line), line
