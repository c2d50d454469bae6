"""Every bad or odd input of issue #15 (and the earlier ones) through the command line: exit status 2, exactly
one stderr line starting with ``error:``, no traceback, and nothing left behind.

Most cases call ``corruptencoder.cli.main`` in this process (torch is imported once for all of them); a
few run ``python -m corruptencoder`` as a real subprocess, to check what a shell or a scheduler sees. An
unexpected exception (a bug) is one line too, with the traceback saved to a file.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import class_folder, noise_image, object_scene, random_encoder, write_labelme
from corruptencoder.cli import main

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
RO_SKIP = "root ignores folder permissions" if ROOT else ""


# ---------------------------------------------------------------------------------------------
# one small world of inputs for every case (built once per module)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(7)
    bgs = base / "backgrounds"
    bgs.mkdir()
    for i in range(6):
        noise_image(rng, int(rng.integers(110, 160)), int(rng.integers(90, 120))).save(bgs / f"bg{i}.png")
    refs = base / "refs"
    refs.mkdir()
    img, _ = object_scene(rng, 90, 70)
    write_labelme(refs / "1.json", img, [("dog", [[10, 10], [80, 12], [78, 60], [12, 58]])])
    img2, mask2 = object_scene(rng, 70, 80)
    img2.save(refs / "2.jpg", quality=95)
    Image.fromarray(mask2.astype(np.uint8) * 255, "L").save(refs / "2_mask.png")
    labelme = json.loads((refs / "1.json").read_text())
    bad_points = [["a", "b"], ["c", "d"], ["e", "f"]]
    for name, change in (("points", {"shapes": [{**labelme["shapes"][0], "points": bad_points}]}),
                         ("width", {"imageWidth": "wide"})):
        (base / f"lm-{name}").mkdir()
        (base / f"lm-{name}" / "1.json").write_text(json.dumps({**labelme, **change}))
    (base / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (base / "afile").write_text("not a folder")
    # a poison folder (8 poisons) and a copy whose manifest has a malformed box
    poisons = base / "poisons"
    assert main(["craft", "corruptencoder", "--references", str(refs), "--backgrounds", str(bgs), "--num", "8",
                 "--trigger-size", "6", "--workers", "1", "--quiet", "--out", str(poisons)]) == 0
    shutil.copytree(poisons, base / "poisons-bad")
    lines = (base / "poisons-bad" / "manifest.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["object_box"] = [1, 2, "x"]
    (base / "poisons-bad" / "manifest.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    # pre-training data, a finished run (to damage for --resume), a task, an encoder, a trigger
    data = class_folder(base / "data", ["c0", "c1", "c2"], 8, (24, 24))
    run = base / "run"
    assert main(_pretrain(data, run, "--epochs", "1")) == 0
    (run / "encoder.pt").unlink()
    class_folder(base / "task" / "train", ["c0", "c1", "c2"], 6, (20, 20), seed=1)
    class_folder(base / "task" / "test", ["c0", "c1", "c2"], 3, (20, 20), seed=2)
    (base / "task.yaml").write_text(f"root: {base / 'task'}\nimage_size: 16\n")
    random_encoder(base / "encoder.pt")
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(base / "trigger.png")
    # results.json: truncated, without aggregates, not an object
    results = {"truncated": '{"aggregates": [{"arm": ', "no-aggregates": '{"rows": []}', "list": "[1, 2]"}
    for name, text in results.items():
        (base / f"results-{name}").mkdir()
        (base / f"results-{name}" / "results.json").write_text(text)
    return {"base": base, "bgs": bgs, "refs": refs, "poisons": poisons, "data": data, "run": run}


def _pretrain(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(data), "--image-size", "16", "--backbone", "small_cnn", "--width", "0.25",
            "--batch-size", "12", "--epochs", "1", "--quiet", "--set", "trainer.threads=1",
            "--set", "method.queue_size=32", "--set", "method.proj_hidden=32", "--out", str(out), *extra]


# ---------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    """argv with ``{name}`` placeholders: {base} {bgs} {refs} {poisons} {data} {run} {out} (a fresh path that
    must not exist afterwards); ``needles`` must be in the error line, ``absent`` must not."""

    id: str
    argv: list[str]
    needles: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    setup: Callable[[dict[str, Path], Path], None] | None = None
    skip: str = ""
    untouched: tuple[str, ...] = field(default_factory=tuple)  # paths that must still exist (e.g. --resume)


def _craft(*extra: str, attack: str = "corruptencoder") -> list[str]:
    return ["craft", attack, "--references", "{refs}", "--backgrounds", "{bgs}", "--trigger-size", "6", "--num", "4",
            "--workers", "1", "--quiet", "--out", "{out}", *extra]


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


PT = ["pretrain", "--data", "{data}", "--image-size", "16", "--backbone", "small_cnn", "--width", "0.25",
      "--batch-size", "12", "--epochs", "1", "--quiet", "--set", "trainer.threads=1", "--set", "method.queue_size=32",
      "--set", "method.proj_hidden=32"]
EV = ["evaluate", "--encoder", "{base}/encoder.pt", "--task", "{base}/task.yaml", "--target", "c1", "--trigger",
      "{base}/trigger.png", "--trigger-size", "3", "--probe-epochs", "2", "--quiet"]
TINY_RUN = {
    "name": "tiny", "preset": "cpu-tiny", "seeds": [0],
    "world": {"image_size": 32, "n_pretrain": 60, "n_train_per_class": 4, "n_test_per_class": 4, "n_backgrounds": 12},
    "defaults": {"num_poisons": 4, "trigger_size": 2, "epochs": 1, "batch_size": 16},
    "pretrain": {"method": {"queue_size": 32}, "backbone": {"width": 0.25}, "trainer": {"threads": 1}},
    "arms": [{"name": "no-attack", "attack": "none"}, {"name": "ce", "attack": "corruptencoder"}],
}


def _write(name: str, text: str | bytes) -> Callable[[dict[str, Path], Path], None]:
    def setup(w: dict[str, Path], out: Path) -> None:
        path = out.parent / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return setup


def _run_config(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Path], Path], None]:
    def setup(w: dict[str, Path], out: Path) -> None:
        cfg = json.loads(json.dumps(TINY_RUN))
        change(cfg)
        (out.parent / "exp.yaml").write_text(yaml.safe_dump(cfg))
    return setup


def _damaged_run(how: str) -> Callable[[dict[str, Path], Path], None]:
    def setup(w: dict[str, Path], out: Path) -> None:
        shutil.copytree(w["run"], out)
        ckpt = out / "checkpoints" / "last.ckpt"
        if how == "truncated":
            ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
        else:  # a pickle that would run code if it were unpickled
            class Evil:
                def __reduce__(self):  # type: ignore[no-untyped-def]  # pickle's protocol, any tuple
                    return (os.system, (f"touch {out.parent / 'PWNED'}",))
            ckpt.write_bytes(pickle.dumps(Evil()))
    return setup


def _background_list(w: dict[str, Path], out: Path) -> None:
    (out.parent / "bgs.txt").write_text(f"{w['bgs'] / 'bg0.png'}\nnope.jpg\n")


def _readonly(w: dict[str, Path], out: Path) -> None:
    out.parent.joinpath("ro").mkdir()
    out.parent.joinpath("ro").chmod(0o555)


def _existing(w: dict[str, Path], out: Path) -> None:
    out.mkdir()
    (out / "keep.txt").write_text("mine")


def _corrupt_reference(w: dict[str, Path], out: Path) -> None:
    refs = out.parent / "refs"
    shutil.copytree(w["refs"], refs)
    data = (refs / "2.jpg").read_bytes()
    (refs / "2.jpg").write_bytes(data[: len(data) // 3])


def _empty_mask(w: dict[str, Path], out: Path) -> None:
    refs = out.parent / "refs"
    shutil.copytree(w["refs"], refs)
    Image.fromarray(np.zeros((80, 70), np.uint8)).save(refs / "2_mask.png")


def _small_mask(w: dict[str, Path], out: Path) -> None:
    refs = out.parent / "refs"
    shutil.copytree(w["refs"], refs)
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(refs / "2_mask.png")


NO_CUDA = "needs a machine without CUDA" if torch.cuda.is_available() else ""

#: README's "Your own data" example as written there (a target without ``support:`` on an ImageFolder task), with
#: the attack arms of the config it extends; ``OWN_DATA_PLUS`` adds a CorruptEncoder+ arm, which needs support images
OWN_DATA = """\
name: own-data
data: {clean: /data/cifar/train}                 # unlabelled pre-training images (labels are ignored)
backgrounds: [/data/places-subset]
tasks: [{name: cifar, root: /data/cifar}]        # train/ and test/ inside
targets: [{name: dog, task: cifar, references: [/data/refs/dog], saha_references: [/data/cifar/test/dog]}]
arms: [{name: no-attack, attack: none}, {name: ssl-backdoor, attack: ssl-backdoor},
       {name: corruptencoder, attack: corruptencoder}]
