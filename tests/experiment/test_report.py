"""Report tables from aggregates alone: cells that contain '|', the zero-shot table of CLIP arms."""

from __future__ import annotations

from typing import Any

from corruptencoder.experiment.report import _table, zero_shot_table


def _agg(**kw: Any) -> dict[str, Any]:
    base = {"arm": "ce", "target": "fish", "epoch": "final", "sweep": None, "zs_ca": None, "zs_ba": None,
            "zs_asr": None, "zs_no_attack_asr": None}
    return {**base, **kw}


def test_pipe_inside_a_cell_is_escaped() -> None:
    row = _table(["check", "value"], [["|BA - CA| <= 3", "1.0"]])[2]
    assert row == "| \\|BA - CA\\| <= 3 | 1.0 |"
    assert row.replace("\\|", "").count("|") == 3


def test_zero_shot_table_only_for_arms_with_zero_shot_scores() -> None:
    assert zero_shot_table([_agg()]) == []
    lines = zero_shot_table([_agg(), _agg(arm="clip-ce", zs_ca=74.7, zs_ba=70.0, zs_asr=6.667, zs_no_attack_asr=3.778,
                                          zs_control_asr=1.25)])
    assert len(lines) == 3
    assert lines[0].endswith("| no-attack ASR | control ASR |")
    assert lines[2] == "| clip-ce | fish | 74.7 | 70.0 | 6.7 | 3.8 | 1.2 |"
    assert zero_shot_table([_agg(zs_ca=74.7, zs_asr=1.0)])[2].endswith("| – |")  # metrics of before the control


def test_multimodal_checks_compare_with_carlini_terzis() -> None:
    from corruptencoder.experiment.results import target_checks

    common = {"epoch": "final", "sweep": None, "defence": "none", "method": "clip", "target": "mushroom"}
    aggs = [{**common, "arm": "ct", "attack": "carlini-terzis", "asr": 1.0, "ca": 70.0, "ba": 70.0,
             "zs_asr": 0.0, "zs_ca": 74.0, "zs_ba": 70.0},
            {**common, "arm": "ce", "attack": "corruptencoder-mm", "asr": 40.0, "ca": 70.0, "ba": 71.0,
             "zs_asr": 5.0, "zs_ca": 74.0, "zs_ba": 70.0}]
    checks = {c["check"]: c for c in target_checks(aggs)}
    assert checks["CorruptEncoder ASR >= Carlini-Terzis ASR + 20 (mushroom, probe)"]["ok"]
    assert checks["CorruptEncoder ASR >= Carlini-Terzis ASR + 20 (mushroom, probe)"]["value"] == 39.0
    assert "CorruptEncoder ASR >= Carlini-Terzis ASR + 20 (mushroom, zero-shot)" not in checks  # no paper claim
    assert checks["|BA - CA| <= 3 (mushroom, clip, probe)"]["ok"]
    assert not checks["|BA - CA| <= 3 (mushroom, clip, zero-shot)"]["ok"]


def test_checks_judge_an_arm_against_the_baseline_of_its_own_group() -> None:
    """11px/corruptencoder was compared with 8px/carlini-terzis (the first baseline of its target)."""
    from corruptencoder.experiment.results import target_checks

    common = {"epoch": "final", "sweep": None, "defence": "none", "target": "boat", "ca": 70.0, "ba": 70.0}
    aggs = [{**common, "method": "clip", "arm": "8px/ct", "attack": "carlini-terzis", "asr": 1.0},
            {**common, "method": "clip", "arm": "11px/ct", "attack": "carlini-terzis", "asr": 30.0},
            {**common, "method": "clip", "arm": "11px/ce", "attack": "corruptencoder-mm", "asr": 40.0},
            {**common, "method": "moco", "arm": "8px/saha", "attack": "ssl-backdoor", "asr": 2.0},
            {**common, "method": "moco", "arm": "11px/saha", "attack": "ssl-backdoor", "asr": 20.0},
            {**common, "method": "moco", "arm": "11px/ce", "attack": "corruptencoder", "asr": 70.0}]
    checks = {c["check"]: c for c in target_checks(aggs)}
    assert checks["CorruptEncoder ASR >= Carlini-Terzis ASR + 20 (boat, probe)"]["detail"] == "40.0 vs 30.0"
    assert checks["CorruptEncoder ASR >= 3x SSL-Backdoor ASR (boat)"]["detail"] == "70.0 vs 20.0"


