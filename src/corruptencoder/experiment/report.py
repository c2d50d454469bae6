"""``report.md`` and ``figures/*.png`` from ``results.json`` alone (``corruptencoder report RUN_DIR``)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from corruptencoder.errors import UserError
from corruptencoder.evaluate.controls import legend, shown_controls, verdict_lines


def _fmt(v: Any, std: Any = None, digits: int = 1) -> str:
    if v is None:
        return "–"
    try:
        s = f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return str(v)
    if std not in (None, 0, 0.0):
        s += f" ± {float(std):.{digits}f}"
    return s


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    # a '|' inside a cell (e.g. "|BA - CA|") would split it: escape it
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def _final(aggs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The main table's rows: final encoders, not sweep points."""
    return [a for a in aggs if a["epoch"] == "final" and a["sweep"] is None]


def main_table(aggs: Sequence[dict[str, Any]]) -> list[str]:
    rows = _final(aggs)
    controls = shown_controls(rows)
    body = []
    for a in rows:
        body.append([a["arm"], a["method"], a["defence"], a["target"], _fmt(a["ca"], a["ca_std"]),
                     _fmt(a["ba"], a["ba_std"]), _fmt(a["asr"], a["asr_std"]), _fmt(a["no_attack_asr"]),
                     *[_fmt(a.get(c.key)) for c in controls], _fmt(a["reference_accuracy"]),
                     _fmt(a["pull_delta"], None, 3) + " / " + _fmt(a["pull_delta_clean"], None, 3),
                     f"{a.get('top_triggered_class') or '–'} ({_fmt(a.get('top_triggered_share'))}%)"])
    return _table(["arm", "method", "defence", "target", "CA", "BA", "ASR", "no-attack ASR",
                   *[f"{c.name} ASR" for c in controls], "ref. acc", "pull Δ (attacked / clean)",
                   "top triggered class"], body)


def attack_columns(attacks: set[str]) -> list[tuple[str, str]]:
    """(attack, heading) of the defence table for the attacks present: no attack first, then the registered
    attacks by their ``table_order`` and name, under their ``title``; an attack the registry does not know
    (results.json of another version or plug-in) last, under its name."""
    from corruptencoder.poison.config import ATTACKS

    def place(name: str) -> tuple[int, int, str]:
        if name == "none":
            return (0, 0, name)
        return (1, ATTACKS.get(name).table_order, name) if name in ATTACKS else (2, 0, name)

    def heading(name: str) -> str:
        if name == "none":
            return "No attack"
        return (ATTACKS.get(name).title or name) if name in ATTACKS else name

    return [(n, heading(n)) for n in sorted(attacks, key=place)]


def init_sources(config: dict[str, Any] | None) -> set[str]:
    """Arms other arms continue from (``init: arm:NAME[@SEED]``): starting points, not arms of the comparison."""
    from corruptencoder.experiment.config import init_arm

    config = config or {}
    inits = [(config.get("defaults") or {}).get("init")] + [a.get("init") for a in config.get("arms") or []]
    return {parsed[0] for i in inits if isinstance(i, str) and (parsed := init_arm(i)) is not None}


