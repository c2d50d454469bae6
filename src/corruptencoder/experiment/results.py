"""Results: one row per arm x trial x target x checkpoint, aggregates over trials, target checks.

``results.json`` holds the config, every row, the mean/std aggregates and the benchmark checks;
``results.csv`` the rows plus the aggregate rows (``seed = "mean"``). The report is rebuilt from
``results.json`` alone (``corruptencoder report RUN_DIR``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corruptencoder import __version__
from corruptencoder.evaluate.controls import CONTROL_METRICS, CONTROLS, ZS_CONTROL_METRICS
from corruptencoder.experiment.config import ArmSpec, ExperimentConfig
from corruptencoder.utils.hardware import describe as describe_hardware
from corruptencoder.utils.outputs import write_json_atomic

METRICS = ("ca", "ba", "asr", "no_attack_asr", *CONTROL_METRICS, "reference_accuracy", "reference_accuracy_clean",
           "object_crop_accuracy", "pull_triggered", "pull_clean", "pull_delta", "pull_delta_clean",
           "clean_target_rate", "top_triggered_share", "zs_ca", "zs_ba", "zs_asr", "zs_no_attack_asr",
           *ZS_CONTROL_METRICS, "detect_precision", "detect_recall", "detect_auroc", "decree_pl1",
           "decree_pl1_clean", "decree_detected", "decree_detected_clean", "defence_seconds")
KEYS = ("arm", "attack", "method", "defence", "sweep", "sweep_value", "target", "task", "epoch")


def trained_on(hardware: dict[str, Any] | None) -> str | None:
    """Where an encoder was trained, in a few words: the same seed trains another encoder on other kernels."""
    if not hardware:
        return None  # trained before run.json recorded it
    if hardware.get("gpu"):
        return f"{hardware['gpu']} (CUDA {hardware.get('cuda')})"
    return f"{hardware.get('cpu')} ({hardware.get('cpu_capability')})"


def collect_rows(cfg: ExperimentConfig, arm: ArmSpec, seed: int, task: str, epoch: int | None,
                 res: dict[str, Any], meta: dict[str, Any], sweep: tuple[str, Any] | None,
                 poisons: Path | None = None) -> list[dict[str, Any]]:
    enc, clean = res["encoder"], res.get("clean_encoder") or res["encoder"]
    rows = []
    for i, t in enumerate(enc["targets"]):
        c = clean["targets"][i]
        hist = t.get("triggered_prediction_histogram") or {}
        top = next(iter(hist.items()), (None, float("nan")))
        rows.append({
            "experiment": cfg.name, "arm": arm.name, "attack": arm.attack, "method": arm.method,
            "defence": arm.defence, "sweep": sweep[0] if sweep else None, "sweep_value": sweep[1] if sweep else None,
            "seed": seed, "target": t["name"], "task": task, "epoch": epoch if epoch is not None else "final",
            "ca": clean["accuracy"], "ba": enc["accuracy"] if arm.attack != "none" else None,
            "asr": t["asr"], "no_attack_asr": c["asr"],
            # the specificity controls (evaluate/controls); None where one does not apply or in metrics of before it
            **{k: v for ctl in CONTROLS for k, v in ((ctl.key, t.get(ctl.key)), (ctl.key + "_clean", c.get(ctl.key)))},
            "reference_accuracy": t["reference_accuracy"], "reference_accuracy_clean": c["reference_accuracy"],
            "object_crop_accuracy": t["object_crop_accuracy"],
            "pull_triggered": t["pull"].get("triggered"), "pull_clean": t["pull"].get("clean"),
            "pull_delta": t["pull"].get("delta"), "pull_delta_clean": c["pull"].get("delta"),
            "clean_target_rate": t["clean_target_rate"], "top_triggered_class": top[0],
            "top_triggered_share": top[1], "triggered_histogram": hist,
            "asr_by_class": t.get("asr_by_class"), "asr_by_class_clean": c.get("asr_by_class"),
            "class_accuracy_clean": clean.get("per_class_accuracy"),
            "n_test": enc["n_test"], "n_triggered": t["n_triggered"],
            "num_poisons": meta.get("num_poisons", 0), "poison_ratio": meta.get("poison_ratio", 0.0),
            "pretrain_seconds": meta.get("seconds"), "pretrain_img_s": meta.get("images_per_second"),
            "pretrain_peak_rss_mb": meta.get("peak_rss_mb"), "pretrain_peak_gpu_mb": meta.get("peak_gpu_mb"),
            "epochs_trained": meta.get("epochs"), "poisons": str(poisons) if poisons else None,
            "defence_label": (meta.get("defence") or {}).get("label"),
            "defence_knob": (meta.get("defence") or {}).get("knob"),
            "defence_report": (meta.get("defence") or {}).get("report") or None,
            "trained_on": trained_on(meta.get("hardware")),
        })
        det = ((meta.get("defence") or {}).get("report") or {}).get("detection") or {}
        for k in ("precision", "recall", "auroc"):
            if det.get(k) is not None:
                rows[-1][f"detect_{k}"] = det[k]
        rows[-1].update(inspection_fields(meta.get("defence") or {}))
        zs = res.get("zero_shot")
        if zs:
            zt, zc = zs["encoder"]["targets"][i], zs["clean_encoder"]["targets"][i]
            rows[-1].update({"zs_ca": zs["clean_encoder"]["accuracy"],
                             "zs_ba": zs["encoder"]["accuracy"] if arm.attack != "none" else None,
                             "zs_asr": zt["asr"], "zs_no_attack_asr": zc["asr"],
                             **{"zs_" + k.key: zt.get(k.key) for k in CONTROLS}})
    return rows


def inspection_fields(defence: dict[str, Any]) -> dict[str, Any]:
    """An encoder inspection's verdict (DECREE: PL1 norm, backdoored or not) on the attacked encoder and on its
    clean twin, and the defence's own time, as row fields."""
    out: dict[str, Any] = {}
    for suffix, rep in (("", defence.get("report") or {}), ("_clean", defence.get("clean_report") or {})):
        if _num(rep.get("pl1")) is not None:
            out[f"decree_pl1{suffix}"] = rep["pl1"]
            out[f"decree_detected{suffix}"] = 1.0 if rep.get("backdoored") else 0.0
            out[f"decree_verdict{suffix}"] = rep.get("verdict")
            out["decree_threshold"] = rep.get("threshold")
    secs = _num((defence.get("report") or {}).get("seconds"))
    if secs is not None:
        out["defence_seconds"] = secs
    return out


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over trials (seeds) for every arm x target x epoch."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        # a swept value may be a list (e.g. attack_args.location: [0.2, 0.8]): grouped by its JSON text
        values = (r.get(k) for k in KEYS)
        key = tuple(json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v for v in values)
        groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        agg: dict[str, Any] = {k: rs[0].get(k) for k in KEYS}
        agg["trials"] = len(rs)
        for m in METRICS:
            vals = [v for v in (_num(r.get(m)) for r in rs) if v is not None]
            agg[m] = round(float(np.mean(vals)), 3) if vals else None
            agg[f"{m}_std"] = round(float(np.std(vals)), 3) if len(vals) > 1 else (0.0 if vals else None)
        for k in ("num_poisons", "poison_ratio", "pretrain_seconds", "epochs_trained", "pretrain_peak_rss_mb",
                  "pretrain_peak_gpu_mb"):
            vals = [v for v in (_num(r.get(k)) for r in rs) if v is not None]
            agg[k] = round(float(np.mean(vals)), 4) if vals else None
        for k in ("defence_label", "defence_knob", "decree_threshold"):  # the same for every trial of an arm
            agg[k] = rs[0].get(k)
        where = sorted({r["trained_on"] for r in rs if r.get("trained_on")})  # trials from several machines: all
        agg["trained_on"] = "; ".join(where) or None
        top = [r.get("top_triggered_class") for r in rs if r.get("top_triggered_class")]
        agg["top_triggered_class"] = max(set(top), key=top.count) if top else None
        for k in ("asr_by_class", "asr_by_class_clean", "class_accuracy_clean"):
            agg[k] = _mean_dicts([r[k] for r in rs if r.get(k)])
        out.append(agg)
    return out