def test_defence_table_has_one_row_per_defence_with_distillation_time() -> None:
    from corruptencoder.defend.base import make_defence
    from corruptencoder.experiment.report import defence_table

    def row(arm: str, attack: str, defence: str, acc: float, asr: float, secs: float,
            args: dict[str, Any] | None = None) -> dict[str, Any]:
        d = make_defence(defence, args) if defence != "none" else None
        return {"arm": arm, "attack": attack, "defence": defence, "method": "moco", "target": "fish",
                "epoch": "final", "sweep": None, "ca": acc, "ba": acc, "asr": asr, "asr_std": None,
                "pretrain_seconds": secs, "defence_label": d.label() if d else "no defence",
                "defence_knob": d.knob() if d else 0.0,
                "pretrain_peak_rss_mb": 1000 + secs if defence == "none" else None}

    aggs = [row("none/na", "none", "none", 70, 5, 100), row("none/ce", "corruptencoder", "none", 69, 40, 110),
            row("c5/ce", "corruptencoder", "compress", 60, 6, 30, {"fraction": 0.05}),
            row("c20/ce", "corruptencoder", "compress", 65, 7, 50, {"fraction": 0.2})]
    lines = defence_table(aggs)
    assert lines[0].startswith("| defence | method | target | No attack: CA / ASR | CorruptEncoder: BA / ASR |")
    assert lines[0].endswith("| s per encoder | peak MB (training process) |")
    assert lines[2] == "| no defence | moco | fish | 70.0 / 5.0 | 69.0 / 40.0 | 105 | 1110 |"  # the larger peak
    assert "| CompRess, 5 % clean data | moco | fish | – | 60.0 / 6.0 | 30 | – |" in lines  # not measured: a dash
    assert "| CompRess, 20 % clean data | moco | fish | – | 65.0 / 7.0 | 50 | – |" in lines
    assert defence_table(aggs[:2]) == []  # one defence only: the main table says it all


def test_defence_table_takes_the_no_attack_arm_not_the_base_it_continues() -> None:
    """The demo's base (100 epochs, the arms' starting point) must not stand in for its 10-epoch no-attack arm."""
    from corruptencoder.experiment.report import defence_table, init_sources

    def row(arm: str, attack: str, defence: str, acc: float, asr: float, secs: float) -> dict[str, Any]:
        return {"arm": arm, "attack": attack, "defence": defence, "method": "moco", "target": "boat",
                "epoch": "final", "sweep": None, "ca": acc, "ba": acc, "asr": asr, "asr_std": None,
                "pretrain_seconds": secs, "defence_label": None, "defence_knob": None}

    config = {"defaults": {"init": "arm:base@0"}, "arms": [{"name": "base", "attack": "none", "init": None},
                                                            {"name": "no-attack", "attack": "none"}]}
    assert init_sources(config) == {"base"} and init_sources(None) == set()
    aggs = [row("base", "none", "none", 79.5, 1.9, 900), row("no-attack", "none", "none", 81.6, 1.7, 70),
            row("corruptencoder", "corruptencoder", "none", 81.1, 31.8, 72),
            row("ce-localized", "corruptencoder", "localized", 81.7, 2.9, 71)]
    lines = defence_table(aggs, init_sources(config))
    assert "| no defence | moco | boat | 81.6 / 1.7 | 81.1 / 31.8 | 71 | – |" in lines  # base's 900 s left out
    assert "| no defence | moco | boat | 79.5 / 1.9 |" in "\n".join(defence_table(aggs))  # not told: first found
    # a start that is the only arm of its kind stays: nothing else can fill its cell
    assert "79.5 / 1.9" in "\n".join(defence_table(aggs[:1] + aggs[2:], {"base"}))


