"""Reference images and reference objects, from the annotation formats users actually have.

A :class:`Reference` is a full reference image plus an optional object matte (uint8 alpha,
0..255). The *reference object* of the paper is the matte's bounding box, with the matte kept for
blending. Accepted inputs:

* labelme JSON polygons (``shapes`` drawn in file order; labels in ``cut_labels`` such as
  ``nmask`` cut holes; the embedded ``imageData`` is trusted over a stale ``imagePath``);
* an image plus a mask PNG (binary 0/1 or 0/255, 16-bit, a labelme export palette where index 1
  / RGB (128, 0, 0) is the object), found as ``foo_mask.png`` / ``foo.mask.png`` /
  ``masks/foo.png`` next to ``foo.jpg``, or as a labelme export folder ``N/img.png + N/label.png``;
* RGBA cut-outs (alpha is the matte);
* plain images (no matte): usable as reference *images* (SSL-Backdoor, support poisons, the
  "reference image" ablation of Table 7), refused where a reference *object* is needed.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from corruptencoder.errors import MaskError, UserError
from corruptencoder.utils.files import LIST_SUFFIXES, as_paths, read_file_list
from corruptencoder.utils.imageio import is_image_file, load_mask, load_rgb, load_rgba, open_image

DEFAULT_CUT_LABELS: tuple[str, ...] = ("nmask",)
MASK_SUFFIXES = ("_mask", ".mask", "-mask")
Kind = Literal["labelme", "export", "mask", "rgba", "image"]


@dataclass(frozen=True)
class LabelOptions:
    """Which labelme labels make the object and which cut holes into it.

    ``keep=None`` keeps every label that is not cut (the real files use "dog", "mask", ...).
    """

    keep: tuple[str, ...] | None = None
    cut: tuple[str, ...] = DEFAULT_CUT_LABELS
    object_index: int = 1

    def kept(self, label: str) -> bool:
        return label not in self.cut and (self.keep is None or label in self.keep)


@dataclass
class Reference:
    """A decoded reference image, optionally with its object matte (same size)."""

    source: str
    image: np.ndarray  # (H, W, 3) uint8
    matte: np.ndarray | None = None  # (H, W) uint8, 0 = background
    _bbox: tuple[int, int, int, int] | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    @property
    def has_object(self) -> bool:
        return self.matte is not None

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Bounding box of the object (matte >= 128), or the whole image without a matte."""
        if self._bbox is None:
            if self.matte is None:
                self._bbox = (0, 0, *self.size)
            else:
                self._bbox = mask_bbox(self.matte >= 128, self.source)
        return self._bbox

    def object_rgba(self) -> Image.Image:
        """The reference object: the bbox crop as RGBA, alpha = matte (opaque without a matte)."""
        x0, y0, x1, y1 = self.bbox
        rgb = self.image[y0:y1, x0:x1]
        alpha = (
            np.full(rgb.shape[:2], 255, np.uint8) if self.matte is None else self.matte[y0:y1, x0:x1]
        )
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")

    def image_pil(self) -> Image.Image:
        return Image.fromarray(self.image, "RGB")


def mask_bbox(mask: np.ndarray, source: str = "mask") -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise MaskError(f"{source}: the object mask is empty; annotate the object or remove this reference")
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


# ---------------------------------------------------------------------------------------------
# labelme JSON


def _labelme_image(data: dict[str, Any], json_path: Path) -> tuple[Image.Image, str]:
    blob = data.get("imageData")
    if blob:
        try:
            raw = base64.b64decode(blob, validate=False)
        except (binascii.Error, ValueError, TypeError):
            raise MaskError(f"{json_path}: imageData is not valid base64; re-save the annotation in labelme") from None
        return load_rgb(raw, name=f"{json_path} (embedded imageData)"), "embedded"
    candidates: list[Path] = []
    if data.get("imagePath"):
        candidates.append(json_path.parent / str(data["imagePath"]).replace("\\", "/"))
    candidates += [json_path.with_suffix(ext) for ext in (".jpg", ".jpeg", ".JPEG", ".JPG", ".png", ".PNG")]
    for cand in candidates:
        if cand.is_file():
            return load_rgb(cand), str(cand)
    raise MaskError(
        f"{json_path}: no embedded imageData and the image {data.get('imagePath')!r} is not next to it; "
        "put the image beside the JSON or save the annotation with image data"
    )


