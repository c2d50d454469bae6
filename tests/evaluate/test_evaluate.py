"""Evaluation: ASR arithmetic, reference exclusion, trigger placement, probe, loading, task errors."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import class_folder, random_encoder
from corruptencoder.cli import main
from corruptencoder.errors import UserError
from corruptencoder.evaluate.controls import (
    CONTROL_SEED,
    control_patch,
    rotated_control_patch,
    sibling_trigger,
    solid_control_patch,
)
from corruptencoder.evaluate.linear_probe import LinearProbe, ProbeConfig, train_linear_probe
from corruptencoder.evaluate.metrics import accuracy, asr_by_class, attack_success_rate, feature_pull, target_rate
from corruptencoder.evaluate.run import EvalSettings, EvalTarget, Scorer, evaluate, exclude_references
from corruptencoder.evaluate.tasks import TaskConfig, load_task
from corruptencoder.evaluate.triggered import TriggerPaste
from corruptencoder.ssl.backbones import backbone_spec
from corruptencoder.ssl.encoder import load_encoder

CLASSES = ["cat", "dog", "fish"]


@pytest.fixture()
def task_root(tmp_path: Path) -> Path:
    class_folder(tmp_path / "task" / "train", CLASSES, 10, (20, 20), seed=0, prefix="train")
    class_folder(tmp_path / "task" / "test", CLASSES, 6, (20, 20), seed=1, prefix="test")
    return tmp_path / "task"


@pytest.fixture()
def encoder_file(tmp_path: Path) -> Path:
    return random_encoder(tmp_path / "encoder.pt")


def test_asr_counts_only_non_target_images() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert attack_success_rate(torch.tensor([1, 1, 1, 1, 1, 1]), labels, 1) == (100.0, 4)
    assert attack_success_rate(torch.tensor([1, 0, 1, 1, 2, 1]), labels, 1) == (50.0, 4)
    assert attack_success_rate(torch.tensor([1]), torch.tensor([1]), 1)[1] == 0


def test_asr_by_class_splits_the_asr_over_the_source_classes() -> None:
    labels = torch.tensor([0, 0, 0, 0, 2, 2])  # class 1 is the target; it has no triggered images here
    preds = torch.tensor([1, 1, 1, 0, 2, 2])
    by = asr_by_class(preds, labels, 1, ["a", "t", "b"])
    assert by == {"a": 75.0, "b": 0.0}
    asr, _ = attack_success_rate(preds, labels, 1)
    assert abs(asr - (4 * by["a"] + 2 * by["b"]) / 6) < 1e-9  # the ASR is their size-weighted mean
    assert accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])) == pytest.approx(200 / 3)
    assert target_rate(torch.tensor([2, 2, 0, 1]), 2) == 50.0


def test_always_target_classifier_gives_100(task_root: Path, encoder_file: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    scorer = Scorer(encoder_file, task, EvalSettings())
    dim = scorer.encoder.out_dim
    always_fish = LinearProbe(torch.zeros(3, dim), torch.tensor([0.0, 0.0, 5.0]), torch.zeros(dim), torch.ones(dim))
    monkeypatch.setattr(Scorer, "probe", lambda self: (always_fish, self.features(task.test.files, "t"),
                                                       torch.tensor(task.test.labels)))
    trigger = np.full((4, 4, 3), 255, np.uint8)
    res = scorer.score([EvalTarget("fish", "fish", trigger)])
    t = res["targets"][0]
    assert t["asr"] == 100.0 and t["n_triggered"] == 12  # 18 test images, the 6 fish excluded
    assert t["clean_target_rate"] == 100.0
    assert res["accuracy"] == pytest.approx(100 / 3, abs=0.01)


class _WhitePixels(torch.nn.Module):
    """A one-feature 'encoder': the share of pure-white pixels (an encoder backdoored to a white trigger only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from corruptencoder.ssl.augment import IMAGENET_MEAN, IMAGENET_STD

        v = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        return (v.amin(1) >= 0.98).float().mean((1, 2)).unsqueeze(1)


def test_control_patch_tells_a_trigger_keyed_backdoor_from_any_patch(task_root: Path, encoder_file: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    scorer = Scorer(encoder_file, task, EvalSettings())
    scorer.encoder = _WhitePixels()  # type: ignore[assignment]
    # fish when any white pixel shows, cat otherwise
    probe = LinearProbe(torch.tensor([[0.0], [0.0], [100.0]]), torch.tensor([0.5, 0.0, 0.0]), torch.zeros(1),
                        torch.ones(1))
    monkeypatch.setattr(Scorer, "probe", lambda self: (probe, self.features(task.test.files, "t"),
                                                       torch.tensor(task.test.labels)))
    white = np.full((4, 4, 3), 255, np.uint8)
    t = scorer.score([EvalTarget("fish", "fish", white)])["targets"][0]
    assert t["asr"] == 100.0 and t["control_asr"] == 0.0  # the backdoor answers its own trigger only
    assert t["solid_control_asr"] == 0.0  # a black patch: the backdoor answers white, not any solid patch
    noise = control_patch(np.zeros((4, 4, 3), np.uint8))
    assert scorer.score([EvalTarget("fish", "fish", noise)])["targets"][0]["solid_control_asr"] is None
    # a backdoor keyed to "any patch": the control scores as high as the trigger
    import corruptencoder.evaluate.controls as controls

    fake = (replace(controls.CONTROLS[0], make=lambda trig, _: white), *controls.CONTROLS[1:])
    monkeypatch.setattr(controls, "CONTROLS", fake)
    t = scorer.score([EvalTarget("fish", "fish", np.full((4, 4, 3), 255, np.uint8))])["targets"][0]
    assert t["control_asr"] == t["asr"] == 100.0


class _WhiteThenBlack(torch.nn.Module):
    """A one-feature 'encoder': the share of white pixels with a black pixel to their right (one backdoored to an
    arrangement of its trigger's colours, not to the colours)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from corruptencoder.ssl.augment import IMAGENET_MEAN, IMAGENET_STD

        v = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        white, black = v.amin(1) >= 0.98, v.amax(1) <= 0.02
        return (white[..., :-1] & black[..., 1:]).float().mean((1, 2)).unsqueeze(1)


def test_rotated_control_tells_a_backdoor_keyed_to_the_arrangement_from_one_keyed_to_the_colours(
        task_root: Path, encoder_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    probe = LinearProbe(torch.tensor([[0.0], [0.0], [1000.0]]), torch.tensor([0.5, 0.0, 0.0]), torch.zeros(1),
                        torch.ones(1))  # fish when the feature is above zero
    trigger = np.full((4, 4, 3), 128, np.uint8)
    trigger[:, 0], trigger[:, 1] = 255, 0  # columns white, black, grey, grey: turned round, black comes first
    for encoder, keyed in ((_WhiteThenBlack(), True), (_WhitePixels(), False)):
        scorer = Scorer(encoder_file, task, EvalSettings())
        scorer.encoder = encoder  # type: ignore[assignment]
        monkeypatch.setattr(Scorer, "probe", lambda self: (probe, self.features(task.test.files, "t"),
                                                           torch.tensor(task.test.labels)))
        t = scorer.score([EvalTarget("fish", "fish", trigger)])["targets"][0]
        assert t["asr"] == 100.0 and t["control_asr"] == 0.0 and t["solid_control_asr"] is None
        # keyed to white-then-black: the turned trigger scores nothing; keyed to white pixels: it scores all
        assert t["rotated_control_asr"] == (0.0 if keyed else 100.0)
        assert t["sibling_control_asr"] is None  # no sibling given: the control does not apply


def test_sibling_control_tells_a_backdoor_keyed_to_its_trigger_from_one_keyed_to_its_kind(
        task_root: Path, encoder_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    probe = LinearProbe(torch.tensor([[0.0], [0.0], [1000.0]]), torch.tensor([0.5, 0.0, 0.0]), torch.zeros(1),
                        torch.ones(1))
    scorer = Scorer(encoder_file, task, EvalSettings())
    scorer.encoder = _WhitePixels()  # type: ignore[assignment]  # keyed to white pixels
    monkeypatch.setattr(Scorer, "probe", lambda self: (probe, self.features(task.test.files, "t"),
                                                       torch.tensor(task.test.labels)))
    trigger = np.full((4, 4, 3), 128, np.uint8)
    trigger[:, 0] = 255
    with_white, without = trigger.copy(), np.full((4, 4, 3), 60, np.uint8)
    with_white[:, 0], with_white[:, 3] = 60, 255
    for sibling, expected in ((with_white, 100.0), (without, 0.0), (trigger, None)):
        t = scorer.score([EvalTarget("fish", "fish", trigger, sibling=sibling)])["targets"][0]
        assert t["asr"] == 100.0 and t["sibling_control_asr"] == expected  # a sibling equal to the trigger: None


def test_sibling_trigger_is_the_next_image_of_the_folder_or_the_recipe_drawn_again(tmp_path: Path) -> None:
    from corruptencoder.evaluate.controls import control_set_key
    from corruptencoder.poison.triggers import TriggerSpec, make_trigger

    rng = np.random.default_rng(0)
    folder = tmp_path / "triggers"
    folder.mkdir()
    pics = {n: rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for n in ("t10.png", "t11.png", "t12.png")}
    for n, a in pics.items():
        Image.fromarray(a).save(folder / n)
    (folder / "notes.txt").write_text("not an image")
    spec = TriggerSpec(str(folder / "t10.png"), (4, 4))
    trig = make_trigger(spec)
    sib = sibling_trigger(spec, trig)
    expected = np.asarray(Image.fromarray(pics["t11.png"]).resize((4, 4), Image.Resampling.LANCZOS))
    assert sib is not None and np.array_equal(sib, expected)  # the next name, resized as the trigger was
    last = TriggerSpec(str(folder / "t12.png"), (4, 4))
    wrapped = sibling_trigger(last, make_trigger(last))
    assert wrapped is not None and np.array_equal(wrapped, trig)  # after the last name: the first
    (folder / "t11.png").write_bytes(b"not a png")  # an unreadable sibling is passed over
    sib = sibling_trigger(spec, trig)
    assert sib is not None and np.array_equal(sib, make_trigger(last))
    Image.fromarray(pics["t10.png"]).save(folder / "t11.png")  # a copy of the trigger is no sibling
    assert np.array_equal(sibling_trigger(spec, trig), make_trigger(last))  # type: ignore[arg-type]
    alone = tmp_path / "alone"
    alone.mkdir()
    Image.fromarray(pics["t10.png"]).save(alone / "t.png")
    assert sibling_trigger(TriggerSpec(str(alone / "t.png"), (4, 4)), trig) is None
    assert sibling_trigger(TriggerSpec(str(tmp_path / "gone" / "t.png"), (4, 4)), trig) is None
    # a recipe: drawn again with the control seed, never the trigger itself
    for kind in ("smooth", "smooth:3", "random:2"):
        s = TriggerSpec(kind, (6, 5), 7)
        t = make_trigger(s)
        sib = sibling_trigger(s, t)
        assert sib is not None and sib.shape == t.shape and not np.array_equal(sib, t)
        assert np.array_equal(sib, make_trigger(TriggerSpec(kind, (6, 5), CONTROL_SEED)))
        assert np.array_equal(sibling_trigger(TriggerSpec(kind, (6, 5), CONTROL_SEED), sib),  # type: ignore[arg-type]
                              make_trigger(TriggerSpec(kind, (6, 5), CONTROL_SEED + 1)))
    # a per-pixel random trigger (the random control is its kind) and a solid one: none
    assert sibling_trigger(TriggerSpec("random", (4, 4), 1), make_trigger(TriggerSpec("random", (4, 4), 1))) is None
    assert sibling_trigger(TriggerSpec("purple", (4, 4)), make_trigger(TriggerSpec("purple", (4, 4)))) is None
    # the evaluation cache key names the control only where a sibling exists (the earlier keys stay)
    noise = make_trigger(TriggerSpec("random", (4, 4), 1))
    assert control_set_key([noise], [None]) == control_set_key([noise]) == ["control_asr", "rotated_control_asr"]
    assert control_set_key([trig], [expected]) == ["control_asr", "rotated_control_asr", "sibling_control_asr"]


def test_control_patch_is_a_fixed_random_patch_of_the_triggers_size_never_the_trigger() -> None:
    from corruptencoder.poison.triggers import TriggerSpec, make_trigger

    trig = np.zeros((5, 7, 3), np.uint8)
    patch = control_patch(trig)
    assert patch.shape == (5, 7, 3) and patch.dtype == np.uint8 and patch.std() > 50
    assert np.array_equal(patch, control_patch(trig))  # the same patch in every run
    same = make_trigger(TriggerSpec("random", (7, 5), CONTROL_SEED))
    assert np.array_equal(same, patch)
    assert not np.array_equal(control_patch(same), same)  # a trigger that is the control gets another one


def test_solid_control_is_a_far_solid_colour_for_a_solid_trigger_only() -> None:
    purple = np.full((5, 7, 3), (128, 0, 128), np.uint8)
    patch = solid_control_patch(purple)
    assert patch is not None and patch.shape == purple.shape and patch.dtype == np.uint8
    assert (patch == np.array([0, 255, 0], np.uint8)).all()  # green: the corner colour farthest from purple
    white = solid_control_patch(np.full((3, 3, 3), 255, np.uint8))
    assert white is not None and not white.any()  # black for white
    assert solid_control_patch(control_patch(purple)) is None  # a random trigger: the random control is its kind
    two = purple.copy()
    two[0, 0] = 0
    assert solid_control_patch(two) is None


def test_rotated_control_is_the_trigger_turned_round_or_mirrored_never_the_trigger() -> None:
    from corruptencoder.evaluate.controls import control_set_key

    rng = np.random.default_rng(0)
    trig = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    patch = rotated_control_patch(trig)
    assert patch is not None and patch.shape == (5, 7, 3) and patch.flags.c_contiguous
    assert np.array_equal(patch, trig[::-1, ::-1]) and not np.array_equal(patch, trig)
    assert sorted(map(tuple, patch.reshape(-1, 3))) == sorted(map(tuple, trig.reshape(-1, 3)))  # the same pixels
    a, b = (255, 0, 0), (0, 0, 255)
    checker = np.array([[a, b], [b, a]], np.uint8)  # unchanged when turned round: mirrored instead
    assert np.array_equal(rotated_control_patch(checker), checker[:, ::-1])
    ring = np.zeros((3, 3, 3), np.uint8)
    ring[1, 1] = 255  # unchanged by every turn and mirror: no rotated control
    assert rotated_control_patch(ring) is None
    purple = np.full((4, 4, 3), (128, 0, 128), np.uint8)
    assert rotated_control_patch(purple) is None
    # the evaluation cache key: the control sets of before the rotated control keep their keys (1 and 2)
    assert control_set_key([ring]) == 1 and control_set_key([purple]) == 2
    assert control_set_key([trig]) == ["control_asr", "rotated_control_asr"]
    assert control_set_key([trig, purple]) == ["control_asr", "solid_control_asr", "rotated_control_asr"]


def test_reference_images_are_excluded_from_tests(task_root: Path, tmp_path: Path) -> None:
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    victim = task.test.files[3]
    copy = tmp_path / "refs" / "1.png"  # same pixels, different name and folder
    copy.parent.mkdir()
    Image.open(victim).save(copy)
    named = task.test.files[7]
    n0 = len(task.test)
    removed = exclude_references(task, [EvalTarget("dog", "dog", np.zeros((2, 2, 3), np.uint8),
                                                   references=[str(copy), str(named)])])
    assert removed == 2 and len(task.test) == n0 - 2
    assert victim not in task.test.files and named not in task.test.files


def test_trigger_placement_inside_box_and_deterministic() -> None:
    trig = np.random.default_rng(0).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    paste = TriggerPaste(trig, seed=3, lo=0.25, hi=0.75)
    img = torch.zeros(3, 32, 40, dtype=torch.uint8)
    boxes = set()
    for i in range(300):
        x0, y0, x1, y1 = paste.box(i, (40, 32))
        assert 10 <= x0 and x1 <= 30 and 8 <= y0 and y1 <= 24
        boxes.add((x0, y0))
        out = paste(img, i)
        assert torch.equal(out[:, y0:y1, x0:x1], torch.from_numpy(trig).permute(2, 0, 1))
        assert int(out.sum()) == int(trig.astype(np.int64).sum())
    assert len(boxes) > 50
    again = TriggerPaste(trig, seed=3)
    assert [again.box(i, (40, 32)) for i in range(20)] == [paste.box(i, (40, 32)) for i in range(20)]
    other = TriggerPaste(trig, seed=4)
    assert [other.box(i, (40, 32)) for i in range(20)] != [paste.box(i, (40, 32)) for i in range(20)]


def test_linear_probe_separable_features() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 32, generator=g) * 3
    y = torch.arange(5).repeat_interleave(200)
    x = centers[y] + torch.randn(1000, 32, generator=g)
    probe = train_linear_probe(x[::2], y[::2], 5, ProbeConfig(epochs=30))
    assert accuracy(probe.predict(x[1::2]), y[1::2]) > 98.0


def test_feature_pull() -> None:
    ref = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    pull = feature_pull(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), ref)
    assert pull["triggered"] > 0.99 and pull["clean"] < 0.1 and pull["delta"] > 0.9


def test_encoder_loading_errors(tmp_path: Path, encoder_file: Path) -> None:
    raw = torch.load(encoder_file, weights_only=True)
    state = dict(raw["state_dict"])
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "plain.pt")
    with pytest.raises(UserError, match=r"unexpected key\(s\) e.g. extra.weight"):
        load_encoder(tmp_path / "plain.pt", raw["backbone"])

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("owned",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    with pytest.raises(UserError, match="weights_only"):
        load_encoder(tmp_path / "evil.pt")


def test_torchvision_resnet_state_dict_loads(tmp_path: Path) -> None:
    import torchvision

    tv = torchvision.models.resnet18()
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, tmp_path / "tv.pt")
    model, spec, _ = load_encoder(tmp_path / "tv.pt")
    assert spec["name"] == "resnet18"
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    tv.eval()
    torch.testing.assert_close(model(x), tv(x))


@pytest.mark.parametrize("kind", ["pets", "flowers102", "caltech101", "imagenet", "imagefolder"])
def test_missing_dataset_root_one_line(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "task.yaml"
    cfg.write_text(f"name: t\nkind: {kind}\nroot: {tmp_path / 'none'}\nclasses: {tmp_path / 'c.txt'}\n")
    (tmp_path / "c.txt").write_text("n01\n")
    code = main(["evaluate", "--encoder", str(tmp_path / "e.pt"), "--task", str(cfg), "--target", "x",
                 "--trigger", str(tmp_path / "t.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "expected" in err and str(tmp_path / "none") in err
    assert not (tmp_path / "none").exists(), "nothing is created under a missing root"


def test_evaluate_end_to_end_with_clean_encoder(task_root: Path, encoder_file: Path, tmp_path: Path) -> None:
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    trig = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    settings = EvalSettings(probe=ProbeConfig(epochs=20), cache_dir=str(tmp_path / "cache"))
    res = evaluate(encoder_file, task, [EvalTarget("dog", "dog", trig)], clean_encoder=encoder_file, settings=settings)
    s = res["summary"]
    assert s["ca"] == s["ba"] and s["targets"][0]["asr"] == s["targets"][0]["no_attack_asr"]
    assert 0 <= s["ba"] <= 100 and res["encoder"]["targets"][0]["n_triggered"] == 12
    # second run: every feature comes from the cache
    res2 = evaluate(encoder_file, load_task(TaskConfig(root=str(task_root), image_size=16)),
                    [EvalTarget("dog", "dog", trig)], settings=settings)
    assert res2["encoder"]["accuracy"] == res["encoder"]["accuracy"]


def test_pets_and_caltech_layouts(tmp_path: Path) -> None:
    pets = tmp_path / "pets" / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)
    (pets / "annotations").mkdir()
    lines = {"trainval": [], "test": []}
    for i, (breed, label) in enumerate([("havanese", 1), ("havanese", 1), ("Abyssinian", 2), ("Abyssinian", 2)]):
        name = f"{breed}_{i}"
        Image.new("RGB", (12, 10), (i * 40, 0, 0)).save(pets / "images" / f"{name}.jpg")
        lines["trainval" if i % 2 == 0 else "test"].append(f"{name} {label} 1 1")
    for split, ls in lines.items():
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(ls) + "\n")
    t = load_task(TaskConfig(kind="pets", root=str(tmp_path / "pets"), image_size=8))
    assert len(t.train) == 2 and len(t.test) == 2 and t.class_index("Havanese") == 0
    cal = tmp_path / "cal" / "caltech101" / "101_ObjectCategories"
    for cat, n in (("BACKGROUND_Google", 3), ("stop_sign", 40), ("lotus", 35)):
        (cal / cat).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.new("RGB", (8, 8)).save(cal / cat / f"image_{i:04d}.jpg")
    t = load_task(TaskConfig(kind="caltech101", root=str(tmp_path / "cal"), image_size=8))
    assert t.classes == ["lotus", "stop_sign"]  # BACKGROUND_Google is not a class
    assert len(t.train) == 60 and len(t.test) == 15  # 30 per class for training, the rest for testing
    assert not set(map(str, t.train.files)) & set(map(str, t.test.files))
    assert t.class_index("stop sign") == 1


def test_flowers102_lotus_is_77_and_an_absent_name_is_one_line(tmp_path: Path) -> None:
    """torchvision's 0-based order: "lotus" is 77 ("toad lily" 78); a target maps by name, never by a number."""
    from scipy.io import savemat

    flowers = tmp_path / "flowers" / "flowers-102"
    (flowers / "jpg").mkdir(parents=True)
    labels = [78, 79, 1, 78, 79, 1]  # 1-based in imagelabels.mat
    for i in range(1, len(labels) + 1):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(flowers / "jpg" / f"image_{i:05d}.jpg")
    savemat(str(flowers / "imagelabels.mat"), {"labels": np.array([labels])})
    savemat(str(flowers / "setid.mat"), {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]),
                                         "tstid": np.array([[4, 5, 6]])})
    t = load_task(TaskConfig(kind="flowers102", root=str(tmp_path / "flowers"), image_size=8))
    assert t.class_index("lotus") == 77 and t.classes[77] == "lotus" and t.class_index("toad lily") == 78
    assert t.test.labels == [77, 78, 0]  # image 4 (label 78 in the file) is a lotus
    with pytest.raises(UserError) as err:
        t.class_index("edelweiss")
    msg = str(err.value)
    assert "\n" not in msg and "'edelweiss'" in msg and "is not a class of task" in msg


