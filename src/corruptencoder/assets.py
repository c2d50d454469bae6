"""Built-in offline assets: reference objects with masks, backgrounds and support images, made by code.

Nothing is downloaded or vendored: the assets are rendered from the procedural demo world
(:mod:`corruptencoder.data.synthetic`) on first use into a cache folder
(``$CORRUPTENCODER_CACHE`` or ``~/.cache/corruptencoder``) and reused afterwards. On the command
line, ``builtin`` stands for them::

    corruptencoder craft corruptencoder --references builtin --backgrounds builtin --out poisons
"""

from __future__ import annotations

import os
from pathlib import Path

from corruptencoder.data.synthetic import DEFAULT_TARGET
from corruptencoder.errors import UserError

#: The built-in target class (the world generator's default) and the size the assets are rendered at
#: (large enough for a 40 px trigger).
BUILTIN_TARGET = DEFAULT_TARGET
BUILTIN_IMAGE_SIZE = 256


def cache_dir() -> Path:
    root = os.environ.get("CORRUPTENCODER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "corruptencoder")
    return Path(root)


def builtin_assets() -> Path:
    """The folder of built-in assets (generated once, deterministically)."""
    from corruptencoder.data.synthetic import WorldConfig, ensure_world

    return ensure_world(
        cache_dir() / "assets",
        WorldConfig(image_size=BUILTIN_IMAGE_SIZE, seed=2024, object_scale=(0.7, 0.9)),
        n_pretrain=0, n_train_per_class=0, n_test_per_class=0, target=BUILTIN_TARGET,
        n_references=3, n_support=5, n_backgrounds=64,
    )


def resolve_builtin(value: str, kind: str, target: str | None = None) -> str:
    """Map ``builtin`` (for references, backgrounds or support) to the generated folder."""
    if value != "builtin":
        return value
    root = builtin_assets()
    sub = {"references": Path("references") / BUILTIN_TARGET, "backgrounds": Path("backgrounds"),
           "support": Path("support") / BUILTIN_TARGET}.get(kind)
    if sub is None:
        raise UserError(f"'builtin' is not available for {kind}")
    return str(root / sub)
