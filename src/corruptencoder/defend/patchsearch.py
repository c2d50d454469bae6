"""PatchSearch (Tejankar et al., CVPR 2023): find patch-trigger poisons in a pre-training set with the encoder
trained on it, and keep the rest for pre-training again.

The steps follow the paper and its public code (UCDvision/PatchSearch); this is our own implementation:

1. Embed every image with the suspect encoder (centre view at the training resolution) and cluster the
   L2-normalised embeddings with k-means (a small seeded k-means++ / Lloyd in torch, no faiss or sklearn).
2. For a candidate image, Grad-CAM on the cosine similarity between its embedding and its cluster centre (the
   public code's ``KMeansLinear`` head with the top class as target) over the backbone's last convolutional
   feature map (ResNet ``layer4``, SmallCNN ``features``: found generically as the last module that outputs a
   4-D map); the ``window``-px square with the largest summed heat-map is the candidate trigger. Beyond the
   public code, the window is shifted by the map's measured offset (``align``, see :func:`cam_offset`): its
   bilinear resize of the map sits half a cell off the pixels a stride-2 'same' convolution looks at.
3. Flip test: paste the window on a fixed set of test images, the ones closest to each cluster centre (the
   public code's ``test_images_size // num_clusters`` per cluster), and count how many more of them fall into
   the candidate's cluster than before (``new - orig``). That count is the image's poison score.
4. Iterative search: each round scores ``samples_per_round`` random images of every remaining cluster, ranks
   the clusters by their best score and drops the least promising ``drop_fraction``; after ``rounds`` rounds
   every image of the surviving clusters is scored.
5. Poison classifier: the windows of the ``top_k`` highest-scoring images are pasted (random size and place)
   on half of a pool of images that leaves out the ``top_p`` most suspicious share; a small ResNet (one block
   per stage, the public code's ``layers=[1, 1, 1, 1]``) learns pasted vs not, an ensemble of such models
   scores every image, and the images it calls poisons are removed.

Every file gets a poison score, higher = more suspicious: the classifier's probability, or for an image the
flip test scored, the larger of that probability and the share of test images its window flipped. Parameters
scale with the preset (``PRESET_DEFAULTS``); ``paper`` holds the public code's values. Where we differ from the
public code: the classifier trains a fixed number of steps (no validation-based stopping), its colour jitter has
no hue shift, the flip test pastes at one fixed random place per test image (the public code draws new places
per candidate), and at most ``max_removed`` of the files are removed.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from corruptencoder.defend.base import DEFENCES, DataDefence, DefenceContext, DefenceOptions, FilterResult
from corruptencoder.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: The public code's window (60 px) at its resolution (224 px): the default window is this share of the images.
WINDOW_SHARE = 60 / 224
#: The public classifier pastes windows resized to 20-80 px, at least 10 px from the border, on 224-px images.
PASTE_SIZES = (20 / 224, 80 / 224)
PASTE_MARGIN = 10 / 224
#: The fewest images a search makes sense on (a few clusters, a classifier pool beside the top and bottom).
MIN_IMAGES = 8

#: Per-preset defaults, used where the user did not set an option. ``paper``: the public code's README run
#: (1,000 clusters, 1,000 flip-test images, 60-px windows at 224 px, 2 samples per cluster per round, 25 % of
#: the clusters dropped per round, top-20 windows, 10 % left out, an ensemble of 5 classifiers, 2,000 steps of
#: batch 32 at lr 0.01). The 25 % pruning stops there when fewer than 4 of 1,000 clusters remain, after 22 rounds.
#: The smaller presets train the classifier for fewer steps at lr 0.05 (on the unit test's planted patches,
#: 100-150 steps at 0.01 left it flagging a third of the clean images; at 0.05 a handful).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu-tiny": {"clusters": 10, "flip_images": 100, "samples_per_round": 2, "drop_fraction": 0.25, "rounds": 4,
                 "top_k": 10, "top_p": 0.1, "classifier_models": 1, "classifier_steps": 150,
                 "classifier_batch": 32, "classifier_width": 0.25, "classifier_lr": 0.05},
    "cpu-small": {"clusters": 50, "flip_images": 200, "samples_per_round": 2, "drop_fraction": 0.25, "rounds": 8,
                  "top_k": 20, "top_p": 0.1, "classifier_models": 3, "classifier_steps": 400,
                  "classifier_batch": 64, "classifier_width": 0.25, "classifier_lr": 0.05},
    "gpu-small": {"clusters": 100, "flip_images": 500, "samples_per_round": 2, "drop_fraction": 0.25, "rounds": 10,
                  "top_k": 20, "top_p": 0.1, "classifier_models": 3, "classifier_steps": 1000,
                  "classifier_batch": 64, "classifier_width": 0.5, "classifier_lr": 0.05},
    "paper": {"clusters": 1000, "flip_images": 1000, "samples_per_round": 2, "drop_fraction": 0.25, "rounds": 22,
              "top_k": 20, "top_p": 0.1, "classifier_models": 5, "classifier_steps": 2000,
              "classifier_batch": 32, "classifier_width": 1.0, "classifier_lr": 0.01},
}


class PatchSearchOptions(DefenceOptions):
    clusters: int | None = Field(None, ge=2, description="k-means clusters (paper 1000; default: the preset's)")
    window: int | None = Field(None, ge=2, description="side of the Grad-CAM window in pixels at the training "
                               "resolution (paper 60 at 224; default: the same share of the images)")
    flip_images: int | None = Field(None, ge=1, description="test images of the flip test (paper 1000)")
    samples_per_round: int | None = Field(None, ge=1, description="images scored per cluster and round (paper 2)")
    drop_fraction: float | None = Field(None, ge=0.0, lt=1.0,
                                        description="share of the clusters dropped per round (paper 0.25)")
    rounds: int | None = Field(None, ge=0, description="pruning rounds before the surviving clusters are scored "
                               "in full")
    top_k: int | None = Field(None, ge=1, description="top-ranked windows that train the poison classifier "
                              "(paper 20)")
    top_p: float | None = Field(None, ge=0.0, lt=1.0, description="share of the most suspicious images left out "
                                "of the classifier's pool (paper 0.1)")
    classifier_models: int | None = Field(None, ge=1, description="poison classifiers in the ensemble (paper 5)")
    classifier_steps: int | None = Field(None, ge=1, description="SGD steps per classifier (paper 2000)")
    classifier_batch: int | None = Field(None, ge=2, description="classifier batch size (paper 32)")
    classifier_width: float | None = Field(None, gt=0.0, description="classifier ResNet width (paper 1.0)")
    classifier_lr: float | None = Field(None, gt=0.0, description="classifier learning rate (paper 0.01)")
    max_removed: float = Field(0.5, gt=0.0, le=1.0, description="never remove more than this share of the files "
                               "(a classifier that flags more has failed; the highest scores go first)")
    align: bool = Field(True, description="shift Grad-CAM windows by the feature map's measured offset (false: the "
                        "public code's plain resize of the map)")


@dataclass(frozen=True)
class Params:
    """PatchSearch's settings, resolved for one data set (preset defaults, user's options, clamped to the data)."""

    image_size: int
    window: int
    clusters: int
    flip_images: int
    samples_per_round: int
    drop_fraction: float
    rounds: int
    top_k: int
    top_p: float
    classifier_models: int
    classifier_steps: int
    classifier_batch: int
    classifier_width: float
    classifier_lr: float
    max_removed: float
    align: bool = True


def resolve_params(opts: PatchSearchOptions, preset: str | None, n_images: int, image_size: int) -> Params:
    """The settings for ``n_images`` images at ``image_size`` px; bad combinations are one ``UserError``."""
    if n_images < MIN_IMAGES:
        raise UserError(f"PatchSearch needs at least {MIN_IMAGES} images to cluster and search, got {n_images}; "
                        "give the whole pre-training set (--data, --poisons)")
    base = dict(PRESET_DEFAULTS.get(preset or "paper", PRESET_DEFAULTS["paper"]))
    given = {k: v for k, v in opts.model_dump().items() if v is not None}
    values = base | given
    window = int(values.get("window") or max(2, round(WINDOW_SHARE * image_size)))
    if window >= image_size:
        hint = max(2, round(WINDOW_SHARE * image_size))
        raise UserError(f"window of {window} px does not fit in the {image_size}-px images PatchSearch looks at; "
                        f"give a smaller --window (defence_args.window), e.g. {hint}")
    clusters = min(int(values["clusters"]), max(2, n_images // 4))  # a few images per cluster at least
    top_k = min(int(values["top_k"]), max(1, n_images // 8))
    return Params(image_size=image_size, window=window, clusters=clusters,
                  flip_images=min(int(values["flip_images"]), n_images),
                  samples_per_round=int(values["samples_per_round"]), drop_fraction=float(values["drop_fraction"]),
                  rounds=int(values["rounds"]), top_k=top_k, top_p=float(values["top_p"]),
                  classifier_models=int(values["classifier_models"]), classifier_steps=int(values["classifier_steps"]),
                  classifier_batch=int(values["classifier_batch"]), classifier_width=float(values["classifier_width"]),
                  classifier_lr=float(values["classifier_lr"]), max_removed=float(values["max_removed"]),
                  align=bool(values["align"]))


# -- images ---------------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Images:
    """The images at the training resolution as uint8 (3, S, S): the shorter side resized to S, the central
    square (the whole of a square image). Decoded once into memory when they fit, streamed otherwise."""

    MEMORY_BYTES = 2 * 1024**3

    def __init__(self, data: torch.Tensor | None = None, files: Sequence[str] | None = None, size: int = 32,
                 workers: int = 0, progress: bool = False) -> None:
        self.tensor = data
        self.files = list(files or [])
        self.size = int(data.shape[-1]) if data is not None else size
        self.workers = workers
        self.progress = progress
        self._ds: Any = None
        if data is None:
            from corruptencoder.data.datasets import ImageStore, LabelledDataset

            store = ImageStore(self.files, short_side=size, cache=False)
            self._ds = LabelledDataset(store, [0] * len(self.files), size, size)
            if len(self.files) * 3 * size * size <= self.MEMORY_BYTES:
                import torch

                self.tensor = torch.cat([b for _, b in self._stream(256)]) if self.files else None

    @classmethod
    def from_files(cls, files: Sequence[str], size: int, workers: int = 0, progress: bool = False) -> Images:
        return cls(None, files, size, workers, progress)

    def __len__(self) -> int:
        return int(self.tensor.shape[0]) if self.tensor is not None else len(self.files)

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        import torch

        if self.tensor is not None:
            return self.tensor[torch.as_tensor(list(indices), dtype=torch.long)]
        return torch.stack([self._ds[int(i)][0] for i in indices])

    def _stream(self, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        loader = DataLoader(self._ds, batch_size=batch_size, shuffle=False, num_workers=self.workers)
        start = 0
        for x, _y, _i in tqdm(loader, desc="images", unit="batch", disable=not self.progress, leave=False):
            yield start, x
            start += len(x)

    def batches(self, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first index, uint8 batch) over all images in order."""
        if self.tensor is not None:
            for s in range(0, len(self), batch_size):
                yield s, self.tensor[s: s + batch_size]
        else:
            yield from self._stream(batch_size)


