"""The experiment runner: outputs, caching (checked), resume after an interruption, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from corruptencoder.cli import main
from corruptencoder.errors import ConfigError
from corruptencoder.experiment.config import load_experiment
from corruptencoder.experiment.runner import Runner

TINY = {
    "name": "tiny", "preset": "cpu-tiny", "seeds": [0],
    "world": {"image_size": 32, "n_pretrain": 120, "n_train_per_class": 6, "n_test_per_class": 6,
              "n_backgrounds": 24, "n_support": 3},
    "defaults": {"num_poisons": 12, "trigger_size": 2, "eval_trigger_size": 3, "epochs": 1, "batch_size": 32},
    "pretrain": {"method": {"queue_size": 64}, "backbone": {"width": 0.25}, "trainer": {"threads": 1}},
    "arms": [{"name": "no-attack", "attack": "none"}, {"name": "ce", "attack": "corruptencoder"}],
    "evaluation": {"probe_epochs": 5, "checkpoints_every": 1},
}


def write(tmp_path: Path, cfg: dict, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def counts(run: Path, since: int = 0) -> dict[str, int]:
    out: dict[str, int] = {}
    lines = (run / "stages.jsonl").read_text().splitlines()[since:]
    for ln in lines:
        e = json.loads(ln)
        if e["status"] == "ran":
            out[e["stage"]] = out.get(e["stage"], 0) + 1
    return out


def n_lines(run: Path) -> int:
    return len((run / "stages.jsonl").read_text().splitlines())


def test_two_arms_run_write_everything_then_cache(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, TINY)), "--out", str(run), "--quiet"]) == 0
    for f in ("results.json", "results.csv", "report.md", "figures/asr_by_arm.png", "figures/asr_over_training.png"):
        assert (run / f).is_file(), f
    res = json.loads((run / "results.json").read_text())
    arms = {r["arm"] for r in res["rows"]}
    assert arms == {"no-attack", "ce"}
    final = [r for r in res["rows"] if r["epoch"] == "final"]
    assert all(0 <= r["ca"] <= 100 and 0 <= r["asr"] <= 100 for r in final)
    assert {r["epoch"] for r in res["rows"]} == {1, "final"}
    first = counts(run)
    assert first == {"craft": 1, "pretrain": 2, "evaluate": 4}  # clean encoder shared by both arms
    # the same config again: nothing is trained or evaluated
    mark = n_lines(run)
    assert main(["run", str(write(tmp_path, TINY)), "--out", str(run), "--quiet"]) == 0
    assert counts(run, mark) == {}
    # one arm's parameter changes: only that arm is crafted, trained and scored again
    changed = json.loads(json.dumps(TINY))
    changed["arms"][1]["alpha"] = 0.4
    mark = n_lines(run)
    assert main(["run", str(write(tmp_path, changed, "b.yaml")), "--out", str(run), "--quiet"]) == 0
    assert counts(run, mark) == {"craft": 1, "pretrain": 1, "evaluate": 2}
    # the report is rebuilt from results alone
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0 and (run / "report.md").is_file()
    # another experiment (other name, other run folder) sharing the cache, one arm of it: nothing runs
    other = {**TINY, "name": "other", "arms": [*TINY["arms"], {"name": "extra", "attack": "ssl-backdoor"}]}
    run2 = tmp_path / "run2"
    assert main(["run", str(write(tmp_path, other, "c.yaml")), "--out", str(run2), "--quiet",
                 "--cache", str(run / "cache"), "--arms", "ce"]) == 0
    assert counts(run2) == {} and not (run2 / "cache").exists()
    assert {r["arm"] for r in json.loads((run2 / "results.json").read_text())["rows"]} == {"ce"}


def test_interrupted_run_resumes_without_redoing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_experiment(write(tmp_path, TINY))
    run = tmp_path / "run"
    real = Runner.evaluate

    def boom(self, *a, **k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "evaluate", boom)
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg, run, progress=False, say=lambda s: None).run()
    assert counts(run) == {"craft": 1, "pretrain": 1}  # every poison first, then stopped between stages
    monkeypatch.setattr(Runner, "evaluate", real)
    mark = n_lines(run)
    Runner(cfg, run, progress=False, say=lambda s: None).run()
    assert counts(run, mark).get("pretrain") == 1  # only the attacked arm's encoder is new
    assert (run / "results.json").is_file()


@pytest.mark.parametrize("change,needle", [
    ({"arms": [{"attack": "badnets"}]}, "arms.0"),
    ({"sweeps": [{"param": "gamma", "values": [1, 2]}]}, "cannot sweep 'gamma'"),
    ({"defaults": {"alpah": 0.3}}, "defaults.alpah"),
    ({"targets": [{"name": "fish", "task": "nope"}]}, "task 'nope'"),
])
def test_config_errors_before_any_work(tmp_path: Path, change: dict, needle: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {**TINY, **change}
    run = tmp_path / "run"
    code = main(["run", str(write(tmp_path, cfg)), "--out", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_sweep_expands_into_arms(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, {**TINY, "arms": [], "sweeps": [
        {"param": "alpha", "values": [0.3, 0.5], "base": {"attack": "corruptencoder"}}]}))
    arms = cfg.expanded_arms()
    assert [a.name for a in arms] == ["alpha=0.3", "alpha=0.5"] and [a.alpha for a in arms] == [0.3, 0.5]
    with pytest.raises(ConfigError, match="environment variable"):
        load_experiment(write(tmp_path, {**TINY, "data": {"clean": "${NO_SUCH_VAR_X}/train"}}))


def test_demo_verb_runs_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The packaged demo (five arms) end to end on a shrunken world: table, verdict, report."""
    sets = ["world.n_pretrain=150", "world.n_train_per_class=6", "world.n_test_per_class=6", "world.n_backgrounds=30",
            "arms.0.epochs=1", "defaults.epochs=1", "defaults.num_poisons=15", "defaults.batch_size=32",
            "defaults.width=0.125",
            "evaluation.checkpoints_every=0", "evaluation.probe_epochs=5", "pretrain.trainer.threads=1"]
    args = ["demo", "--out", str(tmp_path / "demo"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    for arm in ("base", "no-attack", "ssl-backdoor", "corruptencoder", "corruptencoder+", "ce-localized"):
        assert f"| {arm} |" in out
    assert "backdoor" in out and (tmp_path / "demo" / "report.md").is_file()


def test_arms_filter_selects_by_glob_and_refuses_a_pattern_matching_nothing(tmp_path: Path) -> None:
    from corruptencoder.errors import UserError
    from corruptencoder.experiment.runner import select_arms

    cfg = load_experiment(write(tmp_path, {**TINY, "arms": [
        {"name": "none/no-attack", "attack": "none"}, {"name": "none/ce", "attack": "corruptencoder"},
        {"name": "localized/ce", "attack": "corruptencoder", "defence": "localized"}]}))
    arms = cfg.expanded_arms()
    assert [a.name for a in select_arms(arms, ["none/*"])] == ["none/no-attack", "none/ce"]
    assert [a.name for a in select_arms(arms, ["*/ce"])] == ["none/ce", "localized/ce"]
    assert select_arms(arms, []) == arms
    with pytest.raises(UserError, match="matches no arm; the arms are: none/no-attack, none/ce, localized/ce"):
        select_arms(arms, ["compress*"])


def test_continued_pretraining_arm_starts_both_encoders_from_the_base_arm(tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(TINY))
    cfg["evaluation"]["checkpoints_every"] = 0
    cfg["arms"] = [{"name": "base", "attack": "none"},
                   {"name": "refresh", "attack": "corruptencoder", "init": "arm:base", "epochs": 1}]
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, cfg)), "--out", str(run), "--quiet"]) == 0
    # base (clean, once), then the poisoned and the clean continuation, each from base's encoder
    assert counts(run) == {"craft": 1, "pretrain": 3, "evaluate": 2}
    encoders = sorted((run / "cache" / "encoders").iterdir())
    inits = [yaml.safe_load((e / "config.yaml").read_text())["backbone"]["init"] for e in encoders]
    base = [e for e, i in zip(encoders, inits, strict=True) if i is None]
    assert len(base) == 1 and sorted(i for i in inits if i) == [str(base[0] / "encoder.pt")] * 2
    bad = json.loads(json.dumps(cfg))
    bad["arms"][1]["init"] = "arm:nope"
    with pytest.raises(ConfigError, match="names no arm"):
        load_experiment(write(tmp_path, bad, "bad.yaml"))


