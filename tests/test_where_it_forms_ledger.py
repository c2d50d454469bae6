"""benchmarks/where_it_forms.py keeps its measurements in a ledger: a fresh machine adds arms, never erases them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("where_it_forms", ROOT / "benchmarks" / "where_it_forms.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(config: str, arm: str, epoch: object, asr: float) -> dict[str, object]:
    return {"config": config, "arm": arm, "epoch": epoch, "attack": "corruptencoder", "asr": asr,
            "no_attack_asr": 2.0, "trials": 1, "measured": "2026-12-02", "unused_field": 1}


def test_merge_replaces_a_remeasured_arm_and_keeps_the_rest(tmp_path: Path) -> None:
    w = _bench()
    old = [_row("a", "x/1", "final", 10.0), _row("a", "x/1", 10, 5.0), _row("a", "x/2", "final", 20.0),
           _row("b", "x/1", "final", 30.0)]
    new = [_row("a", "x/1", "final", 40.0)]
    rows = w.merge(old, new)
    got = {(r["config"], r["arm"], r["epoch"]): r["asr"] for r in rows}
    # x/1 of config a re-measured: its old snapshot rows go too; x/2 and config b's x/1 stay as they were
    assert got == {("a", "x/1", "final"): 40.0, ("a", "x/2", "final"): 20.0, ("b", "x/1", "final"): 30.0}
    assert all("unused_field" not in r for r in rows if r["asr"] == 40.0)
    path = tmp_path / "ledger.json"
    w.write_ledger(path, rows, ["a caveat"])
    assert w.read_ledger(path) == rows and json.loads(path.read_text())["rows"] == rows
    assert w.read_caveats(path) == ["a caveat"]


def test_the_committed_ledger_renders_the_table() -> None:
    w = _bench()
    rows = w.read_ledger(ROOT / "docs" / "where-it-forms.json")
    lines = w.table(rows)
    assert len(lines) == 2 + len(w.final_rows(rows)) and any("corruptencoder" in line for line in lines)


def test_the_table_shows_the_control_patch_where_it_was_measured() -> None:
    w = _bench()
    rows = [_row("a", "x/1", "final", 50.0) | {"control_asr": 4.5, "control_asr_clean": 2.0},
            _row("a", "x/2", "final", 20.0)]  # measured before the control existed
    lines = w.table(rows)
    assert "control ASR (clean)" in lines[0] and lines[0].count("|") == lines[1].count("|")
    assert "| 4.5 (2.0) |" in lines[2]
    assert lines[3].count("| – |") >= 1 and lines[3].count("|") == lines[0].count("|")
    solid = _row("a", "x/3", "final", 80.0) | {"control_asr": 5.0, "control_asr_clean": 3.0,
                                               "solid_control_asr": 9.0, "solid_control_asr_clean": 4.0}
    assert "| 5.0 (3.0); solid 9.0 (4.0) |" in w.table([solid])[2]  # a solid trigger's second control
    rotated = _row("a", "x/4", "final", 60.0) | {"control_asr": 5.0, "control_asr_clean": 3.0,
                                                 "rotated_control_asr": 20.0, "rotated_control_asr_clean": 2.5}
    assert "| 5.0 (3.0); rotated 20.0 (2.5) |" in w.table([rotated])[2]  # a patterned trigger's second control
    assert "rotated_control_asr_clean" in w.KEEP  # the ledger keeps it


def test_asr_by_class_table_and_its_rank_correlation() -> None:
    w = _bench()
    row = _row("a", "x/1", "final", 20.0) | {
        "asr_by_class": {"p": 0.0, "q": 10.0, "r": 34.0}, "asr_by_class_clean": {"p": 0.0, "q": 2.0, "r": 1.0},
        "class_accuracy_clean": {"p": 94.0, "q": 86.0, "r": 66.0, "t": 90.0}}
    lines = w.by_class([row])
    assert lines[0].startswith("| arm | p | q | r |") and "| 34 (1) |" in lines[2] and lines[2].endswith("| -1.00 |")
    assert w.rank_corr({"p": 1.0, "q": 2.0}, {"p": 1.0, "q": 2.0}) is None  # too few classes to rank


def test_an_arm_with_several_targets_gets_a_row_per_target() -> None:
    """Figure 8a/8b's 'together' arms score each target on its own: the along-training table kept only the first
    target's row, and the by-class table named three rows alike."""
    w = _bench()
    rows = [_row("a", "t/together", e, asr) | {"target": t}
            for t, base in (("boat", 60.0), ("house", 90.0)) for e, asr in ((10, base - 5), ("final", base))]
    rows.append(_row("a", "t/alone", 10, 50.0) | {"target": "boat"})
    trail = w.along_training(rows)
    assert trail[2:] == ["| t/alone | 50.0 / 2.0 |", "| t/together (boat) | 55.0 / 2.0 |",
                         "| t/together (house) | 85.0 / 2.0 |"]
    split = w.by_class([r | {"asr_by_class": {"p": r["asr"]}} for r in rows if r["epoch"] == "final"])
    assert [line.split(" |")[0] for line in split[2:]] == ["| t/together (boat)", "| t/together (house)"]
