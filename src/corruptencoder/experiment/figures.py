"""Matplotlib figures of a run: ASR by arm, ASR along training, sweep curves, poison grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:  # matplotlib.pyplot, whose API is untyped here
    """matplotlib.pyplot on the file-only Agg backend (no display on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Lay out, write (making the folder) and close a figure: every figure of a run and the benchmarks."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def asr_by_arm(aggs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    rows = [a for a in aggs if a["epoch"] == "final" and a["sweep"] is None]
    if not rows:
        return None
    plt = pyplot()
    labels = [f"{a['arm']}\n{a['target']}" if len({r['target'] for r in rows}) > 1 else a["arm"] for a in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows)), 3.6))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [_f(a["asr"]) for a in rows], 0.4, yerr=[_f(a["asr_std"]) for a in rows],
           label="ASR", color="#c0392b", capsize=3)
    ax.bar([i + 0.2 for i in x], [_f(a["no_attack_asr"]) for a in rows], 0.4, label="no-attack ASR", color="#95a5a6")
    ax.plot(list(x), [_f(a["reference_accuracy"]) for a in rows], "D", color="#2c3e50", label="reference accuracy")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Attack success by arm (final encoders)")
    return save(fig, path)


def asr_over_training(aggs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    rows = [a for a in aggs if a["epoch"] != "final"]
    if not rows:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (arm, target) in sorted({(a["arm"], a["target"]) for a in rows}):
        pts = sorted((int(a["epoch"]), a) for a in rows if a["arm"] == arm and a["target"] == target)
        e = [p[0] for p in pts]
        lab = f"{arm} ({target})"
        axes[0].errorbar(e, [_f(p[1]["asr"]) for p in pts], yerr=[_f(p[1]["asr_std"]) for p in pts], marker="o",
                         capsize=2, label=lab)
        axes[1].errorbar(e, [_f(p[1]["pull_delta"]) for p in pts], yerr=[_f(p[1]["pull_delta_std"]) for p in pts],
                         marker="o", capsize=2, label=lab)
    axes[0].set_title("ASR along training")
    axes[0].set_ylabel("ASR (%)")
    axes[1].set_title("feature pull: cos(triggered, refs) - cos(clean, refs)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save(fig, path)


def sweep_curves(aggs: Sequence[dict[str, Any]], sweep: str, path: Path) -> Path | None:
    rows = [a for a in aggs if a["epoch"] == "final" and a["sweep"] == sweep]
    if not rows:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for target in sorted({a["target"] for a in rows}):
        pts = [a for a in rows if a["target"] == target]
        try:
            pts.sort(key=lambda a: float(a["sweep_value"]))
            xs: list[Any] = [float(a["sweep_value"]) for a in pts]
        except (TypeError, ValueError):
            xs = [str(a["sweep_value"]) for a in pts]
        axes[0].errorbar(xs, [_f(a["asr"]) for a in pts], yerr=[_f(a["asr_std"]) for a in pts], marker="o",
                         capsize=3, label=f"ASR ({target})")
        axes[0].plot(xs, [_f(a["reference_accuracy"]) for a in pts], "--", marker="D", label=f"ref. acc ({target})")
        axes[1].errorbar(xs, [_f(a["ba"]) for a in pts], yerr=[_f(a["ba_std"]) for a in pts], marker="o", capsize=3,
                         label=f"BA ({target})")
        axes[1].errorbar(xs, [_f(a["ca"]) for a in pts], yerr=[_f(a["ca_std"]) for a in pts], marker="s", capsize=3,
                         linestyle=":", label=f"CA ({target})")
    axes[0].set_ylabel("%")
    axes[0].set_title(f"ASR vs {sweep}")
    axes[1].set_title(f"utility vs {sweep}")
    for ax in axes:
        ax.set_xlabel(sweep)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, path)


def poison_grid(folder: Path, path: Path, num: int = 12) -> Path | None:
    from corruptencoder.poison.show import poison_grid as grid

    if not (folder / "manifest.jsonl").is_file():
        return None
    img = grid(folder, num=num, cols=6, cell=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
