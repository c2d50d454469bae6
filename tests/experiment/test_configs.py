"""Every shipped experiment config loads, validates and expands (data paths come from the environment)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import class_folder
from corruptencoder.errors import ConfigError
from corruptencoder.experiment.config import ExperimentConfig, load_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = (sorted((ROOT / "configs").rglob("*.yaml"))
           + sorted((ROOT / "src" / "corruptencoder" / "configs").glob("*.yaml")))
PAPER = ROOT / "configs" / "paper"
ENV = ("IMAGENET_ROOT", "CE_ASSETS", "CE_REFERENCES", "PETS_ROOT", "FLOWERS_ROOT", "CALTECH_ROOT", "CC3M_PAIRS")


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every data variable the configs use, set to a (missing) folder under tmp_path: loading reads no data."""
    for var in ENV:
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return tmp_path


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.name}" for p in CONFIGS])
def test_config_loads(path: Path, env: Path) -> None:
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


def _arms(cfg: ExperimentConfig) -> dict[str, Any]:
    return {a.name: a for a in cfg.expanded_arms()}


def test_paper_configs_have_the_papers_settings(env: Path) -> None:
    """Defect 10 of issue 14: Table 7's four classes, Figure 6's SimCLR recipe, Figure 7's 650 poisons, and
    Figure 10's trigger types (defect 5); every moco arm with the authors' MoCo-v2 (lr 0.06, 65,536 keys)."""
    from corruptencoder.experiment.stages import num_poisons, placeholder, pretrain_config

    table7 = load_experiment(PAPER / "table7-object-vs-image.yaml")
    assert [t.label for t in table7.targets] == ["n02116738", "n04229816", "n02106550", "n02086240"]
    arms = _arms(table7)
    for t in table7.targets:  # each class with the masked object and with the whole reference image
        assert arms[f"object/{t.name}"].reference_mode == "object" and arms[f"object/{t.name}"].targets == [t.name]
        assert arms[f"image/{t.name}"].reference_mode == "image" and arms[f"image/{t.name}"].targets == [t.name]
        assert num_poisons(arms[f"object/{t.name}"], lambda: 126689) == 650
    moco = pretrain_config(table7, arms["object/ski-mask"], 0, None, placeholder)
    assert moco.method.name == "moco" and moco.method.queue_size == 65536 and moco.method.bn_splits > 1
    assert (moco.optim.batch_size, moco.optim.epochs) == (256, 200)
    assert moco.resolved_optim()[1] == pytest.approx(0.06)

    figure6 = load_experiment(PAPER / "figure6-pretraining-settings.yaml")
    simclr = pretrain_config(figure6, _arms(figure6)["method=simclr"], 0, None, placeholder)
    assert simclr.method.name == "simclr"
    assert (simclr.optim.batch_size, simclr.optim.epochs) == (1024, 300)
    assert simclr.resolved_optim()[1] == pytest.approx(1.2)  # 0.3 per 256 images at batch 1024

    figure7 = load_experiment(PAPER / "figure7-alpha-beta-ratio.yaml")
    counts = {name: num_poisons(a, lambda: 126689) for name, a in _arms(figure7).items()}  # ImageNet100-A's size
    ratio = sorted(n for name, n in counts.items() if name.startswith("poisons="))
    assert ratio[-1] == 650 and len(ratio) == 5 and ratio == [130, 260, 390, 520, 650]
    assert all(n == 650 for name, n in counts.items() if not name.startswith("poisons="))

    figure10 = load_experiment(PAPER / "figure10-references-trigger.yaml")
    triggers = [a.trigger_type or "" for name, a in _arms(figure10).items() if name.startswith("trigger_type=")]
    assert "random" in triggers and "white" in triggers and "purple" in triggers
    assert any(re.fullmatch(r"random:\d+", t) for t in triggers)
    assert any(Path(t).name == "trigger_10.png" for t in triggers)
    others = [a.trigger_type for name, a in _arms(figure10).items() if not name.startswith("trigger_type=")]
    assert others and all(Path(t or "").name == "trigger_10.png" for t in others)  # the authors' trigger by default


def _experiment(tmp_path: Path, targets: list[dict[str, Any]], arms: list[dict[str, Any]],
                tasks: list[dict[str, Any]] | None = None) -> Path:
    """An experiment on tiny ImageFolder data (a clean folder and a task with classes cat and dog)."""
    class_folder(tmp_path / "clean", ["cat", "dog"], 1, (8, 8))
    for split in ("train", "test"):
        class_folder(tmp_path / "task" / split, ["cat", "dog"], 1, (8, 8))
    refs = tmp_path / "refs"
    refs.mkdir(exist_ok=True)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "x", "data": {"clean": str(tmp_path / "clean")},
        "tasks": tasks or [{"name": "pets", "root": str(tmp_path / "task")}],
        "targets": [{"task": "pets", "references": [str(refs)], **t} for t in targets], "arms": arms}))
    return path


