"""Shared fixtures: tiny on-disk assets in every format the crafting engine reads."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corruptencoder-assets"

# Tests share 2 cores with whatever else runs: keep torch and BLAS to one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-in assets go to one session-wide temp cache, never to the user's home."""
    monkeypatch.setenv("CORRUPTENCODER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def shared_assets() -> Path:
    if not SHARED_ASSETS.is_dir():
        pytest.skip(f"real attack assets not found at {SHARED_ASSETS} (only in the team's checkout)")
    return SHARED_ASSETS


def noise_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = rng.integers(0, 256, size=(1, 1, 3))
    arr = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def object_scene(rng: np.random.Generator, w: int = 80, h: int = 60) -> tuple[Image.Image, np.ndarray]:
    """An image with an ellipse 'object' and its boolean mask."""
    img = noise_image(rng, w, h)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    mask = ((xx - cx) / (w * 0.3)) ** 2 + ((yy - cy) / (h * 0.35)) ** 2 <= 1.0
    arr = np.asarray(img).copy()
    arr[mask] = (rng.integers(0, 256, 3) * 0.5 + 100).astype(np.uint8)
    return Image.fromarray(arr, "RGB"), mask


def write_labelme(path: Path, img: Image.Image, polygons: list[tuple[str, list[list[float]]]],
                  image_path: str = "missing.jpg", embed: bool = True) -> Path:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = {
        "version": "5.0.1", "flags": {},
        "shapes": [{"label": lbl, "points": pts, "group_id": None, "shape_type": "polygon", "flags": {}}
                   for lbl, pts in polygons],
        "imagePath": image_path,
        "imageData": base64.b64encode(buf.getvalue()).decode() if embed else None,
        "imageHeight": img.size[1], "imageWidth": img.size[0],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture()
def assets(tmp_path: Path) -> dict[str, Path]:
    """backgrounds/ (6 images), refs/ (labelme JSON + image/mask pair + RGBA cut-out), support/ (2)."""
    rng = np.random.default_rng(123)
    bg = tmp_path / "backgrounds"
    (bg / "sub").mkdir(parents=True)
    for i in range(6):
        noise_image(rng, int(rng.integers(90, 160)), int(rng.integers(70, 120))).save(
            bg / ("sub" if i % 2 else "") / f"bg{i}.{'jpg' if i % 3 else 'png'}")
    refs = tmp_path / "refs"
    refs.mkdir()
    img, _ = object_scene(rng, 90, 70)
    write_labelme(refs / "1.json", img,
                  [("dog", [[10, 10], [80, 12], [78, 60], [12, 58]]),
                   ("nmask", [[40, 30], [50, 30], [50, 40], [40, 40]])])
    img2, mask2 = object_scene(rng, 70, 80)
    img2.save(refs / "2.jpg", quality=95)
    Image.fromarray(mask2.astype(np.uint8) * 255, "L").save(refs / "2_mask.png")
    img3, mask3 = object_scene(rng, 60, 60)
    rgba = np.dstack([np.asarray(img3), mask3.astype(np.uint8) * 255])
    Image.fromarray(rgba, "RGBA").save(refs / "3.png")
    sup = tmp_path / "support"
    sup.mkdir()
    for i in range(2):
        object_scene(rng, 64, 48)[0].save(sup / f"s{i}.jpg")
    return {"backgrounds": bg, "references": refs, "support": sup, "root": tmp_path}


def free_port() -> int:
    """A TCP port nobody listens on now: DDP tests that derived theirs from the pid could collide with each other
    (or with a port still in TIME_WAIT) and die at start-up."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def class_folder(root: Path, classes: list[str], n: int, size: tuple[int, int], seed: int = 0,
                 prefix: str = "") -> Path:
    """``root/<class>/<i>.png``: noisy images whose mean brightness depends on the class."""
    rng = np.random.default_rng(seed)
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(rng.normal(40 + 200 * c / max(1, len(classes)), 25, (size[1], size[0], 3)), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(root / cls / f"{prefix}{i}.png")
    return root


def random_encoder(path: Path, width: float = 0.25, image_size: int = 16, seed: int = 0, **meta: object) -> Path:
    """A randomly initialised small-CNN ``encoder.pt``."""
    import torch

    from corruptencoder.ssl.backbones import backbone_spec, build_backbone
    from corruptencoder.ssl.encoder import save_encoder

    spec = backbone_spec("small_cnn", width, image_size=image_size)
    torch.manual_seed(seed)
    save_encoder(path, build_backbone(spec), spec, {"method": "test", "image_size": image_size, **meta})
    return path


def run_config(tmp_path: Path, cfg: dict[str, object]) -> tuple[Path, dict[str, object]]:
    """Write an experiment config, run it through the CLI (``corruptencoder run``), return (run dir, results.json)."""
    import yaml

    from corruptencoder.cli import main

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--quiet"]) == 0
    return run, json.loads((run / "results.json").read_text())