"""
OWN_DATA_PLUS = OWN_DATA.replace("attack: corruptencoder}]", "attack: corruptencoder},\n"
                                 "       {name: ce-plus, attack: corruptencoder-plus}]")

CASES = [
    # -- craft: unwritable places, malformed files, values at the edge (issue #15)
    Case("craft-out-proc", _replace(_craft(), "--out", "/proc/corruptencoder-test/out"), ("cannot",)),
    Case("craft-out-under-file", _replace(_craft(), "--out", "{base}/afile/out"), ("afile", "not a folder")),
    Case("craft-out-readonly", _replace(_craft(), "--out", "{tmp}/ro/out"), ("cannot write", "Permission denied"),
         setup=_readonly, skip=RO_SKIP),
    Case("craft-labelme-points", _replace(_craft(), "--references", "{base}/lm-points"),
         ("1.json", "not [x, y] pairs of numbers")),
    Case("craft-labelme-width", _replace(_craft(), "--references", "{base}/lm-width"),
         ("1.json", "imageWidth", "not whole numbers")),
    Case("craft-config-binary", ["craft", "--config", "{base}/binary.yaml", "--out", "{out}"],
         ("binary.yaml", "not a text file")),
    Case("craft-config-folder", ["craft", "--config", "{base}", "--out", "{out}"], ("is a folder",)),
    Case("craft-prompts-binary", _craft("--prompts", "{base}/binary.yaml", attack="corruptencoder-mm"),
         ("binary.yaml", "--prompts")),
    Case("craft-type1-size-neg", _craft("--type1-size", "-5", attack="corruptencoder-mm"), ("--type1-size",)),
    Case("craft-type1-size-0", _craft("--type1-size", "0", attack="corruptencoder-mm"), ("--type1-size",)),
    Case("craft-num-huge", _replace(_craft(), "--num", "2000000000"), ("--num", "2,000,000,000", "memory")),
    Case("craft-soft-edge-huge", _craft("--soft-edge", "1e6"), ("--soft-edge", "at most 50")),
    Case("craft-soft-edge-neg", _craft("--soft-edge", "-1"), ("--soft-edge",)),
    Case("craft-workers-neg", _replace(_craft(), "--workers", "-1"), ("--workers",)),
    Case("craft-workers-absurd", _replace(_craft(), "--workers", "100000"), ("--workers",)),
    Case("craft-trigger-no-fit-anywhere", _craft("--beta", "0.01", "--max-size", "40"), ("no trigger fits",),
         absent=("--trigger-size 0", "or less")),
    Case("craft-trigger-too-large", _replace(_craft(), "--trigger-size", "300"),
         ("cannot fit", "the largest that fits is", "--trigger-size")),
    Case("craft-trigger-size-huge", _replace(_craft(), "--trigger-size", "100000"), ("--trigger-size", "at most 4096")),
    # -- craft: the earlier suite's cases
    Case("craft-alpha-1.5", _craft("--alpha", "1.5"), ("alpha=1.5 is outside (0, 1)",)),
    Case("craft-alpha-0", _craft("--alpha", "0"), ("alpha=0.0 is outside (0, 1)",)),
    Case("craft-beta-neg", _craft("--beta", "-0.2"), ("beta=-0.2 is outside (0, 1)",)),
    Case("craft-num-0", _replace(_craft(), "--num", "0"), ("num=0",)),
    Case("craft-trigger-size-abc", _replace(_craft(), "--trigger-size", "abc"), ("trigger size 'abc'",)),
    Case("craft-corrupt-reference", _replace(_craft(), "--references", "{tmp}/refs"), ("2.jpg", "corrupt or truncated"),
         setup=_corrupt_reference),
    Case("craft-empty-mask", _replace(_craft(), "--references", "{tmp}/refs"), ("2.jpg", "mask is empty"),
         setup=_empty_mask),
    Case("craft-mask-size", _replace(_craft(), "--references", "{tmp}/refs"), ("2_mask.png", "10x10"),
         setup=_small_mask),
    Case("craft-no-such-label", _craft("--object-label", "cat"), ("1.json", "no shape labelled cat")),
    Case("craft-empty-backgrounds", _replace(_craft(), "--backgrounds", "{tmp}/empty"), ("no image files",),
         setup=lambda w, out: (out.parent / "empty").mkdir()),
    Case("craft-missing-in-list", _replace(_craft(), "--backgrounds", "{tmp}/bgs.txt"),
         ("bgs.txt:2", "nope.jpg", "does not exist"), setup=_background_list),
    Case("craft-no-references", _replace(_craft(), "--references", "{tmp}/nowhere"), ("nowhere",)),
    Case("craft-config-wrong-key", ["craft", "--config", "{tmp}/c.yaml", "--out", "{out}"],
         ("c.yaml", "targets.0.aplha", "unknown key"),
         setup=_write("c.yaml", "targets:\n  - {name: dog, references: [x], backgrounds: [y], aplha: 0.4}\n")),
    Case("craft-existing-out", _craft(), ("--overwrite",), setup=_existing, untouched=("{out}/keep.txt",)),
    Case("craft-no-attack", ["craft", "--out", "{out}"], ("craft needs an attack",)),
    # -- show
    Case("show-unknown-extension", ["show", "{poisons}", "--out", "{tmp}/g.xyz"], ("--out", "'.xyz'", ".png")),
    Case("show-no-extension", ["show", "{poisons}", "--out", "{tmp}/grid"], ("--out", "no extension")),
    Case("show-out-proc", ["show", "{poisons}", "--out", "/proc/corruptencoder-test.png"], ("--out", "cannot")),
    Case("show-out-readonly", ["show", "{poisons}", "--out", "{tmp}/ro/g.png"],
         ("--out", "cannot write", "Permission denied"), setup=_readonly, skip=RO_SKIP),
    Case("show-malformed-box", ["show", "{base}/poisons-bad", "--out", "{tmp}/g.png"],
         ("manifest.jsonl:1", "object_box")),
    Case("show-cell-huge", ["show", "{poisons}", "--out", "{tmp}/g.png", "--cell", "100000"], ("--cell", "4096")),
    Case("show-sheet-huge", ["show", "{poisons}", "--out", "{tmp}/g.png", "--cell", "4096", "--cols", "8"],
         ("megapixels", "--cell")),
    Case("show-num-0", ["show", "{poisons}", "--out", "{tmp}/g.png", "--num", "0"], ("--num",)),
    Case("show-no-folder", ["show", "{tmp}/nowhere", "--out", "{tmp}/g.png"], ("nowhere", "does not exist")),
    # -- analyze
    Case("analyze-delta-neg", ["analyze", "crops", "--delta", "-1", "--pairs", "5"], ("--delta",)),
    Case("analyze-betas-nan", ["analyze", "crops", "--betas", "nan", "--pairs", "5"], ("--betas", "nan")),
    Case("analyze-alphas-2", ["analyze", "crops", "--alphas", "2", "--pairs", "5"], ("--alphas",)),
    Case("analyze-pairs-0", ["analyze", "crops", "--pairs", "0"], ("--pairs",)),
    Case("analyze-scale-reversed", ["analyze", "crops", "--scale", "0.9", "0.5", "--pairs", "5"], ("--scale", "0.9")),
    Case("analyze-scale-zero", ["analyze", "crops", "--scale", "0", "1", "--pairs", "5"], ("--scale", "low")),
    Case("analyze-malformed-box", ["analyze", "crops", "{base}/poisons-bad", "--no-grid", "--pairs", "5"],
         ("manifest.jsonl:1", "object_box")),
    Case("analyze-json-proc", ["analyze", "crops", "--pairs", "5", "--alphas", "0.5", "--betas", "0.5", "--json",
                               "/proc/corruptencoder-test.json"], ("--json", "cannot write")),
    Case("analyze-json-readonly", ["analyze", "crops", "--pairs", "5", "--alphas", "0.5", "--betas", "0.5", "--json",
                                   "{tmp}/ro/crops.json"], ("--json", "cannot write", "Permission denied"),
         setup=_readonly, skip=RO_SKIP),
    # -- report
    Case("report-truncated", ["report", "{base}/results-truncated"], ("results.json", "not valid JSON")),
    Case("report-no-aggregates", ["report", "{base}/results-no-aggregates"], ("results.json", "aggregates")),
    Case("report-not-an-object", ["report", "{base}/results-list"], ("results.json", "aggregates")),
    Case("report-no-results", ["report", "{tmp}"], ("no results.json",)),
    # -- pretrain: nothing may be written before everything is checked
    Case("pretrain-out-proc", [*PT, "--out", "/proc/corruptencoder-test"], ("cannot write",)),
    Case("pretrain-out-readonly", [*PT, "--out", "{tmp}/ro/run"], ("--out", "cannot write", "Permission denied"),
         setup=_readonly, skip=RO_SKIP),
    Case("pretrain-devices-0", [*PT, "--devices", "0", "--out", "{out}"], ("--devices", "at least 1")),
    Case("pretrain-devices-neg", [*PT, "--devices", "-1", "--out", "{out}"], ("--devices", "at least 1")),
    Case("pretrain-num-nodes-0", [*PT, "--set", "trainer.num_nodes=0", "--out", "{out}"], ("trainer.num_nodes",)),
    Case("pretrain-nodes-0", [*PT, "--nodes", "0", "--out", "{out}"], ("--nodes", "at least 1")),
    Case("pretrain-temperature-0-moco", [*PT, "--set", "method.temperature=0", "--out", "{out}"],
         ("method.temperature",)),
    Case("pretrain-temperature-0-simclr", [*PT, "--method", "simclr", "--set", "method.queue_size=0",
                                           "--set", "method.temperature=0", "--out", "{out}"], ("method.temperature",)),
    Case("pretrain-temperature-neg-swav", [*PT, "--method", "swav", "--set", "method.temperature=-1", "--out", "{out}"],
         ("method.temperature",)),
    Case("pretrain-gpu-without-cuda", [*PT, "--accelerator", "gpu", "--out", "{out}"], ("no CUDA GPU",), skip=NO_CUDA),
    Case("pretrain-epochs-0", [*PT, "--epochs", "0", "--out", "{out}"], ("--epochs",)),
    Case("pretrain-batch-size-1", [*PT, "--batch-size", "1", "--out", "{out}"], ("--batch-size",)),
    Case("pretrain-image-size-huge", [*_replace(PT, "--image-size", "100000"), "--out", "{out}"],
         ("--image-size", "4096")),
    Case("pretrain-unknown-backbone", [*PT, "--backbone", "nosuch", "--out", "{out}"], ("nosuch",)),
    Case("pretrain-missing-data", [*PT[:2], "{tmp}/nowhere", *PT[3:], "--out", "{out}"], ("nowhere",)),
    Case("pretrain-resume-nothing", [*PT, "--resume", "--out", "{out}"], ("nothing to resume", "does not exist")),
    Case("pretrain-resume-truncated", [*PT, "--resume", "--out", "{out}"], ("last.ckpt", "cannot resume"),
         setup=_damaged_run("truncated"), untouched=("{out}/config.yaml",)),
    Case("pretrain-resume-code-pickle", [*PT, "--resume", "--out", "{out}"], ("last.ckpt", "cannot resume"),
         setup=_damaged_run("pickle"), untouched=("{out}/config.yaml",)),
    Case("pretrain-existing-out", [*PT, "--out", "{out}"], ("--resume", "--overwrite"), setup=_existing,
         untouched=("{out}/keep.txt",)),
    # -- evaluate: checked before any feature is extracted; nothing written under --out
    Case("evaluate-probe-epochs-neg", [*EV, "--probe-epochs", "-1", "--out", "{out}"], ("--probe-epochs",)),
    Case("evaluate-probe-epochs-0", [*EV, "--probe-epochs", "0", "--out", "{out}"], ("--probe-epochs",)),
    Case("evaluate-batch-size-0", [*EV, "--batch-size", "0", "--out", "{out}"], ("--batch-size",)),
    Case("evaluate-device-cuda", [*EV, "--device", "cuda", "--out", "{out}"], ("--device cuda", "no CUDA GPU"),
         skip=NO_CUDA),
    Case("evaluate-device-unknown", [*EV, "--device", "tpu", "--out", "{out}"], ("--device tpu",)),
    Case("evaluate-location-reversed", [*EV, "--location", "0.8", "0.2", "--out", "{out}"], ("--location",)),
    Case("evaluate-location-nan", [*EV, "--location", "nan", "0.5", "--out", "{out}"], ("--location",)),
    Case("evaluate-unknown-class", [*_replace(EV, "--target", "zebra"), "--out", "{out}"], ("zebra", "not a class")),
    Case("evaluate-trigger-too-large", [*_replace(EV, "--trigger-size", "40"), "--out", "{out}"],
         ("does not fit", "--trigger-size 8 or less")),
    Case("evaluate-image-size-huge", [*EV, "--image-size", "100000", "--out", "{out}"], ("--image-size", "4096")),
    Case("evaluate-trigger-size-huge", [*_replace(EV, "--trigger-size", "100000"), "--out", "{out}"],
         ("trigger size", "4096")),
    Case("evaluate-out-proc", [*EV, "--out", "/proc/corruptencoder-test"], ("--out", "cannot write")),
    Case("evaluate-trigger-count", [*EV, "--target", "c2", "--out", "{out}"], ("one --trigger per --target",)),
    # -- run: config errors at load time, before the demo world is generated
    Case("run-misspelt-pretrain-key", ["run", "{tmp}/exp.yaml", "--out", "{out}"], ("optim.epochz", "unknown key"),
         setup=_run_config(lambda c: c["pretrain"].update(optim={"epochz": 3}))),
    Case("run-misspelt-arm-key", ["run", "{tmp}/exp.yaml", "--out", "{out}"], ("exp.yaml", "arms.1", "atack",
                                                                               "unknown key"),
         setup=_run_config(lambda c: c["arms"][1].update(atack="none"))),
    Case("run-layout-wdie", ["run", "{tmp}/exp.yaml", "--out", "{out}"], ("layout",),
         setup=_run_config(lambda c: c["arms"][1].update(layout="wdie"))),
    Case("run-temperature-0", ["run", "{tmp}/exp.yaml", "--out", "{out}"], ("method.temperature",),
         setup=_run_config(lambda c: c["pretrain"]["method"].update(temperature=0))),
    Case("run-probe-epochs-neg", ["run", "{tmp}/exp.yaml", "--out", "{out}"], ("evaluation.probe_epochs",),
         setup=_run_config(lambda c: c.update(evaluation={"probe_epochs": -1}))),
    Case("run-location-reversed", ["run", "{tmp}/exp.yaml", "--out", "{out}"], ("--location", "LO < HI"),
         setup=_run_config(lambda c: c.update(evaluation={"location": [0.8, 0.2]}))),
    Case("run-device-cuda", ["run", "{tmp}/exp.yaml", "--device", "cuda", "--out", "{out}"], ("no CUDA GPU",),
         setup=_run_config(lambda c: None), skip=NO_CUDA),
    Case("run-arms-no-match", ["run", "{tmp}/exp.yaml", "--arms", "nope*", "--out", "{out}"], ("--arms",),
         setup=_run_config(lambda c: None)),
    Case("run-config-binary", ["run", "{base}/binary.yaml", "--out", "{out}"], ("not a text file",)),
    Case("run-own-data-plus-without-support", ["run", "{tmp}/exp.yaml", "--out", "{out}"],
         ("target dog", "corruptencoder-plus", "needs 'support'"), absent=("is not in the world",),
         setup=_write("exp.yaml", OWN_DATA_PLUS)),
    # README's example as written, on a machine without /data: the missing path, before the run folder is made
    Case("run-own-data-missing-paths", ["run", "{tmp}/exp.yaml", "--out", "{out}"],
         ("data.clean", "/data/cifar/train", "does not exist"), setup=_write("exp.yaml", OWN_DATA)),
]


def _fill(argv: list[str], w: dict[str, Path], tmp: Path, out: Path) -> list[str]:
    names = {k: str(v) for k, v in w.items()} | {"tmp": str(tmp), "out": str(out)}
    return [a.format(**names) for a in argv]


def _one_error_line(err: str, case: Case) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    for word in case.absent:
        assert word not in lines[0], (word, lines[0])
    return lines[0]


def _nothing_left(case: Case, w: dict[str, Path], tmp: Path, out: Path) -> None:
    keep = {Path(p.format(out=out)) for p in case.untouched}
    if keep:
        for p in keep:
            assert p.exists(), f"{p} was removed"
    else:
        assert not out.exists(), f"{out} was written"
    for folder in {tmp, w["base"], out.parent}:
        assert not list(folder.glob(".*.tmp-*")), f"temp folder left in {folder}"
    assert not (tmp / "PWNED").exists(), "a pickled command was executed"
    for run_file in ("results.json", "stages.jsonl"):
        assert not (out / run_file).exists()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, world: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    if case.skip:
        pytest.skip(case.skip)
    out = tmp_path / "out"
    if case.setup:
        case.setup(world, out)
    capsys.readouterr()
    code = main(_fill(case.argv, world, tmp_path, out))
    err = capsys.readouterr().err
    assert code == 2, err
    _one_error_line(err, case)
    _nothing_left(case, world, tmp_path, out)


def test_readme_own_data_loads_without_support(tmp_path: Path) -> None:
    """Without a CorruptEncoder+ arm, README's example needs no ``support:`` (the run then only needs the data)."""
    from corruptencoder.experiment.config import load_experiment

    assert "ce-plus" in OWN_DATA_PLUS and "ce-plus" not in OWN_DATA
    path = tmp_path / "exp.yaml"
    path.write_text(OWN_DATA)
    cfg = load_experiment(path)
    assert [a.attack for a in cfg.expanded_arms()] == ["none", "ssl-backdoor", "corruptencoder"]
    assert cfg.targets[0].support is None


