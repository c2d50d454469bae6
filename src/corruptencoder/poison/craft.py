"""Crafting runs: validate everything, plan every random draw, render in parallel, write atomically.

The output is a function of the config and seed only: all random values are drawn in the parent
(one independent stream per target, from ``SeedSequence(seed).spawn``) before any worker starts,
and workers render jobs as pure functions, so 1 and N workers write identical bytes.

Interruptions leave nothing behind: on an exception or a signal (SIGINT / SIGTERM through the CLI's
handler) the workers are stopped before the temp folder is removed, workers die with their parent
even when it is killed with SIGKILL (``utils/signals.py``), and the temp folder of a killed run is
removed by the next run into the same parent folder (``utils/outputs.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from corruptencoder import __version__
from corruptencoder.errors import UserError
from corruptencoder.poison.base import ImageAttack, Job, RenderResult, save_image
from corruptencoder.poison.config import ATTACKS, CraftConfig, CraftTarget
from corruptencoder.poison.manifest import IMAGES, SUMMARY, trigger_file, write_manifest, write_pairs
from corruptencoder.utils.outputs import atomic_output_dir, check_output_dir, write_json_atomic
from corruptencoder.utils.parallel import process_map

log = logging.getLogger(__name__)

#: What planning and recording one poison holds in memory (its job and manifest record, measured at
#: about 2-3 KB; rounded up) and the least one poison file takes on disk (a filesystem block).
PLAN_BYTES_PER_POISON = 4096
MIN_FILE_BYTES = 4096

def make_attack(target: CraftTarget, run: CraftConfig) -> ImageAttack[Any]:
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
    try:
        yield from process_map(_render, jobs, workers=run.workers, initializer=_init_worker,
                               initargs=(attacks, out, run), desc="crafting", progress=progress)
    finally:
        _STATE.clear()


def _available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, bounded by a cgroup (container) limit."""
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            room = int(limit) - int(used)
            avail = room if avail is None else min(avail, room)
    except OSError:
        pass
    return avail


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_budget(config: CraftConfig, out: Path) -> None:
    """Refuse, before any reading or planning, a poison count the machine cannot hold: the plan and the
    manifest records live in memory (about 4 KB per poison) and every poison is a file (at least one
    filesystem block and one inode)."""
    n = sum(t.num for t in config.targets)
    need = n * PLAN_BYTES_PER_POISON
    avail = _available_memory()
    flag = "--num" if len(config.targets) == 1 else "the targets' num"
    if avail is not None and need > avail:
        most = max(1, avail // PLAN_BYTES_PER_POISON)
        raise UserError(f"{flag}: {n:,} poisons need about {_size(need)} of memory to plan and record, but "
                        f"{_size(avail)} is available; craft at most about {most:,} per run (several runs with "
                        "different --seed and --out)")
    parent = next((p for p in (out, *out.parents) if p.is_dir()), Path("."))
    try:
        st = os.statvfs(parent)
    except (OSError, AttributeError):
        return
    if not st.f_blocks:  # a pseudo filesystem (/proc, /sys): writing there fails with its own message
        return
    free = st.f_bavail * st.f_frsize
    disk_need = n * max(MIN_FILE_BYTES, st.f_frsize)
    if disk_need > free:
        raise UserError(f"{flag}: {n:,} poison files need at least {_size(disk_need)} on disk, but {parent} has "
                        f"{_size(free)} free; free some space, choose another --out or craft fewer poisons")
    if st.f_files and n > st.f_favail:
        raise UserError(f"{flag}: {n:,} poison files need as many free inodes, but the filesystem of {parent} "
                        f"has {st.f_favail:,}; choose another --out or craft fewer poisons")


# -- entry point --------------------------------------------------------------------------------


def craft(config: CraftConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> CraftSummary:
    """Craft every target's poisons into ``out`` (atomically). Raises UserError on bad input."""
    t0 = time.perf_counter()
    out = check_output_dir(out, overwrite)
    check_budget(config, out)
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
