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

from collections.abc import Sequence

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
