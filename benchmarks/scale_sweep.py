"""Where does the backdoor form? ASR, reference accuracy and feature pull against compute and poisons.

Runs an experiment config whose sweeps vary compute (encoder width, resolution; epochs come from the
ASR-along-training snapshots of every point) and the poisoning ratio, then prints one JSON line per
point and checkpoint and writes ``scale_sweep.png`` and ``scale_sweep.md`` next to the run's report.
The default config uses the demo world; the same config runs unchanged on a real ImageFolder set by
pointing ``data.clean`` and the task's ``root`` at it.

    python benchmarks/scale_sweep.py [--config configs/cpu-small/scale-sweep.yaml] [--out runs/scale-sweep]
        [--cache CACHE] [--arms 'trigger-11px/*']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from corruptencoder.experiment.config import load_experiment
from corruptencoder.experiment.figures import pyplot, save
from corruptencoder.experiment.runner import run_experiment

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "cpu-small" / "scale-sweep.yaml"


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def figure(aggs: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    points = sorted({a["arm"] for a in aggs if a["attack"] != "none"})
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for arm in points:
        rows = sorted((int(a["epoch"]), a) for a in aggs if a["arm"] == arm and a["epoch"] != "final")
        if not rows:
            continue
        e = [r[0] for r in rows]
        axes[0].plot(e, [_f(r[1]["asr"]) - _f(r[1]["no_attack_asr"]) for r in rows], marker="o", label=arm)
        axes[1].plot(e, [_f(r[1]["pull_delta"]) - _f(r[1]["pull_delta_clean"]) for r in rows], marker="o", label=arm)
        axes[2].plot(e, [_f(r[1]["reference_accuracy"]) for r in rows], marker="o", label=arm)
    titles = ("ASR minus no-attack ASR (points)", "feature pull minus clean encoder's", "reference accuracy (%)")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save(fig, path)


def table(aggs: list[dict[str, Any]]) -> list[str]:
    lines = ["| point | epoch | CA | BA | ASR | no-attack ASR | ref. acc | pull Δ (attacked) | pull Δ (clean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a in sorted(aggs, key=lambda a: (a["arm"], 10**9 if a["epoch"] == "final" else int(a["epoch"]))):
        if a["attack"] == "none":
            continue
        lines.append(f"| {a['arm']} | {a['epoch']} | {_f(a['ca']):.1f} | {_f(a['ba']):.1f} | {_f(a['asr']):.1f} | "
                     f"{_f(a['no_attack_asr']):.1f} | {_f(a['reference_accuracy']):.1f} | {_f(a['pull_delta']):.3f} | "
                     f"{_f(a['pull_delta_clean']):.3f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=DEFAULT)
    ap.add_argument("--out", type=Path, default=Path("runs/scale-sweep"))
    ap.add_argument("--cache", type=Path, help="stage cache (default OUT/cache)")
    ap.add_argument("--arms", action="append", help="only these arms (glob, repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_experiment(args.config, args.overrides)
    result = run_experiment(cfg, args.out, progress=False, only=args.arms or (),
                            cache=args.cache or args.out / "cache")
    aggs = result["aggregates"]
    for a in aggs:
        if a["attack"] != "none":
            print(json.dumps({"benchmark": "scale_sweep", "point": a["arm"], "epoch": a["epoch"], "ca": a["ca"],
                              "ba": a["ba"], "asr": a["asr"], "no_attack_asr": a["no_attack_asr"],
                              "reference_accuracy": a["reference_accuracy"], "pull_delta": a["pull_delta"],
                              "pull_delta_clean": a["pull_delta_clean"], "poison_ratio": a["poison_ratio"]}))
    fig = figure(aggs, args.out / "figures" / "scale_sweep.png")
    (args.out / "scale_sweep.md").write_text("\n".join(["# Scale sweep", "", *table(aggs), "",
                                                        f"![scale sweep](figures/{fig.name})", ""]))
    print(json.dumps({"benchmark": "scale_sweep", "report": str(args.out / "report.md"),
                      "table": str(args.out / "scale_sweep.md"), "figure": str(fig), "seconds": result["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
