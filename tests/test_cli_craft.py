"""Bad input through the CLI: one ``error:`` line naming the file or option, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image
from corruptencoder.cli import main


def _craft(assets: dict[str, Path], out: Path, *extra: str, attack: str = "corruptencoder") -> list[str]:
    return ["craft", attack, "--references", str(assets["references"]), "--backgrounds", str(assets["backgrounds"]),
            "--trigger-size", "6", "--num", "5", "--workers", "1", "--quiet", "--out", str(out), *extra]


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temp folder left behind"


def test_ok_run_prints_summary(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_craft(assets, out)) == 0
    assert "crafted 5 poisons" in capsys.readouterr().out
    assert (out / "manifest.jsonl").is_file()


def test_existing_output_folder(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(_craft(assets, out), capsys, str(out), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert main(_craft(assets, out, "--overwrite")) == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.jsonl").is_file()


@pytest.mark.parametrize("flag,value,needle", [
    ("--alpha", "1.5", "alpha=1.5 is outside (0, 1)"),
    ("--alpha", "0", "alpha=0.0 is outside (0, 1)"),
    ("--beta", "-0.2", "beta=-0.2 is outside (0, 1)"),
    ("--num", "0", "num=0"),
    ("--trigger-size", "abc", "trigger size 'abc'"),
])
def test_bad_option_values(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           flag: str, value: str, needle: str) -> None:
    out = tmp_path / "out"
    argv = _craft(assets, out)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    _fails(argv, capsys, needle)
    _nothing_written(out)


def test_trigger_that_cannot_fit_says_largest(assets: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = _craft(assets, out)
    argv[argv.index("--trigger-size") + 1] = "300"
    line = _fails(argv, capsys, "cannot fit", "the largest that fits is")
    assert "--trigger-size" in line
    _nothing_written(out)


def test_corrupt_reference(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = (assets["references"] / "2.jpg").read_bytes()
    (assets["references"] / "2.jpg").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    _fails(_craft(assets, out), capsys, "2.jpg", "corrupt or truncated")
    _nothing_written(out)


def test_empty_mask_and_mismatched_mask(assets: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.zeros((80, 70), np.uint8)).save(assets["references"] / "2_mask.png")
    out = tmp_path / "out"
    _fails(_craft(assets, out), capsys, "2.jpg", "mask is empty")
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(assets["references"] / "2_mask.png")
    _fails(_craft(assets, out), capsys, "2_mask.png", "mask is 10x10 but its image 2.jpg is 70x80")
    _nothing_written(out)


def test_labelme_without_named_label(assets: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    _fails(_craft(assets, out, "--object-label", "cat"), capsys, "1.json", "no shape labelled cat", "found: dog, nmask")
    _nothing_written(out)


def test_decompression_bomb_reference(assets: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bombs"
    bomb.mkdir()
    Image.new("RGBA", (11000, 9000)).save(bomb / "big.png", compress_level=1)
    out = tmp_path / "out"
    argv = _craft(assets, out)
    argv[argv.index("--references") + 1] = str(bomb)
    _fails(argv, capsys, "big.png", "MP limit")
    _nothing_written(out)


def test_empty_background_folder(assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    argv = _craft(assets, out)
    argv[argv.index("--backgrounds") + 1] = str(empty)
    _fails(argv, capsys, str(empty), "no image files")
    _nothing_written(out)


def test_unreadable_background_is_skipped_warned_and_counted(assets: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (assets["backgrounds"] / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    good = noise_image(np.random.default_rng(1), 120, 90)
    good.save(assets["backgrounds"] / "trunc.jpg")
    data = (assets["backgrounds"] / "trunc.jpg").read_bytes()
    (assets["backgrounds"] / "trunc.jpg").write_bytes(data[: len(data) // 2])  # fails only when decoded
    out = tmp_path / "out"
    assert main(_craft(assets, out, "--num", "16")) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.jpg" in captured.err
    summary = json.loads((out / "craft.json").read_text())
    skipped = {Path(s["file"]).name for s in summary["skipped_backgrounds"]}
    assert "broken.jpg" in skipped and "trunc.jpg" in skipped
    used = {Path(json.loads(line)["background"]).name for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert not used & {"broken.jpg", "trunc.jpg"}


def test_odd_modes_as_inputs_craft_fine(assets: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bg = assets["backgrounds"]
    Image.new("CMYK", (130, 100), (10, 200, 30, 0)).save(bg / "cmyk.jpg")
    Image.fromarray(np.arange(130 * 100, dtype=np.uint16).reshape(100, 130) * 5).save(bg / "g16.png")
    Image.new("P", (130, 100), 3).save(bg / "pal.gif")
    rot = Image.new("RGB", (100, 140), (1, 2, 3))
    exif = rot.getexif()
    exif[0x0112] = 8
    rot.save(bg / "rot.jpg", exif=exif.tobytes())
    out = tmp_path / "out"
    assert main(_craft(assets, out, "--num", "30")) == 0
    assert json.loads((out / "craft.json").read_text())["skipped_backgrounds"] == []


def test_config_file_with_wrong_key(assets: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"seed: 1\ntargets:\n  - name: dog\n    references: [{assets['references']}]\n"
                   f"    backgrounds: [{assets['backgrounds']}]\n    trigger_size: 6\n    aplha: 0.4\n")
    out = tmp_path / "out"
    _fails(["craft", "--config", str(cfg), "--out", str(out)], capsys, "c.yaml", "targets.0.aplha", "unknown key")
    _nothing_written(out)


def test_config_file_multi_target(assets: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "seed: 5\nworkers: 2\ntargets:\n"
        f"  - {{name: dog, num: 4, trigger_size: 6, references: [{assets['references']}], "
        f"backgrounds: [{assets['backgrounds']}]}}\n"
        f"  - {{name: cat, num: 3, attack: ssl-backdoor, trigger: white, trigger_size: 6, "
        f"references: [{assets['references']}]}}\n")
    out = tmp_path / "out"
    assert main(["craft", "--config", str(cfg), "--out", str(out), "--quiet", "--set", "targets.1.num=2"]) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 6


def test_missing_file_in_background_list(assets: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    lst = tmp_path / "bgs.txt"
    lst.write_text("backgrounds/bg0.png\nbackgrounds/nope.jpg\n")
    out = tmp_path / "out"
    argv = _craft(assets, out)
    argv[argv.index("--backgrounds") + 1] = str(lst)
    _fails(argv, capsys, "bgs.txt:2", "nope.jpg", "does not exist")
    _nothing_written(out)


def test_real_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "corruptencoder", "craft", "corruptencoder", "--references",
                           str(tmp_path / "nope"), "--backgrounds", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_crafting_does_not_import_torch(assets: dict[str, Path], tmp_path: Path) -> None:
    code = (
        "import sys; from corruptencoder.cli import main; "
        f"rc = main({_craft(assets, tmp_path / 'o')!r}); "
        "assert 'torch' not in sys.modules, 'crafting imported torch'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
