"""Where does the backdoor form? One factor at a time from a CPU-scale setting, measured.

Runs an experiment config whose arms are named ``<factor>/<setting>`` (trigger, crop scale and
resolution, continued pre-training, method and model, poison budget, ...), cached and resumable like
any ``corruptencoder run``, then writes ``docs/where-it-forms.md`` (one table: factor, setting, CA,
BA, ASR, no-attack ASR, control-patch ASR, reference accuracy, pull, minutes, peak memory of the training
process) and a figure, and prints one JSON line per arm. Every ASR is printed beside the no-attack ASR of the same
trigger on the clean encoder of the same setting, and the ASR of an unrelated random patch of the same size (the
control: near the no-attack level where the backdoor is keyed to its trigger).

    python benchmarks/where_it_forms.py [--config configs/cpu-small/where-it-forms.yaml] [--out runs/where-it-forms]
        [--arms 'trigger/*'] [--doc docs/where-it-forms.md]

``--config`` may be repeated (e.g. the Places365-backgrounds factor, which needs ``CE_ASSETS``): each config runs
in ``OUT/<its name>`` over one shared stage cache (``OUT/cache``), and the table lists the arms of all of them.

The doc is written from a ledger, ``docs/where-it-forms.json`` (``--ledger``): each invocation merges the arms it
measured into it (a re-measured arm replaces its rows, by config and arm name), so measuring a few arms on a fresh
machine, whose stage cache is empty, adds to the table instead of replacing it. Each row says when it was measured.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import sys
from pathlib import Path
from typing import Any

from corruptencoder.evaluate.controls import CONTROL_METRICS, CONTROLS
from corruptencoder.experiment.config import load_experiment
from corruptencoder.experiment.figures import pyplot, save
from corruptencoder.experiment.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "cpu-small" / "where-it-forms.yaml"


def _f(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{float(v):.{digits}f}"


def _pm(a: dict[str, Any], key: str, digits: int = 1) -> str:
    s = _f(a.get(key), digits)
    std = a.get(f"{key}_std")
    return s + (f" ± {float(std):.{digits}f}" if a.get("trials", 1) > 1 and std is not None else "")


# the aggregate fields the doc and the figure read (a ledger row keeps only these)
KEEP = ("config", "arm", "epoch", "target", "trials", "attack", "ca", "ca_std", "ba", "ba_std", "asr", "asr_std",
        "no_attack_asr", "no_attack_asr_std", *CONTROL_METRICS, "reference_accuracy", "pull_delta",
        "pull_delta_clean", "pretrain_seconds", "pretrain_peak_rss_mb", "asr_by_class", "asr_by_class_clean",
        "class_accuracy_clean", "measured")


def merge(ledger: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger with every (config, arm) measured now replaced by its new rows; the rest kept as they were."""
    fresh = {(a["config"], a["arm"]) for a in new}
    kept = [a for a in ledger if (a.get("config"), a["arm"]) not in fresh]
    rows = kept + [{k: a[k] for k in KEEP if k in a} for a in new]
    return sorted(rows, key=lambda a: (a["arm"], a.get("config", ""), str(a["epoch"]).zfill(6)))