def defence_table(aggs: Sequence[dict[str, Any]], starts: Collection[str] = frozenset()) -> list[str]:
    """Table 4's shape: one row per defence, (BA or CA, ASR) per attack, and the training time per encoder
    (for CompRess, the distillation alone). An arm in ``starts`` (a base the others continue from) gives way to
    another arm of the same attack and defence: the demo's no-attack cell is its 10-epoch twin, not the base."""
    def cell(a: dict[str, Any]) -> tuple[Any, ...]:
        return a["method"], a["target"], a["defence"], a.get("defence_knob"), a["attack"]

    rows = [a for a in aggs if a["epoch"] == "final" and a["sweep"] is None]
    taken = {cell(a) for a in rows if a["arm"] not in starts}
    rows = [a for a in rows if a["arm"] not in starts or cell(a) not in taken]
    if len({a["defence"] for a in rows}) < 2:
        return []
    attacks = attack_columns({a["attack"] for a in rows})
    # one group per (method, target, defence setting), ordered: no defence first, then by the defence's knob
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for a in rows:
        label = a.get("defence_label") or ("no defence" if a["defence"] == "none" else a["defence"])
        knob = a.get("defence_knob") or 0
        groups.setdefault((a["method"], a["target"], a["defence"] != "none", a["defence"], knob, label), []).append(a)
    body = []
    for (method, target, _, _, _, label), group in sorted(groups.items(), key=lambda kv: kv[0]):
        cells = []
        for key, _ in attacks:
            found = next((x for x in group if x["attack"] == key), None)
            acc = None if found is None else (found["ca"] if key == "none" else found["ba"])
            cells.append("–" if found is None else f"{_fmt(acc)} / {_fmt(found['asr'], found['asr_std'])}")
        secs = [a["pretrain_seconds"] for a in group if a.get("pretrain_seconds") is not None]
        peak = [a["pretrain_peak_rss_mb"] for a in group if a.get("pretrain_peak_rss_mb") is not None]
        body.append([label, method, target, *cells, f"{sum(secs) / len(secs):.0f}" if secs else "–",
                     f"{max(peak):.0f}" if peak else "–"])
    return _table(["defence", "method", "target", *[f"{n}: {'CA' if k == 'none' else 'BA'} / ASR" for k, n in attacks],
                   "s per encoder", "peak MB (training process)"], body)


def detection_table(aggs: Sequence[dict[str, Any]]) -> list[str]:
    """Detection defences beside Table 4. Data defences (PatchSearch): precision / recall of the removed files and
    AUROC of the poison score (from the manifest), the ASR before (the same arm undefended, where the config has
    it) and after re-training on what was kept, BA after. Encoder inspections (DECREE): PL1 of the attacked and of
    the clean encoder, and how often each was called backdoored at the threshold (over trials)."""
    rows = [a for a in aggs if a["epoch"] == "final" and a["sweep"] is None]
    undefended = {(a["attack"], a["method"], a["target"]): a for a in rows if a["defence"] == "none"}

    def secs(a: dict[str, Any]) -> str:
        return _fmt(a.get("defence_seconds"), None, 0)

    data, inspected = [], []
    for a in rows:
        label = a.get("defence_label") or a["defence"]
        if any(a.get(f"detect_{k}") is not None for k in ("precision", "recall", "auroc")):
            before = undefended.get((a["attack"], a["method"], a["target"]))
            asr_before = _fmt(before["asr"], before["asr_std"]) if before else "–"
            data.append([label, a["method"], a["attack"], a["target"],
                         _fmt(a.get("detect_precision"), a.get("detect_precision_std")),
                         _fmt(a.get("detect_recall"), a.get("detect_recall_std")),
                         _fmt(a.get("detect_auroc"), a.get("detect_auroc_std"), 3),
                         f"{asr_before} -> {_fmt(a['asr'], a['asr_std'])}",
                         _fmt(a["ba"], a["ba_std"]), _fmt(a["ca"], a["ca_std"]), secs(a)])
        if a.get("decree_pl1") is not None:
            clean = a.get("decree_detected_clean")
            inspected.append([label, a["method"], a["attack"], a["target"],
                              _fmt(a["decree_pl1"], a.get("decree_pl1_std"), 3),
                              _fmt(a.get("decree_pl1_clean"), a.get("decree_pl1_clean_std"), 3),
                              _fmt(a.get("decree_threshold"), None, 2),
                              _fmt(100 * a["decree_detected"] if a.get("decree_detected") is not None else None),
                              _fmt(100 * clean if clean is not None else None),
                              _fmt(a["asr"], a["asr_std"]), secs(a)])
    lines: list[str] = []
    if data:
        lines += _table(["defence", "method", "attack", "target", "precision %", "recall %", "AUROC",
                         "ASR before -> after", "BA after", "CA after", "s (defence)"], data) + [""]
    if inspected:
        lines += _table(["defence", "method", "attack", "target", "PL1 attacked", "PL1 clean", "threshold",
                         "attacked flagged %", "clean flagged %", "ASR", "s (defence)"], inspected) + [""]
    return lines[:-1] if lines else []


