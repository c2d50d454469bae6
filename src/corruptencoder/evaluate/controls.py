"""Specificity controls: patches a backdoor keyed to its trigger should not answer (beyond the paper).

The ASR alone cannot tell "this trigger -> target" from "a patch of this kind -> target" (measured on the
demo world: README, "Where the backdoor forms" and "On image-text pairs"). Every target is therefore also
scored with the controls below, pasted at the trigger's own spots; each gives an ASR on the attacked encoder
and on its clean twin. A control whose ASR stays near the clean twin's says the backdoor is keyed to what the
control changed. One registry, :data:`CONTROLS`, feeds the scorers (probe and zero-shot), the result rows and
CSV, the report's columns and verdict and the benchmarks' ledgers, so a new control is one entry here.

Torch-free on purpose: the report and result code import it without the model stack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corruptencoder.poison.triggers import TriggerSpec, make_trigger

log = logging.getLogger(__name__)

#: the control patch's seed: no default trigger seed of a target (a crc32 of its name) is drawn this way, and
#: :func:`control_patch` steps past a user's trigger that happens to equal it
CONTROL_SEED = 1_000_003

#: the solid control's colours: the RGB cube's corners, the one farthest from the trigger's colour is used
SOLID_CONTROL_COLOURS = ((0, 255, 0), (255, 255, 0), (0, 255, 255), (255, 0, 0), (0, 0, 255), (255, 0, 255),
                         (255, 255, 255), (0, 0, 0))


def control_patch(trigger: np.ndarray) -> np.ndarray:
    """A per-pixel random patch of ``trigger``'s size that is not ``trigger`` (the specificity control)."""
    return _redrawn("random", trigger)


def _redrawn(kind: str, trigger: np.ndarray) -> np.ndarray:
    """``kind`` drawn at ``trigger``'s size with the control seed, stepping past a draw equal to the trigger."""
    h, w = trigger.shape[:2]
    seed = CONTROL_SEED
    while True:
        patch = make_trigger(TriggerSpec(kind, (w, h), seed))
        if not np.array_equal(patch, trigger):
            return patch
        seed += 1


def is_solid(trigger: np.ndarray) -> bool:
    """One colour everywhere (a purple or white trigger, not a random or image one)."""
    flat = trigger.reshape(-1, trigger.shape[-1])
    return bool(flat.size) and bool((flat == flat[0]).all())


def solid_control_patch(trigger: np.ndarray) -> np.ndarray | None:
    """For a solid trigger, a solid patch of its size in the corner colour farthest from it (green for purple,
    black for white); ``None`` for any other trigger, whose kind the random control already is."""
    if not is_solid(trigger):
        return None
    c = trigger.reshape(-1, trigger.shape[-1])[0].astype(np.int64)
    colour = max(SOLID_CONTROL_COLOURS, key=lambda k: int(((np.array(k) - c) ** 2).sum()))  # first of ties
    return np.broadcast_to(np.array(colour, np.uint8), trigger.shape).copy()


def rotated_control_patch(trigger: np.ndarray) -> np.ndarray | None:
    """The trigger turned 180 degrees (mirrored left-right, else top-bottom, where that leaves it unchanged):
    the same pixels and colours in another arrangement, so a patterned trigger (random noise, colour blocks, the
    smooth pattern, an image file such as the authors' ``trigger_10.png``) gets a control made of its own pixels.
    ``None`` where every such turn leaves it unchanged (a solid trigger: the solid control covers it)."""
    for patch in (trigger[::-1, ::-1], trigger[:, ::-1], trigger[::-1, :]):
        if not np.array_equal(patch, trigger):
            return np.ascontiguousarray(patch)
    return None


def sibling_trigger(spec: TriggerSpec, trigger: np.ndarray) -> np.ndarray | None:
    """Another trigger of ``spec``'s own kind, of ``trigger``'s size: for an image file the next image of its
    folder that differs from it (the authors ship ``trigger_10.png`` ... ``trigger_19.png``: trigger_10's sibling
    is trigger_11), for ``smooth[:N]`` and ``random:N`` the same recipe drawn with the control seed. ``None`` for a
    per-pixel random trigger (the random control is already its kind drawn again), a solid one (the solid control
    covers it) and an image whose folder holds no other readable image, or is gone (poisons moved elsewhere)."""
    if spec.is_image:
        return _sibling_image(Path(spec.kind), trigger)
    if spec.kind == "random" or is_solid(trigger):
        return None
    return _redrawn(spec.kind, trigger)


def _sibling_image(path: Path, trigger: np.ndarray) -> np.ndarray | None:
    from corruptencoder.errors import UserError
    from corruptencoder.utils.imageio import is_image_file

    try:
        names = sorted(p.name for p in path.parent.iterdir() if p.name != path.name and is_image_file(p))
    except OSError:
        return None
    h, w = trigger.shape[:2]
    later = [n for n in names if n > path.name]
    for name in later + [n for n in names if n < path.name]:  # the next one in name order, then from the start
        try:  # sized as the trigger was
            patch = make_trigger(TriggerSpec(str(path.parent / name), (w, h)))
        except (UserError, OSError) as e:
            log.warning("sibling control: skipped %s (%s)", path.parent / name, e)
            continue
        if not np.array_equal(patch, trigger):
            return patch
    return None


def sibling_control_patch(trigger: np.ndarray, sibling: np.ndarray | None) -> np.ndarray | None:
    """The sibling trigger (:func:`sibling_trigger`, drawn where the trigger's recipe is known), else ``None``."""
    if sibling is None or np.array_equal(sibling, trigger):
        return None
    return sibling


