"""PatchSearch and DECREE as experiment arms, end to end on a tiny world: detection metrics from the manifest,
DECREE's PL1 for the attacked and the clean encoder, and the report's detection table."""

from __future__ import annotations

from pathlib import Path

from conftest import run_config


def test_detection_arms_run_and_report(tmp_path: Path) -> None:
    cfg = {
        "name": "tiny-detection", "preset": "cpu-tiny", "seeds": [0],
        "world": {"image_size": 32, "n_pretrain": 80, "n_train_per_class": 4, "n_test_per_class": 4,
                  "n_backgrounds": 16, "n_support": 3},
        "defaults": {"num_poisons": 10, "trigger_size": 4, "eval_trigger_size": 3, "epochs": 1, "batch_size": 16},
        "pretrain": {"method": {"queue_size": 32}, "backbone": {"width": 0.25}, "trainer": {"threads": 1}},
        "arms": [
            {"name": "none/corruptencoder"},
            {"name": "patchsearch/corruptencoder", "defence": "patchsearch",
             "defence_args": {"clusters": 4, "flip_images": 16, "rounds": 1, "classifier_steps": 3,
                              "classifier_models": 1, "classifier_batch": 8, "classifier_width": 0.125}},
            {"name": "decree/corruptencoder", "defence": "decree",
             "defence_args": {"steps": 6, "images": 16, "batch_size": 8}},
        ],
        "evaluation": {"probe_epochs": 2},
    }
    run, res = run_config(tmp_path, cfg)
    ps = next(r for r in res["rows"] if r["arm"] == "patchsearch/corruptencoder")
    det = ps["defence_report"]["detection"]
    assert det["poisons"] == 10 and det["removed"] == ps["defence_report"]["removed"]
    assert ps["detect_auroc"] is not None and 0.0 <= ps["detect_auroc"] <= 1.0
    assert ps["defence_report"]["images"] == 90 and ps["defence_seconds"] >= 0
    dec = next(r for r in res["rows"] if r["arm"] == "decree/corruptencoder")
    assert 0.0 < dec["decree_pl1"] <= 1.0 and 0.0 < dec["decree_pl1_clean"] <= 1.0
    assert dec["decree_verdict"] in ("backdoored", "clean") and dec["decree_detected"] in (0.0, 1.0)
    agg = next(a for a in res["aggregates"] if a["arm"] == "decree/corruptencoder")
    assert abs(agg["decree_pl1"] - dec["decree_pl1"]) < 1e-3 and agg["decree_threshold"] == 0.1
    report = (run / "report.md").read_text()
    assert "## Detection defences" in report
    assert "| PatchSearch | moco | corruptencoder |" in report and "PL1 attacked" in report
    assert "| DECREE | moco | corruptencoder |" in report
    # the defences' own outputs: PatchSearch's contact sheet, DECREE's inverted trigger (attacked and clean twin)
    work = run / "cache" / "defences"
    assert list(work.glob("*/work/patchsearch_top.png"))
    assert len(list(work.glob("*/work/decree_inverted.png"))) == 2
    header = (run / "results.csv").read_text().splitlines()[0]
    assert "decree_pl1" in header and "detect_auroc" in header
