"""``corruptencoder run CONFIG --plan``: every stage a run would do, what is cached, and what it costs.

The planner walks the runner's own code path (:class:`PlanningRunner` overrides only the steps that do
work), so the stage keys it prints are the ones a real run would use: a stage that says "cached" will
not run. Nothing is crafted, generated or trained. Pre-training time is estimated from a throughput
measured here, on this machine's device: a few optimizer steps of each distinct (method, backbone, image
size) setting on random images, excluding the first (warm-up) step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corruptencoder import __version__
from corruptencoder.experiment import stages
from corruptencoder.experiment.config import ArmSpec, ExperimentConfig
from corruptencoder.experiment.runner import Runner, digest


@dataclass
class PlannedStage:
    stage: str          # craft | pretrain | defend | evaluate
    what: str
    key: str
    cached: bool
    detail: str = ""
    images: int = 0     # images seen per epoch (pretrain)
    epochs: int = 0
    setting: tuple[Any, ...] = ()  # what the throughput depends on (pretrain)
    seconds: float | None = None


@dataclass
class Plan:
    stages: list[PlannedStage] = field(default_factory=list)
    throughput: dict[tuple[Any, ...], float] = field(default_factory=dict)  # images/s per setting


class PlanningRunner(Runner):
    """The runner with every working step replaced by a record of what it would do."""

    def __init__(self, cfg: ExperimentConfig, run_dir: str | Path, **kw: Any) -> None:
        super().__init__(cfg, run_dir, **kw)
        self.generate = False
        self.plan = Plan()
        self._seen: set[tuple[str, str]] = set()
        self._sample_configs: dict[tuple[Any, ...], Any] = {}  # one pre-training config per setting

    def _add(self, item: PlannedStage) -> None:
        if (item.stage, item.key) not in self._seen:  # a stage shared by several arms is done once
            self._seen.add((item.stage, item.key))
            self.plan.stages.append(item)

    def n_clean(self, arm: ArmSpec | None = None) -> int:
        pairs = self.on_demo_pairs(arm or self.arms[0])
        if not self.world_exists() or (pairs and not self.demo_pairs().is_file()):
            w = self.cfg.world  # the demo world's size, before it (or its captions) is generated
            n = w.n_pretrain + (w.n_caption_scenes if pairs else 0)
            return min(n, self.cfg.data.max_images or n)
        return super().n_clean(arm)

    def demo_pairs(self) -> Path:
        return self.demo_pairs_path()  # a plan writes no captions (it wrote them, or failed before the world)

    def craft(self, arm: ArmSpec, seed: int) -> Path | None:
        cfg = stages.craft_config(self.cfg, arm, seed, self.resolve, lambda: self.n_clean(arm),
                                   list_files=self.world_exists())
        if cfg is None:
            return None
        key = digest({"craft": cfg.model_dump(mode="json", exclude={"workers"}), "v": __version__})
        out = self.cache / "poisons" / key
        n = sum(t.num for t in cfg.targets)
        self._add(PlannedStage("craft", f"{arm.attack}: {n} poisons ({', '.join(t.name for t in cfg.targets)}), "
                               f"seed {seed}", key, (out / "manifest.jsonl").is_file()))
        return out

    def world_exists(self) -> bool:
        return self.cfg.data.clean != "demo" or (self.world / "world.json").is_file()

    def pretrain(self, arm: ArmSpec, seed: int, poisons: Path | None, role: str,
                 clean_list: Path | None = None) -> Path:
        cfg, key, out = self.pretrain_setting(arm, seed, poisons, clean_list)
        n_poisons = 0
        if poisons is not None:
            crafted = stages.craft_config(self.cfg, arm, seed, self.resolve, lambda: self.n_clean(arm),
                                          list_files=False)
            n_poisons = sum(t.num for t in crafted.targets) if crafted is not None else 0
        b, o = cfg.backbone, cfg.optim
        _, lr, _, _ = cfg.resolved_optim()
        detail = (f"{cfg.method.name}, {b.name} x{b.width:g}, {cfg.data.image_size} px, {o.epochs} epochs, batch "
                  f"{o.batch_size}, lr {lr:.4g}" + (f", {cfg.views.crop} crops" if cfg.views.crop != "random" else "")
                  + (", continued" if b.init else ""))
        setting = (cfg.method.name, b.name, b.width, cfg.data.image_size, o.batch_size)
        self._add(PlannedStage("pretrain", f"{role}, seed {seed}", key, (out / "encoder.pt").is_file(), detail,
                               images=self.n_clean(arm) + n_poisons, epochs=o.epochs, setting=setting))
        if setting not in self.plan.throughput:
            self.plan.throughput[setting] = 0.0
            self._sample_configs[setting] = cfg
        return out

    def defended(self, arm: ArmSpec, seed: int, poisons: Path | None, role: str) -> tuple[Path, dict[str, Any]]:
        from corruptencoder.defend.base import make_defence

        if arm.defence == "none":
            return self.pretrain(arm, seed, poisons, role), {}
        defence = make_defence(arm.defence, arm.defence_args)
        if defence.kind == "views":
            return self.pretrain(arm, seed, poisons, role), {}
        plain = arm.model_copy(update={"defence": "none", "defence_args": {}})
        base = self.pretrain(plain, seed, poisons, f"{role} (undefended)")
        key = self.defence_key(defence, base, seed)
        cached = (self.cache / "defences" / key / "defence.json").is_file()
        self._add(PlannedStage("defend", f"{defence.label()} on {role}, seed {seed}", key, cached,
                               "then pre-training again on what it keeps" if defence.kind == "data" else ""))
        return self.cache / "defences" / key, {}

    def evaluate(self, arm: ArmSpec, seed: int, encoder: Path, clean: Path, poisons: Path | None,
                 task_name: str, image_size: int, epoch: int | None) -> dict[str, Any]:
        what = f"{arm.name} seed {seed} {task_name} epoch {epoch if epoch is not None else 'final'}"
        key, cached = what, False
        # its key hashes the encoders' bytes: known (and maybe cached) once both encoders and the poisons exist
        if encoder.is_file() and clean.is_file() and (poisons is None or (poisons / "manifest.jsonl").is_file()):
            key = self.eval_key(arm, seed, encoder, clean, poisons, task_name, image_size)[0]
            cached = (self.cache / "metrics" / f"{key}.json").is_file()
        self._add(PlannedStage("evaluate", what, key, cached, f"probe: {self.cfg.evaluation.probe}"))
        return {}

    def collect(self, *args: Any) -> list[dict[str, Any]]:
        return []  # planning writes no rows


def measure_throughput(cfg: Any, device: str = "auto", steps: int = 3, batch: int = 64, warmup: int = 2) -> float:
    """Images per second of ``cfg``'s method on random images: ``steps`` optimizer steps after ``warmup``."""
    import torch

    from corruptencoder.ssl.train import method_class

    body = cfg.model_dump(mode="json")
    body["backbone"]["init"] = None
    method = method_class(body["method"]["name"])
    if not method.pretraining:  # a defence's training loop (CompRess): it needs a teacher, not measured here
        return 0.0
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    model = method(type(cfg).model_validate(body)).to(dev).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    b = max(2, min(batch, cfg.optim.batch_size))
    if model.data_kind == "pairs":
        from corruptencoder.ssl.clip_model import context_length

        spec: dict[str, Any] = getattr(model, "clip_spec")  # noqa: B009  # set by the CLIP method only
        model.batch_extra = torch.randint(0, 49408, (b, context_length(spec)), device=dev)
    seconds = 0.0
    for step in range(warmup + steps):
        views = [torch.randint(0, 256, (b, 3, v.size, v.size), dtype=torch.uint8, device=dev) for v in model.plan.views]
        t0 = time.perf_counter()
        x, _ = model.on_after_batch_transfer((views, torch.arange(b)), 0)
        loss, _ = model.compute_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            seconds += time.perf_counter() - t0
    return b * steps / seconds if seconds > 0 else 0.0


