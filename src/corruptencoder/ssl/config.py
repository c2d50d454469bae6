"""Typed pre-training configuration.

The sections every run has (data, views, backbone, optim, trainer) live here; each method's own
section is declared in its file (``ssl/methods/<name>.py``) and found through the method registry,
so a new method is one new file. Learning rates are *per 256 images* and scaled linearly with the
batch size; a method's optimizer defaults are part of its declaration. Presets
(:mod:`corruptencoder.presets`) are typed partial configs (:class:`Patch`) merged under the user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from corruptencoder.utils.config import NestedError, StrictModel
from corruptencoder.utils.registry import Registry

if TYPE_CHECKING:
    from corruptencoder.ssl.base import SSLMethod

#: Contrastive methods, one module each in ``corruptencoder/ssl/methods`` (the module name is the
#: method name, so listing them for help texts imports no torch).
METHODS: Registry[type[SSLMethod[Any]]] = Registry("method", "corruptencoder.ssl.methods")


class MethodConfig(StrictModel):
    """Base of every method's config section; ``name`` picks the method."""

    name: str


@dataclass(frozen=True)
class OptimDefaults:
    """A method's published optimizer recipe: lr is per 256 images."""

    optimizer: Literal["sgd", "lars", "adamw"]
    lr: float
    weight_decay: float
    warmup_epochs: float


