"""``corruptencoder run``: craft, pre-train, probe and score every arm and trial, with caching.

Each stage's output lives under ``RUN_DIR/cache/<stage>/<hash of its inputs>``, written atomically,
so a re-run skips finished stages, an interrupted run resumes where it stopped (a half-trained
encoder resumes from its last checkpoint), and changing one arm re-runs only that arm. The clean
encoder of an arm (the same pre-training without poisons, which gives CA and the no-attack ASR) has
the same hash as any identical no-attack arm, so it is trained once and shared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corruptencoder import __version__
from corruptencoder.demo import DEMO_TARGET
from corruptencoder.errors import Interrupted, UserError
from corruptencoder.experiment import stages
from corruptencoder.experiment.config import ArmSpec, ExperimentConfig, TargetSpec, init_arm
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


# pre-training options added after caches of encoders existed, with their defaults: a config that leaves one at its
# default hashes as it did before the option existed (the defences' counterpart: DefenceOptions.unkeyed_defaults)
ADDED_LATER: dict[tuple[str, str], Any] = {("data", "decode"): "auto", ("optim", "final_lr_ratio"): 0.0,
                                           ("backbone", "clip_model"): None}


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
        self.generate = True  # False while planning: paths are computed, nothing is generated
        self._n_clean: dict[str, int] = {}  # clean inputs per data section (images, or pairs for CLIP)

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
                                     n_backgrounds=w.n_backgrounds, generate=self.generate)
        return self._world

    def resolve(self, value: str, kind: str, target: TargetSpec | None = None) -> str:
        if value == "demo" and kind in ("references", "support") and target is not None:
            label = target.label or target.name
            own = (self.world / kind / label).is_dir() if self.generate else label == DEMO_TARGET
            if not own:  # another class than the world's own target: its assets are rendered on demand
                from corruptencoder.demo import demo_class_assets

                folder = (demo_class_assets(self.world, label) if self.generate
                          else self.world.parent / f"{self.world.name}-classes" / label)
                return str(folder / kind / label)
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
    def n_clean(self, arm: ArmSpec | None = None) -> int:
        """How many clean inputs ``arm`` pre-trains on (default: the first arm's): images, or image-text pairs
        for a CLIP arm, whose data is ``data.pairs`` (counting images there gave 0, so a ``poison_ratio`` made
        one poison and CompRess of a CLIP tower sized its queue from nothing)."""
        import json

        from corruptencoder.ssl.config import METHODS
        from corruptencoder.ssl.train import pretrain_files, pretrain_pairs

        cfg = self.pretrain_config(arm or self.arms[0], 0, None)
        pairs = METHODS.get(cfg.method.name).data_kind == "pairs"
        key = json.dumps({"pairs": pairs, "data": cfg.data.model_dump(mode="json")}, sort_keys=True)
        if key not in self._n_clean:
            self._n_clean[key] = len(pretrain_pairs(cfg)) if pairs else len(pretrain_files(cfg).files)
        return self._n_clean[key]

    def arm_targets(self, arm: ArmSpec) -> list[TargetSpec]:
        return stages.arm_targets(self.cfg, arm)

    def demo_pairs_path(self) -> Path:
        """Where the demo world's captions (CSV) for this caption setting are, written or not."""
        w = self.cfg.world
        spec = {"world": str(self.world), "p": w.caption_name_prob, "rare": w.rare_classes}
        scenes = w.n_caption_scenes
        key = digest(spec | ({"scenes": scenes} if scenes else {}))  # without scenes: the key of before them
        return self.cache / "captions" / f"{key}.csv"

    def demo_pairs(self) -> Path:
        """The demo world's captions (CSV), generated once per caption setting."""
        from corruptencoder.data.demo_captions import write_demo_pairs

        w = self.cfg.world
        scenes = w.n_caption_scenes
        path = self.demo_pairs_path()
        if not path.is_file():
            write_demo_pairs(self.world, path, name_prob=w.caption_name_prob, class_name_prob=w.rare_classes,
                             scenes=scenes)
        return path

    def craft(self, arm: ArmSpec, seed: int) -> Path | None:
        from corruptencoder.poison.craft import craft

        cfg = stages.craft_config(self.cfg, arm, seed, self.resolve, lambda: self.n_clean(arm))
        if cfg is None:
            return None
        key = digest({"craft": cfg.model_dump(mode="json", exclude={"workers"}), "v": __version__})
        out = self.cache / "poisons" / key
        if (out / "manifest.jsonl").is_file():
            self.log.add("craft", key, "cached", 0.0, f"{arm.name} seed {seed}")
            return out
        t0 = time.perf_counter()
        cfg.workers = 2
        try:
            craft(cfg, out, overwrite=True, progress=False)
        except UserError as exc:  # the file and the fix, and which of the experiment's arms asked for it
            raise type(exc)(f"arm {arm.name} (seed {seed}): {exc}") from None
        self.log.add("craft", key, "ran", time.perf_counter() - t0, f"{arm.name} seed {seed}")
        return out

    # -- pre-training ------------------------------------------------------------------------
    def pretrain_config(self, arm: ArmSpec, seed: int, poisons: Path | None, init: Path | None = None) -> Any:
        pairs = str(self.demo_pairs()) if self.on_demo_pairs(arm) else None
        return stages.pretrain_config(self.cfg, arm, seed, poisons, self.resolve, init=init, pairs=pairs,
                                      progress=self.progress)

    def on_demo_pairs(self, arm: ArmSpec) -> bool:
        """Whether ``arm`` trains on the demo world's captioned pairs (a CLIP arm with ``data.pairs: demo``)."""
        from corruptencoder.ssl.config import METHODS

        return METHODS.get(arm.method).data_kind == "pairs" and self.cfg.data.pairs == "demo"

    def init_encoder(self, arm: ArmSpec, seed: int) -> Path | None:
        """The encoder an arm's continued pre-training starts from (trained first if needed)."""
        if not arm.init:
            return None
        parsed = init_arm(arm.init)
        if parsed is None:
            return Path(arm.init)
        name, pinned = parsed  # arm:NAME@SEED: one base encoder for every trial
        base_seed = int(pinned) if pinned else seed
        base = next(a for a in self.cfg.expanded_arms() if a.name == name)
        base = base.model_copy(update={"attack": "none", "defence": "none", "defence_args": {}})
        role = f"{arm.name} (initial encoder: {base.name}, clean, seed {base_seed})"
        return self.pretrain(base, base_seed, None, role) / "encoder.pt"

    def _portable(self, path: str) -> str:
        """A cache file by its place in the cache (or its content): keys never depend on where the cache is."""
        p = Path(path)
        try:
            return "cache:" + p.resolve().relative_to(self.cache.resolve()).as_posix()
        except ValueError:
            return "sha256:" + _sha256(p)

    def pretrain_key(self, cfg: Any) -> str:
        body = cfg.model_dump(mode="json")
        if body["backbone"].get("init"):
            body["backbone"]["init"] = self._portable(body["backbone"]["init"])
        if body["data"].get("clean") and Path(body["data"]["clean"]).is_file() and \
                self.cache.resolve() in Path(body["data"]["clean"]).resolve().parents:
            body["data"]["clean"] = self._portable(body["data"]["clean"])  # a data defence's kept-files list
        for k in ("progress", "accelerator", "devices", "threads", "log_every_n_steps"):
            body["trainer"].pop(k, None)
        body["data"].pop("workers", None)
        for (section, key), default in ADDED_LATER.items():  # at their defaults they keep every earlier key
            if body[section].get(key) == default:
                body[section].pop(key)
        body["data"]["poisons"] = [Path(p).name for p in body["data"]["poisons"]]  # the craft hash
        return digest({"pretrain": body, "v": __version__})

    def pretrain_setting(self, arm: ArmSpec, seed: int, poisons: Path | None,
                         clean_list: Path | None = None) -> tuple[Any, str, Path]:
        """(pre-training config, cache key, output folder) of an arm's encoder."""
        cfg = self.pretrain_config(arm, seed, poisons, self.init_encoder(arm, seed))
        if clean_list is not None:
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
                "clean": str(clean_list), "classes": None, "max_images": None, "poisons": []})})
        key = self.pretrain_key(cfg)
        return cfg, key, self.cache / "encoders" / key

    def pretrain(self, arm: ArmSpec, seed: int, poisons: Path | None, role: str,
                 clean_list: Path | None = None) -> Path:
        """Pre-train (or find in the cache) the encoder of ``arm``; ``clean_list`` replaces the clean data
        (and the poisons) by a file list, for data defences."""
        from corruptencoder.ssl.train import pretrain

        cfg, key, out = self.pretrain_setting(arm, seed, poisons, clean_list)
        if (out / "encoder.pt").is_file():
            self.log.add("pretrain", key, "cached", 0.0, f"{role} seed {seed}")
            return out
        self.say(f"  pre-training {role} (seed {seed}, {cfg.method.name}, {cfg.optim.epochs} epochs"
                 f"{', ' + cfg.views.crop + ' crops' if cfg.views.crop != 'random' else ''})")
        t0 = time.perf_counter()
        resume = (out / "config.yaml").is_file()
        try:
            pretrain(cfg, out, resume=resume, overwrite=not resume, progress=self.progress)
        except Interrupted as exc:  # where its checkpoint is; run_experiment adds how to resume
            raise Interrupted(exc.signum, f"pre-training {role} (seed {seed}) stopped: "
                              + exc.note.partition(";")[0]) from None
        self.log.add("pretrain", key, "ran", time.perf_counter() - t0, f"{role} seed {seed}")
        return out

    # -- defences ----------------------------------------------------------------------------
    @staticmethod
    def defence_key(defence: Any, base: Path, seed: int) -> str:
        """A defence's cache key: its name and options, the encoder it acts on, the seed."""
        return digest({"defence": defence.name, "options": defence.opts.key_fields(),
                       "encoder": base.name, "seed": seed, "v": __version__})

    def defended(self, arm: ArmSpec, seed: int, poisons: Path | None, role: str) -> tuple[Path, dict[str, Any]]:
        """The arm's encoder folder after its defence, and the defence's report. View defences are part of
        the pre-training config; data and encoder defences run on the undefended arm's encoder."""
        from corruptencoder.defend.base import DefenceContext, make_defence

        defence = make_defence(arm.defence, arm.defence_args) if arm.defence != "none" else None
        if defence is None or defence.kind == "views":
            return self.pretrain(arm, seed, poisons, role), {}
        plain = arm.model_copy(update={"defence": "none", "defence_args": {}})
        base = self.pretrain(plain, seed, poisons, f"{role} (undefended)")
        body = self.pretrain_config(plain, seed, None if defence.kind == "encoder" else poisons).model_dump(mode="json")
        key = self.defence_key(defence, base, seed)
        out = self.cache / "defences" / key
        report_file = out / "defence.json"
        ctx = DefenceContext(out=out / "work", seed=seed, preset=self.cfg.preset, pretrain=body,
                             encoder=base / "encoder.pt",
                             clean_count=self.n_clean(arm), device=self.device, progress=self.progress,
                             resume=(out / "work" / "config.yaml").is_file())
        if defence.kind == "encoder":
            if not report_file.is_file():
                self.say(f"  defence {defence.label()} on {role} (seed {seed})")
                t0 = time.perf_counter()
                result = defence.apply(ctx)  # type: ignore[attr-defined]  # an EncoderDefence's
                write_json_atomic(report_file, {"report": result.report,
                                                "encoder": str(result.encoder.parent) if result.encoder else None})
                self.log.add("defend", key, "ran", time.perf_counter() - t0, f"{role} seed {seed}")
            else:
                self.log.add("defend", key, "cached", 0.0, f"{role} seed {seed}")
            saved = json.loads(report_file.read_text())
            return (Path(saved["encoder"]) if saved["encoder"] else base), saved["report"]
        # a data defence: score the files the suspect encoder was trained on, keep some, train again
        from corruptencoder.ssl.train import pretrain_files

        files = pretrain_files(self.pretrain_config(plain, seed, poisons)).files
        keep_file = out / "keep.txt"
        if not report_file.is_file():
            self.say(f"  defence {defence.label()} on {role} (seed {seed})")
            t0 = time.perf_counter()
            ctx.files = [str(f) for f in files]
            result = defence.filter(ctx)  # type: ignore[attr-defined]  # a DataDefence's
            keep_file.parent.mkdir(parents=True, exist_ok=True)
            keep_file.write_text("".join(f"{f}\n" for f in result.keep), encoding="utf-8")
            write_json_atomic(out / "scores.json", result.scores)
            write_json_atomic(report_file, {"report": result.report})
            self.log.add("defend", key, "ran", time.perf_counter() - t0, f"{role} seed {seed}")
        else:
            self.log.add("defend", key, "cached", 0.0, f"{role} seed {seed}")
        report = json.loads(report_file.read_text())["report"]
        report["detection"] = detection_metrics(json.loads((out / "scores.json").read_text()), keep_file,
                                                poisons)
        return self.pretrain(plain, seed, None, f"{role} (after {defence.label()})", clean_list=keep_file), report

    # -- evaluation --------------------------------------------------------------------------
    def task_config(self, name: str, image_size: int) -> Any:
        from corruptencoder.evaluate.tasks import TaskConfig
        from corruptencoder.utils.config import validate

        spec = next(t for t in self.cfg.tasks if t.name == name)
        body = spec.model_dump()
        demo = spec.root == "demo"
        body["root"] = self.resolve(spec.root, "task")
        body["image_size"] = spec.image_size or image_size
        if demo and spec.resize is None:
            body["resize"] = body["image_size"]  # the demo images are the whole scene: no centre crop
        return validate(TaskConfig, body, f"task {name}")

    def eval_targets(self, arm: ArmSpec, poisons: Path | None, task: str) -> list[Any]:
        from corruptencoder.evaluate.controls import sibling_trigger
        from corruptencoder.evaluate.run import EvalTarget, targets_from_poisons
        from corruptencoder.poison.triggers import TriggerSpec, default_trigger_seed, make_trigger

        names = [t.name for t in self.arm_targets(arm) if t.task == task]
        if not names:
            names = [t.name for t in self.cfg.targets if t.task == task]
        got = ({t.name: t for t in targets_from_poisons(poisons, None, self.cfg.evaluation.max_object_crops)}
               if poisons else {})
        out = []
        for t in self.cfg.targets:
            if t.name not in names:
                continue
            if t.name in got:
                out.append(replace(got[t.name], text=t.text))
                continue
            seed = t.trigger_seed if t.trigger_seed is not None else default_trigger_seed(t.name)
            spec = TriggerSpec(arm.trigger_type or t.trigger, (arm.trigger_size, arm.trigger_size), seed)
            trig = make_trigger(spec)
            refs = [self.resolve(r, "references", t)
                    for r in stages.target_inputs(self.cfg, t, "references", required=False)]
            from corruptencoder.poison.objects import discover_references

            out.append(EvalTarget(t.name, t.label or t.name, trig, f"{t.trigger}:{seed}",
                                  ([s.path for s in discover_references(refs)] if refs else []), text=t.text,
                                  sibling=sibling_trigger(spec, trig)))
        return out

    def eval_key(self, arm: ArmSpec, seed: int, encoder: Path, clean: Path, poisons: Path | None,
                 task_name: str, image_size: int) -> tuple[str, Any, list[Any], tuple[int, int] | None]:
        """The evaluation's cache key (from the encoders' bytes, so it exists once they do), with what it hashed."""
        from corruptencoder.evaluate.controls import control_set_key
        from corruptencoder.evaluate.features import file_digest

        e = self.cfg.evaluation
        tcfg = self.task_config(task_name, image_size)
        ets = (arm.eval_trigger_size, arm.eval_trigger_size) if arm.eval_trigger_size else None
        targets = self.eval_targets(arm, poisons, task_name)
        sized = [t.sized(ets) for t in targets]  # trigger and sibling as the evaluation pastes them
        key = digest({"enc": file_digest(encoder), "clean": file_digest(clean), "task": tcfg.model_dump(mode="json"),
                      "targets": [(t.name, t.class_name, hashlib.sha256(t.trigger.tobytes()).hexdigest(),
                                   sorted(t.references), sorted(t.support), len(t.object_crops)) for t in targets],
                      "probe": [e.probe, e.probe_epochs], "loc": list(e.location), "ets": ets, "seed": seed,
                      "jpeg": e.trigger_jpeg_quality,
                      # the specificity controls that apply (1: the random patch, 2: and the solid one, as keyed
                      # before evaluate/controls.CONTROLS; since the rotated control, a list of metric keys)
                      "control": control_set_key([trig for trig, _ in sized], [sib for _, sib in sized]),
                      # zero-shot through JPEG too (before, only the probe was): a new key only where that matters
                      **({"zs_jpeg": 1} if e.zero_shot and e.trigger_jpeg_quality else {}),
                      **({"text": [t.text for t in targets]} if any(t.text for t in targets) else {}),
                      "v": __version__})
        return key, tcfg, targets, ets

    def evaluate(self, arm: ArmSpec, seed: int, encoder: Path, clean: Path, poisons: Path | None,
                 task_name: str, image_size: int, epoch: int | None) -> dict[str, Any]:
        from corruptencoder.evaluate.linear_probe import ProbeConfig
        from corruptencoder.evaluate.run import EvalSettings, evaluate
        from corruptencoder.evaluate.tasks import load_task

        e = self.cfg.evaluation
        key, tcfg, targets, ets = self.eval_key(arm, seed, encoder, clean, poisons, task_name, image_size)
        path = self.cache / "metrics" / f"{key}.json"
        what = f"{arm.name} seed {seed} {task_name} epoch {epoch if epoch is not None else 'final'}"
        if path.is_file():
            self.log.add("evaluate", key, "cached", 0.0, what)
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        settings = EvalSettings(probe=ProbeConfig.for_protocol(e.probe, seed, e.probe_epochs), seed=seed,
                                location=e.location, trigger_jpeg_quality=e.trigger_jpeg_quality,
                                workers=eval_workers(self.device),
                                trigger_size=ets, device=self.device, cache_dir=str(self.cache / "features"))
        task = load_task(tcfg)
        res = evaluate(encoder, task, targets, clean_encoder=clean, settings=settings)
        clip_enc, clip_clean = _clip_file(encoder), _clip_file(clean)
        if e.zero_shot and clip_enc and clip_clean:
            from corruptencoder.evaluate.zeroshot import zero_shot, zero_shot_options

            kw = zero_shot_options(settings, e.prompts)
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
        trials = self.trials()
        total = len(trials)
        # every trial's poisons first: a crafting error (a trigger that cannot fit a target's references, a
        # missing file) stops the run before any pre-training, not hours into it
        crafted = {(arm.name, seed): self.craft(arm, seed) for seed, arm in trials}
        for k, (seed, arm) in enumerate(trials, 1):
            self.say(f"[{k}/{total}] {arm.name} (seed {seed})")
            rows += self.run_arm(arm, seed, crafted[arm.name, seed])
        result = write_results(self.dir, self.cfg, self.arms, rows, time.perf_counter() - t0, self.log.counts)
        return result

    def trials(self) -> list[tuple[int, ArmSpec]]:
        """(seed, arm) for every trial this run holds, in run order."""
        return [(seed, arm) for seed in self.cfg.seeds for arm in self.arms if arm.seeds is None or seed in arm.seeds]

    def run_arm(self, arm: ArmSpec, seed: int, poisons: Path | None) -> list[dict[str, Any]]:
        """One trial, given its poison folder from :meth:`craft` (None for a clean arm)."""
        from corruptencoder.defend.base import make_defence

        enc_dir, report = self.defended(arm, seed, poisons, arm.name)
        clean_arm = arm.model_copy(update={"attack": "none"})
        if poisons is None:
            clean_dir, clean_report = enc_dir, report
        else:
            clean_dir, clean_report = self.defended(clean_arm, seed, None, f"{arm.name} (clean)")
        image_size = self.pretrain_config(arm, seed, poisons).data.image_size
        rows: list[dict[str, Any]] = []
        meta = json.loads((enc_dir / "run.json").read_text()) if (enc_dir / "run.json").is_file() else {}
        defence = make_defence(arm.defence, arm.defence_args) if arm.defence != "none" else None
        meta["defence"] = {"label": defence.label() if defence else "no defence",
                           "knob": defence.knob() if defence else 0.0,
                           "kind": defence.kind if defence else None, "report": report, "clean_report": clean_report}
        for task in sorted({t.task for t in self.arm_targets(arm)} or {self.cfg.tasks[0].name}):
            checkpoints = self.checkpoints(enc_dir, clean_dir)
            for epoch, enc, clean in checkpoints:
                res = self.evaluate(arm, seed, enc, clean, poisons, task, image_size, epoch)
                rows += self.collect(arm, seed, task, epoch, res, meta, poisons)
        return rows

    def collect(self, arm: ArmSpec, seed: int, task: str, epoch: int | None, res: dict[str, Any],
                meta: dict[str, Any], poisons: Path | None) -> list[dict[str, Any]]:
        from corruptencoder.experiment.results import collect_rows

        return collect_rows(self.cfg, arm, seed, task, epoch, res, meta, self.sweep(arm), poisons)

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


