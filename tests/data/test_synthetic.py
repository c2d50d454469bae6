"""Tests for the offline demo world (corruptencoder.data.synthetic): fast, numpy + Pillow only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corruptencoder.data import synthetic as S
from corruptencoder.data.synthetic import (
    CLASS_NAMES,
    WorldConfig,
    ensure_world,
    generate_world,
    render_background,
    render_object,
    render_scene,
)
from corruptencoder.errors import UserError

TINY = dict(
    n_pretrain=7,
    n_train_per_class=2,
    n_test_per_class=2,
    n_references=2,
    n_support=2,
    n_backgrounds=3,
)
TINY_CLASSES = ("sun", "fish", "house", "car")


def _png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("w") / "world"
    cfg = WorldConfig(image_size=32, seed=3, classes=TINY_CLASSES)
    summary = generate_world(out, cfg, target="fish", **TINY)
    return out, summary


# ---------------------------------------------------------------------------------------------- #
# Rendering
# ---------------------------------------------------------------------------------------------- #


def test_class_names_fixed_and_unique() -> None:
    assert len(CLASS_NAMES) >= 8
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert WorldConfig().classes == CLASS_NAMES


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_class_renders(name: str, size: int) -> None:
    img, mask = render_scene(name, np.random.default_rng(11), size)
    assert img.mode == "RGB" and img.size == (size, size)
    assert mask.dtype == bool and mask.shape == (size, size)
    assert 0.02 * size * size < mask.sum() < size * size
    obj = render_object(name, np.random.default_rng(12), size)
    assert obj.mode == "RGBA" and obj.size == (size, size)
    alpha = np.asarray(obj)[..., 3]
    assert alpha.max() == 255 and (alpha == 0).any()


@pytest.mark.parametrize("size", [16, 45, 130, 200])
def test_odd_and_large_sizes(size: int) -> None:
    img, mask = render_scene("butterfly", np.random.default_rng(0), size)
    assert img.size == (size, size) and mask.any()
    bg = render_background(np.random.default_rng(0), size + 17, size)
    assert bg.mode == "RGB" and bg.size == (size + 17, size)


def test_determinism_same_seed_same_bytes_different_seed_differs() -> None:
    def draw(seed: int) -> list[bytes]:
        out = []
        for name in ("sun", "tree", "boat"):
            img, mask = render_scene(name, np.random.default_rng(seed), 48)
            out += [_png_bytes(img), mask.tobytes()]
        out.append(_png_bytes(render_object("flower", np.random.default_rng(seed), 40)))
        out.append(_png_bytes(render_background(np.random.default_rng(seed), 70, 52)))
        return out

    a, b, c = draw(5), draw(5), draw(6)
    assert a == b
    assert all(x != y for x, y in zip(a[::2], c[::2], strict=True))


def test_scene_mask_is_exact_alpha_matte() -> None:
    for i, name in enumerate(CLASS_NAMES):
        size = 40
        bg, rgb, alpha, scene = S._scene_layers(name, np.random.default_rng(100 + i), size)
        mask = alpha > 0
        # Outside the mask the scene is exactly the background; fully covered pixels are the object.
        assert np.array_equal(scene[~mask], bg[~mask])
        full = alpha == 255
        assert full.sum() > 0.2 * mask.sum(), name
        assert np.array_equal(scene[full], rgb[full])
        # The object's colour layer is zero where alpha is zero (straight alpha, nothing hidden).
        assert not rgb[~mask].any()
        # The public API returns the same mask and image for the same stream.
        img, m2 = render_scene(name, np.random.default_rng(100 + i), size)
        assert np.array_equal(m2, mask) and np.array_equal(np.asarray(img), scene)


def test_scene_object_bbox_inside_image_and_scaled() -> None:
    size = 64
    for i in range(30):
        name = CLASS_NAMES[i % len(CLASS_NAMES)]
        _, mask = render_scene(name, np.random.default_rng(i), size, object_scale=(0.4, 0.6))
        ys, xs = np.nonzero(mask)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        # The longer side of the box lies in the requested range (+/- anti-aliasing fringe).
        assert 0.4 * size - 2 <= max(h, w) <= 0.6 * size + 2, (name, h, w)


def test_render_object_alpha_zero_outside_and_tight_fit() -> None:
    size = 48
    for i, name in enumerate(CLASS_NAMES):
        arr = np.asarray(render_object(name, np.random.default_rng(i), size))
        alpha = arr[..., 3]
        assert not arr[..., :3][alpha == 0].any()
        ys, xs = np.nonzero(alpha)
        longer = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert size - 4 <= longer <= size


def test_rasterise_coverage_matches_polygon() -> None:
    # A square covering pixel-aligned [4, 12) x [4, 12): alpha is 255 inside, 0 two pixels away.
    part = S._Part(S._rect(4, 4, 12, 12), S.flat(np.array([1.0, 0.0, 0.0])))
    rgb, a = S._rasterise([part], np.eye(2), np.zeros(2), 16, 16, 4)
    assert (a[5:11, 5:11] == 255).all()
    assert not a[:3].any() and not a[:, :3].any() and not a[14:].any() and not a[:, 14:].any()
    assert (rgb[a > 0] == [255, 0, 0]).all()


def test_backgrounds_vary_and_have_no_alpha() -> None:
    means = []
    for i in range(12):
        bg = render_background(np.random.default_rng(i), 80, 64)
        arr = np.asarray(bg, np.float32)
        assert bg.mode == "RGB" and arr.std() > 1.0
        means.append(arr.mean(axis=(0, 1)))
    assert np.std(means, axis=0).mean() > 10.0


# ---------------------------------------------------------------------------------------------- #
# Separability sanity check (numpy-only features; not a benchmark)
# ---------------------------------------------------------------------------------------------- #


def _features(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(img, np.float32) / 255.0
    q = np.minimum((x * 4).astype(int), 3)
    hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64) / q[..., 0].size
    g = x.mean(-1)
    gy, gx = np.gradient(g)
    mag = np.hypot(gx, gy)
    b = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * 8).astype(int), 7)
    h, w = g.shape
    hog = []
    for cy in range(2):
        for cx in range(2):
            sl = (slice(cy * h // 2, (cy + 1) * h // 2), slice(cx * w // 2, (cx + 1) * w // 2))
            hog.append(np.bincount(b[sl].ravel(), weights=mag[sl].ravel(), minlength=8))
    hog = np.concatenate(hog)
    return np.concatenate([hist, hog / (hog.sum() + 1e-8)]), x.reshape(-1, 3).mean(0)


def _ncm_accuracy(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    centres = np.stack([xtr[ytr == k].mean(0) for k in range(ytr.max() + 1)])
    pred = np.argmin(((xte[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    return float((pred == yte).mean())


def test_classes_separable_but_not_by_mean_colour() -> None:
    size, n_train, n_test = 48, 30, 20

    def data(split: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats, means, ys = [], [], []
        for k, name in enumerate(CLASS_NAMES):
            for i in range(n):
                img, _ = render_scene(name, np.random.default_rng([split, k, i]), size)
                f, m = _features(img)
                feats.append(f)
                means.append(m)
                ys.append(k)
        return np.array(feats), np.array(means), np.array(ys)

    ftr, mtr, ytr = data(1, n_train)
    fte, mte, yte = data(2, n_test)
    chance = 1.0 / len(CLASS_NAMES)
    acc_feat = _ncm_accuracy(ftr, ytr, fte, yte)
    acc_mean = _ncm_accuracy(mtr, ytr, mte, yte)
    print(f"nearest-class-mean accuracy: hist+orientation {acc_feat:.3f}, mean RGB {acc_mean:.3f}, chance {chance:.3f}")
    assert acc_feat >= 2 * chance
    assert acc_feat > acc_mean + 0.08
    assert acc_mean < 0.5


# ---------------------------------------------------------------------------------------------- #
# Worlds on disk
# ---------------------------------------------------------------------------------------------- #


def test_world_layout_and_counts(tiny_world: tuple[Path, dict]) -> None:
    out, summary = tiny_world
    meta = json.loads((out / "world.json").read_text())
    assert meta == json.loads(json.dumps(summary))
    assert meta["seed"] == 3 and meta["target"] == "fish" and meta["image_size"] == 32
    assert meta["classes"] == list(TINY_CLASSES)
    assert meta["world_version"] == S.WORLD_VERSION
    assert meta["config"]["object_scale"] == [0.35, 0.8]

    pre = {c: sorted((out / "pretrain" / c).glob("*.png")) for c in TINY_CLASSES}
    assert sum(len(v) for v in pre.values()) == 7
    assert sorted(len(v) for v in pre.values()) == [1, 2, 2, 2]  # balanced, remainder spread
    assert meta["counts"]["pretrain"] == {c: len(v) for c, v in pre.items()}
    assert pre["sun"][0].name == "00000.png"
    for split in ("train", "test"):
        for c in TINY_CLASSES:
            files = sorted((out / "downstream" / split / c).glob("*.png"))
            assert [f.name for f in files] == ["00000.png", "00001.png"]
            with Image.open(files[0]) as im:
                assert im.mode == "RGB" and im.size == (32, 32)
    refs = out / "references" / "fish"
    assert sorted(p.name for p in refs.iterdir()) == ["1.png", "1_mask.png", "2.png", "2_mask.png"]
    with Image.open(refs / "1_mask.png") as m, Image.open(refs / "1.png") as r:
        assert m.mode == "L" and m.size == r.size == (32, 32)
        vals = set(np.unique(np.asarray(m)).tolist())
        assert vals == {0, 255}
    assert sorted(p.name for p in (out / "support" / "fish").iterdir()) == ["1.png", "2.png"]
    bgs = sorted((out / "backgrounds").glob("*.png"))
    assert len(bgs) == 3
    for p in bgs:
        with Image.open(p) as im:
            w, h = im.size
            assert im.mode == "RGB" and 1.25 * 32 - 1 <= w <= 1.5 * 32 + 1 and 32 <= h <= 1.2 * 32 + 1
    # No temp folders left behind next to the world.
    assert [p.name for p in out.parent.iterdir()] == ["world"]


def test_world_splits_disjoint(tiny_world: tuple[Path, dict]) -> None:
    out, _ = tiny_world
    test = {_sha(p) for p in (out / "downstream" / "test").rglob("*.png")}
    others = {
        _sha(p)
        for sub in ("downstream/train", "pretrain", "references", "support")
        for p in (out / sub).rglob("*.png")
        if not p.name.endswith("_mask.png")
    }
    ref_support = {_sha(p) for sub in ("references", "support") for p in (out / sub).rglob("*.png")
                   if "_mask" not in p.name}
    train = {_sha(p) for p in (out / "downstream" / "train").rglob("*.png")}
    assert len(test) == 2 * len(TINY_CLASSES)
    assert not test & others
    assert not ref_support & train


def test_world_deterministic_and_independent_of_other_counts(tmp_path: Path, tiny_world: tuple[Path, dict]) -> None:
    out, _ = tiny_world
    cfg = WorldConfig(image_size=32, seed=3, classes=TINY_CLASSES)
    other = generate_world(tmp_path / "again", cfg, target="fish", **{**TINY, "n_pretrain": 0, "n_backgrounds": 1})
    assert other["counts"]["pretrain"] == {c: 0 for c in TINY_CLASSES}
    assert not (tmp_path / "again" / "pretrain").exists()
    for rel in ("downstream/test/car/00001.png", "references/fish/2.png", "references/fish/2_mask.png",
                "backgrounds/00000.png"):
        assert _sha(tmp_path / "again" / rel) == _sha(out / rel)
    generate_world(tmp_path / "seed4", WorldConfig(image_size=32, seed=4, classes=TINY_CLASSES), target="fish", **TINY)
    assert _sha(tmp_path / "seed4" / "downstream/test/car/00001.png") != _sha(out / "downstream/test/car/00001.png")


def test_world_bytes_do_not_depend_on_the_workers(tmp_path: Path) -> None:
    cfg = WorldConfig(image_size=16, seed=5, classes=TINY_CLASSES)
    counts = dict(n_pretrain=40, n_train_per_class=2, n_test_per_class=2, target="fish", n_references=2, n_support=1,
                  n_backgrounds=3)
    generate_world(tmp_path / "one", cfg, workers=1, **counts)
    generate_world(tmp_path / "two", cfg, workers=2, **counts)  # a pool of two processes renders it
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) > 50
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for rel in files:
        assert _sha(tmp_path / "one" / rel) == _sha(tmp_path / "two" / rel), rel


def test_refuses_existing_nonempty_folder(tmp_path: Path) -> None:
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    cfg = WorldConfig(image_size=16, classes=("sun", "star"))
    small = dict(n_pretrain=2, n_train_per_class=1, n_test_per_class=1, target="sun", n_references=1, n_support=0,
                 n_backgrounds=0)
    with pytest.raises(UserError, match="overwrite"):
        generate_world(out, cfg, **small)
    assert (out / "keep.txt").exists()
    generate_world(out, cfg, overwrite=True, **small)
    assert not (out / "keep.txt").exists() and (out / "world.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_world(empty, cfg, **small)  # an existing empty folder is fine
    assert (empty / "world.json").exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        generate_world(afile, cfg, **small)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(target="dragon"), "target"),
        (dict(n_pretrain=-1), "n_pretrain"),
        (dict(n_test_per_class=1.5), "n_test_per_class"),
        (dict(n_backgrounds=-3), "n_backgrounds"),
        (dict(pretrain_classes=("sun", "unicorn")), "pretrain_classes"),
        (dict(pretrain_classes="sun"), "pretrain_classes"),
        (dict(target=None), "target"),
    ],
)
def test_generate_world_validates_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    cfg = WorldConfig(image_size=16, classes=("sun", "fish"))
    with pytest.raises(UserError, match=match):
        generate_world(tmp_path / "w", cfg, **{"target": "fish", **kwargs})
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(image_size=8), "image_size"),
        (dict(classes=("sun", "dragon")), "dragon"),
        (dict(classes=()), "classes"),
        (dict(object_scale=(0.9, 0.2)), "object_scale"),
        (dict(seed=-1), "seed"),
        (dict(classes="sun"), "classes"),
    ],
)
def test_world_config_validates(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        WorldConfig(**kwargs)


def test_render_functions_validate() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match="unknown class"):
        render_scene("dragon", rng, 32)
    with pytest.raises(UserError, match="size"):
        render_object("sun", rng, 8)
    with pytest.raises(UserError, match="width"):
        render_background(rng, 4, 32)


def test_target_must_be_in_classes(tmp_path: Path) -> None:
    # The default target is a real class; a class subset without it needs an explicit target.
    assert S.DEFAULT_TARGET in CLASS_NAMES
    with pytest.raises(UserError, match="target"):
        generate_world(tmp_path / "w", WorldConfig(image_size=16, classes=("sun", "star")), n_pretrain=0)


def test_demo_world_key_is_stable() -> None:
    """Every cached encoder's key holds the world's path: a new generate_world option (workers) must not move it.
    Change this digest only with the world's content (WORLD_VERSION)."""
    from corruptencoder.demo import demo_world

    assert demo_world(generate=False).name == "world-899e4694afd1"