def _points(shape: dict[str, Any], json_path: Path) -> list[tuple[float, float]]:
    """A shape's points as (x, y) floats, or one line naming the shape."""
    raw = shape.get("points") or []
    try:
        pts = [(float(p[0]), float(p[1])) for p in raw if len(p) == 2]
        ok = len(pts) == len(raw) and all(math.isfinite(c) for p in pts for c in p)
    except (TypeError, ValueError, IndexError, KeyError):
        ok = False
    if not ok:
        raise MaskError(f"{json_path}: shape {shape.get('label')!r} has points that are not [x, y] pairs of numbers; "
                        "re-save the annotation in labelme")
    return pts


def _draw_shape(draw: ImageDraw.ImageDraw, canvas: Image.Image, shape: dict[str, Any], value: int,
                json_path: Path) -> bool:
    kind = shape.get("shape_type") or "polygon"
    pts = _points(shape, json_path)
    if kind == "polygon" and len(pts) >= 3:
        draw.polygon(pts, fill=value, outline=value)
    elif kind == "rectangle" and len(pts) >= 2:
        (x0, y0), (x1, y1) = pts[0], pts[1]
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=value)
    elif kind == "circle" and len(pts) >= 2:
        (cx, cy), (px, py) = pts[0], pts[1]
        r = ((cx - px) ** 2 + (cy - py) ** 2) ** 0.5
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value)
    elif kind == "mask" and shape.get("mask") and len(pts) >= 1:
        # labelme >= 5.3: a base64 PNG of the box region starting at points[0].
        try:
            m = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"]))).convert("L")) > 0
        except Exception:  # noqa: BLE001 - any decoding failure is reported as an unreadable mask
            raise MaskError(f"{json_path}: shape {shape.get('label')!r} has an unreadable mask; re-save it") from None
        x0, y0 = int(round(pts[0][0])), int(round(pts[0][1]))
        region = Image.fromarray((m * 255).astype(np.uint8), "L")
        canvas.paste(Image.new("L", region.size, value), (x0, y0), region)
    else:
        return False  # points, lines and degenerate shapes have no area
    return True