def _load(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return body


def read_ledger(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = _load(path).get("rows", [])
    return rows


def read_caveats(path: Path) -> list[str]:
    """What a reader must know about the ledger's rows (written by hand into the ledger; shown in the doc)."""
    caveats: list[str] = _load(path).get("caveats", [])
    return caveats


def write_ledger(path: Path, rows: list[dict[str, Any]], caveats: list[str] | None = None) -> None:
    body = ",\n".join("  " + json.dumps(r) for r in rows)
    note = ("measurements of benchmarks/where_it_forms.py, merged across invocations: a re-measured (config, arm) "
            "replaces its rows")
    cav = ",\n".join("  " + json.dumps(c) for c in caveats or [])
    path.write_text(f'{{"note": {json.dumps(note)},\n "caveats": [\n{cav}\n ],\n "rows": [\n{body}\n]}}\n',
                    encoding="utf-8")


def final_rows(aggs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [a for a in aggs if a["epoch"] == "final" and a["attack"] != "none"]
    return sorted(rows, key=lambda a: a["arm"])


def label(a: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The arm's name, and its target where the arm attacks several (each target is a row of its own)."""
    several = len({r.get("target") for r in rows if r["arm"] == a["arm"]}) > 1
    return f"{a['arm']} ({a.get('target')})" if several else a["arm"]


def _control(a: dict[str, Any]) -> str:
    """The control patch's ASR on the attacked encoder and on its clean twin, then each other control the row has
    (solid, rotated) by its word; "–" for rows measured before the controls."""
    if a.get("control_asr") is None:
        return "–"
    out = f"{_f(a['control_asr'])} ({_f(a.get('control_asr_clean'))})"
    for c in CONTROLS[1:]:
        if a.get(c.key) is not None:
            out += f"; {c.short} {_f(a[c.key])} ({_f(a.get(c.key + '_clean'))})"
    return out


def table(aggs: list[dict[str, Any]]) -> list[str]:
    lines = ["| factor | setting | target | trials | CA | BA | ASR | no-attack ASR | control ASR (clean) | ref. acc | "
             "pull Δ (attacked / clean) | min (attacked encoder) | peak MB | measured |", "|" + " --- |" * 14]
    for a in final_rows(aggs):
        factor, _, setting = a["arm"].partition("/")
        minutes = a.get("pretrain_seconds")
        lines.append(f"| {factor} | {setting or factor} | {a.get('target', '')} | {a.get('trials', 1)} | "
                     f"{_pm(a, 'ca')} | {_pm(a, 'ba')} | "
                     f"**{_pm(a, 'asr')}** | {_pm(a, 'no_attack_asr')} | {_control(a)} | "
                     f"{_f(a.get('reference_accuracy'))} | "
                     f"{_f(a.get('pull_delta'), 3)} / {_f(a.get('pull_delta_clean'), 3)} | "
                     f"{_f(minutes / 60 if minutes else None)} | {_f(a.get('pretrain_peak_rss_mb'), 0)} | "
                     f"{a.get('measured', '–')} |")
    return lines


def along_training(aggs: list[dict[str, Any]]) -> list[str]:
    rows = [a for a in aggs if a["epoch"] != "final" and a["attack"] != "none"]
    if not rows:
        return []
    epochs = sorted({int(a["epoch"]) for a in rows})
    lines = ["| arm | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|" + " --- |" * (len(epochs) + 1)]
    for arm, target in sorted({(a["arm"], str(a.get("target"))) for a in rows}):
        mine = [x for x in rows if x["arm"] == arm and str(x.get("target")) == target]
        cells = []
        for e in epochs:
            a = next((x for x in mine if int(x["epoch"]) == e), None)
            cells.append(f"{_f(a['asr'])} / {_f(a['no_attack_asr'])}" if a else "–")
        lines.append(f"| {label(mine[0], rows)} | " + " | ".join(cells) + " |")
    return lines


def by_class(aggs: list[dict[str, Any]]) -> list[str]:
    """Each final encoder's ASR split over the classes whose images carry the trigger (clean twin in brackets)."""
    rows = [a for a in final_rows(aggs) if a.get("asr_by_class")]
    if not rows:
        return []
    classes = sorted({c for a in rows for c in a["asr_by_class"]})
    lines = ["| arm | " + " | ".join(classes) + " | rank corr. with clean class accuracy |",
             "|" + " --- |" * (len(classes) + 2)]
    for a in rows:
        mine, clean = a["asr_by_class"], a.get("asr_by_class_clean") or {}
        cells = [f"{_f(mine.get(c), 0)} ({_f(clean.get(c), 0)})" if c in mine else "–" for c in classes]
        rho = rank_corr(mine, a.get("class_accuracy_clean"))
        lines.append(f"| {label(a, rows)} | " + " | ".join(cells) + f" | {_f(rho, 2)} |")
    return lines


def rank_corr(asr: dict[str, float], accuracy: dict[str, float] | None) -> float | None:
    """Spearman's rho between a class's ASR and the clean probe's accuracy on it: negative when the trigger wins
    where the probe is least sure of the image's own class."""
    from scipy.stats import spearmanr

    keys = [k for k in asr if k in (accuracy or {})]
    if not accuracy or len(keys) < 3:
        return None
    rho = float(spearmanr([asr[k] for k in keys], [accuracy[k] for k in keys]).statistic)
    return None if math.isnan(rho) else rho


def figure(aggs: list[dict[str, Any]], path: Path) -> Path | None:
    plt = pyplot()
    rows = final_rows(aggs)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 2), 4))
    x = range(len(rows))
    asr = [float(a["asr"] or 0) for a in rows]
    err = [float(a.get("asr_std") or 0) for a in rows]
    base = [float(a["no_attack_asr"] or 0) for a in rows]
    ax.bar([i - 0.2 for i in x], asr, 0.4, yerr=err, label="ASR (attacked encoder)", color="tab:red")
    ax.bar([i + 0.2 for i in x], base, 0.4, label="ASR of the same trigger, clean encoder", color="tab:gray")
    ax.axhline(50, ls="--", lw=0.8, color="k")
    ax.set_xticks(list(x))
    ax.set_xticklabels([label(a, rows) for a in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_title("Where the backdoor forms (cpu-small, one factor at a time)", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, action="append", help=f"experiment config (repeatable; default {DEFAULT})")
    ap.add_argument("--out", type=Path, default=Path("runs/where-it-forms"))
    ap.add_argument("--cache", type=Path, help="stage cache (default OUT/cache)")
    ap.add_argument("--arms", action="append", help="only these arms (glob, repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "where-it-forms.md")
    ap.add_argument("--ledger", type=Path, default=ROOT / "docs" / "where-it-forms.json",
                    help="the measurements the doc is written from; this invocation's arms are merged into it")
    ap.add_argument("--no-run", action="store_true", help="rewrite the doc and figure from the ledger alone")
    args = ap.parse_args()
    configs = args.config or [DEFAULT]
    cfgs = [load_experiment(c, args.overrides) for c in configs]
    aggs: list[dict[str, Any]] = []
    seconds = 0.0
    today = datetime.date.today().isoformat()
    for cfg in [] if args.no_run else cfgs:
        names = [a.name for a in cfg.expanded_arms()]
        only = [p for p in args.arms or () if any(fnmatch.fnmatchcase(n, p) for n in names)]
        if args.arms and not only:
            continue
        out = args.out if len(cfgs) == 1 else args.out / cfg.name
        result = run_experiment(cfg, out, progress=False, only=only, cache=args.cache or args.out / "cache")
        aggs += [a | {"config": cfg.name, "measured": today} for a in result["aggregates"]]
        seconds += result["seconds"]
    for a in final_rows(aggs):
        print(json.dumps({"benchmark": "where_it_forms", "arm": a["arm"], "trials": a.get("trials"),
                          "ca": a["ca"], "ba": a["ba"], "asr": a["asr"], "asr_std": a.get("asr_std"),
                          "no_attack_asr": a["no_attack_asr"], **{k: a.get(k) for k in CONTROL_METRICS},
                          "reference_accuracy": a["reference_accuracy"],
                          "pull_delta": a["pull_delta"], "pull_delta_clean": a["pull_delta_clean"],
                          "minutes": round(a["pretrain_seconds"] / 60, 1) if a.get("pretrain_seconds") else None,
                          "peak_rss_mb": a.get("pretrain_peak_rss_mb")}))
    aggs, caveats = merge(read_ledger(args.ledger), aggs), read_caveats(args.ledger)
    write_ledger(args.ledger, aggs, caveats)
    fig = figure(aggs, args.doc.parent / "where_it_forms.png")
    shown = " ".join(f"--config {c.relative_to(ROOT) if c.is_relative_to(ROOT) else c}" for c in configs)
    lines = ["# Where the backdoor forms", "",
             f"Generated by `python benchmarks/where_it_forms.py {shown}` "
             f"({'rewritten with --no-run' if args.no_run else f'{seconds:.0f} s in the last invocation'}; cached "
             "stages are reused), from the measurements merged "
             f"in {args.ledger.name} (each row with the date it was measured). Arms are "
             "`factor/setting`; each changes one thing from the reference setting named in the config. What the "
             "measurements say, with the factors not yet measured: README.md, 'One factor at a time'.", "",
             *[f"**Note.** {c}\n" for c in caveats], "## Final encoders", "", *table(aggs), ""]
    if fig:
        lines += [f"![where it forms]({fig.name})", ""]
    split = by_class(aggs)
    if split:
        lines += ["## ASR by the class of the triggered image (final encoders; the clean twin in brackets)", "",
                  "Where the trigger wins over the image's own object and where it does not; arms measured "
                  "before this split was recorded are not listed.", "", *split, ""]
    trail = along_training(aggs)
    if trail:
        lines += ["## Along training (ASR / no-attack ASR)", "", *trail, ""]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(lines), encoding="utf-8")
    print(json.dumps({"benchmark": "where_it_forms", "doc": str(args.doc), "seconds": seconds}))
    return 0


if __name__ == "__main__":
    from corruptencoder.errors import Interrupted, UserError

    try:
        sys.exit(main())
    except UserError as exc:  # a trigger that cannot fit, a missing path: one line, as the CLI
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:  # SIGINT / SIGTERM: where the stopped encoder's checkpoint is, as the CLI says it
        print(f"error: interrupted by {exc.signal_name}; {exc.note or 'nothing half-written was left behind'}",
              file=sys.stderr)
        sys.exit(exc.exit_code)
