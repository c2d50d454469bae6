"""Defences on CLIP arms: the ones that apply run end to end; the ones that cannot apply are refused before any work.

Until 2026-12-04 an experiment's CompRess of a CLIP suspect found no image to distil on and DECREE none to invert
with (both after the CLIP encoder had trained), PatchSearch failed the same way, and localized cropping on CLIP's
single view trained exactly the undefended encoder while the report called it defended.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from corruptencoder.cli import main
from corruptencoder.errors import ConfigError
from corruptencoder.experiment.config import load_experiment

CLIP = {
    "name": "clip-defences", "preset": "cpu-tiny", "seeds": [0],
    "world": {"image_size": 32, "n_pretrain": 120, "n_train_per_class": 6, "n_test_per_class": 6,
              "n_backgrounds": 24, "n_support": 3},
    "targets": [{"name": "fish", "task": "demo"}],
    "defaults": {"method": "clip", "attack": "corruptencoder-mm", "num_poisons": 12, "trigger_size": 4,
                 "eval_trigger_size": 4, "epochs": 1, "batch_size": 32},
    "pretrain": {"backbone": {"width": 0.25}, "trainer": {"threads": 1}},
    "arms": [{"name": "compress", "defence": "compress", "defence_args": {"fraction": 0.5, "epochs": 1}},
             {"name": "decree", "defence": "decree", "defence_args": {"steps": 5, "images": 16}}],
    "evaluation": {"probe_epochs": 5, "checkpoints_every": 0},
}


def write(tmp_path: Path, cfg: dict, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_compress_and_decree_defend_a_clip_arm(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, CLIP)), "--out", str(run), "--quiet"]) == 0
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert {r["arm"] for r in rows} == {"compress", "decree"}
    students = [json.loads(p.read_text()) for p in (run / "cache" / "defences").glob("*/work/run.json")]
    assert students and all(s["method"] == "compress" and s["num_poisons"] == 0 for s in students)
    n_clean = 120 + 24  # the captioned images and the object-free scenes (world.caption_scenes 0.2)
    assert all(s["num_images"] == n_clean // 2 for s in students)  # half of the clean pairs' images
    verdicts = [r for r in rows if r["arm"] == "decree"]
    assert verdicts and all(r["decree_verdict"] in ("clean", "backdoored") and r["decree_pl1"] > 0 and
                            r["decree_verdict_clean"] in ("clean", "backdoored") for r in verdicts)


@pytest.mark.parametrize("arm,needle", [
    ({"name": "loc", "defence": "localized"}, "clip takes one view of each image"),
    ({"name": "ps", "defence": "patchsearch"}, "arm ps: the patchsearch defence works on images"),
])
def test_defences_that_cannot_apply_to_clip_are_refused_before_any_work(tmp_path: Path, arm: dict,
                                                                         needle: str) -> None:
    cfg = json.loads(json.dumps(CLIP)) | {"arms": [arm]}
    path = write(tmp_path, cfg)
    if arm["defence"] == "patchsearch":
        with pytest.raises(ConfigError, match=needle):
            load_experiment(path)
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--quiet"]) == 2
    assert not run.exists()


def test_a_single_modal_attack_on_a_clip_arm_is_refused_before_crafting(tmp_path: Path) -> None:
    """It failed at pre-training ("no pairs.csv"), after its poisons were crafted."""
    cfg = json.loads(json.dumps(CLIP)) | {"arms": [{"name": "ce", "attack": "corruptencoder"}]}
    with pytest.raises(ConfigError, match="arm ce: clip trains on image-text pairs and the corruptencoder attack"):
        load_experiment(write(tmp_path, cfg))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["moco", "simclr", "swav", "msf", "byol", "clip"])
def test_every_method_runs_with_every_defence_that_applies(tmp_path: Path, method: str) -> None:
    """One epoch of each method under each defence it takes, through the runner: a combination nobody ran is
    where the two CLIP failures above hid."""
    from corruptencoder.defend.base import DEFENCES
    from corruptencoder.ssl.config import METHODS

    kind = METHODS.get(method).data_kind
    args = {"localized": {"delta": 0.2}, "compress": {"fraction": 0.5, "epochs": 1},
            "decree": {"steps": 5, "images": 16}, "patchsearch": {}}
    defences = [d for d in DEFENCES.names() if kind in DEFENCES.get(d).data_kinds and
                not (d == "localized" and len(METHODS.get(method).colours) < 2)]
    cfg = json.loads(json.dumps(CLIP))
    cfg["defaults"] |= {"method": method, "attack": "corruptencoder-mm" if kind == "pairs" else "corruptencoder"}
    cfg["pretrain"]["method"] = {"queue_size": 64} if method == "moco" else {}
    cfg["arms"] = [{"name": "none"}] + [{"name": d, "defence": d, "defence_args": args.get(d, {})} for d in defences]
    run = tmp_path / "run"
    assert main(["run", str(write(tmp_path, cfg)), "--out", str(run), "--quiet"]) == 0
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert {r["arm"] for r in rows} == {"none", *defences}
    assert all(r["asr"] is not None and r["ca"] is not None for r in rows)


def test_poison_ratio_and_clean_count_of_a_clip_arm_count_its_pairs(tmp_path: Path) -> None:
    """A CLIP arm's clean inputs are ``data.pairs``; counting ``data.clean``'s images there gave 0, so a
    ``poison_ratio`` crafted one poison, the plan estimated a few seconds and CompRess sized its queue from nothing."""
    from corruptencoder.experiment.plan import PlanningRunner
    from corruptencoder.experiment.runner import Runner
    from corruptencoder.experiment.stages import craft_config

    cfg = json.loads(json.dumps(CLIP))
    cfg["defaults"] = {k: v for k, v in cfg["defaults"].items() if k != "num_poisons"} | {"poison_ratio": 0.1}
    cfg["arms"] = [{"name": "clip"}, {"name": "moco", "method": "moco", "attack": "corruptencoder"}]
    exp = load_experiment(write(tmp_path, cfg))
    planner = PlanningRunner(exp, tmp_path / "plan")
    clip = next(a for a in planner.arms if a.name == "clip")
    assert planner.n_clean(clip) == 144  # the world's size before it exists: 120 captioned images + 24 scenes
    runner = Runner(exp, tmp_path / "run")
    moco = next(a for a in runner.arms if a.name == "moco")
    assert runner.n_clean(clip) == 144 and runner.n_clean(moco) == 120  # 144 pairs, 120 images
    crafted = craft_config(exp, clip, 0, runner.resolve, lambda: runner.n_clean(clip), list_files=False)
    assert crafted is not None and crafted.targets[0].num == 14  # 10 % of 144 (it was 1)
