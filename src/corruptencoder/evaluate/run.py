"""Scoring encoders on a downstream task: linear probe, CA/BA, ASR per target, diagnostics.

``evaluate`` takes a (possibly backdoored) encoder, optionally the clean encoder of the same setting,
a task and the attack's targets (each: the downstream class, the exact trigger pixels and the
attacker's reference files), and returns one JSON-ready dict; ``metrics.json`` is that dict.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corruptencoder.errors import UserError
from corruptencoder.evaluate.controls import CONTROLS, control_scores, legend, shown_controls
from corruptencoder.evaluate.features import FeatureCache, cache_key, extract_features, file_digest
from corruptencoder.evaluate.linear_probe import LinearProbe, ProbeConfig, train_augmented_probe, train_linear_probe
from corruptencoder.evaluate.metrics import (
    accuracy,
    asr_by_class,
    attack_success_rate,
    feature_pull,
    per_class_accuracy,
    prediction_histogram,
    target_rate,
)
from corruptencoder.evaluate.tasks import Task
from corruptencoder.evaluate.triggered import TriggerPaste, pasted_inputs, resize_trigger
from corruptencoder.poison.geometry import Box
from corruptencoder.utils.imageio import load_rgb, open_image

log = logging.getLogger(__name__)


@dataclass
class EvalTarget:
    """One attacked class of the task, with what the attacker used."""

    name: str
    class_name: str
    trigger: np.ndarray
    trigger_source: str = ""
    references: list[str] = field(default_factory=list)       # files: excluded from tests, scored as objects
    object_crops: list[tuple[str, Box]] = field(default_factory=list)  # poison file + object box
    support: list[str] = field(default_factory=list)          # CorruptEncoder+ support images: excluded too
    text: str | None = None  # the class's name in zero-shot prompts (an experiment target's text:)
    sibling: np.ndarray | None = None  # another trigger of its kind, for the sibling control (evaluate/controls)

    def sized(self, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The trigger and its sibling at the evaluation's trigger size (``None``: as crafted)."""
        return resize_trigger(self.trigger, size), None if self.sibling is None else resize_trigger(self.sibling, size)


def targets_from_poisons(folder: str | os.PathLike[str], task: str | None = None,
                         max_crops: int = 200) -> list[EvalTarget]:
    """Targets, triggers and reference files recorded by ``corruptencoder craft`` in a poison folder."""
    from corruptencoder.evaluate.controls import sibling_trigger
    from corruptencoder.poison.manifest import read_manifest, read_summary
    from corruptencoder.poison.triggers import TriggerSpec, load_trigger_file

    folder = Path(folder)
    records = read_manifest(folder)
    summary = read_summary(folder)
    out = []
    for t in summary.get("targets", []):
        if task and t.get("task") and t["task"] != task:
            continue
        recs = [r for r in records if r.get("target") == t["name"]]
        refs = sorted({r["reference"] for r in recs if r.get("reference")})
        support = sorted({r["support_reference"] for r in recs if r.get("support_reference")})
        crops = [(str(folder / r["file"]), tuple(r["object_box"])) for r in recs if r.get("object_box")][:max_crops]
        trigger = load_trigger_file(folder / t["trigger_file"])
        sibling = sibling_trigger(TriggerSpec.from_description(t["trigger"]), trigger) if t.get("trigger") else None
        out.append(EvalTarget(t["name"], t.get("label") or t["name"], trigger, str(folder / t["trigger_file"]),
                              refs, crops, support, sibling=sibling))
    if not out:
        raise UserError(f"{folder}: no targets{' for task ' + task if task else ''} in craft.json")
    return out


# ---------------------------------------------------------------------------------------------
# reference images are removed from every test set


def _digest(arr: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode()).hexdigest()


def _load_reference(path: str) -> Any:
    """A reference (object or plain image) from any file the crafting engine accepts; None if unusable."""
    from corruptencoder.poison.objects import ReferenceSource, _source_for_file

    p = Path(path)
    src = _source_for_file(p) if p.is_file() else (ReferenceSource("export", path) if p.is_dir() else None)
    if src is None:
        return None
    try:
        return src.load()
    except UserError as exc:
        log.warning("cannot read reference %s: %s", path, exc)
        return None


def reference_images(paths: Sequence[str]) -> list[np.ndarray]:
    return [ref.image for ref in map(_load_reference, paths) if ref is not None]