def plan_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, only: Sequence[str] = (),
                    cache: str | Path | None = None, device: str = "auto",
                    measure: bool = True) -> tuple[list[str], Plan]:
    """The plan and its printed lines."""
    runner = PlanningRunner(cfg, run_dir, progress=False, device=device, only=only, cache=cache,
                            say=lambda _msg: None)
    for seed, arm in runner.trials():
        runner.run_arm(arm, seed, runner.craft(arm, seed))
    plan = runner.plan
    if measure:
        for setting, sample in runner._sample_configs.items():
            plan.throughput[setting] = measure_throughput(sample, device)
    total = 0.0
    for item in plan.stages:
        ips = plan.throughput.get(item.setting, 0.0)
        if item.stage == "pretrain" and not item.cached and ips > 0:
            item.seconds = item.images * item.epochs / ips
            total += item.seconds
    lines = [f"plan for {cfg.name}: {len(cfg.seeds)} seed(s) x {len(runner.arms)} arm(s), preset {cfg.preset}"]
    for stage in ("craft", "pretrain", "defend", "evaluate"):
        items = [s for s in plan.stages if s.stage == stage]
        if not items:
            continue
        done = sum(s.cached for s in items)
        lines.append(f"\n{stage}: {len(items)} ({done} cached, {len(items) - done} to run)")
        if stage == "evaluate":
            continue
        for s in items:
            est = f"  ~{_hours(s.seconds)}" if s.seconds else ""
            lines.append(f"  [{'cached' if s.cached else 'to run'}] {s.what}{': ' + s.detail if s.detail else ''}"
                         f"{'  (' + str(s.images) + ' images)' if s.images else ''}{est}")
    if measure:
        lines.append("\nmeasured throughput here (random images, a few steps): " + "; ".join(
            f"{k[0]} {k[1]} x{k[2]:g} {k[3]} px: {v:.0f} img/s" for k, v in plan.throughput.items() if v))
        lines.append(f"estimated pre-training time of what is not cached: {_hours(total)} on this machine "
                     "(defences and evaluation not included)")
    return lines, plan


def _hours(seconds: float | None) -> str:
    if not seconds:
        return "0 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
