"""Human-readable class names, offline: what captions and zero-shot prompts say instead of a wnid.

* ImageNet: the 1,000 wnids in class-index order (``timm/data/_info/imagenet_synsets.txt``) paired with
  CLIP's cleaned class names (open_clip's ``zero_shot_metadata.IMAGENET_CLASSNAMES``); both files ship
  inside the installed packages and are read as files, so nothing imports torch and nothing downloads.
  Without them, the first WordNet lemma (``imagenet_synset_to_lemma.txt``), else the wnid itself.
* Oxford Flowers-102: the class names in ``imagelabels.mat`` order (torchvision's 0-based labels), as
  published with CLIP (``lotus`` is 77, ``toad lily`` 78).
* Anything else: underscores and dashes become spaces (``stop_sign`` -> ``stop sign``).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

FLOWERS102: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold", "tiger lily",
    "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot", "king protea",
    "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
    "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william", "carnation",
    "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower",
    "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium", "orange dahlia",
    "pink and yellow dahlia", "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush",
    "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania",
    "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus", "toad lily",
    "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "air plant", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)
_WNID = re.compile(r"^n\d{8}$")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates the package without importing it (and torch)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def imagenet_names() -> dict[str, str]:
    """wnid -> class name for the 1,000 ImageNet classes (empty when the packages are not installed)."""
    timm = _package_dir("timm")
    if timm is None or not (timm / "data" / "_info" / "imagenet_synsets.txt").is_file():
        return {}
    info = timm / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    names: list[str] = []
    clip = _package_dir("open_clip")
    meta = clip / "zero_shot_metadata.py" if clip else None
    if meta is not None and meta.is_file():
        for node in ast.parse(meta.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(getattr(t, "id", "") == "IMAGENET_CLASSNAMES" for t in targets):
                names = [str(n) for n in ast.literal_eval(node.value)]  # type: ignore[attr-defined]  # an Assign
    if len(names) != len(wnids):  # fall back to the first WordNet lemma
        lemmas = {}
        lemma_file = info / "imagenet_synset_to_lemma.txt"
        if lemma_file.is_file():
            for line in lemma_file.read_text(encoding="utf-8").splitlines():
                wnid, _, text = line.partition("\t")
                lemmas[wnid] = text.split(",")[0].strip()
        names = [lemmas.get(w, w) for w in wnids]
    return dict(zip(wnids, names, strict=True))


def readable(name: str) -> str:
    """What a caption or prompt calls a class: an ImageNet wnid's name, or the label with ``_``/``-`` as spaces."""
    if _WNID.match(name):
        found = imagenet_names().get(name)
        if found:
            return found
    return name.replace("_", " ").replace("-", " ").strip()
