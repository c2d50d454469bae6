"""CA, BA and ASR exactly as the paper defines them (Section 4.1), plus the diagnostics beside ASR.

* CA / BA: accuracy (%) of the downstream classifier built on the clean / backdoored encoder, on the
  clean test images;
* ASR: the fraction (%) of trigger-embedded test images predicted as the target class, over the test
  images whose true class is *not* the target (their triggered copies are the only ones made); the
  attacker's reference images are removed from every test set beforehand;
* reference accuracy: the share (%) of reference objects (and of the poisons' object crops) that the
  classifier labels as the target, roughly the ceiling on ASR;
* pull: mean cosine of triggered vs. the same clean test images to the reference objects' mean
  embedding; the backdoor shows up here before it shows in ASR.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return 100.0 * float((preds == labels).float().mean())


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    out = {}
    for i, name in enumerate(classes):
        m = labels == i
        if int(m.sum()):
            out[name] = round(100.0 * float((preds[m] == i).float().mean()), 2)
    return out


def attack_success_rate(triggered_preds: torch.Tensor, true_labels: torch.Tensor, target: int) -> tuple[float, int]:
    """ASR (%) over the non-target images; returns (asr, number of images counted)."""
    keep = true_labels != target
    n = int(keep.sum())
    if n == 0:
        return float("nan"), 0
    return 100.0 * float((triggered_preds[keep] == target).float().mean()), n


def asr_by_class(triggered_preds: torch.Tensor, true_labels: torch.Tensor, target: int,
                 classes: Sequence[str]) -> dict[str, float]:
    """ASR (%) of each non-target class's triggered images: where the trigger wins over the image's own object
    and where it does not (the ASR is their mean weighted by class size)."""
    out: dict[str, float] = {}
    for c, name in enumerate(classes):
        keep = true_labels == c
        if c != target and bool(keep.any()):
            out[name] = round(100.0 * float((triggered_preds[keep] == target).float().mean()), 2)
    return out


def target_rate(preds: torch.Tensor, target: int) -> float:
    """Share (%) of predictions equal to the target (reference accuracy, clean false-positive rate)."""
    if preds.numel() == 0:
        return float("nan")
    return 100.0 * float((preds == target).float().mean())


def prediction_histogram(preds: torch.Tensor, classes: Sequence[str], top: int = 5) -> dict[str, float]:
    """The ``top`` most predicted classes (% of predictions)."""
    if preds.numel() == 0:
        return {}
    counts = torch.bincount(preds, minlength=len(classes)).float()
    order = counts.argsort(descending=True)[:top]
    return {classes[int(i)]: round(100.0 * float(counts[i]) / preds.numel(), 2) for i in order if counts[i] > 0}


def feature_pull(triggered: torch.Tensor, clean: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
    """Mean cosine to the reference objects' mean (normalised) embedding, triggered vs clean."""
    if references.numel() == 0 or triggered.numel() == 0:
        return {}
    ref = torch.nn.functional.normalize(torch.nn.functional.normalize(references.float(), dim=1).mean(0), dim=0)
    t = torch.nn.functional.normalize(triggered.float(), dim=1) @ ref
    c = torch.nn.functional.normalize(clean.float(), dim=1) @ ref
    return {"triggered": round(float(t.mean()), 4), "clean": round(float(c.mean()), 4),
            "delta": round(float(t.mean() - c.mean()), 4)}


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counted half (Mann-Whitney, average ranks)."""
    import numpy as np

    values = np.concatenate([np.asarray(pos, float), np.asarray(neg, float)])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2.0)[inverse]  # average 1-based rank of each tie group
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(scores: dict[str, float], kept: Iterable[str], poisons: Iterable[str]) -> dict[str, Any]:
    """How well a poison search did against the known poisons (which it never saw): precision and recall
    (%) of the files it removed, and the AUROC of its poison score. Paths are compared resolved."""
    from pathlib import Path

    def key(f: str) -> str:
        return str(Path(f).resolve())

    truth = {key(f) for f in poisons}
    files = {key(f): v for f, v in scores.items()}
    removed = set(files) - {key(f) for f in kept}
    hit = len(removed & truth)
    pos = [v for f, v in files.items() if f in truth]
    neg = [v for f, v in files.items() if f not in truth]
    return {"poisons": len(truth), "removed": len(removed), "removed_poisons": hit,
            "precision": round(100.0 * hit / len(removed), 2) if removed else None,
            "recall": round(100.0 * hit / len(truth), 2) if truth else None,
            "auroc": round(auroc(pos, neg), 4) if pos and neg else None}