def _prepare(x: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 or [0, 1] images -> the encoder's normalised input on ``device``."""
    import torch

    from corruptencoder.ssl.augment import normalize_batch

    x = x.to(device)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return normalize_batch(x)


def embed(model: nn.Module, x: torch.Tensor, device: str, batch_size: int = 256, *,
          keep: bool = False) -> torch.Tensor:
    """L2-normalised embeddings of images (uint8 or [0, 1] floats) in batches; on the CPU unless ``keep`` (then
    on ``device``). On a GPU in bfloat16 autocast, as the toolkit's feature extraction."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        for s in range(0, len(x), batch_size):
            z = F.normalize(model(_prepare(x[s: s + batch_size], device)).float(), dim=1)
            out.append(z if keep else z.cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def embed_images(model: nn.Module, images: Images, device: str, batch_size: int = 256) -> torch.Tensor:
    import torch

    return torch.cat([embed(model, b, device, batch_size) for _, b in images.batches(batch_size)])


# -- k-means ----------------------------------------------------------------------------------------------


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means of unit vectors (N, D): k-means++ seeding, then ``iters`` Lloyd steps on cosine
    similarity (the public code: faiss, 20 iterations). Returns (unit centres (k, D), assignment (N,)).
    An emptied cluster is re-seeded with the image farthest from its centre. Deterministic given ``seed``."""
    import torch
    import torch.nn.functional as F

    n = len(x)
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    centres = torch.empty(k, x.shape[1])
    first = int(torch.randint(n, (1,), generator=g))
    centres[0] = x[first]
    best = (2 - 2 * (x @ x[first])).clamp_(min=0)  # squared distance of unit vectors
    for j in range(1, k):
        total = float(best.sum())
        pick = int(torch.multinomial(best / total, 1, generator=g)) if total > 1e-12 else \
            int(torch.randint(n, (1,), generator=g))
        centres[j] = x[pick]
        best = torch.minimum(best, (2 - 2 * (x @ x[pick])).clamp_(min=0))
    assign = _assign(x, centres)
    for _ in range(iters):
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:  # re-seed with the worst-fitting images, deterministic
            fit = (x * centres[assign]).sum(1)
            for j, i in zip(empty, fit.argsort()[: len(empty)].tolist(), strict=False):
                sums[j] = x[i]
        centres = F.normalize(sums, dim=1)
        new = _assign(x, centres)
        if torch.equal(new, assign):
            break
        assign = new
    return centres, assign


def _assign(x: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    import torch

    return torch.cat([(x[s: s + chunk] @ centres.T).argmax(1) for s in range(0, len(x), chunk)])


# -- Grad-CAM -------------------------------------------------------------------------------------------------


def feature_layer(model: nn.Module, size: int, device: str) -> tuple[str, nn.Module]:
    """The module whose output is the last 4-D feature map (with more than one position) of a forward pass:
    ResNet ``layer4``, SmallCNN ``features``. Global pooling layers are skipped."""
    import torch
    from torch import nn

    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    hooks = []
    for name, module in model.named_modules():
        if not name or isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            continue

        def hook(mod: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                seen.append((name, mod, tuple(out.shape)))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in hooks:
            h.remove()
    maps = [s for s in seen if s[2][2] * s[2][3] > 1] or seen
    if not maps:
        raise UserError("PatchSearch's Grad-CAM needs a convolutional feature map, and this encoder has none; "
                        "use a CNN backbone (resnet18/34/50, small_cnn)")
    name, module, _ = maps[-1]
    return name, module


def cam_offset(model: nn.Module, layer: nn.Module, size: int, device: str, seed: int = 0) -> tuple[float, float]:
    """Where the feature map's central cell really looks, minus where a bilinear resize of the map puts it, in
    pixels (y, x). A stride-2 convolution with 'same' padding centres cell j on pixel 2j, the resize on 2j + 0.5,
    so a ResNet's 7 x 7 map at 224 px sits 16 px off (SmallCNN at 32 px: 3.5 px); measured once per encoder as
    the centroid of the input gradient of that cell."""
    import torch

    acts: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.enable_grad():
            x = torch.rand(4, 3, size, size, generator=g).to(device).requires_grad_(True)
            model(_prepare(x, device))
            a = acts["a"]
            h, w = a.shape[-2:]
            (grad,) = torch.autograd.grad(a[:, :, h // 2, w // 2].abs().sum(), x)
    finally:
        handle.remove()
    heat = grad.abs().sum(dim=(0, 1)).cpu()
    total = float(heat.sum())
    if total <= 0:
        return 0.0, 0.0
    ys = torch.arange(size, dtype=torch.float32)
    cy = float((heat.sum(1) * ys).sum()) / total
    cx = float((heat.sum(0) * ys).sum()) / total
    return cy - ((h // 2 + 0.5) * size / h - 0.5), cx - ((w // 2 + 0.5) * size / w - 0.5)


def gradcam_windows(model: nn.Module, layer: nn.Module, x: torch.Tensor, centres: torch.Tensor, window: int,
                    device: str, offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Top-left corners (B, 2) as (y, x) of the ``window`` square with the most Grad-CAM heat, the heat being
    that of the cosine similarity between each image's embedding and its cluster centre ``centres`` (B, D)."""
    import torch
    import torch.nn.functional as F

    acts: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    try:
        with torch.enable_grad():
            inp = _prepare(x, device).requires_grad_(True)
            emb = model(inp)
            sim = F.cosine_similarity(emb.float(), centres.to(device), dim=1)
            a = acts["a"]
            (grad,) = torch.autograd.grad(sim.sum(), a)
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a.detach()).sum(1, keepdim=True))
    size = x.shape[-1]
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
    sums = F.avg_pool2d(cam, window, stride=1).flatten(1)
    side = size - window + 1
    idx = sums.argmax(1).cpu()
    ys = (idx // side + round(offset[0])).clamp(0, side - 1)
    xs = (idx % side + round(offset[1])).clamp(0, side - 1)
    return torch.stack([ys, xs], dim=1)


def crop_windows(x: torch.Tensor, corners: torch.Tensor, window: int) -> torch.Tensor:
    """The (B, 3, w, w) windows of images (B, 3, S, S) at top-left ``corners`` (B, 2) = (y, x)."""
    import torch

    return torch.stack([img[:, int(y): int(y) + window, int(x_): int(x_) + window]
                        for img, (y, x_) in zip(x, corners.tolist(), strict=True)])


# -- flip test ----------------------------------------------------------------------------------------


class FlipTest:
    """Test images with one fixed paste position each; ``scores(windows, clusters)`` counts, per window, how many
    more of them the encoder assigns to the window's cluster once it is pasted on them."""

    def __init__(self, model: nn.Module, images: torch.Tensor, centres: torch.Tensor, window: int, seed: int,
                 device: str, batch_size: int = 256) -> None:
        import torch

        # everything the pasting touches lives on the device: one forward pass per chunk, no transfers
        self.model, self.centres, self.window, self.device = model, centres.to(device), window, device
        images = images.to(device)
        self.images = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        self.batch = max(1, batch_size)
        t, _, s, _ = self.images.shape
        g = torch.Generator().manual_seed(seed + 7919)
        ys = torch.randint(0, s - window + 1, (t,), generator=g)
        xs = torch.randint(0, s - window + 1, (t,), generator=g)
        # for every test image, which window pixel lands on each of its pixels (w*w = none: keep the image's)
        rows = torch.arange(s).view(1, s, 1) - ys.view(t, 1, 1)
        cols = torch.arange(s).view(1, 1, s) - xs.view(t, 1, 1)
        inside = (rows >= 0) & (rows < window) & (cols >= 0) & (cols < window)
        self.index = torch.where(inside, rows.clamp(0, window - 1) * window + cols.clamp(0, window - 1),
                                 torch.full_like(rows, window * window)).view(t, s * s).to(device)
        self.inside = inside.unsqueeze(1).to(device)  # (T, 1, S, S)
        self.positions = torch.stack([ys, xs], dim=1)
        self.before = _assign(embed(model, self.images, device, self.batch, keep=True), self.centres).cpu()
        self.counts = torch.bincount(self.before, minlength=len(centres))

    def __len__(self) -> int:
        return len(self.images)

    def pasted(self, windows: torch.Tensor, rows: slice) -> torch.Tensor:
        """(G, T', 3, S, S): each window pasted on the test images ``rows``."""
        import torch

        g, _, w, _ = windows.shape
        flat = torch.cat([windows.reshape(g, 3, w * w), torch.zeros(g, 3, 1, device=windows.device)], dim=2)
        index = self.index[rows]
        t, s = index.shape[0], self.images.shape[-1]
        got = flat.index_select(2, index.flatten()).view(g, 3, t, s, s).permute(0, 2, 1, 3, 4)
        return torch.where(self.inside[rows].unsqueeze(0), got, self.images[rows].unsqueeze(0))

    def scores(self, windows: torch.Tensor, clusters: Sequence[int]) -> list[int]:
        """Flip counts (new - before) of float [0, 1] windows (G, 3, w, w) for their clusters."""
        import torch

        t = len(self)
        out: list[int] = []
        per = max(1, self.batch // t)  # windows per forward pass when the test set is small
        for s in range(0, len(windows), per):
            group = windows[s: s + per].float().to(self.device)
            target = torch.as_tensor(list(clusters[s: s + per]), device=self.device).view(-1, 1)
            hits = torch.zeros(len(group), dtype=torch.long, device=self.device)
            for r in range(0, t, self.batch):
                rows = slice(r, min(t, r + self.batch))
                x = self.pasted(group, rows)
                n = x.shape[1]
                a = _assign(embed(self.model, x.reshape(-1, *x.shape[2:]), self.device, self.batch, keep=True),
                            self.centres).view(len(group), n)
                hits += (a == target).sum(1)
            out += [int(h) - int(self.counts[c]) for h, c in zip(hits.tolist(), clusters[s: s + per], strict=True)]
        return out


def flip_test_indices(feats: torch.Tensor, centres: torch.Tensor, assign: torch.Tensor, count: int,
                      seed: int) -> list[int]:
    """The public code's test set: the ``count // k`` images closest to each centre, or, when that is 0, the
    closest image of ``count`` random clusters."""
    import torch

    k = len(centres)
    sim = (feats * centres[assign]).sum(1)
    members = [(assign == c).nonzero().flatten() for c in range(k)]
    ranked = [m[sim[m].argsort(descending=True, stable=True)].tolist() for m in members]
    per = count // k
    out: list[int] = []
    if per > 0:
        for r in ranked:
            out += r[:per]
    else:
        g = torch.Generator().manual_seed(seed + 104729)
        nonempty = [r for r in ranked if r]
        for c in torch.randperm(len(nonempty), generator=g)[:count].tolist():
            out.append(nonempty[c][0])
    return sorted(out)


# -- the search ---------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """Flip-test scores (None: not scored), the window corner of every scored image, clusters and the log."""

    scores: list[int | None]
    corners: dict[int, tuple[int, int]]
    assign: list[int]
    clusters: int
    flip_images: int
    layer: str
    offset: tuple[float, float] = (0.0, 0.0)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def ranked(self) -> list[int]:
        """Indices by score, highest first (unscored count as 0, as in the public code; ties by index)."""
        return sorted(range(len(self.scores)), key=lambda i: (-(self.scores[i] or 0), i))


def search(model: nn.Module, images: Images, p: Params, *, seed: int, device: str, progress: bool = False,
           batch_size: int = 256) -> SearchResult:
    """Steps 1-4: embeddings, k-means, Grad-CAM windows, flip test and the iterative search over clusters."""
    import torch
    from tqdm import tqdm

    t0 = time.perf_counter()
    model = model.to(device).eval()
    feats = embed_images(model, images, device, batch_size)
    t1 = time.perf_counter()
    centres, assign = kmeans(feats, p.clusters, seed)
    t2 = time.perf_counter()
    name, layer = feature_layer(model, p.image_size, device)
    offset = cam_offset(model, layer, p.image_size, device, seed) if p.align else (0.0, 0.0)
    test_idx = flip_test_indices(feats, centres, assign, p.flip_images, seed)
    flip = FlipTest(model, images.get(test_idx), centres, p.window, seed, device, batch_size)
    k = len(centres)
    g = torch.Generator().manual_seed(seed + 15485863)
    members = [(assign == c).nonzero().flatten() for c in range(k)]
    queues: list[list[int]] = [q[torch.randperm(len(q), generator=g)].tolist() for q in members]
    result = SearchResult([None] * len(images), {}, assign.tolist(), k, len(flip), name, offset)
    best: dict[int, int] = {}

    def score(indices: list[int]) -> None:
        for s in range(0, len(indices), 64):
            chunk = indices[s: s + 64]
            x = images.get(chunk)
            corners = gradcam_windows(model, layer, x, centres[assign[chunk]], p.window, device, offset)
            windows = crop_windows(x, corners, p.window).float().div(255.0)
            clusters = [int(assign[i]) for i in chunk]
            for i, c, v, yx in zip(chunk, clusters, flip.scores(windows, clusters), corners.tolist(), strict=True):
                result.scores[i] = v
                result.corners[i] = (int(yx[0]), int(yx[1]))
                best[c] = max(best.get(c, v), v)

    candidates = [c for c in range(k) if queues[c]]
    bar = tqdm(total=p.rounds + 1, desc="PatchSearch", unit="round", disable=not progress, leave=False)
    for r in range(p.rounds):
        picked: list[int] = []
        for c in candidates:
            picked += queues[c][: p.samples_per_round]
            queues[c] = queues[c][p.samples_per_round:]
        if not picked:
            break
        score(picked)
        candidates.sort(key=lambda c: (-best.get(c, -(10**9)), c))
        drop = int(p.drop_fraction * len(candidates))
        kept = candidates[: max(1, len(candidates) - drop)]
        result.rounds.append({"round": r + 1, "clusters": len(candidates), "scored": len(picked),
                              "kept_clusters": len(kept), "best": max(best.values()) if best else None})
        candidates = kept
        bar.update()
    rest = [i for c in candidates for i in queues[c]]
    score(rest)
    result.rounds.append({"round": "final", "clusters": len(candidates), "scored": len(rest)})
    bar.update()
    bar.close()
    result.survivors = sorted(candidates)
    result.timings = {"embed": round(t1 - t0, 2), "kmeans": round(t2 - t1, 2),
                      "search": round(time.perf_counter() - t2, 2)}
    return result


# -- the poison classifier ------------------------------------------------------------------------------------


def build_classifier(width: float, image_size: int) -> nn.Module:
    """The public code's classifier: a ResNet with one BasicBlock per stage, and a 2-way head."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    from corruptencoder.ssl.backbones import ResNet, default_small_stem

    trunk = ResNet(BasicBlock, [1, 1, 1, 1], width, default_small_stem(image_size))
    return nn.Sequential(trunk, nn.Linear(trunk.out_dim, 2))


def _jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation 0.4, p 0.8), grayscale (p 0.2), horizontal flip (p 0.5)
    on a [0, 1] batch, drawn from ``g`` (the public classifier's augmentation, without the hue shift)."""
    import torch

    b = len(x)

    def factor() -> torch.Tensor:
        return (1 + (torch.rand(b, generator=g) * 0.8 - 0.4)).view(b, 1, 1, 1)

    apply = (torch.rand(b, generator=g) < 0.8).view(b, 1, 1, 1)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    j = x * factor()
    mean = gray.mean(dim=(2, 3), keepdim=True)
    j = (j - mean) * factor() + mean
    jg = (0.299 * j[:, 0] + 0.587 * j[:, 1] + 0.114 * j[:, 2]).unsqueeze(1)
    j = (j - jg) * factor() + jg
    x = torch.where(apply, j.clamp(0, 1), x)
    to_gray = (torch.rand(b, generator=g) < 0.2).view(b, 1, 1, 1)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1).expand_as(x)
    x = torch.where(to_gray, gray, x)
    flip = (torch.rand(b, generator=g) < 0.5).view(b, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def _random_crops(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float] = (0.2, 1.0)) -> torch.Tensor:
    """RandomResizedCrop(scale 0.2-1, ratio 3/4-4/3) of every image back to its size, in one roi_align."""
    import torch
    from torchvision.ops import roi_align

    b, _, s, _ = x.shape
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=g) * s * s
    ratio = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g))
    w = torch.sqrt(area * ratio).clamp(1, s)
    h = torch.sqrt(area / ratio).clamp(1, s)
    x0 = torch.rand(b, generator=g) * (s - w)
    y0 = torch.rand(b, generator=g) * (s - h)
    boxes = torch.stack([torch.arange(b, dtype=torch.float), x0, y0, x0 + w, y0 + h], dim=1).to(x.device)
    return roi_align(x, boxes, output_size=(s, s), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _paste_random(x: torch.Tensor, windows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Paste a random window, resized to a random side and placed at random, on every image of x (in place)."""
    import torch
    import torch.nn.functional as F

    s = x.shape[-1]
    margin = max(0, round(PASTE_MARGIN * s))
    lo = max(2, round(PASTE_SIZES[0] * s))
    hi = max(lo + 1, min(round(PASTE_SIZES[1] * s), s - 2 * margin))
    for i in range(len(x)):
        w = windows[int(torch.randint(len(windows), (1,), generator=g))]
        side = int(torch.randint(lo, hi, (1,), generator=g)) if hi > lo else lo
        side = min(side, s)
        patch = F.interpolate(w.unsqueeze(0), size=(side, side), mode="bilinear", align_corners=False)[0]
        top = max(0, s - side - margin)
        y = int(torch.randint(min(margin, top), top + 1, (1,), generator=g))
        x_ = int(torch.randint(min(margin, top), top + 1, (1,), generator=g))
        x[i, :, y: y + side, x_: x_ + side] = patch.to(x.device)
    return x


def train_classifiers(images: Images, pool: Sequence[int], windows: torch.Tensor, p: Params, *, seed: int,
                      device: str, progress: bool = False) -> list[nn.Module]:
    """Step 5: an ensemble of small ResNets that tell an image with a pasted top window from one without."""
    import torch
    from torch import nn
    from tqdm import tqdm

    from corruptencoder.ssl.augment import normalize_batch

    models = []
    loss_fn = nn.CrossEntropyLoss()
    pool_t = torch.as_tensor(list(pool), dtype=torch.long)
    for m in range(p.classifier_models):
        g = torch.Generator().manual_seed(seed * 1009 + m)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1009 + m)
            net = build_classifier(p.classifier_width, p.image_size).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=p.classifier_lr, momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, p.classifier_steps)
        net.train()
        for _ in tqdm(range(p.classifier_steps), desc=f"poison classifier {m + 1}/{p.classifier_models}",
                      unit="step", disable=not progress, leave=False):
            idx = pool_t[torch.randint(len(pool_t), (p.classifier_batch,), generator=g)].tolist()
            x = _random_crops(images.get(idx).float().div(255.0), g)
            label = (torch.rand(len(x), generator=g) < 0.5).long()
            pos = label.nonzero().flatten().tolist()
            if pos:
                x[pos] = _paste_random(x[pos], windows, g)
            x = normalize_batch(_jitter(x, g)).to(device)
            loss = loss_fn(net(x), label.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        models.append(net.eval())
    return models


def classify(models: Sequence[nn.Module], images: Images, device: str, batch_size: int = 256) -> torch.Tensor:
    """P(poison) of every image: softmax of the ensemble's mean logits (the public code averages the logits)."""
    import torch

    out = []
    with torch.no_grad():
        for _, x in images.batches(batch_size):
            inp = _prepare(x, device)
            logits = torch.stack([m(inp) for m in models]).mean(0)
            out.append(logits.softmax(1)[:, 1].float().cpu())
    return torch.cat(out)


# -- the whole defence ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    keep: list[int]
    scores: list[float]
    probability: list[float]
    search: SearchResult
    report: dict[str, Any]


def patchsearch(model: nn.Module, images: Images, p: Params, *, seed: int = 0, device: str = "cpu",
                progress: bool = False) -> Outcome:
    """Search, classifier and decision on images held by ``images`` (indices, not files)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        res = search(model, images, p, seed=seed, device=device, progress=progress)
        t0 = time.perf_counter()
        ranked = res.ranked()
        n = len(images)
        top = [i for i in ranked if res.scores[i] is not None][: p.top_k]
        windows = crop_windows(images.get(top), torch.as_tensor([res.corners[i] for i in top]),
                               p.window).float().div(255.0)
        pool = ranked[int(p.top_p * n): n - p.top_k] or ranked[p.top_k:]
        models = train_classifiers(images, pool, windows, p, seed=seed, device=device, progress=progress)
        prob = classify(models, images, device)
        res.timings["classifier"] = round(time.perf_counter() - t0, 2)
    t = len(res.scores)
    scores = []
    for i in range(t):
        s = res.scores[i]
        v = float(prob[i])
        scores.append(max(v, min(1.0, max(0.0, s / max(1, res.flip_images)))) if s is not None else v)
    flagged = [i for i in range(t) if float(prob[i]) >= 0.5]
    cap = int(p.max_removed * t)
    capped = len(flagged) > cap
    if capped:
        log.warning("PatchSearch's classifier flagged %d of %d files, more than max_removed=%g: removing the %d "
                    "highest scores only", len(flagged), t, p.max_removed, cap)
        flagged = sorted(flagged, key=lambda i: (-scores[i], i))[:cap]
    removed = set(flagged)
    keep = [i for i in range(t) if i not in removed]
    bottom = ranked[-p.top_k:]  # the public code's validation negatives: the lowest flip-test scores
    report: dict[str, Any] = {
        "defence": "patchsearch", "params": asdict(p), "images": t, "feature_layer": res.layer,
        "cam_offset": [round(v, 2) for v in res.offset], "clusters": res.clusters, "flip_images": res.flip_images,
        "scored_by_search": sum(s is not None for s in res.scores),
        "rounds": res.rounds, "surviving_clusters": res.survivors,
        "classifier": {"models": len(models), "pool": len(pool), "flagged": sum(float(v) >= 0.5 for v in prob),
                       "top_k_flag_rate": round(float((prob[top] >= 0.5).float().mean()), 3) if top else None,
                       "bottom_k_flag_rate": round(float((prob[bottom] >= 0.5).float().mean()), 3)},
        "removed": len(removed), "kept": len(keep), "capped": capped,
        "timings": res.timings,
    }
    return Outcome(keep, scores, [float(v) for v in prob], res, report)


def contact_sheet(images: Images, search_result: SearchResult, window: int, out: Path, *, num: int = 16,
                  cols: int = 4, cell: int = 128) -> Path | None:
    """The images the flip test ranked highest, their windows outlined in red (like ``poison/show.py``)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from corruptencoder.poison.show import TRIGGER_COLOUR

    top = [i for i in search_result.ranked() if search_result.scores[i] is not None][:num]
    if not top:
        return None
    x = images.get(top)
    cols = max(1, min(cols, len(top)))
    rows = math.ceil(len(top) / cols)
    pad = 4
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), (255, 255, 255))
    s = x.shape[-1]
    scale = cell / s
    for k, i in enumerate(top):
        thumb = Image.fromarray(np.ascontiguousarray(x[k].permute(1, 2, 0).numpy())).resize(
            (cell, cell), Image.Resampling.NEAREST if s < cell // 2 else Image.Resampling.BICUBIC)
        y0, x0 = search_result.corners[i]
        draw = ImageDraw.Draw(thumb)
        draw.rectangle([x0 * scale, y0 * scale, (x0 + window) * scale - 1, (y0 + window) * scale - 1],
                       outline=TRIGGER_COLOUR, width=max(1, round(cell / 96)))
        r, c = divmod(k, cols)
        sheet.paste(thumb, (pad + c * (cell + pad), pad + r * (cell + pad)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def top_report(outcome: Outcome, names: Sequence[str], window: int, num: int = 20) -> list[dict[str, Any]]:
    res = outcome.search
    top = [i for i in res.ranked() if res.scores[i] is not None][:num]
    out = []
    for i in top:
        y, x = res.corners[i]
        out.append({"file": names[i], "flips": res.scores[i], "cluster": res.assign[i],
                    "window": [x, y, x + window, y + window], "classifier": round(outcome.probability[i], 4),
                    "score": round(outcome.scores[i], 4)})
    return out


def run(model: nn.Module, files: Sequence[str], image_size: int, opts: PatchSearchOptions, *, preset: str | None,
        seed: int, device: str, out: Path, workers: int = 0, progress: bool = False) -> FilterResult:
    """PatchSearch on files: resolve the settings, run, write the contact sheet into ``out``."""
    t0 = time.perf_counter()
    files = [str(f) for f in files]
    p = resolve_params(opts, preset, len(files), image_size)
    device = resolve_device(device)
    images = Images.from_files(files, image_size, workers, progress)
    outcome = patchsearch(model, images, p, seed=seed, device=device, progress=progress)
    sheet = contact_sheet(images, outcome.search, p.window, out / "patchsearch_top.png")
    report = outcome.report | {"preset": preset, "top": top_report(outcome, files, p.window),
                               "contact_sheet": sheet.name if sheet else None,
                               "seconds": round(time.perf_counter() - t0, 1)}
    return FilterResult([files[i] for i in outcome.keep], dict(zip(files, outcome.scores, strict=True)), report)


@DEFENCES.register
class PatchSearch(DataDefence[PatchSearchOptions]):
    """PatchSearch (Tejankar et al., CVPR 2023): cluster the suspect encoder's embeddings, find each image's
    most salient window with Grad-CAM, score it by how many test images of other clusters it moves into its
    own (the flip test), search the clusters iteratively, then train a poison classifier on the top windows
    and remove what it flags. Writes keep.txt, removed.txt, scores.csv, report.json and a contact sheet."""

    name = "patchsearch"
    data_kinds = ("images",)  # it filters an image set and re-trains on what is kept; CLIP's pairs are not one
    summary = "PatchSearch: find patch-trigger poisons with the suspect encoder (Grad-CAM + flip test + classifier)"
    options = PatchSearchOptions

    def label(self) -> str:
        return "PatchSearch"

    def filter(self, ctx: DefenceContext) -> FilterResult:
        from corruptencoder.ssl.encoder import load_encoder

        if ctx.encoder is None:
            raise UserError("PatchSearch needs the encoder trained on the suspect data")
        data = ctx.pretrain.get("data") or {}
        size = int(data.get("image_size") or 224)
        resolve_params(self.opts, ctx.preset, len(ctx.files), size)  # bad settings fail before any work
        model, _, _ = load_encoder(ctx.encoder)
        ctx.out.mkdir(parents=True, exist_ok=True)
        return run(model, ctx.files, size, self.opts, preset=ctx.preset, seed=ctx.seed, device=ctx.device,
                   out=ctx.out, workers=int(data.get("workers") or 0), progress=ctx.progress)

    # -- command line: corruptencoder defend patchsearch ---------------------------------------------------
    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--encoder", type=Path, required=True, help="the suspect encoder.pt (trained on --data)")
        p.add_argument("--data", required=True, help="the suspect pre-training images: folder, ImageFolder root or "
                       "file list (clean and poisons together, or the clean part with --poisons)")
        p.add_argument("--poisons", nargs="+", default=[], help="poison folders written by 'craft' to add to --data "
                       "(their manifests also give precision / recall in the summary)")
        p.add_argument("--backbone", help="backbone of a plain state-dict encoder (an encoder.pt knows its own)")
        p.add_argument("--width", type=float, default=1.0, help="width of --backbone (default 1.0)")
        p.add_argument("--image-size", type=int, help="training resolution (default: the encoder's, else 224)")
        p.add_argument("--preset", choices=sorted(PRESET_DEFAULTS), help="scale of the defaults (default paper)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda")
        p.add_argument("--workers", type=int, default=0, help="image loader workers (default 0)")

    @classmethod
    def run_cli(cls, args: argparse.Namespace, options: DefenceOptions) -> str:
        assert isinstance(options, PatchSearchOptions)
        from corruptencoder.utils.outputs import atomic_output_dir, check_output_dir, write_json_atomic

        check_output_dir(args.out, args.overwrite)
        files, truth = cli_files(args.data, args.poisons)
        model, size = cli_encoder(args.encoder, args.backbone, args.width, args.image_size)
        resolve_params(options, args.preset, len(files), size)  # fails before the output folder exists
        with atomic_output_dir(args.out, args.overwrite) as tmp:
            res = run(model, files, size, options, preset=args.preset, seed=args.seed, device=args.device, out=tmp,
                      workers=args.workers, progress=not args.quiet)
            kept = set(res.keep)
            (tmp / "keep.txt").write_text("".join(f"{f}\n" for f in res.keep), encoding="utf-8")
            (tmp / "removed.txt").write_text("".join(f"{f}\n" for f in files if f not in kept), encoding="utf-8")
            ranked = sorted(res.scores.items(), key=lambda kv: (-kv[1], kv[0]))
            (tmp / "scores.csv").write_text("file,score,removed\n" + "".join(
                f"{f},{v:.6f},{int(f not in kept)}\n" for f, v in ranked), encoding="utf-8")
            if truth:
                from corruptencoder.evaluate.metrics import detection_metrics

                res.report["detection"] = detection_metrics(res.scores, kept, truth)
            write_json_atomic(tmp / "report.json", res.report)
        det = res.report.get("detection")
        extra = (f"; {det['removed_poisons']} of {det['poisons']} poisons among them (recall {det['recall']} %, "
             f"precision {det['precision']} %, AUROC {det['auroc']})") if det else ""
        return (f"PatchSearch scored {len(files)} images ({res.report['clusters']} clusters, "
                f"{res.report['scored_by_search']} by the flip test) and removed {res.report['removed']}{extra} in "
                f"{res.report['seconds']:.0f} s -> {args.out / 'keep.txt'}")


def cli_files(data: str, poisons: Sequence[str]) -> tuple[list[str], set[str]]:
    """``--data`` (folder, ImageFolder root or list; 'demo') plus ``--poisons`` folders, and the poisons' paths."""
    from corruptencoder.data.folders import load_collection
    from corruptencoder.poison.manifest import poison_files

    if data == "demo":
        from corruptencoder.demo import demo_world

        data = str(demo_world() / "pretrain")
    files = [str(f) for f in load_collection(data, what="--data images").files]
    truth: set[str] = set()
    for folder in poisons:
        got = [str(f) for f in poison_files(folder)]
        files += got
        truth |= {str(Path(f).resolve()) for f in got}
    return files, truth


def cli_encoder(path: Path, backbone: str | None, width: float, image_size: int | None) -> tuple[nn.Module, int]:
    """The encoder (an encoder.pt, or a plain state dict with ``backbone``) and the resolution to look at."""
    from corruptencoder.ssl.backbones import backbone_spec
    from corruptencoder.ssl.encoder import load_encoder

    spec = backbone_spec(backbone, width, image_size=image_size or 224) if backbone else None
    model, _, meta = load_encoder(path, spec)
    size = int(image_size or meta.get("image_size") or 224)
    if size < 8:
        raise UserError(f"--image-size {size} is too small; give at least 8 px")
    return model, size