def zero_shot_table(aggs: Sequence[dict[str, Any]]) -> list[str]:
    """CLIP arms scored with the text tower and the prompts instead of a probe (beyond the paper)."""
    rows = [a for a in aggs if a["epoch"] == "final" and a["sweep"] is None and a.get("zs_ca") is not None]
    controls = shown_controls(rows, "zs_")
    body = [[a["arm"], a["target"], _fmt(a["zs_ca"], a.get("zs_ca_std")), _fmt(a["zs_ba"], a.get("zs_ba_std")),
             _fmt(a["zs_asr"], a.get("zs_asr_std")), _fmt(a["zs_no_attack_asr"]),
             *[_fmt(a.get("zs_" + c.key)) for c in controls]] for a in rows]
    return _table(["arm", "target", "CA", "BA", "ASR", "no-attack ASR", *[f"{c.name} ASR" for c in controls]],
                  body) if body else []


def training_table(aggs: Sequence[dict[str, Any]]) -> list[str]:
    rows = [a for a in aggs if a["epoch"] != "final"]
    if not rows:
        return []
    epochs = sorted({int(a["epoch"]) for a in rows})
    body = []
    for arm, target in sorted({(a["arm"], a["target"]) for a in rows}):
        cells = []
        for e in epochs:
            a = next((x for x in rows if x["arm"] == arm and x["target"] == target and int(x["epoch"]) == e), None)
            cells.append(_fmt(a["asr"], a["asr_std"]) + f" ({_fmt(a['pull_delta'], None, 3)})" if a else "–")
        body.append([arm, target, *cells])
    return _table(["arm", "target", *[f"epoch {e}" for e in epochs]], body)


def sweep_table(aggs: Sequence[dict[str, Any]], sweep: str) -> list[str]:
    rows = [a for a in aggs if a["epoch"] == "final" and a["sweep"] == sweep]
    body = [[str(a["sweep_value"]), a["target"], _fmt(a["ca"], a["ca_std"]), _fmt(a["ba"], a["ba_std"]),
             _fmt(a["asr"], a["asr_std"]), _fmt(a["reference_accuracy"]), _fmt(a["pull_delta"], None, 3)] for a in rows]
    return _table([sweep, "target", "CA", "BA", "ASR", "ref. acc", "pull Δ"], body)