def detection_metrics(scores: dict[str, float], keep_file: Path, poisons: Path | None) -> dict[str, Any]:
    """A data defence's precision / recall / AUROC against the poison folder's manifest."""
    from corruptencoder.evaluate.metrics import detection_metrics as metrics
    from corruptencoder.poison.manifest import poison_files

    if poisons is None:
        return {"poisons": 0}
    kept = [f for f in keep_file.read_text(encoding="utf-8").splitlines() if f]
    return metrics(scores, kept, [str(p) for p in poison_files(poisons)])


def eval_workers(device: str) -> int:
    """Feature-extraction loader workers: on a GPU host every core but one decodes (extracting ImageNet100-B's
    features in the main process took 7-11 min per encoder); on a CPU host the cores run the model."""
    import os

    import torch

    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return max(1, min(8, (os.cpu_count() or 1) - 1)) if gpu else 0


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


def demo_config(overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The packaged demo experiment (``corruptencoder demo``)."""
    from importlib.resources import files

    from corruptencoder.experiment.config import load_experiment

    return load_experiment(Path(str(files("corruptencoder") / "configs" / "demo.yaml")), list(overrides))


_DEMO_VALUES = ("demo", "demo-test", "builtin")


def check_paths(cfg: ExperimentConfig) -> None:
    """Every data path the config names exists (demo values aside): a typo is one line before any work."""
    given: list[tuple[str, str | None]] = [("data.clean", cfg.data.clean), ("data.classes", cfg.data.classes)]
    given += [(f"backgrounds.{i}", b) for i, b in enumerate(cfg.backgrounds)]
    given += [(f"arm {a.name}: backgrounds", b) for a in cfg.expanded_arms() for b in a.backgrounds or []]
    given += [(f"tasks.{i}.root", t.root) for i, t in enumerate(cfg.tasks)]
    for i, t in enumerate(cfg.targets):
        for key in ("references", "support", "saha_references"):
            given += [(f"targets.{i}.{key}", v) for v in getattr(t, key) or []]
    if any(_data_kind(a.method) == "pairs" for a in cfg.expanded_arms()):
        given.append(("data.pairs", cfg.data.pairs))
    for key, value in given:
        if value and value not in _DEMO_VALUES and not Path(value).exists():
            raise UserError(f"{key}: {value} does not exist; fix the path in the config (or export the variable "
                            "it is read from)")


def _data_kind(method: str) -> str:
    from corruptencoder.ssl.config import METHODS

    return str(METHODS.get(method).data_kind)


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Run (or resume) an experiment. Stopped by SIGINT / SIGTERM, it raises :class:`Interrupted` saying what
    was kept: running the same command again resumes (finished stages from the cache, a half-trained encoder
    from its last checkpoint)."""
    if not cfg.arms and not cfg.sweeps:
        raise UserError("the experiment has no arms")
    from corruptencoder.evaluate.run import EvalSettings

    # the device, the trigger location and the data paths are checked now, before the run folder is made
    check_paths(cfg)
    lo, hi = cfg.evaluation.location
    EvalSettings(location=(lo, hi), device=str(kw.get("device", "auto")))
    try:
        return Runner(cfg, run_dir, **kw).run()
    except Interrupted as exc:
        raise Interrupted(exc.signum, (exc.note + "; " if exc.note else "nothing half-written was left behind; ")
                          + "run the same command again to resume (finished stages come from the cache)") from None