@dataclass(frozen=True)
class Control:
    """One specificity control: its metric key, its name in tables, how its patch is made from the trigger and
    the trigger's sibling (``None``: it does not apply), and the demo verdict's two readings."""

    key: str
    name: str
    make: Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]  # (trigger, sibling trigger or None)
    what: str       # "<what> scores X %" in the verdict, and the legends
    keyed: str      # the reading when its lift stays under half the trigger's
    not_keyed: str  # the reading otherwise
    short: str      # its word in compact cells (the evaluate table, benchmark ledgers)
    applies: str    # which triggers it scores, for the legends ("" for all)
    clean_if: str   # the legends' "near the no-attack ASR when ..."
    always: bool = False  # a table column even where no row has it


CONTROLS: tuple[Control, ...] = (
    Control("control_asr", "control", lambda t, _: control_patch(t), "An unrelated random patch of the trigger's size",
            "the backdoor answers its own trigger.",
            "the backdoor is not specific to its trigger; it answers a patch of this kind.", "control", "",
            "the backdoor answers its own trigger only", always=True),
    Control("solid_control_asr", "solid control", lambda t, _: solid_control_patch(t), "A solid patch of a far colour",
            "it answers the trigger's colour, not any solid patch.",
            "it answers any solid patch of this size, not the trigger's colour.", "solid", "for a solid trigger",
            "it answers the trigger's colour, not any solid patch"),
    Control("rotated_control_asr", "rotated control", lambda t, _: rotated_control_patch(t),
            "The trigger turned 180 degrees (the same pixels, another arrangement)",
            "it answers the trigger's arrangement, not only its colours.",
            "it answers the trigger's colours or texture in any arrangement, not its pattern.", "rotated",
            "for a patterned trigger", "it answers the trigger's arrangement, not only its colours"),
    Control("sibling_control_asr", "sibling control", sibling_control_patch,
            "Another trigger of the same kind (the next image of the trigger's folder, or its recipe drawn again)",
            "it answers this trigger, not any trigger of its kind.",
            "it answers triggers of this kind, not this one.", "sibling",
            "for an image trigger or a drawn pattern", "it answers this trigger, not any trigger of its kind"),
)


def legend(controls: Sequence[Control], label: Callable[[Control], str] = lambda c: c.short) -> str:
    """What each control column means, for a table's legend (``label`` names the column)."""
    parts = []
    for c in controls:
        applies = f", {c.applies}" if c.applies else ""
        parts.append(f"{label(c)}: the ASR with {c.what[0].lower()}{c.what[1:]}{applies} "
                     f"(near the no-attack ASR when {c.clean_if})")
    return "; ".join(parts)

#: each control's ASR on the attacked encoder and on its clean twin, as result-row and CSV fields
CONTROL_METRICS = tuple(k for c in CONTROLS for k in (c.key, c.key + "_clean"))
#: each control's zero-shot ASR on the attacked encoder
ZS_CONTROL_METRICS = tuple("zs_" + c.key for c in CONTROLS)


def shown_controls(rows: Sequence[dict[str, Any]], prefix: str = "") -> list[Control]:
    """The controls with a table column: the random patch always, the others where a row has them (the solid
    control only where a trigger is solid); ``prefix`` "zs_" reads the zero-shot fields."""
    return [c for c in CONTROLS if c.always or any(r.get(prefix + c.key) is not None for r in rows)]


#: what the evaluation cache key recorded for the control sets of before the registry (metrics with these keys
#: stay cached); any other set is keyed by its metric keys
_LEGACY_SETS = {("control_asr",): 1, ("control_asr", "solid_control_asr"): 2}


def control_set_key(triggers: Sequence[np.ndarray],
                    siblings: Sequence[np.ndarray | None] | None = None) -> int | list[str]:
    """The controls that apply to any of ``triggers`` (with their ``siblings``, aligned), for an evaluation's cache
    key; the patches themselves are keyed where their features are cached."""
    pairs = list(zip(triggers, siblings if siblings is not None else [None] * len(triggers), strict=True))
    keys = tuple(c.key for c in CONTROLS if c.always or any(c.make(t, s) is not None for t, s in pairs))
    return _LEGACY_SETS.get(keys, list(keys))


def control_scores(trigger: np.ndarray, asr: Callable[[np.ndarray, str], float],
                   sibling: np.ndarray | None = None) -> dict[str, float | None]:
    """The specificity controls' ASRs, ``asr(patch, progress label)``, by metric key; ``None`` where a control does
    not apply to the trigger. One place for the probe and the zero-shot scorer."""
    out: dict[str, float | None] = {}
    for c in CONTROLS:
        patch = c.make(trigger, sibling)
        out[c.key] = None if patch is None else round(asr(patch, c.name), 3)
    return out


def verdict_lines(row: dict[str, float | None], lift: float) -> list[str]:
    """One sentence per control a row has: keyed when the control's lift over its clean twin is under half the
    trigger's own lift over the no-attack ASR."""
    lines = []
    for c in CONTROLS:
        value = row.get(c.key)
        if value is None:
            continue
        keyed = value - (row.get(c.key + "_clean") or 0.0) < lift / 2
        lines.append(f"{c.what} scores {value:.1f} % ({c.name} ASR): " + (c.keyed if keyed else c.not_keyed))
    return lines