def test_timm_weights_load(tmp_path: Path) -> None:
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    spec = backbone_spec("timm:resnet10t")
    model, _, _ = load_encoder(tmp_path / "timm.pt", spec)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), net(x))


def test_authors_probe_protocol_learns_and_is_deterministic(task_root: Path, encoder_file: Path) -> None:
    """The authors' eval_linear.py protocol: augmented features every epoch, L2 then standardise."""
    from corruptencoder.evaluate.linear_probe import train_augmented_probe
    from corruptencoder.evaluate.run import AugmentedBatches

    cfg = ProbeConfig.for_protocol("authors", seed=3, epochs=6)
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.protocol) == (0.01, 1e-4, 256, "authors")
    assert ProbeConfig.for_protocol("authors").epochs == 40 and ProbeConfig.for_protocol("fast").epochs == 100
    task = load_task(TaskConfig(root=str(task_root), image_size=16))
    model, _, _ = load_encoder(encoder_file)
    batches = AugmentedBatches(model, task.train.files, task.train.labels or [], 16, 16, 8, "cpu", seed=3)
    first, again = batches(0), batches(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))  # same epoch, same views
    assert not torch.equal(first[0][0], batches(1)[0][0])  # another epoch, other views
    scorer = Scorer(encoder_file, task, EvalSettings(probe=cfg, seed=3))
    centre = scorer.features(task.train.files, "train")
    probe = train_augmented_probe(batches, centre, 3, cfg)
    assert probe.l2 and probe.weight.shape == (3, centre.shape[1])
    x = torch.nn.functional.normalize(centre, dim=1)
    torch.testing.assert_close(probe.mean, x.mean(0))
    res = Scorer(encoder_file, task, EvalSettings(probe=cfg, seed=3)).score([])
    assert res["accuracy"] == Scorer(encoder_file, task, EvalSettings(probe=cfg, seed=3)).score([])["accuracy"]
    assert res["accuracy"] > 100 / 3  # brightness separates the classes, even through a random encoder


