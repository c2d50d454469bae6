"""``run --plan``: every stage listed with its cache state, nothing crafted, generated or trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from corruptencoder.cli import main
from corruptencoder.experiment.config import load_experiment
from corruptencoder.experiment.plan import plan_experiment

TINY = {
    "name": "tiny-plan", "preset": "cpu-tiny", "seeds": [0],
    "world": {"image_size": 32, "seed": 7, "n_pretrain": 60, "n_train_per_class": 3, "n_test_per_class": 3,
              "n_backgrounds": 12, "n_support": 2},
    "defaults": {"num_poisons": 6, "trigger_size": 2, "eval_trigger_size": 3, "epochs": 1, "batch_size": 16},
    "pretrain": {"method": {"queue_size": 32}, "backbone": {"width": 0.25}, "trainer": {"threads": 1}},
    "arms": [{"name": "no-attack", "attack": "none"}, {"name": "ce", "attack": "corruptencoder"},
             {"name": "ce-compress", "attack": "corruptencoder", "defence": "compress",
              "defence_args": {"fraction": 0.5}}],
    "evaluation": {"probe_epochs": 2},
}


def test_plan_lists_stages_and_touches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "craft: 1 (0 cached, 1 to run)" in out  # one poison set shared by ce and ce-compress
    assert "pretrain: 2 (0 cached, 2 to run)" in out  # the clean and the poisoned encoder, shared by all arms
    assert "defend: 2 (0 cached, 2 to run)" in out and "CompRess, 50 % clean data" in out
    assert "moco, small_cnn x0.25, 32 px, 1 epochs, batch 16" in out and "img/s" in out
    assert not run.exists()  # nothing written
    cfg = load_experiment(path)
    from corruptencoder.demo import demo_world

    w = cfg.world
    world = demo_world(w.image_size, w.seed, object_scale=w.object_scale, generate=False, n_pretrain=w.n_pretrain,
                       n_train_per_class=w.n_train_per_class, n_test_per_class=w.n_test_per_class,
                       n_references=w.n_references, n_support=w.n_support, n_backgrounds=w.n_backgrounds)
    assert not world.exists()  # the demo world was not generated either
    # after a real run the same plan says everything is cached, with the keys the run used
    assert main(["run", str(path), "--out", str(run), "--quiet", "--arms", "ce"]) == 0
    _, plan = plan_experiment(cfg, run, measure=False, only=["ce"])
    assert plan.stages and all(s.cached for s in plan.stages)  # the evaluations too: their keys hash the encoders
    assert any(s.stage == "evaluate" for s in plan.stages)
    ran = {json.loads(x)["key"] for x in (run / "stages.jsonl").read_text().splitlines()}
    assert {s.key for s in plan.stages if s.stage in ("craft", "pretrain")} <= ran


def test_plan_of_clip_arms_writes_no_captions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CLIP arm on the demo pairs: the plan wrote the captions (into the run's cache), or failed with 'demo
    pre-training folder not found' when the world did not exist yet."""
    body = {**TINY, "name": "tiny-clip-plan", "world": {**TINY["world"], "seed": 8},
            "targets": [{"name": "boat", "task": "demo"}],
            "defaults": {**TINY["defaults"], "method": "clip"}, "pretrain": {"trainer": {"threads": 1}},
            "arms": [{"name": "no-attack", "attack": "none"}, {"name": "ct", "attack": "carlini-terzis"}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(body))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "craft: 1 (0 cached, 1 to run)" in out and "pretrain: 2 (0 cached, 2 to run)" in out
    assert "6 poisons" in out  # num_poisons, whatever the pair count
    assert not run.exists()
