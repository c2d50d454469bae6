"""Every shipped experiment config loads, validates and expands (data paths come from the environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corruptencoder.experiment.config import load_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = (sorted((ROOT / "configs").rglob("*.yaml"))
           + sorted((ROOT / "src" / "corruptencoder" / "configs").glob("*.yaml")))
ENV = ("IMAGENET_ROOT", "CE_ASSETS", "CE_REFERENCES", "PETS_ROOT", "FLOWERS_ROOT", "CALTECH_ROOT", "CC3M_PAIRS")


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.name}" for p in CONFIGS])
def test_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ENV:
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    cfg = load_experiment(path)
    arms = cfg.expanded_arms()
    assert arms, path
    if path.parent.name == "paper":
        assert cfg.preset == "paper" and cfg.seeds == [0, 1, 2]


def test_paper_and_demo_configs_pair_up() -> None:
    paper = {p.stem for p in CONFIGS if p.parent.name == "paper"}
    tiny = {p.stem for p in CONFIGS if p.parent.name == "cpu-tiny"}
    assert paper - {"table3-multimodal"} <= tiny, "every paper config has a cpu-tiny counterpart"
    assert "multimodal" in tiny