#: the same promise where a shell or a scheduler sees it: a real process, its exit status and stderr
SUBPROCESS = ["craft-config-binary", "craft-labelme-points", "show-unknown-extension", "report-truncated",
              "pretrain-devices-0", "evaluate-device-unknown"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_in_a_real_process(case_id: str, world: dict[str, Path], tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    out = tmp_path / "out"
    if case.setup:
        case.setup(world, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "corruptencoder", *_fill(case.argv, world, tmp_path, out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    _one_error_line(proc.stderr, case)
    _nothing_left(case, world, tmp_path, out)


def test_a_bug_is_one_line_and_a_saved_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import corruptencoder.cli as cli

    def boom(args: object) -> int:
        raise RuntimeError("something no input should cause")

    monkeypatch.setattr(cli, "_cmd_report", boom)
    monkeypatch.setenv("CORRUPTENCODER_CACHE", str(tmp_path / "cache"))
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    line = _one_error_line(err, Case("bug", [], ("internal error", "RuntimeError", "-v")))
    saved = Path(line.split("the traceback is in ")[1].split(" (")[0])
    assert saved.is_file() and saved.parent == tmp_path / "cache" / "crashes"
    assert "Traceback" in saved.read_text() and "something no input should cause" in saved.read_text()
    # with -v the traceback is printed too, then the same one line
    assert main(["-v", "report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: internal error")


def test_escaped_os_and_validation_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The safety net for what the library did not turn into a UserError itself."""
    import errno

    import corruptencoder.cli as cli
    from corruptencoder.ssl.config import TrainerConfig

    def disk_full(args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    def invalid(args: object) -> int:
        TrainerConfig.model_validate({"devices": 0})
        return 0

    def torch_oom(args: object) -> int:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 39183869388 bytes")

    for fn, needles in ((disk_full, ("x: No space left on device", "free some space")), (invalid, ("devices",)),
                        (torch_oom, ("out of memory",))):
        monkeypatch.setattr(cli, "_cmd_report", fn)
        assert main(["report", str(tmp_path)]) == 2
        _one_error_line(capsys.readouterr().err, Case("net", [], needles))


def test_stale_temp_folders_of_dead_runs_are_removed(world: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 cannot clean up: the next run into the same parent removes what a dead run left."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".old-poisons.tmp-abc123"
    stale.mkdir()
    (stale / ".owner").write_text(json.dumps({"pid": int(dead.stdout), "start": None, "host": socket.gethostname()}))
    (stale / "00000.png").write_bytes(b"half")
    live = tmp_path / ".other.tmp-def456"  # a live run's (this process): left alone
    live.mkdir()
    (live / ".owner").write_text(json.dumps({"pid": os.getpid(), "start": None, "host": socket.gethostname()}))
    argv = _fill(_craft(), world, tmp_path, tmp_path / "new")
    assert main(argv) == 0
    assert not stale.exists() and live.exists()
    assert (tmp_path / "new" / "manifest.jsonl").is_file()
    assert not (tmp_path / "new" / ".owner").exists()
