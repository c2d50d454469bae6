"""Image-text pairs on disk (corruptencoder.data.captions): open_clip CSVs and webdataset tar shards."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corruptencoder.data.captions import (
    PairCollection,
    ShardPairs,
    list_shards,
    load_pairs,
    read_pairs_csv,
    read_pairs_shards,
    write_pairs_csv,
)
from corruptencoder.errors import ImageError, UserError

TRICKY = [
    'a dog, sitting "politely" on a mat',
    "line one\nline two\r\nline three",
    "tab\there; semi;colon",
    "",
    "  spaces kept  ",
    "ünïcödé — 猫",
    '"',
]


def _pixels(seed: int, w: int = 6, h: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _images(folder: Path, n: int, fmt: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i}.{fmt}"
        Image.fromarray(_pixels(i)).save(p)
        out.append(p)
    return out


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def _shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            _add(tf, name, data)
    return path


def _shard_folder(root: Path) -> Path:
    """2 shards: 00000.tar (3 pairs, one image without caption), 00001.tar (2 pairs, one caption alone)."""
    d = root / "shards"
    _shard(d / "00000.tar", [
        ("s0.png", _png_bytes(_pixels(100))), ("s0.txt", b"first caption\n"),
        ("s1.png", _png_bytes(_pixels(101))), ("s1.json", json.dumps({"caption": "from json", "url": "x"}).encode()),
        ("s2.png", _png_bytes(_pixels(102))),  # no caption -> skipped, counted
        ("s3.png", _png_bytes(_pixels(103))), ("s3.caption", "ünïcödé".encode()),
    ])
    _shard(d / "00001.tar", [
        ("t0.txt", b"second shard"), ("t0.png", _png_bytes(_pixels(200))),  # text before image is fine
        ("t1.txt", b"orphan text"),  # no image -> skipped, counted
        ("sub/t2.png", _png_bytes(_pixels(202))), ("sub/t2.txt", b""),  # empty caption kept
    ])
    (d / "notes.md").write_text("not a shard")
    return d


# --------------------------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("suffix,sep", [(".csv", None), (".csv", ";"), (".tsv", None), (".csv", "\t")])
def test_tricky_captions_round_trip(tmp_path: Path, suffix: str, sep: str | None) -> None:
    imgs = _images(tmp_path / "imgs", len(TRICKY))
    csv_path = tmp_path / f"pairs{suffix}"
    write_pairs_csv(csv_path, imgs, TRICKY, sep=sep)
    pairs = read_pairs_csv(csv_path, sep=sep)
    assert isinstance(pairs, PairCollection)
    assert pairs.captions == TRICKY
    assert pairs.images == [p.absolute() for p in imgs]
    assert pairs.skipped_missing == 0 and pairs.source == str(csv_path) and len(pairs) == len(TRICKY)
    # paths under the CSV's folder are written relative to it
    assert "imgs/img0.png" in csv_path.read_text(encoding="utf-8")
    assert str(tmp_path) not in csv_path.read_text(encoding="utf-8")
    np.testing.assert_array_equal(np.asarray(pairs.load_image(2)), _pixels(2))


def test_tsv_defaults_to_tab_and_explicit_tab_spelling(tmp_path: Path) -> None:
    _images(tmp_path, 2)
    (tmp_path / "p.tsv").write_text("filepath\ttitle\nimg0.png\ta, b, c\nimg1.png\tplain\n", encoding="utf-8")
    assert read_pairs_csv(tmp_path / "p.tsv").captions == ["a, b, c", "plain"]
    # a .txt file with tabs: sep given as typed on a command line
    (tmp_path / "p.txt").write_text("filepath\ttitle\nimg0.png\tx, y\n", encoding="utf-8")
    assert read_pairs_csv(tmp_path / "p.txt", sep="\\t").captions == ["x, y"]
    assert read_pairs_csv(tmp_path / "p.txt", sep="\t").captions == ["x, y"]
    # the written TSV really is tab-separated
    write_pairs_csv(tmp_path / "w.tsv", [tmp_path / "img0.png"], ["c, d"])
    assert (tmp_path / "w.tsv").read_text(encoding="utf-8").splitlines()[1] == "img0.png\tc, d"


def test_custom_keys_extra_columns_bom_and_blank_lines(tmp_path: Path) -> None:
    _images(tmp_path, 2)
    text = "\ufeffid,image,caption,url\n1,img0.png,zero,http://a\n\n2,img1.png,one,http://b\n"
    (tmp_path / "p.csv").write_text(text, encoding="utf-8")
    pairs = read_pairs_csv(tmp_path / "p.csv", img_key="image", caption_key="caption")
    assert pairs.captions == ["zero", "one"]
    assert [p.name for p in pairs.images] == ["img0.png", "img1.png"]


def test_missing_images_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = _images(tmp_path / "imgs", 3)
    rows = [imgs[0], tmp_path / "imgs" / "gone.png", imgs[1], tmp_path / "nope" / "x.jpg", imgs[2]]
    write_pairs_csv(tmp_path / "p.csv", rows, ["a", "b", "c", "d", "e"])
    with caplog.at_level(logging.WARNING, logger="corruptencoder.data.captions"):
        pairs = read_pairs_csv(tmp_path / "p.csv")
    assert pairs.captions == ["a", "c", "e"] and pairs.skipped_missing == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 5" in warnings[0].getMessage() and "gone.png" in warnings[0].getMessage()
    # subset keeps the source and the count
    sub = pairs.subset([2, 0])
    assert sub.captions == ["e", "a"] and sub.images == [pairs.images[2], pairs.images[0]]
    assert sub.skipped_missing == 2 and sub.source == pairs.source


def test_all_images_missing_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("filepath,title\na.png,x\nb.png,y\n", encoding="utf-8")
    with pytest.raises(UserError) as ei:
        read_pairs_csv(tmp_path / "p.csv")
    msg = str(ei.value)
    assert str(tmp_path / "p.csv") in msg and "none of the 2" in msg and str(tmp_path.absolute()) in msg
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(UserError, match="elsewhere"):
        read_pairs_csv(tmp_path / "p.csv", root=other)


@pytest.mark.parametrize("kw,missing,option", [
    ({}, "title", "--caption-key"),
    ({"img_key": "path", "caption_key": "caption"}, "path", "--img-key"),
])
def test_wrong_column_is_one_line_user_error(tmp_path: Path, kw: dict, missing: str, option: str) -> None:
    _images(tmp_path, 1)
    (tmp_path / "p.csv").write_text('filepath,caption\nimg0.png,"a\nb"\n', encoding="utf-8")
    with pytest.raises(UserError) as ei:
        read_pairs_csv(tmp_path / "p.csv", **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"no column '{missing}'" in msg and "(columns found: filepath, caption)" in msg and option in msg
    assert msg.startswith(str(tmp_path / "p.csv"))
    if not kw:
        assert msg == f"{tmp_path / 'p.csv'}: no column 'title' (columns found: filepath, caption); pass --caption-key"


def test_wrong_separator_hint(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("filepath\ttitle\na.png\tx\n", encoding="utf-8")
    with pytest.raises(UserError, match="--sep") as ei:
        read_pairs_csv(tmp_path / "p.csv")
    assert "\n" not in str(ei.value)


def test_relative_absolute_and_root(tmp_path: Path) -> None:
    imgs = _images(tmp_path / "data" / "imgs", 2)
    far = _images(tmp_path / "far", 1)[0]
    csv_dir = tmp_path / "data" / "lists"
    csv_dir.mkdir()
    # relative to the CSV's folder, and an absolute path kept as is
    (csv_dir / "p.csv").write_text(f"filepath,title\n../imgs/img0.png,rel\n{far},abs\n", encoding="utf-8")
    pairs = read_pairs_csv(csv_dir / "p.csv")
    assert pairs.images == [csv_dir / "../imgs/img0.png", far] and pairs.captions == ["rel", "abs"]
    assert all(p.is_absolute() for p in pairs.images)
    # relative to an explicit root (e.g. open_clip's behaviour of resolving against the working directory)
    (csv_dir / "q.csv").write_text("filepath,title\nimgs/img1.png,r\n", encoding="utf-8")
    assert read_pairs_csv(csv_dir / "q.csv", root=tmp_path / "data").images == [tmp_path / "data" / "imgs" / "img1.png"]
    with pytest.raises(UserError, match="root"):
        read_pairs_csv(csv_dir / "q.csv", root=tmp_path / "no-such-root")
    # writer: outside the CSV's folder -> absolute; relative_to -> relative to that folder
    write_pairs_csv(csv_dir / "w.csv", [imgs[0], far], ["a", "b"])
    lines = (csv_dir / "w.csv").read_text(encoding="utf-8").splitlines()
    assert lines[1:] == [f"{imgs[0]},a", f"{far},b"]
    write_pairs_csv(csv_dir / "w2.csv", imgs, ["a", "b"], relative_to=tmp_path / "data")
    assert (csv_dir / "w2.csv").read_text(encoding="utf-8").splitlines()[1] == "imgs/img0.png,a"
    assert read_pairs_csv(csv_dir / "w2.csv", root=tmp_path / "data").images == [tmp_path / "data" / "imgs" / p.name
                                                                                 for p in imgs]


def test_max_rows_and_custom_header_names_written(tmp_path: Path) -> None:
    imgs = _images(tmp_path, 4)
    write_pairs_csv(tmp_path / "p.csv", imgs, list("abcd"), img_key="image", caption_key="text")
    assert (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()[0] == "image,text"
    assert read_pairs_csv(tmp_path / "p.csv", img_key="image", caption_key="text", max_rows=2).captions == ["a", "b"]


@pytest.mark.parametrize("content,match", [
    (b"filepath,title\nimg0.png,caf\xe9\n", "UTF-8"),
    (b"", "empty"),
    (b"filepath,title\n", "no rows"),
    (b"filepath,title,extra\nimg0.png\n", "field"),
])
def test_bad_csv_files(tmp_path: Path, content: bytes, match: str) -> None:
    _images(tmp_path, 1)
    (tmp_path / "p.csv").write_bytes(content)
    with pytest.raises(UserError, match=match) as ei:
        read_pairs_csv(tmp_path / "p.csv")
    assert "\n" not in str(ei.value) and "p.csv" in str(ei.value)


def test_missing_csv_and_bad_separator(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_pairs_csv(tmp_path / "absent.csv")
    (tmp_path / "p.csv").write_text("filepath,title\n", encoding="utf-8")
    with pytest.raises(UserError, match="one character"):
        read_pairs_csv(tmp_path / "p.csv", sep="||")


# ------------------------------------------------------------------------------------------ shards


def test_shard_folder_pairs_counts_and_pixels(tmp_path: Path) -> None:
    d = _shard_folder(tmp_path)
    assert list_shards(d) == [d / "00000.tar", d / "00001.tar"]
    pairs = read_pairs_shards(d)
    assert isinstance(pairs, ShardPairs) and len(pairs) == 5
    assert pairs.captions == ["first caption", "from json", "ünïcödé", "second shard", ""]
    assert [(si, img, txt, key) for si, img, txt, key in pairs.index] == [
        (0, "s0.png", "s0.txt", "s0"), (0, "s1.png", "s1.json", "s1"), (0, "s3.png", "s3.caption", "s3"),
        (1, "t0.png", "t0.txt", "t0"), (1, "sub/t2.png", "sub/t2.txt", "sub/t2"),
    ]
    assert pairs.skipped_no_text == 1 and pairs.skipped_no_image == 1
    for i, seed in enumerate([100, 101, 103, 200, 202]):
        im = pairs.load_image(i)
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), _pixels(seed))
    np.testing.assert_array_equal(np.asarray(pairs.load_image(0)), _pixels(100))  # reuses the open handle
    assert pairs.name(4).endswith("00001.tar:sub/t2.png")
    # subset, and a copy in another process after pickling (as a spawn loader worker gets it)
    sub = pairs.subset([4, 1])
    assert sub.captions == ["", "from json"]
    np.testing.assert_array_equal(np.asarray(sub.load_image(0)), _pixels(202))
    clone = pickle.loads(pickle.dumps(pairs))
    np.testing.assert_array_equal(np.asarray(clone.load_image(3)), _pixels(200))
    pairs.close()
    clone.close()


def _child_read(pairs: ShardPairs, q) -> None:  # noqa: ANN001
    q.put(np.asarray(pairs.load_image(1)).tolist())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_process_reopens_handles(tmp_path: Path) -> None:
    pairs = read_pairs_shards(_shard_folder(tmp_path))
    pairs.load_image(0)  # parent holds an open handle for shard 0
    parent_handles = dict(pairs._handles)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_read, args=(pairs, q))
    p.start()
    got = q.get(timeout=30)
    p.join(timeout=30)
    assert p.exitcode == 0
    np.testing.assert_array_equal(np.asarray(got, dtype=np.uint8), _pixels(101))
    # the parent's handle is untouched and still reads correctly
    assert dict(pairs._handles) == parent_handles
    np.testing.assert_array_equal(np.asarray(pairs.load_image(2)), _pixels(103))
    pairs.close()


def test_brace_glob_list_and_single_shard_specs(tmp_path: Path) -> None:
    d = _shard_folder(tmp_path)
    a, b = d / "00000.tar", d / "00001.tar"
    assert list_shards(f"{d}/{{00000..00001}}.tar") == [a, b]
    assert list_shards(f"{d}/{{00001,00000}}.tar") == [b, a]
    assert list_shards(f"{d}/*.tar") == [a, b]
    assert list_shards([b, str(a)]) == [b, a]
    assert list_shards(f"{a}::{b}") == [a, b]
    assert list_shards(a) == [a]
    pairs = load_pairs(f"{d}/{{00000..00001}}.tar")
    assert isinstance(pairs, ShardPairs) and len(pairs) == 5
    assert len(read_pairs_shards(b)) == 2
    with pytest.raises(UserError, match="1 of 3 shard") as ei:
        list_shards(f"{d}/{{00000..00002}}.tar")
    assert "00002.tar" in str(ei.value)
    with pytest.raises(UserError, match="matches no"):
        list_shards(f"{d}/*.nothing")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(UserError, match="no .tar shards"):
        list_shards(tmp_path / "empty-folder")
    with pytest.raises(UserError, match="does not exist"):
        list_shards(tmp_path / "missing.tar")


def test_max_pairs_stops_early(tmp_path: Path) -> None:
    d = _shard_folder(tmp_path)
    (d / "00002.tar").write_bytes(b"corrupt, but never opened")
    pairs = read_pairs_shards(d, max_pairs=2)
    assert pairs.captions == ["first caption", "from json"] and len(pairs.index) == 2
    np.testing.assert_array_equal(np.asarray(pairs.load_image(1)), _pixels(101))


@pytest.mark.parametrize("content", [b"this is not a tar file at all" * 40, b""])
def test_corrupt_shard_is_a_user_error_naming_it(tmp_path: Path, content: bytes) -> None:
    d = _shard_folder(tmp_path)
    bad = d / "00001.tar"
    bad.write_bytes(content)
    with pytest.raises(UserError) as ei:
        read_pairs_shards(d)
    assert str(bad) in str(ei.value) and "\n" not in str(ei.value)


def test_truncated_shard_is_a_user_error(tmp_path: Path) -> None:
    shard = _shard(tmp_path / "a.tar", [("k.png", _png_bytes(_pixels(1, 60, 60))), ("k.txt", b"x")])
    data = shard.read_bytes()
    shard.write_bytes(data[:700])  # cut inside the image's data
    with pytest.raises(UserError, match="a.tar"):
        read_pairs_shards(shard)


def test_shard_with_no_pairs_and_corrupt_member(tmp_path: Path) -> None:
    only_text = _shard(tmp_path / "t.tar", [("a.txt", b"x"), ("._a.png", b"mac junk")])
    with pytest.raises(UserError, match="no image-text pairs"):
        read_pairs_shards(only_text)
    broken = _shard(tmp_path / "b.tar", [("a.jpg", b"not a jpeg"), ("a.txt", b"caption")])
    pairs = read_pairs_shards(broken)
    with pytest.raises(ImageError, match=r"b\.tar:a\.jpg"):
        pairs.load_image(0)


def test_load_pairs_dispatch(tmp_path: Path) -> None:
    imgs = _images(tmp_path / "imgs", 2)
    write_pairs_csv(tmp_path / "p.csv", imgs, ["a", "b"])
    write_pairs_csv(tmp_path / "p.tsv", imgs, ["a", "b"])
    assert isinstance(load_pairs(tmp_path / "p.csv"), PairCollection)
    assert load_pairs(str(tmp_path / "p.tsv"), max_rows=1).captions == ["a"]
    d = _shard_folder(tmp_path)
    assert isinstance(load_pairs(d), ShardPairs)
    assert isinstance(load_pairs(d / "00000.tar", max_pairs=1), ShardPairs)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UserError, match="unknown"):
        load_pairs(tmp_path / "x.json")
    with pytest.raises(UserError, match="not found"):
        load_pairs(tmp_path / "nothing.parquet")


def test_gzipped_shard_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "z.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "k0.png", _png_bytes(_pixels(7)))
        _add(tf, "k0.txt", b"zipped")
    pairs = load_pairs(path)
    assert isinstance(pairs, ShardPairs) and pairs.captions == ["zipped"]
    np.testing.assert_array_equal(np.asarray(pairs.load_image(0)), _pixels(7))
    pairs.close()


def test_open_handles_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import corruptencoder.data.captions as C

    monkeypatch.setattr(C, "MAX_OPEN_SHARDS", 1)
    pairs = read_pairs_shards(_shard_folder(tmp_path))
    for i, seed in [(0, 100), (3, 200), (1, 101), (4, 202)]:
        np.testing.assert_array_equal(np.asarray(pairs.load_image(i)), _pixels(seed))
        assert len(pairs._handles) == 1
    pairs.close()
    assert not pairs._handles
