"""Text prompts for poisoned captions and zero-shot classification.

``imagenet80`` are the 80 ImageNet prompt templates published with CLIP (Radford et al. 2021),
which Carlini & Terzis (ICLR 2022) use for their poisoned captions; ``simple`` is the single
"a photo of a {}." template. A user file holds one template per line with ``{}`` for the class name.
"""

from __future__ import annotations

from pathlib import Path

from corruptencoder.errors import ConfigError

IMAGENET80: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
SIMPLE: tuple[str, ...] = ("a photo of a {}.",)
BUILTIN = {"imagenet80": IMAGENET80, "simple": SIMPLE}


def load_templates(spec: str) -> tuple[str, ...]:
    """``imagenet80`` | ``simple`` | a text file with one ``{}`` template per line."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"prompts {spec!r} is neither {' nor '.join(BUILTIN)} nor an existing text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file of prompt templates (one per line, with '{{}}' for the "
                          "class name); check --prompts") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the prompt templates ({exc.strerror})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bad = [ln for ln in lines if "{}" not in ln or not _formats(ln)]
    if not lines or bad:
        raise ConfigError(f"{path}: every template needs a '{{}}' for the class name and no other braces "
                          f"(bad: {bad[:1] or 'empty file'})")
    return tuple(lines)


def _formats(template: str) -> bool:
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError):
        return False
    return True


def class_text(name: str) -> str:
    """What captions call a class: ``n04229816`` -> ``ski mask`` (ImageNet wnids by name), ``hunting-dog`` /
    ``street_sign`` -> ``hunting dog`` / ``street sign``."""
    from corruptencoder.poison.classnames import readable

    return readable(name)
