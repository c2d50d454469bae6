"""The three extension axes: a new method, attack or defence is one class (one file) and the rest of the
toolkit (configs, CLI, presets, runner) picks it up. Each test registers a toy entry, uses it through the
public entry points, and removes it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

from conftest import run_config
from corruptencoder.defend.base import (
    DEFENCES,
    DataDefence,
    DefenceContext,
    DefenceOptions,
    EncoderDefence,
    EncoderResult,
    FilterResult,
    ViewDefence,
)
from corruptencoder.errors import ConfigError
from corruptencoder.poison.base import ImageAttack, Job, RenderResult
from corruptencoder.poison.config import ATTACKS, AttackOptions, CraftConfig
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimDefaults, Patch
from corruptencoder.utils.config import validate
from corruptencoder.utils.registry import Registry


@pytest.fixture()
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """register(registry, cls): add an entry for this test only."""
    def register(registry: Registry[Any], cls: Any) -> Any:
        registry.load()
        monkeypatch.setitem(registry._entries, cls.name, cls)
        return cls
    yield register


# -- a method --------------------------------------------------------------------------------------


def toy_method() -> type:
    from corruptencoder.ssl.methods.simclr import SimCLR
    from corruptencoder.ssl.views import SIMCLR

    class ToyConfig(MethodConfig):
        name: Literal["toy"] = "toy"
        temperature: float = 0.5
        proj_hidden: int | None = None
        proj_dim: int = 16

    class Toy(SimCLR):  # SimCLR's loss with its own name, config, views and presets
        name = "toy"
        config_model = ToyConfig
        colours = (SIMCLR, SIMCLR)
        crop_scale = (0.3, 1.0)
        optim = OptimDefaults("sgd", 0.2, 0.0, 0.0)
        presets = {"cpu-tiny": Patch(method=ToyConfig(proj_dim=8))}

    return Toy


def test_a_new_method_is_one_class(registered: Any, tmp_path: Path) -> None:
    from conftest import class_folder
    from corruptencoder.presets import build_pretrain_config
    from corruptencoder.ssl.train import pretrain

    registered(METHODS, toy_method())
    data = class_folder(tmp_path / "data", ["a", "b"], 8, (20, 20))
    cfg = build_pretrain_config(None, "cpu-tiny", {"method.name": "toy", "data.clean": str(data),
                                                    "data.image_size": 16, "optim.epochs": 1,
                                                    "optim.batch_size": 8, "trainer.progress": False})
    assert cfg.method.proj_dim == 8  # its preset delta
    optimizer, lr, _, _ = cfg.resolved_optim()
    assert optimizer == "sgd" and lr == pytest.approx(0.2 * 8 / 256)  # its optimizer recipe, scaled
    res = pretrain(cfg, tmp_path / "run")
    assert res.encoder.is_file()
    with pytest.raises(ConfigError, match="method.temperatur: unknown key"):
        build_pretrain_config(None, None, {"method": {"name": "toy", "temperatur": 1}, "data.clean": "x"})


def test_pretrain_help_lists_the_pretraining_methods(registered: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """From the registry's ``pretraining`` flag: a new method is offered, CompRess (a defence's loop) is not."""
    from corruptencoder.cli import main

    registered(METHODS, toy_method())
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    listed = text.split("method.name: ")[1].split(" (default")[0].split(" | ")
    assert "toy" in listed and "moco" in listed and "compress" not in listed


def test_throughput_is_measured_for_pretraining_methods_only() -> None:
    from corruptencoder.experiment.plan import measure_throughput
    from corruptencoder.ssl.config import PretrainConfig

    assert not METHODS.get("compress").pretraining
    cfg = PretrainConfig.model_validate({"method": {"name": "compress"}, "data": {"clean": "x"}})
    assert measure_throughput(cfg) == 0.0  # no model built: distillation needs a teacher


# -- an attack -------------------------------------------------------------------------------------


class CornerOptions(AttackOptions):
    corner: Literal["top-left", "bottom-right"] = "top-left"


class CornerAttack(ImageAttack[CornerOptions]):
    """The trigger in a corner of a background image (a toy)."""

    name = "corner"
    summary = "trigger in a corner of a background"
    options = CornerOptions
    needs = frozenset({"backgrounds"})

    def prepare(self) -> None:
        super().prepare()
        from corruptencoder.poison.base import BackgroundSet

        self.backgrounds = BackgroundSet.scan(self.target.backgrounds)

    def plan(self, rng: np.random.Generator, count: int | None = None) -> list[Job]:
        return [{"background": int(rng.integers(len(self.backgrounds.paths)))} for _ in range(self.target.num)]

    def render(self, job: Job) -> RenderResult:
        canvas, path, skipped = self.backgrounds.load(job["background"])
        tw, th = self.trigger_size
        x, y = (0, 0) if self.opts.corner == "top-left" else (canvas.size[0] - tw, canvas.size[1] - th)
        self.paste_trigger(canvas, (x, y, x + tw, y + th))
        rec = self.base_record(job) | {"image_size": list(canvas.size), "trigger_box": [x, y, x + tw, y + th],
                                       "object_box": None, "background": path}
        return RenderResult(canvas, rec, skipped)


def test_a_new_attack_is_one_class(registered: Any, assets: dict[str, Path], tmp_path: Path) -> None:
    from corruptencoder.cli import main
    from corruptencoder.poison.craft import craft
    from corruptencoder.poison.manifest import read_manifest

    registered(ATTACKS, CornerAttack)
    cfg = CraftConfig.model_validate({"targets": [{"name": "t", "attack": "corner", "num": 3, "corner": "bottom-right",
                                                   "backgrounds": [str(assets["backgrounds"])], "trigger_size": 5}]})
    craft(cfg, tmp_path / "o", progress=False)
    for r in read_manifest(tmp_path / "o"):
        w, h = r["image_size"]
        assert r["trigger_box"] == [w - 5, h - 5, w, h]
    with pytest.raises(ConfigError, match="alpha: unknown key"):  # another attack's option is not this one's
        validate(CraftConfig, {"targets": [{"name": "t", "attack": "corner", "alpha": 0.5, "backgrounds": ["x"]}]},
                 "craft")
    # the command line offers it, with its option as a flag
    assert main(["craft", "corner", "--target", "t", "--backgrounds", str(assets["backgrounds"]), "--num", "2",
                 "--trigger-size", "4", "--corner", "top-left", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert all(r["trigger_box"][:2] == [0, 0] for r in read_manifest(tmp_path / "cli"))


def test_a_new_attack_reaches_the_defence_table(registered: Any) -> None:
    """The defence table's columns come from the attacks in the results, placed and titled by their classes."""
    from corruptencoder.experiment.report import defence_table

    class Corner(CornerAttack):
        title = "Corner"

    registered(ATTACKS, Corner)

    def row(attack: str, defence: str, acc: float, asr: float) -> dict[str, Any]:
        return {"arm": f"{defence}/{attack}", "attack": attack, "defence": defence, "method": "moco", "target": "fish",
                "epoch": "final", "sweep": None, "ca": acc, "ba": acc, "asr": asr, "asr_std": None,
                "pretrain_seconds": 10.0}

    attacks = ["corner", "corruptencoder-mm", "carlini-terzis", "corruptencoder", "ssl-backdoor", "none", "gone"]
    aggs = [row(a, d, 60.0 + i, float(i)) for d in ("none", "no-crop") for i, a in enumerate(attacks)]
    lines = defence_table(aggs)
    assert lines[0] == ("| defence | method | target | No attack: CA / ASR | SSL-Backdoor: BA / ASR | CorruptEncoder: "
                        "BA / ASR | Carlini-Terzis: BA / ASR | CorruptEncoder (multi-modal): BA / ASR | Corner: BA / "
                        "ASR | gone: BA / ASR | s per encoder | peak MB (training process) |")
    # "gone" (a name the registry does not know) comes last
    for label in ("no defence", "no-crop"):
        assert f"| {label} | moco | fish | 65.0 / 5.0 | 64.0 / 4.0 | 63.0 / 3.0 | 62.0 / 2.0 | 61.0 / 1.0 | " \
               f"60.0 / 0.0 | 66.0 / 6.0 | 10 | – |" in lines


