"""The crop-pair analyser turns the paper's alpha/beta arguments into numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from corruptencoder.analysis.crop_pairs import estimate, policy_for, sweep, synthetic_poisons
from corruptencoder.cli import main


def test_no_crop_never_splits() -> None:
    s = estimate(synthetic_poisons(0.5, 0.5), policy_for("moco", "none"), 20)
    assert s.split == 0.0 and s.both == 1.0


def test_alpha_half_maximises_split_and_localized_cuts_it() -> None:
    rows = {r["alpha"]: r for r in sweep([0.2, 0.5, 0.8], [0.5], policy_for("moco"), 120)}
    assert rows[0.5]["split"] > rows[0.2]["split"] and rows[0.5]["split"] > rows[0.8]["split"]
    assert abs(rows[0.5]["one_object"] - 0.5) < 0.08  # ~ 2 alpha (1 - alpha) at alpha = 0.5
    loc = sweep([0.5], [0.5], policy_for("moco", "localized", 0.2), 120)[0]
    assert loc["split"] < 0.3 * rows[0.5]["split"]


def test_smaller_beta_reaches_the_trigger_more_often() -> None:
    """p1 (a view holds the trigger) and the split probability grow as beta shrinks (Section 3.1)."""
    rows = {r["beta"]: r for r in sweep([0.5], [0.1, 0.9], policy_for("moco"), 200)}
    assert rows[0.1]["trigger_view"] > rows[0.9]["trigger_view"]
    assert rows[0.1]["split"] > rows[0.9]["split"]


def test_cli_on_a_poison_folder(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft

    craft(CraftConfig.model_validate({"targets": [{"name": "dog", "num": 8, "trigger_size": 5,
          "references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])]}]}),
          tmp_path / "p", progress=False)
    assert main(["analyze", "crops", str(tmp_path / "p"), "--pairs", "20", "--no-grid",
                 "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "localized" in out and (tmp_path / "a.json").is_file()


def test_scale_override_sets_the_views_crop_range() -> None:
    """--scale predicts an arm trained with another views.scale: large crops hold both, so they rarely split."""
    from corruptencoder.analysis.crop_pairs import crop_report

    def grid(scale: tuple[float, float] | None) -> dict[str, float]:
        _, result = crop_report(None, "moco", ("random",), alphas=[0.5], betas=[0.5], pairs=160, scale=scale)
        assert isinstance(result["grid"], dict)
        return dict(result["grid"]["random"][0]) | {"scale": result["scale"]}

    wide, default = grid((0.8, 1.0)), grid(None)
    assert default["scale"] == [0.2, 1.0] and wide["scale"] == [0.8, 1.0]  # MoCo-v2's own range unless told
    assert wide["split"] < default["split"] and wide["both"] > default["both"]
