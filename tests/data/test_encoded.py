"""Device-side decode and crop (data.decode: device), checked on CPU against the host path it replaces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from corruptencoder.data.datasets import ImageStore, ViewDataset, collate_views
from corruptencoder.data.encoded import (
    DEVICE_DECODE_BELOW_WORKERS,
    EncodedViewDataset,
    collate_encoded,
    device_decode_wanted,
    read_jpeg,
)
from corruptencoder.ssl.augment import apply_colour
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.views import view_plan


def smooth_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A photo-like image (smooth gradients and blobs): JPEG keeps it close to its pixels."""
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack([128 + 100 * np.sin(6 * xx * rng.uniform(0.5, 2) + c + 3 * yy * rng.uniform(0.5, 2))
                    for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture()
def photos(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    files = []
    for i, (w, h) in enumerate([(80, 60), (50, 90), (64, 64), (300, 200), (120, 45)]):  # (300, 200): shrunk
        p = tmp_path / f"{i}.jpg"
        smooth_image(rng, w, h).save(p, quality=95)
        files.append(str(p))
    p = tmp_path / "gray.jpg"
    smooth_image(rng, 70, 50).convert("L").save(p, quality=95)
    files.append(str(p))
    p = tmp_path / "png.png"  # travels decoded
    smooth_image(rng, 60, 40).save(p)
    files.append(str(p))
    p = tmp_path / "cmyk.jpg"  # travels decoded (nvJPEG's CMYK is not Pillow's)
    smooth_image(rng, 60, 40).convert("CMYK").save(p, quality=95)
    files.append(str(p))
    p = tmp_path / "rotated.jpg"  # travels decoded, rotated by the host
    exif = Image.Exif()
    exif[0x0112] = 6
    smooth_image(rng, 40, 70).save(p, quality=95, exif=exif)
    files.append(str(p))
    return files


def plan(crop: str = "random", image_size: int = 32) -> Any:
    cfg = PretrainConfig.model_validate({"method": {"name": "moco"}, "data": {"clean": "x", "image_size": image_size},
                                         "views": {"crop": crop}})
    return view_plan(cfg)


def both_paths(files: list[str], p: Any, seed: int, short: int = 128) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    host = ViewDataset(ImageStore(files, short, cache=False), p.crop)
    dev = EncodedViewDataset(ImageStore(files, short, cache=False), p)
    for ds in (host, dev):
        ds._rng, ds._pid = np.random.default_rng(seed), os.getpid()
    hv, _ = collate_views([host[i] for i in range(len(files))])
    batch = collate_encoded(tuple(v.size for v in p.views))([dev[i] for i in range(len(files))])
    dv, idx = batch.decode("cpu")
    assert idx.tolist() == list(range(len(files)))
    return hv, dv


def test_header_says_which_files_travel_as_bytes(photos: list[str]) -> None:
    sent = {Path(f).name: read_jpeg(f) is not None for f in photos}
    assert sent == {"0.jpg": True, "1.jpg": True, "2.jpg": True, "3.jpg": True, "4.jpg": True, "gray.jpg": True,
                    "png.png": False, "cmyk.jpg": False, "rotated.jpg": False}
    w, h, data = read_jpeg(photos[0])  # type: ignore[misc]
    assert (w, h) == (80, 60) and bytes(data.numpy()) == Path(photos[0]).read_bytes()


@pytest.mark.parametrize("crop", ["random", "localized", "none"])
def test_device_views_match_the_host_path(photos: list[str], crop: str) -> None:
    """Same generator, same boxes: every view within a grey level or two of the host's (JPEG decoders and the
    resize filter differ slightly; the shrunk 300x200 image is averaged rather than shrunk then resized)."""
    p = plan(crop)
    for seed in range(3):
        hv, dv = both_paths(photos, p, seed)
        for h, d in zip(hv, dv, strict=True):
            assert h.shape == d.shape and d.dtype == torch.uint8
            diff = (h.float() - d.float()).abs().mean(dim=(1, 2, 3))
            assert float(diff.max()) < 4.0, diff
            assert float(diff.mean()) < 2.0, diff


def test_cropping_images_of_one_shape_together_changes_no_pixel(photos: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched crop (one roi_align per image shape) gives every view exactly what one call per image gives;
    repeated files make several images share a shape (split in chunks of 2 here), and two view sizes (SwAV's
    multi-crop) share a call."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.ops import roi_align

    import corruptencoder.data.encoded as encoded

    monkeypatch.setattr(encoded, "_CROP_CHUNK", 2)

    cfg = PretrainConfig.model_validate({"method": {"name": "swav"}, "data": {"clean": "x", "image_size": 32}})
    p = view_plan(cfg)
    files = photos * 3
    dev = EncodedViewDataset(ImageStore(files, 128, cache=False), p)
    dev._rng, dev._pid = np.random.default_rng(5), os.getpid()
    batch = collate_encoded(tuple(v.size for v in p.views))([dev[i] for i in range(len(files))])
    got, _ = batch.decode("cpu")
    assert len({v.size for v in p.views}) == 2
    for i, it in enumerate(batch.items):
        img = decode_jpeg(it.payload, mode=ImageReadMode.RGB) if it.encoded else it.payload
        for v, s in enumerate(batch.sizes):
            box = torch.tensor([[0.0, *it.boxes[v]]])
            ref = roi_align(img.unsqueeze(0).float(), box, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1,
                            aligned=True).round_().clamp_(0, 255).to(torch.uint8)[0]
            assert torch.equal(got[v][i], ref), (i, v)


def test_device_views_have_the_host_colour_statistics(photos: list[str]) -> None:
    """After the same colour augmentation (same generator), per-channel means and deviations agree."""
    p = plan()
    hv, dv = both_paths(photos * 6, p, seed=1)
    for h, d, spec in zip(hv, dv, p.views, strict=True):
        a = apply_colour(h, spec.colour, torch.Generator().manual_seed(0))
        b = apply_colour(d, spec.colour, torch.Generator().manual_seed(0))
        assert torch.allclose(a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3)), atol=0.03)
        assert torch.allclose(a.std(dim=(0, 2, 3)), b.std(dim=(0, 2, 3)), atol=0.03)


def test_crop_scale_and_aspect_follow_the_sampler(tmp_path: Path) -> None:
    """The device views' boxes, in the original image's pixels, are the host sampler's boxes on the host's shrunk
    image, scaled back: the same crop scale and aspect distribution, draw for draw."""
    f = tmp_path / "big.jpg"
    smooth_image(np.random.default_rng(0), 400, 300).save(f, quality=90)
    p = plan()
    ds = EncodedViewDataset(ImageStore([str(f)], 100, cache=False), p)
    ds._rng, ds._pid = np.random.default_rng(0), os.getpid()
    boxes = np.array([b for _ in range(2000) for b in ds[0][0].boxes])
    rng = np.random.default_rng(0)
    host = np.array([b for _ in range(2000) for b in p.boxes(rng, 133, 100)], dtype=float)
    np.testing.assert_allclose(boxes, host * [400 / 133, 3, 400 / 133, 3], rtol=1e-9)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (400 * 300)
    aspect = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    lo, _ = p.views[0].scale
    assert area.min() >= lo * 0.95 and area.max() <= 1.0 + 1e-6
    assert 0.74 <= aspect.min() and aspect.max() <= 1.35


def test_auto_picks_the_device_only_for_an_uncached_jpeg_set_on_a_gpu(photos: list[str]) -> None:
    jpegs = ImageStore(photos[:5], 128, cache=False)
    assert device_decode_wanted("auto", True, jpegs)
    assert device_decode_wanted("auto", True, jpegs, workers=DEVICE_DECODE_BELOW_WORKERS - 1)
    assert not device_decode_wanted("auto", True, jpegs, workers=DEVICE_DECODE_BELOW_WORKERS)  # the host is faster
    assert not device_decode_wanted("auto", False, jpegs)
    assert not device_decode_wanted("auto", True, ImageStore(photos[:5], 128, cache=True))
    assert not device_decode_wanted("auto", True, ImageStore(photos[6:7] * 5, 128, cache=False))  # PNGs
    assert device_decode_wanted("device", False, jpegs) and not device_decode_wanted("host", True, jpegs)


def test_pretraining_with_device_decode_runs_on_cpu(photos: list[str], tmp_path: Path) -> None:
    from corruptencoder.ssl.train import pretrain

    folder = tmp_path / "imgs" / "c0"
    folder.mkdir(parents=True)
    for i, f in enumerate(photos * 2):
        Path(folder / f"{i}{Path(f).suffix}").write_bytes(Path(f).read_bytes())
    cfg = PretrainConfig.model_validate({
        "method": {"name": "moco", "queue_size": 12, "proj_hidden": 16, "proj_dim": 8},
        "data": {"clean": str(tmp_path / "imgs"), "image_size": 16, "decode": "device"},
        "backbone": {"name": "small_cnn", "width": 0.25},
        "optim": {"batch_size": 6, "epochs": 1, "lr": 0.1},
        "trainer": {"progress": False, "threads": 1},
    })
    res = pretrain(cfg, tmp_path / "run")
    assert res.epochs == 1 and res.num_images == 18


def test_bytes_cross_from_a_loader_worker(photos: list[str]) -> None:
    """A worker hands the JPEG bytes to the main process intact. torchvision's read_file tensor is a private file
    mapping that a worker's queue cannot share: the loader waited for ever (found timing it with workers)."""
    from torch.utils.data import DataLoader

    p = plan()
    dataset = EncodedViewDataset(ImageStore(photos, 128, cache=False), p)
    collate = collate_encoded(tuple(v.size for v in p.views))
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate, timeout=60)
    seen = 0
    for batch in loader:
        for item, index in zip(batch.items, batch.index.tolist(), strict=True):
            if item.encoded:
                assert bytes(item.payload.numpy()) == Path(photos[index]).read_bytes()
            seen += 1
    assert seen == len(photos)