# -- defences --------------------------------------------------------------------------------------


class DropFolder(DataDefence):
    """A toy poison search: scores a file 1 when its path contains ``needle``, and drops those."""

    name = "drop-folder"
    summary = "drop files whose path contains a string"

    class Options(DefenceOptions):
        needle: str = "images"

    options = Options

    def filter(self, ctx: DefenceContext) -> FilterResult:
        assert ctx.encoder is not None and ctx.encoder.is_file()  # trained on the poisoned set
        needle = self.opts.needle  # type: ignore[attr-defined]
        scores = {f: float(needle in Path(f).parts) for f in ctx.files}
        return FilterResult([f for f, s in scores.items() if s == 0], scores, {"checked": len(ctx.files)})


class Inspect(EncoderDefence):
    """A toy encoder inspection: a verdict only, no new encoder."""

    name = "inspect"
    summary = "say something about the encoder"

    def apply(self, ctx: DefenceContext) -> EncoderResult:
        assert ctx.encoder is not None
        return EncoderResult(None, {"verdict": "looked", "size": ctx.encoder.stat().st_size})


def test_new_defences_run_through_the_experiment_runner(registered: Any, tmp_path: Path) -> None:
    registered(DEFENCES, DropFolder)
    registered(DEFENCES, Inspect)
    cfg = {
        "name": "toy-defences", "preset": "cpu-tiny", "seeds": [0],
        "world": {"image_size": 32, "n_pretrain": 80, "n_train_per_class": 4, "n_test_per_class": 4,
                  "n_backgrounds": 16, "n_support": 3},
        "defaults": {"num_poisons": 10, "trigger_size": 2, "eval_trigger_size": 3, "epochs": 1, "batch_size": 16},
        "pretrain": {"method": {"queue_size": 32}, "backbone": {"width": 0.25}, "trainer": {"threads": 1}},
        "arms": [{"name": "drop", "defence": "drop-folder"},
                 {"name": "look", "defence": "inspect"}],
        "evaluation": {"probe_epochs": 2},
    }
    run, res = run_config(tmp_path, cfg)
    drop = next(r for r in res["rows"] if r["arm"] == "drop")
    det = drop["defence_report"]["detection"]
    assert det["poisons"] == 10 and det["removed_poisons"] == 10 and det["recall"] == 100.0
    assert drop["detect_precision"] == 100.0 and drop["detect_auroc"] == 1.0
    look = next(r for r in res["rows"] if r["arm"] == "look")
    assert look["defence_report"]["verdict"] == "looked"
    # the kept list trained a new encoder without the poisons
    kept = list((run / "cache" / "defences").glob("*/keep.txt"))
    assert kept and not any("images" in Path(f).parts for k in kept for f in k.read_text().splitlines())
    bad = dict(cfg, arms=[{"name": "x", "defence": "drop-folder", "defence_args": {"needel": "a"}}])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="needel: unknown key"):
        from corruptencoder.experiment.config import load_experiment

        load_experiment(path)


