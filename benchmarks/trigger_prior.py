"""Which class does a *clean* encoder already send a trigger to? Measure it before poisoning with that trigger.

A trigger the clean encoder reads as a class of its own (on the demo world a per-pixel random patch at 32 px is
"butterfly" to some CLIP encoders, 92-99 % of triggered test images) competes with the backdoor, and the backdoor
learnt from it can be "any patch like this -> target" rather than the trigger (the control ASR says which). For
each encoder and trigger this trains the task's linear probe once (the evaluation's own ``Scorer``) and prints one
JSON line: the top predicted class of the triggered non-target test images, its share, and the target's share.

    python benchmarks/trigger_prior.py --encoder runs/cache/encoders/KEY/encoder.pt [--encoder ...]
        [--task DIR] [--image-size 32] [--target boat] [--size 11]
        [--triggers random@boat random@1 ... random@4 white purple black smooth]

``--task`` defaults to the demo world's downstream split (generated if absent). ``random@S`` is a per-pixel random
patch drawn with seed S (``random@boat``: the target's default trigger seed); any other name is a trigger kind or
an image file, as for ``craft --trigger``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from corruptencoder.evaluate.metrics import prediction_histogram, target_rate
from corruptencoder.evaluate.run import EvalSettings, Scorer
from corruptencoder.evaluate.tasks import TaskConfig, load_task
from corruptencoder.poison.triggers import TriggerSpec, default_trigger_seed, make_trigger


def trigger(name: str, size: int, target: str) -> TriggerSpec:
    if name.startswith("random@"):
        seed = name.partition("@")[2]
        return TriggerSpec("random", (size, size), default_trigger_seed(target) if seed == target else int(seed))
    return TriggerSpec(name, (size, size), 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", type=Path, action="append", required=True)
    ap.add_argument("--task", type=Path, help="imagefolder task root with train/ and test/ (default: the demo world)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--target", default="boat")
    ap.add_argument("--size", type=int, default=11, help="trigger side in the test images (px)")
    ap.add_argument("--triggers", nargs="+", default=["random@boat", "random@1", "random@2", "random@3", "random@4",
                                                       "white", "purple", "black", "smooth"])
    args = ap.parse_args()
    if args.task is None:
        from corruptencoder.demo import demo_world

        args.task = demo_world(64, 0) / "downstream"
    task = load_task(TaskConfig(root=str(args.task), image_size=args.image_size, resize=args.image_size))
    target = task.class_index(args.target)
    for enc in args.encoder:
        scorer = Scorer(enc, task, EvalSettings())
        probe, _fte, y = scorer.probe()
        idx = torch.nonzero(y != target).flatten()
        for name in args.triggers:
            preds = probe.predict(scorer.pasted_features(make_trigger(trigger(name, args.size, args.target)), idx,
                                                         name))
            top, share = next(iter(prediction_histogram(preds, task.classes, top=1).items()))
            print(json.dumps({"encoder": str(enc), "trigger": name, "size": args.size, "top_class": top,
                              "top_share": round(share, 1), "target_share": round(target_rate(preds, target), 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