def _mean_dicts(dicts: Sequence[dict[str, float]]) -> dict[str, float] | None:
    """Per-key mean over trials (a key missing from a trial is averaged over the trials that have it)."""
    if not dicts:
        return None
    keys = sorted({k for d in dicts for k in d})
    return {k: round(float(np.mean([d[k] for d in dicts if k in d])), 2) for k in keys}


def _final(aggs: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [a for a in aggs if a["epoch"] == "final" and all(a.get(k) == v for k, v in match.items())]


def _peer(a: dict[str, Any], candidates: Sequence[dict[str, Any]], key: str = "asr") -> dict[str, Any] | None:
    """The baseline arm ``a`` is judged against: the same target and method, and of the same arm group where there
    is one ("11px/corruptencoder" with "11px/carlini-terzis", not with the first baseline of the target)."""
    same = [x for x in candidates if x["target"] == a["target"] and x.get("method") == a.get("method")
            and x.get(key) is not None]
    group = str(a.get("arm", "")).rpartition("/")[0]
    return next((x for x in same if str(x.get("arm", "")).rpartition("/")[0] == group), same[0] if same else None)


def target_checks(aggs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benchmark targets of the experiments issue, where the arms to judge them exist."""
    checks = []
    ce = _final(aggs, attack="corruptencoder", defence="none", sweep=None)
    saha = _final(aggs, attack="ssl-backdoor", defence="none", sweep=None)
    loc = _final(aggs, attack="corruptencoder", defence="localized", sweep=None)
    for a in ce:
        if a["asr"] is not None:
            checks.append({"check": f"CorruptEncoder ASR >= 60 ({a['target']}, {a['method']})", "value": a["asr"],
                           "ok": a["asr"] >= 60})
        s = _peer(a, saha)
        if s and s["asr"] is not None and a["asr"] is not None:
            ratio = a["asr"] / max(s["asr"], 1e-9)
            checks.append({"check": f"CorruptEncoder ASR >= 3x SSL-Backdoor ASR ({a['target']})",
                           "value": round(ratio, 2) if s["asr"] > 0 else None,
                           "detail": f"{a['asr']:.1f} vs {s['asr']:.1f}", "ok": a["asr"] >= 3 * s["asr"]})
        if a["ba"] is not None and a["ca"] is not None:
            checks.append({"check": f"|BA - CA| <= 3 ({a['target']}, {a['method']})",
                           "value": round(abs(a["ba"] - a["ca"]), 2), "ok": abs(a["ba"] - a["ca"]) <= 3})
        lo = _peer(a, loc)
        if lo and a["asr"] is not None and lo["asr"] is not None and a["asr"] > 0:
            cut = 100 * (1 - lo["asr"] / a["asr"])
            checks.append({"check": f"localized cropping cuts CorruptEncoder ASR by >= 80% ({a['target']})",
                           "value": round(cut, 1), "detail": f"{a['asr']:.1f} -> {lo['asr']:.1f}", "ok": cut >= 80})
    return checks + multimodal_checks(aggs)


def multimodal_checks(aggs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 3's shape: CorruptEncoder well above (>= 20 points) Carlini-Terzis, BA within 3 of CA.

    The ASR comparison is made on the linear probe only: Table 3 reports probe ASR. Zero-shot, where the text
    tower reads the target's name, is Carlini-Terzis' own setting and the paper claims nothing there (on the
    demo world its N Type-I pairs beat CorruptEncoder's N/2 on two seeds of three); BA within 3 of CA: both."""
    checks = []
    ct = _final(aggs, attack="carlini-terzis", defence="none", sweep=None)
    for a in _final(aggs, attack="corruptencoder-mm", defence="none", sweep=None):
        b = _peer(a, ct)
        if a.get("asr") is not None and b is not None:
            checks.append({"check": f"CorruptEncoder ASR >= Carlini-Terzis ASR + 20 ({a['target']}, probe)",
                           "value": round(a["asr"] - b["asr"], 2), "detail": f"{a['asr']:.1f} vs {b['asr']:.1f}",
                           "ok": a["asr"] - b["asr"] >= 20})
        for proto, ca, ba in (("probe", "ca", "ba"), ("zero-shot", "zs_ca", "zs_ba")):
            if a.get(ba) is not None and a.get(ca) is not None:
                checks.append({"check": f"|BA - CA| <= 3 ({a['target']}, clip, {proto})",
                               "value": round(abs(a[ba] - a[ca]), 2), "ok": abs(a[ba] - a[ca]) <= 3})
    return checks


CSV_COLUMNS = ("experiment", "arm", "attack", "method", "defence", "sweep", "sweep_value", "seed", "target", "task",
               "epoch", "ca", "ba", "asr", "no_attack_asr", *CONTROL_METRICS, "reference_accuracy",
               "reference_accuracy_clean", "object_crop_accuracy",
               "pull_triggered", "pull_clean", "pull_delta", "pull_delta_clean", "clean_target_rate",
               "top_triggered_class", "top_triggered_share", "n_test", "n_triggered", "num_poisons", "poison_ratio",
               "pretrain_seconds", "pretrain_peak_rss_mb", "pretrain_peak_gpu_mb", "epochs_trained", "zs_ca", "zs_ba",
               "zs_asr", "zs_no_attack_asr", *ZS_CONTROL_METRICS, "defence_label",
               "detect_precision", "detect_recall", "detect_auroc", "decree_pl1", "decree_pl1_clean", "decree_verdict",
               "decree_detected", "decree_detected_clean", "defence_seconds", "trials", "trained_on")


def write_results(run_dir: Path, cfg: ExperimentConfig, arms: Sequence[ArmSpec], rows: list[dict[str, Any]],
                  seconds: float, stages: dict[str, Any]) -> dict[str, Any]:
    from corruptencoder.experiment.report import write_report

    aggs = aggregate(rows)
    result = {
        "tool": "corruptencoder", "version": __version__, "experiment": cfg.name, "description": cfg.description,
        "preset": cfg.preset, "seeds": cfg.seeds, "config": cfg.model_dump(mode="json"),
        "arms": [a.model_dump(mode="json") for a in arms], "rows": rows, "aggregates": aggs,
        "checks": target_checks(aggs), "seconds": round(seconds, 1), "stages": stages,
        # where this process ran; an encoder taken from the cache carries its own in its run.json
        "hardware": describe_hardware(),
    }
    write_json_atomic(run_dir / "results.json", result)
    with open(run_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        for a in aggs:
            w.writerow({**a, "experiment": cfg.name, "seed": "mean"})
    write_report(run_dir, result)
    return result