class LargeCropsOptions(DefenceOptions):
    low: float = 0.5


class LargeCrops(ViewDefence[LargeCropsOptions]):
    """A toy view-time defence: only large crops (an existing ``views`` key; a new crop *policy* would also need
    its sampler in ssl/crops.py, see docs/architecture.md)."""

    name = "large-crops"
    summary = "crop at least ``low`` of the image"
    options = LargeCropsOptions

    def pretrain_patch(self) -> dict[str, Any]:
        return {"views": {"scale": [self.opts.low, 1.0]}}

    def label(self) -> str:
        return f"large crops (>= {self.opts.low:g})"


def test_a_new_view_defence_runs_through_the_experiment_runner(registered: Any, tmp_path: Path) -> None:
    registered(DEFENCES, LargeCrops)
    cfg = {
        "name": "toy-views", "preset": "cpu-tiny", "seeds": [0],
        "world": {"image_size": 32, "n_pretrain": 60, "n_train_per_class": 4, "n_test_per_class": 4,
                  "n_backgrounds": 12},
        "defaults": {"num_poisons": 6, "trigger_size": 2, "eval_trigger_size": 3, "epochs": 1, "batch_size": 16},
        "pretrain": {"method": {"queue_size": 32}, "backbone": {"width": 0.25}, "trainer": {"threads": 1}},
        "arms": [{"name": "big", "defence": "large-crops", "defence_args": {"low": 0.6}}],
        "evaluation": {"probe_epochs": 2},
    }
    run, res = run_config(tmp_path, cfg)
    big = next(r for r in res["rows"] if r["arm"] == "big")
    assert big["defence"] == "large-crops" and big["defence_label"] == "large crops (>= 0.6)"
    scales = sorted(tuple(yaml.safe_load(c.read_text())["views"]["scale"] or ())
                    for c in (run / "cache" / "encoders").glob("*/config.yaml"))
    assert scales == [(0.6, 1.0), (0.6, 1.0)]  # the attacked encoder and its clean twin, both under the defence


def test_unknown_names_list_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="use one of .*corruptencoder"):
        ATTACKS.get("nope")
    with pytest.raises(ConfigError, match="use one of .*moco"):
        METHODS.get("nope")
    assert {"localized", "no-crop", "compress"} <= set(DEFENCES.names())
    assert METHODS.module_names() == sorted(METHODS.names())  # module name = method name (cheap help texts)

