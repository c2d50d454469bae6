"""Crafting runs: validate everything, plan every random draw, render in parallel, write atomically.

The output is a function of the config and seed only: all random values are drawn in the parent
(one independent stream per target, from ``SeedSequence(seed).spawn``) before any worker starts,
and workers render jobs as pure functions, so 1 and N workers write identical bytes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from corruptencoder import __version__
from corruptencoder.poison.base import ImageAttack, Job, RenderResult, save_image
from corruptencoder.poison.config import ATTACKS, CraftConfig, TargetSpec
from corruptencoder.poison.manifest import IMAGES, SUMMARY, trigger_file, write_manifest, write_pairs
from corruptencoder.utils.outputs import atomic_output_dir, check_output_dir, write_json_atomic

log = logging.getLogger(__name__)

def make_attack(target: TargetSpec, run: CraftConfig) -> ImageAttack[Any]:
    """The registered attack of ``target`` (``poison/attacks/<name>.py``), bound to it."""
    return ATTACKS.get(target.attack)(target, run)


@dataclass
class CraftSummary:
    out: Path
    num: int
    per_target: dict[str, int]
    skipped_backgrounds: list[str]
    seconds: float

    @property
    def per_second(self) -> float:
        return self.num / self.seconds if self.seconds > 0 else float("inf")


def plan_jobs(attacks: Sequence[ImageAttack[Any]], seed: int, ext: str) -> list[Job]:
    """Every random value of every poison, drawn here in a fixed order."""
    streams = np.random.SeedSequence(seed).spawn(len(attacks))
    jobs: list[Job] = []
    for t_index, (attack, stream) in enumerate(zip(attacks, streams, strict=True)):
        for j, job in enumerate(attack.plan(np.random.default_rng(stream))):
            job.update(index=len(jobs), target_index=t_index, file=f"{IMAGES}/{attack.target.name}/{j:05d}.{ext}")
            jobs.append(job)
    return jobs


# -- worker side --------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init_worker(attacks: Sequence[ImageAttack[Any]], out: Path, run: CraftConfig) -> None:
    _STATE.update(attacks=attacks, out=out, run=run)


def _render(job: Job) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    attack: ImageAttack[Any] = _STATE["attacks"][job["target_index"]]
    result: RenderResult = attack.render(job)
    result.record["trigger_file"] = trigger_file(attack.target.name) if result.record.get("trigger_box") else None
    save_image(result.image, _STATE["out"] / job["file"], _STATE["run"])
    return result.record, result.skipped


def _run_jobs(jobs: list[Job], attacks: Sequence[ImageAttack[Any]], out: Path, run: CraftConfig,
              progress: bool) -> Iterator[tuple[dict[str, Any], list[tuple[str, str]]]]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="crafting", unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    workers = min(run.workers, len(jobs))
    try:
        if workers <= 1:
            _init_worker(attacks, out, run)
            for job in jobs:
                yield _render(job)
                bar.update()
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(attacks, out, run)) as pool:
                try:
                    for item in pool.map(_render, jobs, chunksize=chunk):
                        yield item
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
        _STATE.clear()


# -- entry point --------------------------------------------------------------------------------


def craft(config: CraftConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> CraftSummary:
    """Craft every target's poisons into ``out`` (atomically). Raises UserError on bad input."""
    t0 = time.perf_counter()
    out = check_output_dir(out, overwrite)
    attacks = [make_attack(t, config) for t in config.targets]
    for attack in attacks:  # every input is read and validated before any image is written
        attack.prepare()
    ext = "png" if config.format == "png" else "jpg"
    jobs = plan_jobs(attacks, config.seed, ext)
    records: list[dict[str, Any]] = [{}] * len(jobs)
    skipped: dict[str, str] = {}
    with atomic_output_dir(out, overwrite) as tmp:
        for attack in attacks:
            tpath = tmp / trigger_file(attack.target.name)
            tpath.parent.mkdir(parents=True, exist_ok=True)
            assert attack.trigger is not None
            Image.fromarray(attack.trigger, "RGB").save(tpath, format="PNG")
        for rec, bad in _run_jobs(jobs, attacks, tmp, config, progress):
            records[rec["index"]] = rec
            skipped.update(bad)
        write_manifest(tmp, records)
        if any("caption" in r for r in records):
            write_pairs(tmp, records)
        per_target = {a.target.name: sum(1 for r in records if r["target"] == a.target.name) for a in attacks}
        for attack in attacks:
            for path, reason in getattr(getattr(attack, "backgrounds", None), "skipped", ()):
                skipped.setdefault(path, reason)
        write_json_atomic(tmp / SUMMARY, {
            "tool": "corruptencoder", "version": __version__,
            # the worker count never changes the output, so it is not part of the record
            "config": config.model_dump(mode="json", exclude={"workers"}),
            "targets": [a.describe() | {"trigger_file": trigger_file(a.target.name)} for a in attacks],
            "num_poisons": len(records),
            "per_target": per_target,
            "skipped_backgrounds": [{"file": p, "reason": r} for p, r in sorted(skipped.items())],
        })
    if skipped:
        log.warning("skipped %d unreadable background file(s); see %s", len(skipped), Path(out) / SUMMARY)
    return CraftSummary(Path(out), len(records), per_target, sorted(skipped), time.perf_counter() - t0)