def test_ensure_world_caches(tmp_path: Path) -> None:
    cfg = WorldConfig(image_size=16, seed=1, classes=("sun", "fish"))
    counts = dict(n_pretrain=2, n_train_per_class=1, n_test_per_class=1, n_references=1, n_support=1, n_backgrounds=1)
    p1 = ensure_world(tmp_path, cfg, **counts)
    assert (p1 / "world.json").is_file()
    stamp = (p1 / "world.json").stat().st_mtime_ns
    p2 = ensure_world(tmp_path, cfg, **counts)
    assert p2 == p1 and (p1 / "world.json").stat().st_mtime_ns == stamp
    p3 = ensure_world(tmp_path, cfg, **{**counts, "n_pretrain": 3})
    assert p3 != p1 and (p3 / "world.json").is_file()
    with pytest.raises(UserError, match="unknown option"):
        ensure_world(tmp_path, cfg, n_pretrian=3)


def test_class_assets_match_the_worlds_own_references(tmp_path: Path) -> None:
    from corruptencoder.data.synthetic import WorldConfig, generate_world, render_class_assets

    cfg = WorldConfig(image_size=32, seed=3)
    generate_world(tmp_path / "w", cfg, n_pretrain=0, n_train_per_class=0, n_test_per_class=0, target="car",
                   n_references=2, n_support=1, n_backgrounds=0)
    extra = render_class_assets(tmp_path / "x", cfg, "car", n_references=2, n_support=1)
    for rel in ("references/car/1.png", "references/car/2_mask.png", "support/car/1.png"):
        assert (tmp_path / "w" / rel).read_bytes() == (extra / rel).read_bytes()