def test_continued_pretraining_from_one_pinned_base_for_every_seed(tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(TINY))
    cfg["seeds"] = [0, 1]
    cfg["evaluation"]["checkpoints_every"] = 0
    cfg["arms"] = [{"name": "refresh", "attack": "corruptencoder", "init": "arm:base@0"},
                   {"name": "base", "attack": "none"}]
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, cfg)), "--out", str(run), "--quiet", "--arms", "refresh"]) == 0
    encoders = sorted((run / "cache" / "encoders").iterdir())
    inits = {yaml.safe_load((e / "config.yaml").read_text())["backbone"]["init"] for e in encoders}
    bases = [e for e in encoders if yaml.safe_load((e / "config.yaml").read_text())["backbone"]["init"] is None]
    assert len(bases) == 1 and inits == {None, str(bases[0] / "encoder.pt")}  # seed 0's base, for both seeds
    assert len(encoders) == 5  # the base + (poisoned, clean) continuations for each of the 2 seeds
    bad = json.loads(json.dumps(cfg))
    bad["arms"][0]["init"] = "arm:base@x"
    with pytest.raises(ConfigError, match="after '@' give a seed"):
        load_experiment(write(tmp_path, bad, "bad.yaml"))


def test_an_arm_runs_only_its_own_seeds(tmp_path: Path) -> None:
    """``seeds:`` on an arm: a pinned base trains once, not once per seed of the experiment."""
    cfg = json.loads(json.dumps(TINY))
    cfg["seeds"] = [0, 1]
    cfg["evaluation"]["checkpoints_every"] = 0
    cfg["arms"] = [{"name": "base", "attack": "none", "seeds": [0]},
                   {"name": "refresh", "attack": "corruptencoder", "init": "arm:base@0"}]
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, cfg)), "--out", str(run), "--quiet"]) == 0
    # base once (seed 0), then the poisoned and the clean continuation for each seed
    assert counts(run)["pretrain"] == 5
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert sorted({(r["arm"], r["seed"]) for r in rows}) == [("base", 0), ("refresh", 0), ("refresh", 1)]
    bad = json.loads(json.dumps(cfg))
    bad["arms"][0]["seeds"] = [3]
    with pytest.raises(ConfigError, match=r"arm base: seeds \[3\] are not among the experiment's seeds \[0, 1\]"):
        load_experiment(write(tmp_path, bad, "bad.yaml"))