def write_report(run_dir: Path, result: dict[str, Any]) -> Path:
    from corruptencoder.experiment import figures

    run_dir = Path(run_dir)
    aggs = result["aggregates"]
    figs = run_dir / "figures"
    lines = [f"# {result['experiment']}", ""]
    if result.get("description"):
        lines += [result["description"], ""]
    n_trials = len(result.get("seeds", []))
    ev = (result.get("config") or {}).get("evaluation") or {}
    probe = {"authors": "the authors' eval_linear.py protocol (augmented features every epoch, last epoch kept)",
             "fast": "fast (cached centre-crop features)"}.get(ev.get("probe", "fast"), str(ev.get("probe")))
    lines += [f"Preset `{result.get('preset')}`, {n_trials} trial(s) (seeds {result.get('seeds')}), "
              f"corruptencoder {result.get('version')}, {result.get('seconds', 0):.0f} s in this invocation. "
              f"Linear probe: {probe}.", ""]
    st = result.get("stages") or {}
    if st:
        lines += ["Stages this invocation: " + ", ".join(f"{k} {v['ran']} ran / {v['cached']} cached"
                                                        for k, v in st.items()), ""]
    lines += ["## Results (final encoders, mean ± std over trials)", "",
              "CA: clean encoder, clean test images. BA: backdoored encoder, clean test images. ASR: triggered "
              "non-target test images predicted as the target. "
              + legend(shown_controls(_final(aggs)), lambda c: f"{c.name} ASR") + ". ref. acc: "
              "reference objects the downstream classifier labels as the target (roughly the ceiling on ASR). pull Δ: "
              "mean cosine of triggered minus clean test images to the reference objects' mean embedding (the "
              "backdoor in feature space).", ""]
    lines += main_table(aggs) + [""]
    p = figures.asr_by_arm(aggs, figs / "asr_by_arm.png")
    if p:
        lines += [f"![ASR by arm](figures/{p.name})", ""]
    dt = defence_table(aggs, init_sources(result.get("config")))
    if dt:
        lines += ["## Defences (Table 4's shape)", "",
                  "Accuracy and ASR of each attack under each defence; the last column is the mean wall time "
                  "per encoder (for CompRess, the distillation alone, on its clean subset).", ""] + dt + [""]
    det = detection_table(aggs)
    if det:
        lines += ["## Detection defences", "",
                  "Data defences (PatchSearch) find and remove suspected poisons before pre-training again: precision "
                  "and recall of the removed files and AUROC of the poison score, against the manifest (the defence "
                  "never sees it); ASR before (the undefended arm of the same attack, where the config has one) and "
                  "after re-training on the kept files, BA and CA after. Encoder inspections (DECREE) leave the "
                  "encoder as it is: PL1 is the share of the image the smallest inverted trigger covers, for the "
                  "attacked encoder and for its clean twin; 'flagged' is how often (over trials) PL1 fell below the "
                  "threshold (attacked: the detection rate; clean: false alarms). The last column is the defence's "
                  "own wall time per encoder (s).", ""] + det + [""]
    zs = zero_shot_table(aggs)
    if zs:
        lines += ["## Zero-shot (CLIP text tower, the same prompts)", ""] + zs + [""]
    checks = result.get("checks") or []
    if checks:
        lines += ["## Benchmark targets", ""]
        lines += _table(["check", "value", "detail", "met"],
                        [[c["check"], _fmt(c.get("value")), c.get("detail", ""), "yes" if c["ok"] else "**no**"]
                         for c in checks]) + [""]
    tt = training_table(aggs)
    if tt:
        lines += ["## ASR along training (ASR %, pull Δ in brackets)", ""] + tt + [""]
        p = figures.asr_over_training(aggs, figs / "asr_over_training.png")
        if p:
            lines += [f"![ASR along training](figures/{p.name})", ""]
    for sweep in sorted({a["sweep"] for a in aggs if a["sweep"]}):
        lines += [f"## Sweep: {sweep}", ""] + sweep_table(aggs, sweep) + [""]
        p = figures.sweep_curves(aggs, sweep, figs / f"sweep_{sweep}.png")
        if p:
            lines += [f"![{sweep}](figures/{p.name})", ""]
    grids = []
    seen = set()
    for r in result["rows"]:
        folder = r.get("poisons")
        if folder and r["attack"] not in seen and Path(folder).is_dir():
            seen.add(r["attack"])
            g = figures.poison_grid(Path(folder), figs / f"poisons_{r['attack']}.png")
            if g:
                grids.append((r["attack"], g))
    if grids:
        lines += ["## Poisons", ""] + [f"![{a}](figures/{g.name})" for a, g in grids] + [""]
    lines += ["## Files", "", "`results.json` (every row, aggregates, checks, config), `results.csv`, "
              "`figures/`, `stages.jsonl` (what ran and what came from the cache).", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def rebuild_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    res = run_dir / "results.json"
    if not res.is_file():
        raise UserError(f"{run_dir}: no results.json; is this a folder written by 'corruptencoder run'?")
    from corruptencoder.experiment.results import target_checks

    result = read_results(res)
    try:
        result["checks"] = target_checks(result["aggregates"])  # the current definition of the targets
        return write_report(run_dir, result)
    except (KeyError, TypeError) as exc:  # a results.json edited by hand or written by another version
        raise UserError(f"{res}: an entry lacks {exc} or has the wrong type; re-run 'corruptencoder run' with the same "
                        "config to write it again (finished stages come from the cache)") from None


#: what every aggregate row needs for the tables (written by experiment/results.py)
_AGGREGATE_KEYS = ("arm", "target", "epoch", "sweep", "attack", "method", "defence")


def read_results(path: Path) -> dict[str, Any]:
    """results.json, checked enough to build a report from it; a truncated or foreign file is one line."""
    again = "re-run 'corruptencoder run' with the same config to write it again (finished stages come from the cache)"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON (truncated or damaged?); {again}") from None
    if not isinstance(result, dict) or not isinstance(result.get("aggregates"), list) or \
            not isinstance(result.get("rows"), list):
        raise UserError(f"{path}: not a results.json of 'corruptencoder run' (no 'aggregates' and 'rows' lists); "
                        f"{again}")
    for i, a in enumerate(result["aggregates"]):
        missing = [k for k in _AGGREGATE_KEYS if not isinstance(a, dict) or k not in a]
        if missing:
            raise UserError(f"{path}: aggregates[{i}] lacks {', '.join(missing)}; {again}")
    result.setdefault("experiment", path.parent.name)
    return result


#: Where the backdoor was measured to form, for the demo's closing message (benchmarks/scale_sweep.py).
SCALE_FINDINGS = (
    "Where it does form (measured on 2 CPU cores, README 'Where the backdoor forms'): "
    "`python benchmarks/where_it_forms.py --config configs/cpu-small/backdoor-forms.yaml --arms 'trigger-11px-*'` "
    "refreshes a clean cpu-small MoCo-v2 encoder (15 min, trained once per seed) for 30 epochs (4-6 min) on 500 "
    "poisons of target 'boat' and scores the poisons' own trigger: with an 11 px purple patch 83.8 +- 1.5 % over "
    "three bases (no-attack 7.6 %, an unrelated noise patch 5.4 %, a green one 14.8 %, SSL-Backdoor 39.7 %, 2.1x); "
    "with 11 px random patterns 53.7-63.0 %, largely as a backdoor to any noise patch of that size (control 46.9 and "
    "33.5 %); with 8 px 17.6 +- 10.1 %. "
    "The paper's >= 50 % is reached on CPU with an 11 px trigger in 32 px images, its 3x SSL-Backdoor is not."
)
#: how much of the demo's figure is its base: the same recipe on three bases (README 'Where the backdoor forms')
BASE_SPREAD = ("Its size depends on the clean base and the trigger: this demo on three bases (2026-12-07) scored "
               "67.0, 51.9 and 38.7 % with its purple patch (control 1.4-4.8 %, SSL-Backdoor 11.1-30.0 %) and "
               "31.8, 19.4 and 22.6 % with a random-pixel patch that every random patch opened as well; "
               "backdoor-forms' 30-epoch refresh scored 82.2-85.9 % with the purple patch, 5.6-30.2 % with an 8 px "
               "random trigger and 44.0-65.4 % with 11 px ones, and a base trained from the same seed on another CPU "
               "is another base.")


def demo_verdict(result: dict[str, Any]) -> str:
    """A plain statement of whether the backdoor formed in this run, read from its own numbers."""
    aggs = [a for a in result["aggregates"] if a["epoch"] == "final" and a["sweep"] is None]
    ce = next((a for a in aggs if a["attack"] == "corruptencoder" and a["defence"] == "none"), None)
    if ce is None or ce["asr"] is None:
        return "No CorruptEncoder arm in this run."
    base = ce["no_attack_asr"] or 0.0
    lift = ce["asr"] - base
    lines = [f"CorruptEncoder ASR {ce['asr']:.1f} % vs {base:.1f} % for the same trigger on the clean encoder "
             f"(reference accuracy {ce['reference_accuracy']}, feature pull {ce['pull_delta']} vs "
             f"{ce['pull_delta_clean']} clean)."]
    if lift >= 10:
        lines.append(f"The backdoor formed at this scale: +{lift:.1f} points of ASR over the no-attack baseline. "
                     + BASE_SPREAD)
    else:
        lines.append(f"The backdoor did NOT form at this scale ({lift:+.1f} points over the no-attack baseline is "
                     "within noise). " + BASE_SPREAD + " " + SCALE_FINDINGS)
    if lift >= 10:
        # each control's lift over the same patch on the clean encoder, against half the trigger's own lift
        lines += verdict_lines(ce, lift)
    return "\n".join(lines)