def _verdict(asr: float, clean: float, control: float | None = None, control_clean: float | None = None,
             solid: float | None = None, solid_clean: float | None = None, rotated: float | None = None,
             rotated_clean: float | None = None, sibling: float | None = None,
             sibling_clean: float | None = None) -> str:
    from corruptencoder.experiment.report import demo_verdict

    agg = {"epoch": "final", "sweep": None, "attack": "corruptencoder", "defence": "none", "asr": asr,
           "no_attack_asr": clean, "reference_accuracy": 100.0, "pull_delta": 0.1, "pull_delta_clean": 0.02,
           "control_asr": control, "control_asr_clean": control_clean, "solid_control_asr": solid,
           "solid_control_asr_clean": solid_clean, "rotated_control_asr": rotated,
           "rotated_control_asr_clean": rotated_clean, "sibling_control_asr": sibling,
           "sibling_control_asr_clean": sibling_clean}
    return demo_verdict({"aggregates": [agg]})


def test_demo_verdict_says_whether_a_patterned_trigger_is_keyed_to_its_arrangement() -> None:
    assert "answers the trigger's arrangement" in _verdict(40.0, 2.0, 3.0, 2.0, rotated=10.0, rotated_clean=3.0)
    assert "in any arrangement" in _verdict(40.0, 2.0, 3.0, 2.0, rotated=30.0, rotated_clean=3.0)
    assert "rotated control" not in _verdict(40.0, 2.0, 3.0, 2.0)  # measured before it
    assert "rotated control" not in _verdict(5.0, 2.0, 3.0, 2.0, rotated=4.0)  # no backdoor: no control reading


def test_demo_verdict_says_whether_an_image_trigger_is_keyed_to_itself_or_to_its_kind() -> None:
    assert "not any trigger of its kind" in _verdict(40.0, 2.0, 3.0, 2.0, sibling=6.0, sibling_clean=3.0)
    assert "answers triggers of this kind" in _verdict(40.0, 2.0, 3.0, 2.0, sibling=30.0, sibling_clean=3.0)
    assert "sibling control" not in _verdict(40.0, 2.0, 3.0, 2.0)  # a trigger without a sibling


def test_demo_verdict_says_whether_a_solid_trigger_is_keyed_to_its_colour() -> None:
    assert "answers the trigger's colour" in _verdict(40.0, 2.0, 3.0, 2.0, 4.0, 3.0)
    assert "answers any solid patch" in _verdict(40.0, 2.0, 3.0, 2.0, 35.0, 3.0)
    assert "solid control" not in _verdict(40.0, 2.0, 3.0, 2.0)  # a random trigger has none


def test_main_table_has_a_solid_control_column_only_where_a_trigger_is_solid() -> None:
    from corruptencoder.experiment.report import main_table

    a = {"arm": "ce", "method": "moco", "defence": "none", "target": "boat", "epoch": "final", "sweep": None,
         "ca": 80.0, "ca_std": 0.0, "ba": 80.0, "ba_std": 0.0, "asr": 60.0, "asr_std": 0.0, "no_attack_asr": 2.0,
         "control_asr": 3.0, "reference_accuracy": 100.0, "pull_delta": 0.1, "pull_delta_clean": 0.0}
    assert "solid control" not in main_table([a])[0]
    lines = main_table([a, a | {"arm": "ce-purple", "solid_control_asr": 4.5}])
    assert "| control ASR | solid control ASR |" in lines[0]
    assert "| 3.0 | – |" in lines[2] and "| 3.0 | 4.5 |" in lines[3]
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    lines = main_table([a | {"rotated_control_asr": 7.5}, a | {"arm": "ce-purple", "solid_control_asr": 4.5}])
    assert "| control ASR | solid control ASR | rotated control ASR |" in lines[0]
    assert "| 3.0 | – | 7.5 |" in lines[2] and "| 3.0 | 4.5 | – |" in lines[3]