def load_labelme(json_path: str | os.PathLike[str], labels: LabelOptions = LabelOptions()) -> Reference:
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MaskError(f"{json_path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MaskError(f"{json_path}: not valid labelme JSON ({exc}); re-save it from labelme") from None
    shapes = data.get("shapes") if isinstance(data, dict) else None
    if not isinstance(shapes, list):
        raise MaskError(f"{json_path}: no 'shapes' list; is this a labelme annotation?")
    image, origin = _labelme_image(data, json_path)
    w, h = image.size
    ann_w, ann_h = data.get("imageWidth"), data.get("imageHeight")
    if ann_w and ann_h:
        try:
            ann_w, ann_h = int(ann_w), int(ann_h)
        except (TypeError, ValueError):
            raise MaskError(f"{json_path}: imageWidth / imageHeight ({ann_w!r}, {ann_h!r}) are not whole numbers; "
                            "re-save the annotation in labelme") from None
    if ann_w and ann_h and (ann_w, ann_h) != (w, h):
        raise MaskError(
            f"{json_path}: annotation is for a {ann_w}x{ann_h} image but its image ({origin}) is {w}x{h}; "
            "re-annotate or supply the matching image"
        )
    found = [str(s.get("label", "")) for s in shapes if isinstance(s, dict)]
    if not any(labels.kept(lbl) for lbl in found):
        want = ", ".join(labels.keep) if labels.keep else "any label other than " + ", ".join(labels.cut)
        raise MaskError(
            f"{json_path}: no shape labelled {want} (found: {', '.join(sorted(set(found))) or 'none'}); "
            "pass --object-label with one of the found labels"
        )
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        if not isinstance(shape, dict):
            continue
        label = str(shape.get("label", ""))
        if label in labels.cut:
            _draw_shape(draw, canvas, shape, 0, json_path)
        elif labels.kept(label):
            _draw_shape(draw, canvas, shape, 255, json_path)
    matte = np.asarray(canvas, dtype=np.uint8).copy()
    ref = Reference(str(json_path), np.asarray(image, dtype=np.uint8).copy(), matte)
    _ = ref.bbox  # empty masks fail here, at load time
    return ref


# ---------------------------------------------------------------------------------------------
# image + mask, labelme export folders, RGBA cut-outs, plain images


def _export_label_indices(folder: Path, labels: LabelOptions) -> list[int]:
    names_file = folder / "label_names.txt"
    if not names_file.is_file():
        return [labels.object_index]
    names = [n.strip() for n in names_file.read_text(encoding="utf-8").splitlines()]
    idx = [i for i, n in enumerate(names) if n and n != "_background_" and labels.kept(n)]
    if not idx:
        raise MaskError(f"{names_file}: no object label among {', '.join(names)}; pass --object-label")
    return idx


def load_image_mask(image_path: str | os.PathLike[str], mask_path: str | os.PathLike[str],
                    labels: LabelOptions = LabelOptions(), object_indices: Sequence[int] | None = None,
                    source: str | None = None) -> Reference:
    image_path, mask_path = Path(image_path), Path(mask_path)
    image = load_rgb(image_path)
    mask = load_mask(mask_path, object_index=tuple(object_indices or (labels.object_index,)))
    if mask.shape != (image.size[1], image.size[0]):
        raise MaskError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
            f"{image.size[0]}x{image.size[1]}; export the mask at the image's size"
        )
    ref = Reference(source or str(image_path), np.asarray(image, dtype=np.uint8).copy(), mask.astype(np.uint8) * 255)
    _ = ref.bbox
    return ref


def load_rgba_cutout(path: str | os.PathLike[str]) -> Reference:
    path = Path(path)
    rgba = load_rgba(path)
    if rgba is None:
        raise MaskError(f"{path}: has no alpha channel, so it is not a cut-out; add a mask or use an RGBA PNG")
    arr = np.asarray(rgba, dtype=np.uint8)
    ref = Reference(str(path), arr[..., :3].copy(), arr[..., 3].copy())
    _ = ref.bbox
    return ref


def load_plain(path: str | os.PathLike[str]) -> Reference:
    return Reference(str(path), np.asarray(load_rgb(path), dtype=np.uint8).copy(), None)


# ---------------------------------------------------------------------------------------------
# discovery


@dataclass(frozen=True)
class ReferenceSource:
    """A reference found on disk, not decoded yet (cheap to pickle to worker processes)."""

    kind: Kind
    path: str
    mask_path: str | None = None

    def load(self, labels: LabelOptions = LabelOptions(), need_object: bool = False) -> Reference:
        if self.kind == "labelme":
            return load_labelme(self.path, labels)
        if self.kind == "export":
            folder = Path(self.path)
            return load_image_mask(folder / "img.png", folder / "label.png", labels,
                                   _export_label_indices(folder, labels), source=self.path)
        if self.kind == "mask":
            assert self.mask_path is not None
            return load_image_mask(self.path, self.mask_path, labels)
        rgba = (load_rgba(self.path) if Path(self.path).suffix.lower() in (".png", ".webp", ".tif", ".tiff", ".gif")
                else None)
        if rgba is not None:
            arr = np.asarray(rgba, dtype=np.uint8)
            if arr[..., 3].min() < 255:
                ref = Reference(self.path, arr[..., :3].copy(), arr[..., 3].copy())
                _ = ref.bbox
                return ref
        if need_object:
            raise MaskError(
                f"{self.path}: a reference object needs a mask (labelme JSON, {Path(self.path).stem}_mask.png, "
                "or an RGBA cut-out); or use reference_mode 'image' to embed whole reference images"
            )
        return load_plain(self.path)


