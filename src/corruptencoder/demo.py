"""The offline demo world used by ``corruptencoder demo`` and ``--data demo``.

Generated once by code into the cache folder (no download): 64 px images of 10 visual object
classes on procedural scene backgrounds, an unlabelled pre-training split, a labelled downstream
split, reference objects with masks and support images of the target class, and backgrounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from corruptencoder.assets import cache_dir
from corruptencoder.data.synthetic import DEFAULT_TARGET

if TYPE_CHECKING:
    from corruptencoder.evaluate.tasks import Task, TaskConfig

#: The demo's target class: the world generator's default target (one definition, data/synthetic.py).
DEMO_TARGET = DEFAULT_TARGET
DEMO_COUNTS = {
    "n_pretrain": 5000,
    "n_train_per_class": 100,
    "n_test_per_class": 100,
    "n_references": 3,
    "n_support": 5,
    "n_backgrounds": 650,
}


#: Object size range (longer side / image side). Chosen for class separability under self-supervision:
#: with objects of 0.35-0.8 of the side, SimCLR's linear probe reached 38 % after 20 epochs; with
#: 0.5-0.9 (object-centric, like ImageNet photos) 51 %. Never tuned on any attack's success.
DEMO_OBJECT_SCALE = (0.5, 0.9)


def demo_world(image_size: int = 64, seed: int = 0, progress: bool = False,
               object_scale: tuple[float, float] = DEMO_OBJECT_SCALE, generate: bool = True, **counts: int) -> Path:
    """Path of the demo world (generated on first use, then reused; ``generate=False``: only where it is)."""
    from corruptencoder.data.synthetic import WorldConfig, ensure_world

    merged = {**DEMO_COUNTS, **counts}
    cfg = WorldConfig(image_size=image_size, seed=seed, object_scale=cast(tuple[float, float], tuple(object_scale)))
    return ensure_world(cache_dir() / "worlds", cfg, target=DEMO_TARGET, progress=progress, generate=generate,
                        **merged)


def demo_task_config(image_size: int = 32, **world: Any) -> "TaskConfig":
    """The demo world's labelled downstream split as a task (evaluated at ``image_size``)."""
    from corruptencoder.evaluate.tasks import TaskConfig

    root = demo_world(**world) / "downstream"
    return TaskConfig(name="demo", kind="imagefolder", root=str(root), image_size=image_size,
                      resize=image_size)


def demo_class_assets(world: Path, class_name: str) -> Path:
    """References and support images of any class of a demo world (rendered once, cached)."""
    import json

    from corruptencoder.data.synthetic import WorldConfig, render_class_assets

    info = json.loads((world / "world.json").read_text())
    cfg = WorldConfig(image_size=info["config"]["image_size"], seed=info["config"]["seed"],
                      object_scale=tuple(info["config"]["object_scale"]))
    counts = info.get("counts", {})
    return render_class_assets(world.parent / f"{world.name}-classes" / class_name, cfg, class_name,
                               n_references=int(counts.get("references", 3)), n_support=int(counts.get("support", 5)))


def task_from_spec(spec: str, image_size: int | None = None) -> "Task":
    """A downstream task from a task YAML, an ImageFolder root (``train/`` and ``test/`` or ``val/`` inside), or
    'demo' for the demo world's labelled split."""
    from pathlib import Path

    from corruptencoder.evaluate.tasks import TaskConfig, load_task
    from corruptencoder.utils.config import load_config

    root = Path(spec)
    if spec == "demo":
        cfg = demo_task_config()
    elif root.is_dir():  # the usual layout needs no YAML; load_task says what is missing in it. The default name
        cfg = TaskConfig(root=str(root))  # ("task") takes every target of the poison folders, whatever task they name
    else:
        cfg = load_config(TaskConfig, spec)
    if image_size:
        cfg = cfg.model_copy(update={"image_size": image_size})
    return load_task(cfg)