def test_demo_verdict_says_whether_the_backdoor_answers_its_own_trigger() -> None:
    assert "answers its own trigger" in _verdict(40.0, 2.0, 3.0)
    assert "not specific to its trigger" in _verdict(40.0, 2.0, 30.0)
    assert "answers its own trigger" in _verdict(40.0, 2.0, 30.0, 25.0)  # a patch the clean encoder already sends there
    assert "not specific" in _verdict(31.8, 1.7, 40.6, 4.2) and "answers its own" in _verdict(67.0, 15.9, 4.6, 4.2)
    assert "control ASR" not in _verdict(40.0, 2.0) and "control ASR" not in _verdict(5.0, 2.0, 4.0)


def test_demo_verdict_reads_the_run_and_names_the_base_spread() -> None:
    formed, weak = _verdict(13.9, 2.3), _verdict(5.6, 1.9)
    assert "formed at this scale: +11.6 points" in formed and "did NOT form" not in formed
    assert "did NOT form" in weak and "+3.7 points" in weak
    for text in (formed, weak):  # a user's base is another base: the spread over bases is stated either way
        assert "three bases" in text and "67.0, 51.9 and 38.7 % with its purple patch" in text
        assert "every random patch opened as well" in text and "44.0-65.4 % with 11 px" in text
        assert "82.2-85.9 % with the purple patch" in text
    # where it forms: the keyed trigger's figures and the random ones' control, not a stale "no"
    assert "83.8 +- 1.5 %" in weak and "2.1x" in weak and "control 46.9 and 33.5 %" in weak
    assert "not reached" not in weak


def test_rows_and_aggregates_say_where_the_encoder_was_trained() -> None:
    from corruptencoder.experiment.results import aggregate, trained_on

    assert trained_on(None) is None  # an encoder from before run.json recorded it
    cpu = trained_on({"cpu": "AMD EPYC", "cpu_capability": "AVX512"})
    gpu = trained_on({"cpu": "x", "cpu_capability": "AVX2", "gpu": "NVIDIA H200", "cuda": "13.0"})
    assert cpu == "AMD EPYC (AVX512)" and gpu == "NVIDIA H200 (CUDA 13.0)"
    row = {"experiment": "e", "arm": "a", "attack": "corruptencoder", "method": "moco", "defence": "none",
           "sweep": None, "sweep_value": None, "target": "boat", "task": "demo", "epoch": "final", "asr": 1.0}
    agg = aggregate([{**row, "seed": 0, "trained_on": cpu}, {**row, "seed": 1, "trained_on": gpu}])[0]
    assert agg["trials"] == 2 and agg["trained_on"] == f"{cpu}; {gpu}"


def test_a_list_valued_sweep_aggregates_per_value() -> None:
    """Sweeping attack_args.location ([lo, hi] pairs) crashed the run at its very end (a list is no dict key)."""
    from corruptencoder.experiment.results import aggregate

    row = {"experiment": "e", "attack": "ssl-backdoor", "method": "moco", "defence": "none",
           "sweep": "attack_args.location", "target": "boat", "task": "demo", "epoch": "final"}
    rows = [{**row, "arm": f"location={v}", "sweep_value": v, "seed": s, "asr": asr}
            for v, asr in (([0.2, 0.8], 10.0), ([0.25, 0.75], 30.0)) for s in (0, 1)]
    aggs = aggregate(rows)
    assert [(a["sweep_value"], a["trials"], a["asr"]) for a in aggs] == [([0.2, 0.8], 2, 10.0), ([0.25, 0.75], 2, 30.0)]