def _mask_for(image: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for ext in (".png", ".PNG"):
            cand = image.with_name(image.stem + suffix + ext)
            if cand.is_file():
                return cand
    cand = image.parent / "masks" / (image.stem + ".png")
    return cand if cand.is_file() else None


def _is_mask_name(p: Path) -> bool:
    return any(p.stem.endswith(s) for s in MASK_SUFFIXES)


def _is_export_folder(p: Path) -> bool:
    return (p / "img.png").is_file() and (p / "label.png").is_file()


_PRIORITY = {"labelme": 0, "export": 1, "mask": 2, "rgba": 3, "image": 4}


def _source_for_file(p: Path) -> ReferenceSource | None:
    if p.suffix.lower() == ".json":
        return ReferenceSource("labelme", str(p))
    if is_image_file(p) and not _is_mask_name(p):
        mask = _mask_for(p)
        return ReferenceSource("mask", str(p), str(mask)) if mask else ReferenceSource("image", str(p))
    return None


def _scan_folder(folder: Path) -> list[ReferenceSource]:
    """One reference per stem: the same object saved as JSON, export folder and JPEG counts once."""
    best: dict[str, ReferenceSource] = {}
    for entry in sorted(folder.iterdir(), key=lambda q: q.name):
        if entry.is_dir():
            src = ReferenceSource("export", str(entry)) if _is_export_folder(entry) else None
        elif entry.parent.name == "masks":
            src = None
        else:
            src = _source_for_file(entry)
        if src is None:
            continue
        key = entry.stem if entry.is_file() else entry.name
        if key not in best or _PRIORITY[src.kind] < _PRIORITY[best[key].kind]:
            best[key] = src
    return [best[k] for k in sorted(best, key=_natural_key)]


def _natural_key(s: str) -> tuple[int | str, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def discover_references(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                        what: str = "references") -> list[ReferenceSource]:
    """Reference sources from folders, files and file lists, in a deterministic order."""
    out: list[ReferenceSource] = []
    for p in as_paths(paths):
        if p.is_dir():
            if _is_export_folder(p):
                out.append(ReferenceSource("export", str(p)))
                continue
            found = _scan_folder(p)
            if not found:
                raise UserError(f"{p}: no reference images or annotations found; expected labelme .json, "
                                "image + mask, RGBA cut-outs or images")
            out.extend(found)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            for item in read_file_list(p, what="reference"):
                src = _source_for_file(item)
                if src is None:
                    raise UserError(f"{p}: {item} is not an image or labelme JSON")
                out.append(src)
        elif p.is_file():
            src = _source_for_file(p)
            if src is None:
                raise UserError(f"{p}: not an image, a labelme JSON, a folder or a file list")
            out.append(src)
        else:
            raise UserError(f"{p}: {what} path does not exist; check --references")
    if not out:
        raise UserError(f"no {what} given; pass --references with a folder or files")
    return out


def load_references(sources: Sequence[ReferenceSource], labels: LabelOptions = LabelOptions(),
                    need_object: bool = True) -> list[Reference]:
    return [src.load(labels, need_object=need_object) for src in sources]


def source_size(src: ReferenceSource) -> tuple[int, int]:
    """A reference image's (w, h) in display orientation, from headers only (no pixel decode)."""
    if src.kind == "labelme":
        try:
            data = json.loads(Path(src.path).read_text(encoding="utf-8"))
            return int(data["imageWidth"]), int(data["imageHeight"])
        except Exception:  # noqa: BLE001 - fall back to a full load, which reports the problem
            return src.load().size
    path = Path(src.path) / "img.png" if src.kind == "export" else Path(src.path)
    with open_image(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a malformed EXIF block: assume the stored orientation
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