def method_config(value: Any) -> MethodConfig:
    """Validate a ``method`` section (a dict with ``name``) into the named method's config model."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping with a 'name' (e.g. {name: moco})")
    name = value.get("name", "moco")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(METHODS.names())}")
    model = METHODS.get(name).config_model
    from pydantic import ValidationError

    try:
        return model.model_validate({**value, "name": name})
    except ValidationError as exc:  # keep pydantic's path (method.<key>) in the message
        raise NestedError(exc) from None


class DataConfig(StrictModel):
    clean: str | None = Field(None, description="clean pre-training images: ImageFolder root, folder or file list")
    pairs: str | None = Field(None, description="clean image-text pairs (CLIP): open_clip CSV/TSV or webdataset shards")
    img_key: str = "filepath"
    caption_key: str = "title"
    separator: str | None = None
    classes: str | None = Field(None, description="class list (e.g. ImageNet100-A wnids) to take from an ImageFolder")
    split: str = Field("train", description="sub-folder of an ImageNet-style root holding the split")
    max_images: int | None = Field(None, ge=1, description="seeded subset of the clean images")
    fraction: float | None = Field(None, description="seeded fraction of the clean images (CompRess clean subset)")
    exclude: list[str] = Field(default_factory=list, description="poison folders whose files are never used")
    poisons: list[str] = Field(default_factory=list, description="poison folders written by 'corruptencoder craft'")
    image_size: int = Field(224, ge=8, le=4096, description="training crop size in px (the paper: 224)")
    cache: Literal["auto", "memory", "none"] = "auto"
    cache_short_side: int | None = Field(None, description="decode-time shrink (default 4x image_size)")
    workers: int | None = Field(None, ge=0, description="DataLoader workers (default: 0 on <= 2 CPU cores)")
    decode: Literal["auto", "host", "device"] = Field(
        "auto", description="where images are decoded and cropped: host (loader workers), device (workers read JPEG "
        "bytes; the GPU decodes with nvJPEG and crops), auto (device on a GPU for a JPEG set too big to cache when "
        "fewer than 8 loader workers feed each GPU; host otherwise: measured faster with more)")

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:
            raise ValueError(f"fraction={v} is outside (0, 1]; e.g. 0.05 or 0.2 of the clean data")
        return v



class ViewsConfig(StrictModel):
    crop: Literal["random", "localized", "none"] = Field(
        "random", description="random crops (default), the paper's localized cropping, or no random cropping")
    delta: float = Field(0.2, ge=0.0, description="localized cropping: enlargement of view 1's box per side")
    scale: tuple[float, float] | None = Field(None, description="crop area range (default: the method's)")
    blur: bool | None = Field(None, description="Gaussian blur on/off (default: the method's)")
    n_local: int | None = Field(None, ge=0, description="SwAV multi-crop low-resolution views")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError(f"scale {list(v)} must satisfy 0 < low <= high <= 1")
        return v


class BackboneConfig(StrictModel):
    name: str = Field("resnet18", description="resnet18 | resnet34 | resnet50 | small_cnn | timm:<name> | openclip")
    width: float = Field(1.0, gt=0.0)
    clip_model: str | None = Field(None, description="for name openclip: the open_clip model whose image tower "
                                   "this is (e.g. RN50)")
    small_stem: bool | None = Field(None, description="3x3 stem without max-pool (default: image_size <= 64)")
    init: str | None = Field(None, description="start from these weights (an encoder.pt of the same backbone): "
                             "continued pre-training, e.g. a clean encoder refreshed on newly scraped data")


class OptimConfig(StrictModel):
    optimizer: Literal["sgd", "lars", "adamw"] | None = None
    lr: float | None = Field(None, gt=0.0, description="learning rate per 256 images (scaled linearly)")
    weight_decay: float | None = Field(None, ge=0.0)
    momentum: float = 0.9
    warmup_epochs: float | None = Field(None, ge=0.0)
    batch_size: int = Field(256, ge=2, description="the global batch, split evenly over devices and nodes (as the "
                            "papers state it); the learning rate is scaled by it")
    epochs: int = Field(200, ge=1)
    final_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="where the cosine ends, as a share of the "
                                  "learning rate: 0 = down to zero (the recipes), 1 = constant after warm-up (a "
                                  "short refresh of a trained encoder, which a full decay would end before it learns)")


class TrainerConfig(StrictModel):
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = Field(1, description="devices per node (DDP when > 1), or auto")
    num_nodes: int = Field(1, description="nodes (machines) of a torchrun or SLURM launch (--nodes)")
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    checkpoint_every: int = Field(1, ge=1, description="full checkpoint (for --resume) every k epochs")
    snapshot_every: int = Field(0, ge=0, description="also save encoders/epoch_XXX.pt every k epochs (0 = off)")
    channels_last: bool = True
    compile: bool = False
    progress: bool = True
    log_every_n_steps: int = Field(10, ge=1)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"{v} devices: give the number of devices per node (at least 1) or auto")
        return v

    @field_validator("num_nodes")
    @classmethod
    def _num_nodes(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"{v} nodes: give the number of nodes of the launch (at least 1)")
        return v


class PretrainConfig(StrictModel):
    method: SerializeAsAny[MethodConfig] = Field(default_factory=lambda: method_config({"name": "moco"}))
    data: DataConfig
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> MethodConfig:
        return method_config(v)

    @model_validator(mode="after")
    def _need_data(self) -> "PretrainConfig":
        if not self.data.clean and not self.data.poisons and not self.data.pairs:
            raise ValueError("give data.clean (clean pre-training images) and/or data.poisons")
        return self

    @model_validator(mode="after")
    def _localized_needs_a_pair(self) -> "PretrainConfig":
        # localized cropping draws view 2 near view 1: a method with one view of each image (CLIP, whose pair is
        # the image and its caption; CompRess) would train exactly as without it and report a defence it never had
        if self.views.crop == "localized" and len(METHODS.get(self.method.name).colours) < 2:
            raise ValueError(f"views.crop=localized draws a second view near the first, but {self.method.name} "
                             "takes one view of each image, so it would change nothing; use crop: none, or a "
                             "method with two views (moco, simclr, swav, msf, byol)")
        return self

    def resolved_optim(self) -> tuple[str, float, float, float]:
        """(optimizer, absolute lr, weight decay, warm-up epochs) after method defaults and scaling."""
        d = METHODS.get(self.method.name).optim
        o = self.optim
        lr = (o.lr if o.lr is not None else d.lr) * o.batch_size / 256.0
        return (o.optimizer or d.optimizer, lr, o.weight_decay if o.weight_decay is not None else d.weight_decay,
                o.warmup_epochs if o.warmup_epochs is not None else d.warmup_epochs)


class Patch(StrictModel):
    """A typed partial pre-training config (presets, method deltas): only the keys that were set are
    merged, each validated by its section's model when the patch is built."""

    method: SerializeAsAny[MethodConfig] | None = None
    data: DataConfig | None = None
    views: ViewsConfig | None = None
    backbone: BackboneConfig | None = None
    optim: OptimConfig | None = None
    trainer: TrainerConfig | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)
