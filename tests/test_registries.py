"""The three extension axes: a new method, attack or defence is one class (one file) and the rest of the
toolkit (configs, CLI, presets, runner) picks it up. Each test registers a toy entry, uses it through the
public entry points, and removes it again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

from corruptencoder.defend.base import (
    DEFENCES,
    DataDefence,
    DefenceContext,
    DefenceOptions,
    EncoderDefence,
    EncoderResult,
    FilterResult,
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
    from corruptencoder.cli import main

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
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--quiet"]) == 0
    res = json.loads((run / "results.json").read_text())
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
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="needel: unknown key"):
        from corruptencoder.experiment.config import load_experiment

        load_experiment(path)


def test_unknown_names_list_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="use one of .*corruptencoder"):
        ATTACKS.get("nope")
    with pytest.raises(ConfigError, match="use one of .*moco"):
        METHODS.get("nope")
    assert {"localized", "no-crop", "compress"} <= set(DEFENCES.names())
    assert METHODS.module_names() == sorted(METHODS.names())  # module name = method name (cheap help texts)

