"""``corruptencoder run``: craft, pre-train, probe and score every arm and trial, with caching.

Each stage's output lives under ``RUN_DIR/cache/<stage>/<hash of its inputs>``, written atomically,
so a re-run skips finished stages, an interrupted run resumes where it stopped (a half-trained
encoder resumes from its last checkpoint), and changing one arm re-runs only that arm. The clean
encoder of an arm (the same pre-training without poisons, which gives CA and the no-attack ASR) has
the same hash as any identical no-attack arm, so it is trained once and shared.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from corruptencoder import __version__
from corruptencoder.errors import UserError
from corruptencoder.experiment.config import ArmSpec, ExperimentConfig, TargetSpec
from corruptencoder.utils.outputs import write_json_atomic

log = logging.getLogger(__name__)
STAGES = ("craft", "pretrain", "evaluate")


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageLog:
    """What each stage did in this invocation: 'ran' or 'cached' (the caching tests read it)."""

    path: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, stage: str, key: str, status: str, seconds: float, what: str) -> None:
        self.counts.setdefault(stage, {"ran": 0, "cached": 0})[status] += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": round(time.time(), 1), "stage": stage, "key": key, "status": status,
                                 "seconds": round(seconds, 2), "what": what}) + "\n")


class Runner:
    def __init__(self, cfg: ExperimentConfig, run_dir: str | Path, *, progress: bool = True, device: str = "auto",
                 say: Callable[[str], None] = print, only: Sequence[str] = (),
                 cache: str | Path | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        # stages are keyed by a hash of their inputs, so runs of different configs can share one cache
        self.cache = Path(cache) if cache else self.dir / "cache"
        self.progress = progress
        self.device = device
        self.say = say
        self.log = StageLog(self.dir / "stages.jsonl")
        self.arms = select_arms(cfg.expanded_arms(), only)
        self._world: Path | None = None
        self._n_clean: int | None = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def world(self) -> Path:
        if self._world is None:
            from corruptencoder.demo import demo_world

            w = self.cfg.world
            self._world = demo_world(w.image_size, w.seed, progress=self.progress, object_scale=w.object_scale,
                                     n_pretrain=w.n_pretrain,
                                     n_train_per_class=w.n_train_per_class, n_test_per_class=w.n_test_per_class,
                                     n_references=w.n_references, n_support=w.n_support,
                                     n_backgrounds=w.n_backgrounds)
        return self._world

    def resolve(self, value: str, kind: str, target: TargetSpec | None = None) -> str:
        if value == "demo" and kind in ("references", "support") and target is not None:
            label = target.label or target.name
            if not (self.world / kind / label).is_dir():  # another class than the world's own target
                from corruptencoder.demo import demo_class_assets

                return str(demo_class_assets(self.world, label) / kind / label)
            return str(self.world / kind / label)
        if value == "demo":
            sub = {"clean": "pretrain", "backgrounds": "backgrounds", "task": "downstream",
                   "references": f"references/{target.name if target else ''}",
                   "support": f"support/{target.name if target else ''}"}[kind]
            return str(self.world / sub)
        if value == "demo-test":
            label = (target.label or target.name) if target else ""
            return str(self.world / "downstream" / "test" / label)
        return value

    # -- crafting ----------------------------------------------------------------------------
    def n_clean(self) -> int:
        if self._n_clean is None:
            from corruptencoder.ssl.train import pretrain_files

            self._n_clean = len(pretrain_files(self.pretrain_config(self.arms[0], 0, None)).files)
        return self._n_clean

    def num_poisons(self, arm: ArmSpec) -> int:
        if arm.num_poisons is not None:
            return arm.num_poisons
        if arm.poison_ratio is not None:
            return max(1, int(round(arm.poison_ratio * self.n_clean())))
        return 650

    def arm_targets(self, arm: ArmSpec) -> list[TargetSpec]:
        names = arm.targets or [t.name for t in self.cfg.targets]
        return [t for t in self.cfg.targets if t.name in names]

    def craft_config(self, arm: ArmSpec, seed: int) -> dict[str, Any] | None:
        if arm.attack == "none" or self.num_poisons(arm) == 0:
            return None
        from corruptencoder.poison.objects import discover_references

        targets = []
        for t in self.arm_targets(arm):
            if arm.attack == "ssl-backdoor":
                refs = [self.resolve(r, "references", t) for r in t.saha_references]
            else:
                refs = [self.resolve(r, "references", t) for r in t.references]
            if arm.n_references:
                refs = [s.path for s in discover_references(refs)][: arm.n_references]
            support = [self.resolve(s, "support", t) for s in t.support]
            if arm.n_support:
                from corruptencoder.utils.files import list_images

                support = [str(p) for p in list_images(support, what="support image")][: arm.n_support]
            spec: dict[str, Any] = {
                "name": t.name, "attack": arm.attack, "task": t.task, "label": t.label or t.name,
                "num": self.num_poisons(arm), "references": refs,
                "trigger": arm.trigger_type or t.trigger, "trigger_size": arm.trigger_size,
                "trigger_seed": t.trigger_seed, "alpha": arm.alpha, "beta": arm.beta, "layout": arm.layout,
                "reference_mode": arm.reference_mode,
            }
            if arm.attack in ("corruptencoder", "corruptencoder-plus", "corruptencoder-mm", "carlini-terzis"):
                spec["backgrounds"] = [self.resolve(b, "backgrounds") for b in self.cfg.backgrounds]
            if arm.attack in ("corruptencoder-mm", "carlini-terzis"):
                spec.update(prompts=self.cfg.evaluation.prompts, type1_size=self.type1_size(arm))
                if arm.attack == "carlini-terzis":
                    spec.pop("references")
            if arm.attack == "corruptencoder-plus":
                spec.update(support=support, support_ratio=arm.support_ratio)
            targets.append(spec)
        run: dict[str, Any] = {"seed": seed, "workers": 1, "targets": targets}
        if arm.max_size is not None:
            run["max_size"] = arm.max_size
        return run

    def type1_size(self, arm: ArmSpec) -> int:
        """Type-I images at the world's image size (or 224 on real data), like the images around them."""
        return self.cfg.world.image_size if self.cfg.data.pairs == "demo" else 224

    def demo_pairs(self) -> Path:
        """The demo world's captions (CSV), generated once per caption setting."""
        from corruptencoder.data.demo_captions import write_demo_pairs

        w = self.cfg.world
        key = digest({"world": str(self.world), "p": w.caption_name_prob, "rare": w.rare_classes})
        path = self.cache / "captions" / f"{key}.csv"
        if not path.is_file():
            write_demo_pairs(self.world, path, name_prob=w.caption_name_prob, class_name_prob=w.rare_classes)
        return path

    def craft(self, arm: ArmSpec, seed: int) -> Path | None:
        raw = self.craft_config(arm, seed)
        if raw is None:
            return None
        from corruptencoder.poison.config import CraftConfig
        from corruptencoder.poison.craft import craft

        cfg = CraftConfig.model_validate(raw)
        key = digest({"craft": cfg.model_dump(mode="json", exclude={"workers"}), "v": __version__})
        out = self.cache / "poisons" / key
        if (out / "manifest.jsonl").is_file():
            self.log.add("craft", key, "cached", 0.0, f"{arm.name} seed {seed}")
            return out
        t0 = time.perf_counter()
        cfg.workers = 2
        craft(cfg, out, overwrite=True, progress=False)
        self.log.add("craft", key, "ran", time.perf_counter() - t0, f"{arm.name} seed {seed}")
        return out

    # -- pre-training ------------------------------------------------------------------------
    def pretrain_config(self, arm: ArmSpec, seed: int, poisons: Path | None, init: Path | None = None) -> Any:
        from corruptencoder.presets import _merge, apply_preset
        from corruptencoder.ssl.config import PretrainConfig

        d = self.cfg.data
        data: dict[str, Any] = {"clean": self.resolve(d.clean, "clean"), "classes": d.classes, "split": d.split,
                                "max_images": arm.max_images or d.max_images,
                                "poisons": [str(poisons)] if poisons else []}
        if arm.method == "clip":
            data.update(clean=None, classes=None, pairs=str(self.demo_pairs()) if d.pairs == "demo" else d.pairs)
        body: dict[str, Any] = {"method": {"name": arm.method}, "data": data}
        body = _merge(body, copy.deepcopy(self.cfg.pretrain))
        body = _merge(body, copy.deepcopy(arm.pretrain))
        crop = {"none": "random", "localized": "localized", "no-crop": "none", "compress": "random"}[arm.defence]
        body = _merge(body, {"views": {"crop": crop, "delta": arm.delta}, "trainer": {"seed": seed}})
        for key, (section, name) in {"backbone": ("backbone", "name"), "width": ("backbone", "width"),
                                     "epochs": ("optim", "epochs"), "batch_size": ("optim", "batch_size"),
                                     "lr": ("optim", "lr"), "image_size": ("data", "image_size")}.items():
            v = getattr(arm, key)
            if v is not None:
                body = _merge(body, {section: {name: v}})
        if self.cfg.evaluation.checkpoints_every:
            body = _merge(body, {"trainer": {"snapshot_every": self.cfg.evaluation.checkpoints_every}})
        if init is not None:
            body = _merge(body, {"backbone": {"init": str(init)}})
        body = apply_preset(self.cfg.preset, body)
        body.setdefault("trainer", {})["progress"] = self.progress
        return PretrainConfig.model_validate(body)

    def init_encoder(self, arm: ArmSpec, seed: int) -> Path | None:
        """The encoder an arm's continued pre-training starts from (trained first if needed)."""
        if not arm.init:
            return None
        if not arm.init.startswith("arm:"):
            return Path(arm.init)
        base = next(a for a in self.cfg.expanded_arms() if a.name == arm.init[4:])
        base = base.model_copy(update={"attack": "none", "defence": "none"})
        return self.pretrain(base, seed, None, f"{arm.name} (initial encoder: {base.name}, clean)") / "encoder.pt"

    def pretrain_key(self, cfg: Any, poisons: Path | None, arm: ArmSpec | None = None) -> str:
        body = cfg.model_dump(mode="json")
        init = body["backbone"].get("init")
        if init:  # the initial encoder by its cache key (or content), not by where the cache lives
            p = Path(init)
            body["backbone"]["init"] = p.parent.name if p.parent.parent == self.cache / "encoders" else _sha256(p)
        if arm is not None and arm.defence == "compress":  # a distilled student, not its teacher
            body["defence"] = {"compress": arm.compress_fraction}
        for k in ("progress", "accelerator", "devices", "threads", "log_every_n_steps"):
            body["trainer"].pop(k, None)
        body["data"].pop("workers", None)
        body["data"]["poisons"] = [p.name for p in ([poisons] if poisons else [])]  # the craft hash
        return digest({"pretrain": body, "v": __version__})

    def pretrain(self, arm: ArmSpec, seed: int, poisons: Path | None, role: str) -> Path:
        from corruptencoder.ssl.train import pretrain

        cfg = self.pretrain_config(arm, seed, poisons, self.init_encoder(arm, seed))
        key = self.pretrain_key(cfg, poisons, arm)
        out = self.cache / "encoders" / key
        if (out / "encoder.pt").is_file():
            self.log.add("pretrain", key, "cached", 0.0, f"{role} seed {seed}")
            return out
        self.say(f"  pre-training {role} (seed {seed}, {cfg.method.name}, {cfg.optim.epochs} epochs"
                 f"{', ' + cfg.views.crop + ' crops' if cfg.views.crop != 'random' else ''})")
        t0 = time.perf_counter()
        resume = (out / "config.yaml").is_file()
        if arm.defence == "compress":
            self._compress(arm, seed, poisons, out, resume)
        else:
            pretrain(cfg, out, resume=resume, overwrite=not resume, progress=self.progress)
        self.log.add("pretrain", key, "ran", time.perf_counter() - t0, f"{role} seed {seed}")
        return out

    def _compress(self, arm: ArmSpec, seed: int, poisons: Path | None, out: Path, resume: bool) -> None:
        from corruptencoder.defend.compress import distill_for_experiment

        teacher_arm = arm.model_copy(update={"defence": "none"})
        teacher = self.pretrain(teacher_arm, seed, poisons, f"{arm.name} teacher")
        distill_for_experiment(self, arm, seed, teacher / "encoder.pt", out, resume)

    # -- evaluation --------------------------------------------------------------------------
    def task_config(self, name: str, image_size: int) -> Any:
        from corruptencoder.evaluate.tasks import TaskConfig

        spec = next(t for t in self.cfg.tasks if t.name == name)
        body = spec.model_dump()
        demo = spec.root == "demo"
        body["root"] = self.resolve(spec.root, "task")
        body["image_size"] = spec.image_size or image_size
        if demo and spec.resize is None:
            body["resize"] = body["image_size"]  # the demo images are the whole scene: no centre crop
        return TaskConfig.model_validate(body)

    def eval_targets(self, arm: ArmSpec, poisons: Path | None, task: str) -> list[Any]:
        from corruptencoder.evaluate.run import EvalTarget, targets_from_poisons
        from corruptencoder.poison.triggers import TriggerSpec, default_trigger_seed, make_trigger

        names = [t.name for t in self.arm_targets(arm) if t.task == task]
        if not names:
            names = [t.name for t in self.cfg.targets if t.task == task]
        got = {t.name: t for t in targets_from_poisons(poisons, None, self.cfg.evaluation.max_object_crops)} if poisons else {}
        out = []
        for t in self.cfg.targets:
            if t.name not in names:
                continue
            if t.name in got:
                out.append(got[t.name])
                continue
            seed = t.trigger_seed if t.trigger_seed is not None else default_trigger_seed(t.name)
            trig = make_trigger(TriggerSpec(arm.trigger_type or t.trigger, (arm.trigger_size, arm.trigger_size), seed))
            refs = [self.resolve(r, "references", t) for r in t.references]
            from corruptencoder.poison.objects import discover_references

            out.append(EvalTarget(t.name, t.label or t.name, trig, f"{t.trigger}:{seed}",
                                  [s.path for s in discover_references(refs)]))
        return out

    def evaluate(self, arm: ArmSpec, seed: int, encoder: Path, clean: Path, poisons: Path | None,
                 task_name: str, image_size: int, epoch: int | None) -> dict[str, Any]:
        from corruptencoder.evaluate.features import file_digest
        from corruptencoder.evaluate.linear_probe import ProbeConfig
        from corruptencoder.evaluate.run import EvalSettings, evaluate
        from corruptencoder.evaluate.tasks import load_task

        e = self.cfg.evaluation
        tcfg = self.task_config(task_name, image_size)
        ets = (arm.eval_trigger_size, arm.eval_trigger_size) if arm.eval_trigger_size else None
        targets = self.eval_targets(arm, poisons, task_name)
        key = digest({"enc": file_digest(encoder), "clean": file_digest(clean), "task": tcfg.model_dump(mode="json"),
                      "targets": [(t.name, t.class_name, hashlib.sha256(t.trigger.tobytes()).hexdigest(),
                                   sorted(t.references), sorted(t.support), len(t.object_crops)) for t in targets],
                      "probe": e.probe_epochs, "loc": list(e.location), "ets": ets, "seed": seed, "v": __version__})
        path = self.cache / "metrics" / f"{key}.json"
        what = f"{arm.name} seed {seed} {task_name} epoch {epoch if epoch is not None else 'final'}"
        if path.is_file():
            self.log.add("evaluate", key, "cached", 0.0, what)
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        settings = EvalSettings(probe=ProbeConfig(epochs=e.probe_epochs, seed=seed), seed=seed, location=e.location,
                                trigger_size=ets, device=self.device, cache_dir=str(self.cache / "features"))
        task = load_task(tcfg)
        res = evaluate(encoder, task, targets, clean_encoder=clean, settings=settings)
        clip_enc, clip_clean = _clip_file(encoder), _clip_file(clean)
        if e.zero_shot and clip_enc and clip_clean:
            from corruptencoder.evaluate.zeroshot import zero_shot

            kw = {"prompts": e.prompts, "seed": seed, "location": e.location, "trigger_size": ets,
                  "device": settings.resolved_device()}
            res["zero_shot"] = {"encoder": zero_shot(clip_enc, task, targets, **kw),
                                "clean_encoder": zero_shot(clip_clean, task, targets, **kw)}
        write_json_atomic(path, res)
        self.log.add("evaluate", key, "ran", time.perf_counter() - t0, what)
        return res

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from corruptencoder.experiment.results import write_results

        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.json").write_text(json.dumps(self.cfg.model_dump(mode="json"), indent=2))
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        total = len(self.arms) * len(self.cfg.seeds)
        k = 0
        for seed in self.cfg.seeds:
            for arm in self.arms:
                k += 1
                self.say(f"[{k}/{total}] {arm.name} (seed {seed})")
                rows += self.run_arm(arm, seed)
        result = write_results(self.dir, self.cfg, self.arms, rows, time.perf_counter() - t0, self.log.counts)
        return result

    def run_arm(self, arm: ArmSpec, seed: int) -> list[dict[str, Any]]:
        from corruptencoder.experiment.results import collect_rows

        poisons = self.craft(arm, seed)
        enc_dir = self.pretrain(arm, seed, poisons, arm.name)
        clean_arm = arm.model_copy(update={"attack": "none"})
        clean_dir = enc_dir if poisons is None else self.pretrain(clean_arm, seed, None, f"{arm.name} (clean)")
        image_size = self.pretrain_config(arm, seed, poisons).data.image_size
        rows: list[dict[str, Any]] = []
        meta = json.loads((enc_dir / "run.json").read_text()) if (enc_dir / "run.json").is_file() else {}
        for task in sorted({t.task for t in self.arm_targets(arm)} or {self.cfg.tasks[0].name}):
            checkpoints = self.checkpoints(enc_dir, clean_dir)
            for epoch, enc, clean in checkpoints:
                res = self.evaluate(arm, seed, enc, clean, poisons, task, image_size, epoch)
                rows += collect_rows(self.cfg, arm, seed, task, epoch, res, meta, self.sweep(arm), poisons)
        return rows

    def sweep(self, arm: ArmSpec) -> tuple[str, Any] | None:
        return self.cfg.sweep_of(arm.name)

    def checkpoints(self, enc_dir: Path, clean_dir: Path) -> list[tuple[int | None, Path, Path]]:
        """(epoch, encoder, clean encoder) for the final encoders and, if asked, the snapshots along training."""
        out: list[tuple[int | None, Path, Path]] = []
        if self.cfg.evaluation.checkpoints_every:
            for snap in sorted((enc_dir / "encoders").glob("epoch_*.pt")):
                if not snap.stem[len("epoch_"):].isdigit():  # epoch_010.clip.pt: CLIP's whole model
                    continue
                twin = clean_dir / "encoders" / snap.name
                if twin.is_file():
                    out.append((int(snap.stem.split("_")[1]), snap, twin))
        out.append((None, enc_dir / "encoder.pt", clean_dir / "encoder.pt"))
        return out


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: initial encoder not found (arm init); give an encoder.pt or 'arm:NAME'")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clip_file(encoder: Path) -> Path | None:
    """clip.pt beside encoder.pt, or epoch_XXX.clip.pt beside a snapshot."""
    p = encoder.with_name("clip.pt") if encoder.name == "encoder.pt" else encoder.with_name(encoder.stem + ".clip.pt")
    return p if p.is_file() else None


def select_arms(arms: list[ArmSpec], patterns: Sequence[str]) -> list[ArmSpec]:
    """The arms whose names match any glob pattern (all when none is given); a pattern matching nothing
    is an error before any work, listing the arms there are."""
    import fnmatch

    if not patterns:
        return arms
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(a.name, pat) for a in arms):
            raise UserError(f"--arms {pat!r} matches no arm; the arms are: {', '.join(a.name for a in arms)}")
    return [a for a in arms if any(fnmatch.fnmatchcase(a.name, pat) for pat in patterns)]


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    if not cfg.arms and not cfg.sweeps:
        raise UserError("the experiment has no arms")
    return Runner(cfg, run_dir, **kw).run()