def test_a_crafting_error_stops_the_run_before_any_pretraining(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {**TINY, "arms": [*TINY["arms"], {"name": "ce-big", "attack": "corruptencoder", "trigger_size": 24}]}
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, cfg)), "--out", str(run), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert "cannot fit" in err and err.startswith("error: arm ce-big (seed 0): ") and len(err.splitlines()) == 1
    assert "pretrain" not in counts(run)  # the 'ce' arm's poisons were crafted, nothing was trained


def test_clean_twins_score_the_same_sibling_trigger_as_the_poisons(tmp_path: Path) -> None:
    """An arm without poisons (a clean twin) draws its targets' triggers from the config: a smooth trigger gets the
    sibling crafting would record (its recipe with the control seed), a per-pixel random one none."""
    import numpy as np
    from PIL import Image

    from corruptencoder.evaluate.controls import CONTROL_SEED
    from corruptencoder.poison.triggers import TriggerSpec, make_trigger

    root = tmp_path / "task"
    for split in ("train", "test"):
        for c in ("boat", "fish"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (16, 16)).save(root / split / c / "0.png")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "sib", "tasks": [{"name": "t", "root": str(root)}], "data": {"clean": str(root / "train")},
        "targets": [{"name": "boat", "task": "t", "trigger": "smooth", "trigger_seed": 4},
                    {"name": "fish", "task": "t"}],
        "defaults": {"trigger_size": 5},
        "arms": [{"name": "no-attack", "attack": "none", "targets": ["boat", "fish"]}]}))
    cfg = load_experiment(config)
    runner = Runner(cfg, tmp_path / "run", progress=False, say=lambda s: None)
    boat, fish = runner.eval_targets(cfg.expanded_arms()[0], None, "t")
    assert np.array_equal(boat.trigger, make_trigger(TriggerSpec("smooth", (5, 5), 4)))
    assert boat.sibling is not None and np.array_equal(boat.sibling,
                                                       make_trigger(TriggerSpec("smooth", (5, 5), CONTROL_SEED)))
    assert fish.sibling is None