def exclude_references(task: Task, targets: Sequence[EvalTarget]) -> int:
    """Drop test images that are reference/support images of the attack (by path, name or pixels)."""
    refs = sorted({r for t in targets for r in (*t.references, *t.support)})
    if not refs:
        return 0
    ref_paths = {str(Path(r).resolve()) for r in refs}
    ref_stems = {Path(r).stem for r in refs if not Path(r).stem.isdigit()}  # "1.json" says nothing
    images = reference_images(refs)
    by_size: dict[tuple[int, int], set[str]] = {}
    for im in images:
        by_size.setdefault((im.shape[1], im.shape[0]), set()).add(_digest(im))
    # a file name identifies an image only when it is unique in the test set (ImageNet's are; per-class
    # numbering such as 0001.png is not): otherwise the pixels decide
    stem_count = Counter(Path(f).stem for f in task.test.files)
    keep = []
    for i, f in enumerate(task.test.files):
        stem = Path(f).stem
        hit = str(Path(f).resolve()) in ref_paths or (stem in ref_stems and stem_count[stem] == 1)
        if not hit and by_size:
            size: tuple[int, int] | None
            try:
                with open_image(f) as header:
                    size = header.size
            except UserError:
                size = None
            if size in by_size or (size and size[::-1] in by_size):
                assert size is not None  # None is in no container
                hit = _digest(np.asarray(load_rgb(f))) in by_size.get(size, set()) | by_size.get(size[::-1], set())
        if not hit:
            keep.append(i)
    removed = len(task.test.files) - len(keep)
    if removed:
        task.test = task.test.subset(keep)
    return removed


# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    location: tuple[float, float] = (0.25, 0.75)
    trigger_size: tuple[int, int] | None = None
    batch_size: int = 256
    device: str = "auto"
    workers: int = 0
    cache_dir: str | None = None
    progress: bool = False
    backbone: dict[str, Any] | None = None  # for plain state dicts (encoder.pt carries its own)
    trigger_jpeg_quality: int | None = None  # triggered test images through JPEG (the authors' test set: 75)

    def __post_init__(self) -> None:
        """Values checked here, before any file is read or feature extracted."""
        if self.probe.epochs < 1:
            raise UserError(f"probe epochs (--probe-epochs) = {self.probe.epochs}: train the probe for at least 1 "
                            "epoch (default 100)")
        if self.batch_size < 1:
            raise UserError(f"batch size (--batch-size) = {self.batch_size}: use at least 1 (default 256)")
        lo, hi = (float(v) for v in self.location)
        if not 0.0 <= lo < hi <= 1.0:  # nan fails too
            raise UserError(f"trigger location (--location) [{lo:g}, {hi:g}] must satisfy 0 <= LO < HI <= 1, "
                            "e.g. 0.25 0.75")
        if self.trigger_size is not None and min(self.trigger_size) < 1:
            raise UserError(f"trigger size (--trigger-size) {self.trigger_size}: use at least 1 px")
        check_device(self.device)

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` / ``cuda:N`` or ``mps``, and present on this machine (--device)."""
    d = device.strip().lower()
    if d in ("auto", "cpu"):
        return d
    if d == "cuda" or d.startswith("cuda:"):
        index = d.partition(":")[2]
        if index and not index.isdigit():
            raise UserError(f"--device {device}: use cuda or cuda:N (N a GPU index), cpu or auto")
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is visible on this machine; use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        return d
    if d == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"--device {device}: Apple's MPS is not available here; use --device cpu or auto")
        return d
    raise UserError(f"--device {device}: unknown device; use auto, cpu, cuda, cuda:N or mps")


class AugmentedBatches:
    """The authors' probe's training data: every epoch, each training image randomly resized-cropped
    (area 0.08-1, torchvision's aspect range) to the evaluation size and flipped with probability 0.5,
    drawn from ``(seed, epoch, image)`` (same bytes for any batch size or worker count), then embedded
    by the frozen encoder. Images are decoded once (shorter side = the evaluation resize) when they fit
    in memory."""

    def __init__(self, encoder: torch.nn.Module, files: Sequence[Any], labels: Sequence[int], size: int,
                 resize: int | None, batch_size: int, device: str, seed: int) -> None:
        from corruptencoder.data.datasets import ImageStore

        self.encoder = encoder.to(device).eval()
        self.labels = torch.tensor(list(labels), dtype=torch.long)
        self.size = size
        self.store = ImageStore(list(files), resize or int(round(size * 256 / 224)), cache="auto")
        self.batch_size = batch_size
        self.device = device
        self.seed = seed

    def _view(self, index: int, epoch: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        from corruptencoder.ssl.crops import random_resized_crop

        rng = np.random.default_rng([self.seed, epoch, index])
        img, _ = self.store.get(index)
        h, w = img.shape[-2:]
        x0, y0, x1, y1 = random_resized_crop(rng, w, h, (0.08, 1.0))
        view = TF.resized_crop(img, y0, x0, y1 - y0, x1 - x0, [self.size, self.size], antialias=True)
        return view.flip(-1) if rng.random() < 0.5 else view

    @torch.no_grad()
    def __call__(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from corruptencoder.ssl.augment import normalize_batch

        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        out = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            x = torch.stack([self._view(int(i), epoch) for i in idx]).to(self.device).float().div_(255.0)
            x = normalize_batch(x).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
                feats = self.encoder(x)
            out.append((feats.float().cpu(), self.labels[idx]))
        return out


class Scorer:
    """Features (cached), probe and metrics for one encoder on one task."""

    def __init__(self, encoder_path: str | os.PathLike[str], task: Task, settings: EvalSettings) -> None:
        from corruptencoder.ssl.encoder import load_encoder

        self.path = Path(encoder_path)
        self.encoder, self.spec, self.meta = load_encoder(self.path, settings.backbone)
        self.task = task
        self.s = settings
        self.cache = FeatureCache(settings.cache_dir)
        self.enc_key = file_digest(self.path)
        self.size = task.config.image_size
        self.resize = task.config.resize

    def features(self, files: Sequence[str | os.PathLike[str]], what: str, transform: Any = None,
                 transform_key: Any = None) -> torch.Tensor:
        key = cache_key(enc=self.enc_key, files=[str(f) for f in files], size=self.size, resize=self.resize,
                        t=transform_key)
        return self.cache.get(key, lambda: extract_features(
            self.encoder, files, self.size, self.resize, transform, self.s.batch_size, self.s.resolved_device(),
            self.s.workers, self.s.progress, desc=what))

    def pasted_features(self, patch: np.ndarray, idx: torch.Tensor, what: str) -> torch.Tensor:
        """Features of the test images ``idx`` with ``patch`` pasted at their seeded spots."""
        lo, hi = self.s.location
        files, transform = pasted_inputs(self.task.test.files, idx,
                                         TriggerPaste(patch, self.s.seed, lo, hi, self.s.trigger_jpeg_quality))
        return self.features(files, what, transform,
                             transform_key={"trigger": _digest(patch), "seed": self.s.seed, "loc": [lo, hi],
                                            "index": _digest(np.asarray(idx.tolist())),
                                            "jpeg": self.s.trigger_jpeg_quality})

    def array_features(self, arrays: Sequence[np.ndarray], what: str) -> torch.Tensor:
        if not arrays:
            return torch.zeros(0)
        return extract_features(self.encoder, arrays, self.size, self.resize, None, self.s.batch_size,
                                self.s.resolved_device(), 0, False, desc=what)

    def probe(self) -> tuple[LinearProbe, torch.Tensor, torch.Tensor]:
        tr, te = self.task.train, self.task.test
        ftr = self.features(tr.files, "train features")
        fte = self.features(te.files, "test features")
        if self.s.probe.protocol == "authors":
            batches = AugmentedBatches(self.encoder, tr.files, list(tr.labels or []), self.size, self.resize,
                                       self.s.probe.batch_size, self.s.resolved_device(), self.s.probe.seed)
            probe = train_augmented_probe(batches, ftr, len(self.task.classes), self.s.probe)
        else:
            probe = train_linear_probe(ftr, torch.tensor(tr.labels), len(self.task.classes), self.s.probe)
        return probe, fte, torch.tensor(te.labels)

    def score(self, targets: Sequence[EvalTarget]) -> dict[str, Any]:
        probe, fte, yte = self.probe()
        preds = probe.predict(fte)
        out: dict[str, Any] = {
            "encoder": str(self.path), "backbone": self.spec, "encoder_meta": self.meta,
            "accuracy": round(accuracy(preds, yte), 3),
            "per_class_accuracy": per_class_accuracy(preds, yte, self.task.classes),
            "n_train": len(self.task.train), "n_test": len(self.task.test), "targets": [],
        }
        for t in targets:
            out["targets"].append(self.score_target(t, probe, fte, preds, yte))
        return out

    def score_target(self, t: EvalTarget, probe: LinearProbe, fte: torch.Tensor, preds: torch.Tensor,
                     yte: torch.Tensor) -> dict[str, Any]:
        target = self.task.class_index(t.class_name)
        idx = torch.nonzero(yte != target).flatten()
        trig, sibling = t.sized(self.s.trigger_size)
        ftrig = self.pasted_features(trig, idx, f"triggered ({t.name})")
        ptrig = probe.predict(ftrig)
        asr, n = attack_success_rate(ptrig, yte[idx], target)
        controls = control_scores(trig, lambda patch, what: attack_success_rate(
            probe.predict(self.pasted_features(patch, idx, what)), yte[idx], target)[0], sibling)
        ref_feats = self.array_features(_object_arrays(t), "reference objects")
        crop_feats = self.array_features(_crop_arrays(t), "object crops")
        res: dict[str, Any] = {
            "name": t.name, "class": self.task.classes[target], "class_index": target,
            "asr": round(asr, 3), "n_triggered": n, **controls,
            "clean_target_rate": round(target_rate(preds[idx], target), 3),
            "triggered_prediction_histogram": prediction_histogram(ptrig, self.task.classes),
            "asr_by_class": asr_by_class(ptrig, yte[idx], target, self.task.classes),
            "reference_accuracy": (round(target_rate(probe.predict(ref_feats), target), 3)
                                   if ref_feats.numel() else None),
            "n_references": int(ref_feats.shape[0]) if ref_feats.numel() else 0,
            "object_crop_accuracy": (round(target_rate(probe.predict(crop_feats), target), 3)
                                     if crop_feats.numel() else None),
            "n_object_crops": int(crop_feats.shape[0]) if crop_feats.numel() else 0,
            "pull": feature_pull(ftrig, fte[idx], ref_feats) if ref_feats.numel() else {},
            "trigger": t.trigger_source, "trigger_size": [int(trig.shape[1]), int(trig.shape[0])],
        }
        return res


def _object_arrays(t: EvalTarget, limit: int = 200) -> list[np.ndarray]:
    """The reference objects as images: each object's bounding-box crop of its reference image (the
    whole image for references without a mask, e.g. SSL-Backdoor's reference images)."""
    out = []
    for ref in map(_load_reference, t.references[:limit]):
        if ref is not None:
            x0, y0, x1, y1 = ref.bbox
            out.append(np.ascontiguousarray(ref.image[y0:y1, x0:x1]))
    return out


def _crop_arrays(t: EvalTarget) -> list[np.ndarray]:
    out = []
    for f, (x0, y0, x1, y1) in t.object_crops:
        try:
            out.append(np.ascontiguousarray(np.asarray(load_rgb(f))[y0:y1, x0:x1]))
        except UserError:
            continue
    return out


def evaluate(encoder: str | os.PathLike[str], task: Task, targets: Sequence[EvalTarget], *,
             clean_encoder: str | os.PathLike[str] | None = None,
             settings: EvalSettings = EvalSettings()) -> dict[str, Any]:  # noqa: B008  # read, never mutated
    """Score ``encoder`` (and the clean one, if given) on ``task`` for every target."""
    removed = exclude_references(task, targets)
    result: dict[str, Any] = {
        "task": task.config.model_dump(mode="json"), "n_classes": len(task.classes),
        "excluded_reference_images": removed, "seed": settings.seed, "location": list(settings.location),
        "probe": settings.probe.__dict__,
        "encoder": Scorer(encoder, task, settings).score(targets),
    }
    if clean_encoder:
        result["clean_encoder"] = Scorer(clean_encoder, task, settings).score(targets)
    result["summary"] = summarize(result)
    return result


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """CA, BA, ASR and no-attack ASR per target, the paper's columns."""
    enc = result["encoder"]
    clean = result.get("clean_encoder")
    rows = []
    for i, t in enumerate(enc["targets"]):
        c = clean["targets"][i] if clean else None
        rows.append({"target": t["name"], "class": t["class"], "asr": t["asr"],
                     "no_attack_asr": c["asr"] if c else None, **{k.key: t.get(k.key) for k in CONTROLS},
                     "reference_accuracy": t["reference_accuracy"], "pull_delta": t["pull"].get("delta")})
    return {"ba" if clean else "accuracy": enc["accuracy"], "ca": clean["accuracy"] if clean else None, "targets": rows}


def format_table(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = []
    if s.get("ca") is not None:
        lines.append(f"CA {s['ca']:.2f}   BA {s['ba']:.2f}   (test images: {result['encoder']['n_test']})")
    else:
        lines.append(f"accuracy {s['accuracy']:.2f}   (test images: {result['encoder']['n_test']})")
    shown = shown_controls(s["targets"])
    lines.append(f"{'target':<18}{'class':<18}{'ASR':>8}{'no-attack':>11}" + "".join(f"{c.short:>9}" for c in shown)
                 + f"{'ref.acc':>9}{'pull':>8}")
    for r in s["targets"]:
        na = "" if r["no_attack_asr"] is None else f"{r['no_attack_asr']:.2f}"
        cs = "".join(f"{'' if r.get(c.key) is None else format(r[c.key], '.2f'):>9}" for c in shown)
        ra = "" if r["reference_accuracy"] is None else f"{r['reference_accuracy']:.1f}"
        pd = "" if r["pull_delta"] is None else f"{r['pull_delta']:+.3f}"
        lines.append(f"{r['target']:<18}{str(r['class']):<18}{r['asr']:>8.2f}{na:>11}{cs}{ra:>9}{pd:>8}")
    lines.append(legend(shown))
    return "\n".join(lines)


def check_trigger_fits(target: EvalTarget, settings: EvalSettings, image_size: int) -> None:
    """The trigger must fit wholly inside the location box of the (square) preprocessed test images."""
    from corruptencoder.poison.geometry import largest_fit, location_box

    trig = resize_trigger(target.trigger, settings.trigger_size)
    th, tw = trig.shape[:2]
    lo, hi = settings.location
    rw, rh = largest_fit(location_box((image_size, image_size), lo, hi))
    if tw > rw or th > rh:
        hint = f"use --trigger-size {min(rw, rh)} or less" if min(rw, rh) >= 1 else "use a larger --image-size"
        raise UserError(f"target {target.name}: a {tw}x{th} trigger does not fit in the [{lo:g}, {hi:g}] box "
                        f"({rw}x{rh} px) of the {image_size} px test images; {hint}, or a wider --location")


def evaluate_encoder(encoder: str | os.PathLike[str], task: Task, *,
                     clean_encoder: str | os.PathLike[str] | None = None,
                     poisons: Sequence[str | os.PathLike[str]] = (), targets: Sequence[tuple[str, str]] = (),
                     backbone: str | None = None, width: float = 1.0,
                     settings: EvalSettings | None = None,
                     zero_shot: str | os.PathLike[str] | None = None,
                     clean_zero_shot: str | os.PathLike[str] | None = None, prompts: str = "imagenet80",
                     out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Score an encoder file on a task for the targets recorded in poison folders and/or given as
    (``NAME[=CLASS]``, trigger image) pairs; with ``out``, write ``metrics.json``."""
    import copy

    from corruptencoder.poison.triggers import load_trigger_file
    from corruptencoder.utils.outputs import write_json_atomic

    settings = copy.copy(settings) if settings is not None else EvalSettings()  # never the caller's object
    t = task
    found: list[EvalTarget] = []
    for folder in poisons:
        found += targets_from_poisons(folder, t.config.name if t.config.name != "task" else None)
    for name, trig in targets:
        nm, _, cls = name.partition("=")
        found.append(EvalTarget(nm, cls or nm, load_trigger_file(trig), str(trig)))
    if not found:
        raise UserError("no target to attack-score: give --poisons DIR or --target NAME --trigger FILE")
    if not 8 <= t.config.image_size <= 4096:
        raise UserError(f"evaluation image size (--image-size or the task's image_size) {t.config.image_size}: use 8 "
                        "to 4096 px (the paper: 224)")
    for target in found:  # an unknown class or a trigger too large fails now, before any feature is extracted
        t.class_index(target.class_name)
        check_trigger_fits(target, settings, t.config.image_size)
    if out:
        from corruptencoder.utils.outputs import check_writable

        check_writable(Path(out) / "metrics.json", "--out")
    if backbone:
        from corruptencoder.ssl.backbones import backbone_spec

        settings.backbone = backbone_spec(backbone, width, None, t.config.image_size)
    result = evaluate(encoder, t, found, clean_encoder=clean_encoder, settings=settings)
    if zero_shot:
        from corruptencoder.evaluate.zeroshot import zero_shot as score_zero_shot
        from corruptencoder.evaluate.zeroshot import zero_shot_options

        kw = zero_shot_options(settings, prompts)
        result["zero_shot"] = {"encoder": score_zero_shot(zero_shot, t, found, **kw)}
        if clean_zero_shot:
            result["zero_shot"]["clean_encoder"] = score_zero_shot(clean_zero_shot, t, found, **kw)
    if out:
        write_json_atomic(Path(out) / "metrics.json", result)
    return result


def format_zero_shot(result: dict[str, Any]) -> str | None:
    z = result.get("zero_shot")
    if not z:
        return None
    return (f"zero-shot accuracy {z['encoder']['accuracy']:.2f}"
            + (f" (clean {z['clean_encoder']['accuracy']:.2f})" if "clean_encoder" in z else "") + "; ASR "
            + ", ".join(f"{t['name']} {t['asr']:.2f}" for t in z["encoder"]["targets"]))
