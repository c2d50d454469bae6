"""Zero-shot classification with a CLIP model's text tower (beyond the paper's linear probes).

Each class is represented by the mean normalised text embedding of its prompts (the same templates
the poisons use, ``imagenet80`` by default); an image is assigned the class of highest cosine. CA/BA
and ASR are then computed exactly as for linear probes, on the same (reference-free) test split and
the same triggered images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import torch

from corruptencoder.evaluate.controls import control_scores
from corruptencoder.evaluate.features import extract_features
from corruptencoder.evaluate.metrics import accuracy, attack_success_rate, per_class_accuracy, prediction_histogram
from corruptencoder.evaluate.tasks import Task
from corruptencoder.evaluate.triggered import TriggerPaste, pasted_inputs


def prompt_names(task: Task, targets: Sequence[Any]) -> list[str]:
    """What the prompts call each class of the task: a target's ``text`` (as in its captions) for its class,
    else the class's name (an ImageNet wnid by its class name, ``_``/``-`` as spaces)."""
    from corruptencoder.poison.prompts import class_text

    names = [class_text(c) for c in task.classes]
    for t in targets:
        text = getattr(t, "text", None)
        if text:
            names[task.class_index(t.class_name)] = text
    return names


@torch.no_grad()
def class_embeddings(model: torch.nn.Module, spec: dict[str, Any], names: Sequence[str],
                     templates: Sequence[str]) -> torch.Tensor:
    """One embedding per class: the mean of its prompts, each template filled with the class's name as given."""
    from corruptencoder.ssl.clip_model import context_length, tokenize

    out = []
    for name in names:
        tokens = tokenize([t.format(name) for t in templates], context_length(spec))
        e = torch.nn.functional.normalize(cast(Any, model).encode_text(tokens).float(), dim=-1).mean(0)
        out.append(torch.nn.functional.normalize(e, dim=0))
    return torch.stack(out)


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(Any, self.model).encode_image(x)  # a CLIP model, not a plain nn.Module


def zero_shot_options(settings: Any, prompts: str) -> dict[str, Any]:
    """:func:`zero_shot`'s keyword arguments from the probe's ``EvalSettings``: one place that makes the zero-shot
    paste (seeded spots, trigger size, JPEG round trip) as the probe does."""
    return {"prompts": prompts, "seed": settings.seed, "location": settings.location,
            "trigger_size": settings.trigger_size, "device": settings.resolved_device(),
            "jpeg_quality": settings.trigger_jpeg_quality}


def zero_shot(clip_path: str | os.PathLike[str], task: Task, targets: Sequence[Any], *, prompts: str = "imagenet80",
              seed: int = 0, location: tuple[float, float] = (0.25, 0.75), trigger_size: tuple[int, int] | None = None,
              batch_size: int = 256, device: str = "cpu", jpeg_quality: int | None = None) -> dict[str, Any]:
    """Zero-shot accuracy and, per target, ASR and control ASRs on the test images pasted exactly as the probe's
    (same seeded spots; with ``jpeg_quality``, the same JPEG round trip of the triggered image)."""
    from corruptencoder.poison.prompts import load_templates
    from corruptencoder.ssl.clip_model import load_clip

    model, spec = load_clip(clip_path)
    weights = class_embeddings(model, spec, prompt_names(task, targets), load_templates(prompts))
    tower = _ImageTower(model)
    size, resize = task.config.image_size, task.config.resize

    def predict(files: Sequence[Any], transform: Any = None) -> torch.Tensor:
        f = extract_features(tower, files, size, resize, transform, batch_size, device)
        return (torch.nn.functional.normalize(f, dim=-1) @ weights.T).argmax(1)

    def predict_pasted(patch: Any, idx: torch.Tensor) -> torch.Tensor:
        return predict(*pasted_inputs(task.test.files, idx, TriggerPaste(patch, seed, *location, jpeg_quality)))

    y = torch.tensor(task.test.labels)
    preds = predict(task.test.files)
    out: dict[str, Any] = {"clip": str(clip_path), "prompts": prompts, "accuracy": round(accuracy(preds, y), 3),
                           "per_class_accuracy": per_class_accuracy(preds, y, task.classes), "targets": []}
    for t in targets:
        target = task.class_index(t.class_name)
        idx = torch.nonzero(y != target).flatten()
        trig, sibling = t.sized(trigger_size)
        ptrig = predict_pasted(trig, idx)
        asr, n = attack_success_rate(ptrig, y[idx], target)

        def pasted_asr(patch: Any, _: str, i: torch.Tensor = idx, k: int = target) -> float:
            return attack_success_rate(predict_pasted(patch, i), y[i], k)[0]  # the defaults bind this target's

        out["targets"].append({"name": t.name, "class": task.classes[target], "asr": round(asr, 3), "n_triggered": n,
                               **control_scores(trig, pasted_asr, sibling),
                               "triggered_prediction_histogram": prediction_histogram(ptrig, task.classes)})
    return out