def test_trigger_paste_can_round_trip_through_jpeg_as_the_authors_test_set() -> None:
    trig = np.full((6, 6, 3), 255, np.uint8)
    img = torch.full((3, 32, 32), 60, dtype=torch.uint8)
    exact = TriggerPaste(trig, 0)(img, 3)
    lossy = TriggerPaste(trig, 0, jpeg_quality=75)(img, 3)
    assert lossy.shape == exact.shape and lossy.dtype == torch.uint8
    assert not torch.equal(lossy, exact)  # JPEG changed the pixels ...
    assert (lossy.float() - exact.float()).abs().mean() < 6  # ... a little


def test_cli_takes_an_imagefolder_root_as_the_task(task_root: Path, encoder_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`--task ROOT` with train/ and test/ inside needs no YAML (it was "is a folder, not a config file")."""
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    code = main(["evaluate", "--encoder", str(encoder_file), "--task", str(task_root), "--target", "dog",
                 "--trigger", str(tmp_path / "t.png"), "--image-size", "16", "--probe-epochs", "2", "--quiet",
                 "--out", str(tmp_path / "ev")])
    assert code == 0 and "dog" in capsys.readouterr().out
    summary = json.loads((tmp_path / "ev" / "metrics.json").read_text())["summary"]
    assert summary["targets"][0]["target"] == "dog" and 0 <= summary["targets"][0]["asr"] <= 100


def test_poison_folders_give_each_target_its_sibling_trigger(assets: dict[str, Path], tmp_path: Path) -> None:
    from corruptencoder.evaluate.run import targets_from_poisons
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft
    from corruptencoder.poison.triggers import TriggerSpec, default_trigger_seed, make_trigger

    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(3)
    for n in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(pics / n)
    base = {"references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])],
            "trigger_size": 6, "num": 3}
    cfg = CraftConfig.model_validate({"targets": [
        {**base, "name": "dog", "trigger": "smooth"},
        {**base, "name": "cat", "trigger": str(pics / "a.png")},
        {**base, "name": "cow", "trigger": "random"}]})
    craft(cfg, tmp_path / "o", progress=False)
    got = {t.name: t for t in targets_from_poisons(tmp_path / "o")}
    dog = got["dog"]
    spec = TriggerSpec("smooth", (6, 6), default_trigger_seed("dog"))
    assert np.array_equal(dog.trigger, make_trigger(spec))
    assert dog.sibling is not None and np.array_equal(dog.sibling, sibling_trigger(spec, dog.trigger))
    cat = got["cat"].sibling
    assert cat is not None and np.array_equal(cat, make_trigger(TriggerSpec(str(pics / "b.png"), (6, 6))))
    assert got["cow"].sibling is None  # per-pixel noise: the random control is its sibling already



def test_legends_explain_only_the_control_columns_a_table_shows() -> None:
    from corruptencoder.evaluate.controls import legend, shown_controls

    text = legend(shown_controls([{"control_asr": 1.0}]))
    assert text.startswith("control: the ASR with an unrelated random patch") and "solid" not in text
    text = legend(shown_controls([{"control_asr": 1.0}, {"sibling_control_asr": 2.0}]), lambda c: c.name)
    assert "; sibling control: the ASR with another trigger of the same kind" in text and "rotated" not in text