def test_corruptencoder_plus_without_support_fails_at_load_naming_the_target(tmp_path: Path) -> None:
    """Support images matter to CorruptEncoder+ only: its arm fails at load time naming the target, a plain
    CorruptEncoder arm with the same target loads (issue 14, defect 1)."""
    plain = _experiment(tmp_path, [{"name": "dog"}], [{"name": "ce", "attack": "corruptencoder"}])
    assert [a.name for a in load_experiment(plain).expanded_arms()] == ["ce"]
    plus = _experiment(tmp_path, [{"name": "dog"}], [{"name": "ce", "attack": "corruptencoder"},
                                                     {"name": "plus", "attack": "corruptencoder-plus"}])
    with pytest.raises(ConfigError) as err:
        load_experiment(plus)
    msg = str(err.value)
    assert "target dog" in msg and "'support'" in msg and "corruptencoder-plus" in msg and "\n" not in msg


def test_target_label_is_checked_against_the_tasks_classes_at_load(tmp_path: Path) -> None:
    """A label the task lacks fails when the config is loaded (not after pre-training), where the classes are known
    without reading images: ImageFolder sub-folders, a class list file (plus extra_classes), Flowers-102's names."""
    arms = [{"name": "no-attack", "attack": "none"}]
    assert load_experiment(_experiment(tmp_path, [{"name": "dog"}], arms)).targets[0].name == "dog"
    with pytest.raises(ConfigError, match=r"target doggy: target class 'dgo' is not a class of task pets "
                                          r"\(classes: cat, dog\)"):
        load_experiment(_experiment(tmp_path, [{"name": "doggy", "label": "dgo"}], arms))
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("n01440764\nn02116738\n")
    imagenet = {"name": "pets", "kind": "imagenet", "root": str(tmp_path / "imagenet"), "classes": str(wnids)}
    street = [{"name": "street-sign", "label": "n06794110"}]
    with pytest.raises(ConfigError, match="target street-sign: target class 'n06794110'"):
        load_experiment(_experiment(tmp_path, street, arms, [imagenet]))
    load_experiment(_experiment(tmp_path, street, arms, [{**imagenet, "extra_classes": ["n06794110"]}]))
    flowers = [{"name": "pets", "kind": "flowers102", "root": str(tmp_path / "absent")}]
    load_experiment(_experiment(tmp_path, [{"name": "lotus"}], arms, flowers))
    with pytest.raises(ConfigError, match="'lotos'"):
        load_experiment(_experiment(tmp_path, [{"name": "lotus", "label": "lotos"}], arms, flowers))
    # no class list at hand (a root that is not there yet): the check waits for the run
    load_experiment(_experiment(tmp_path, [{"name": "x"}], arms, [{"name": "pets", "root": str(tmp_path / "none")}]))


def test_an_arm_may_bring_its_own_backgrounds(tmp_path: Path) -> None:
    """The backgrounds factor of the where-it-forms study: one arm's poisons on other background folders."""
    from corruptencoder.experiment import stages

    path = _experiment(tmp_path, [{"name": "dog"}], [{"name": "own", "attack": "corruptencoder"},
                                                     {"name": "other", "attack": "corruptencoder",
                                                      "backgrounds": ["/data/places"]}])
    cfg = load_experiment(path)
    arms = _arms(cfg)
    def resolve(value: str, kind: str, target: Any = None) -> str:
        return value

    own = stages.craft_config(cfg, arms["own"], 0, resolve, lambda: 100, list_files=False)
    other = stages.craft_config(cfg, arms["other"], 0, resolve, lambda: 100, list_files=False)
    assert own.targets[0].backgrounds == cfg.backgrounds
    assert other.targets[0].backgrounds == ["/data/places"]


def test_demo_shares_its_base_encoder_with_backdoor_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo runs on the backdoor-forms setting: its clean base has the same cache key, so a run of either over
    a shared --cache reuses the other's 17-minute base, and every demo arm continues from that base."""
    from corruptencoder.experiment.runner import Runner, demo_config

    demo, forms = demo_config(), load_experiment(ROOT / "configs" / "cpu-small" / "backdoor-forms.yaml")
    monkeypatch.setenv("CE_ASSETS", str(tmp_path / "assets"))  # the image-trigger companion names the assets
    image = load_experiment(ROOT / "configs" / "cpu-small" / "backdoor-forms-image-trigger.yaml")
    runners = []
    for cfg in (demo, forms, image):
        runner = Runner(cfg, tmp_path / cfg.name, cache=tmp_path / "cache", progress=False)
        runner.generate = False
        runners.append(runner)

    def base_keys(seed: int, among: Sequence[Runner]) -> list[str]:
        return [r.pretrain_setting(_arms(r.cfg)["base"], seed, None)[1] for r in among]

    keys = base_keys(0, runners)
    assert keys[0] == keys[1] == keys[2]
    # the image-trigger arms drawn per base (init "arm:base") continue backdoor-forms' bases of seeds 1 and 2 too
    assert _arms(image)["trigger-10/corruptencoder"].init == "arm:base"
    for seed in (1, 2):
        k = base_keys(seed, runners[1:])
        assert k[0] == k[1]
    arms = _arms(demo)
    assert all(a.init == "arm:base@0" and a.eval_trigger_size == a.trigger_size for n, a in arms.items() if n != "base")
    assert {a.attack for a in arms.values()} >= {"none", "ssl-backdoor", "corruptencoder", "corruptencoder-plus"}
