"""Typed pre-training configuration (no torch import: configs validate on any machine).

Method hyper-parameters default to each method's published ImageNet(-100) settings; learning
rates are *per 256 images* and scaled linearly with the batch size. Presets
(:mod:`corruptencoder.presets`) scale everything down for CPUs and small GPUs.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from corruptencoder.utils.config import StrictModel


class MoCoConfig(StrictModel):
    """MoCo-v2 (Chen et al. 2020): queue of keys, momentum key encoder, MLP head, InfoNCE."""

    name: Literal["moco"] = "moco"
    temperature: float = 0.2
    # 65,536 keys as the authors' main_moco.py (--moco-k default) and MoCo-v2
    queue_size: int = Field(65536, ge=0)
    momentum: float = Field(0.999, ge=0.0, le=1.0)
    bn_splits: int = Field(2, ge=1, description="shuffled BN on one device: virtual devices with their own BN "
                           "statistics, key batch shuffled between them (2 = the authors' 2 GPUs; 1 = off)")
    proj_hidden: int | None = Field(None, description="hidden width of the MLP head (default: feature dim)")
    proj_dim: int = 128
    symmetric: bool = False


class SimCLRConfig(StrictModel):
    """SimCLR (Chen et al. 2020): NT-Xent over the other images of the batch."""

    name: Literal["simclr"] = "simclr"
    temperature: float = 0.1
    proj_hidden: int | None = None
    proj_dim: int = 128


class SwAVConfig(StrictModel):
    """SwAV (Caron et al. 2020): prototypes, Sinkhorn-Knopp codes, swapped prediction, multi-crop."""

    name: Literal["swav"] = "swav"
    temperature: float = 0.1
    n_prototypes: int = 3000
    proj_hidden: int = 2048
    proj_dim: int = 128
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    freeze_prototypes_epochs: float = 1.0
    queue_size: int = Field(3840, ge=0, description="features kept for Sinkhorn with small batches; 0 = off")
    queue_start_epoch: int = 15
    n_local: int = Field(6, ge=0, description="low-resolution multi-crop views (0 = off)")


class BYOLConfig(StrictModel):
    """BYOL (Grill et al. 2020): predictor + momentum target, cosine momentum schedule."""

    name: Literal["byol"] = "byol"
    momentum: float = Field(0.99, description="base momentum, raised to 1 along a cosine schedule")
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096


class MSFConfig(StrictModel):
    """MSF / mean shift (Koohpayegani et al. 2021): regress the query to the k nearest neighbours of
    the weakly-augmented target in a memory bank of target embeddings."""

    name: Literal["msf"] = "msf"
    momentum: float = 0.99
    bank_size: int = Field(128000, ge=1)
    topk: int = Field(5, ge=1)
    proj_hidden: int = 4096
    proj_dim: int = 512
    pred_hidden: int = 4096


class DistillConfig(StrictModel):
    """CompRess (Koohpayegani, Tejankar, Pirsiavash, NeurIPS 2020): distil a frozen teacher into a student
    by matching their similarity distributions over a memory bank of past samples."""

    name: Literal["compress"] = "compress"
    teacher: str = Field(description="teacher encoder.pt (loaded with weights_only=True)")
    teacher_backbone: str | None = Field(None, description="backbone of a plain state-dict teacher (encoder.pt knows)")
    teacher_width: float = 1.0
    variant: Literal["2q", "1q"] = Field("2q", description="2q: each network its own queue; 1q: the teacher's for both")
    queue_size: int = Field(128000, ge=1)
    temperature: float = Field(0.04, gt=0.0, description="softmax temperature of teacher and student (CompRess: 0.04)")
    momentum: float = Field(0.999, description="EMA of the student copy that fills the student's queue")
    proj_hidden: int | None = Field(None, description="width of an optional student MLP head")
    proj_dim: int | None = Field(None, description="optional student head output size (default: no head)")


class CLIPConfig(StrictModel):
    """CLIP (Radford et al. 2021) on image-text pairs, from scratch, with open_clip's models and loss."""

    name: Literal["clip"] = "clip"
    model: str = Field("RN50", description="open_clip model config (RN50 = the paper's) or 'custom': the "
                       "'backbone' section's image encoder + a small open_clip text transformer (for CPUs)")
    embed_dim: int = 128
    text_width: int = 64
    text_heads: int = 2
    text_layers: int = 2
    context_length: int = 32


MethodConfig = Annotated[
    Union[MoCoConfig, SimCLRConfig, SwAVConfig, BYOLConfig, MSFConfig, DistillConfig, CLIPConfig],
    Field(discriminator="name"),
]
METHODS = ("moco", "simclr", "swav", "msf", "byol")

# optimizer, lr per 256 images, weight decay, warm-up epochs: the published recipes
OPTIM_DEFAULTS: dict[str, tuple[str, float, float, float]] = {
    # The paper's Appendix B says 0.6, but the code that produced its tables (the authors' run_pretraining.sh,
    # as Saha et al.'s) trains with --lr 0.06 at batch 256: the text's 0.6 is a typo.
    "moco": ("sgd", 0.06, 1e-4, 0.0),
    "simclr": ("lars", 0.3, 1e-6, 10.0),    # lr 1.2 at batch 1024
    "swav": ("lars", 0.6, 1e-6, 0.0),       # batch 256 recipe
    "byol": ("lars", 0.2, 1.5e-6, 10.0),
    "msf": ("sgd", 0.05, 1e-4, 0.0),
    "compress": ("sgd", 0.01, 1e-4, 0.0),   # CompRess: lr 0.01 at batch 256
    "clip": ("adamw", 5e-4 * 256 / 128, 0.1, 1.0),  # Carlini & Terzis / open_clip: AdamW 5e-4 at batch 128
}


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
    image_size: int = Field(224, ge=8)
    cache: Literal["auto", "memory", "none"] = "auto"
    cache_short_side: int | None = Field(None, description="decode-time shrink (default 4x image_size)")
    workers: int | None = Field(None, ge=0, description="DataLoader workers (default: 0 on <= 2 CPU cores)")

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:
            raise ValueError(f"fraction={v} is outside (0, 1]; e.g. 0.05 or 0.2 of the clean data")
        return v

    @model_validator(mode="after")
    def _need_data(self) -> "DataConfig":
        if not self.clean and not self.poisons and not self.pairs:
            raise ValueError("give data.clean (clean pre-training images) and/or data.poisons")
        return self


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
    name: str = Field("resnet18", description="resnet18 | resnet34 | resnet50 | small_cnn | timm:<name>")
    width: float = Field(1.0, gt=0.0)
    small_stem: bool | None = Field(None, description="3x3 stem without max-pool (default: image_size <= 64)")
    init: str | None = Field(None, description="start from these weights (an encoder.pt of the same backbone): "
                             "continued pre-training, e.g. a clean encoder refreshed on newly scraped data")


class OptimConfig(StrictModel):
    optimizer: Literal["sgd", "lars", "adamw"] | None = None
    lr: float | None = Field(None, gt=0.0, description="learning rate per 256 images (scaled linearly)")
    weight_decay: float | None = Field(None, ge=0.0)
    momentum: float = 0.9
    warmup_epochs: float | None = Field(None, ge=0.0)
    batch_size: int = Field(256, ge=2)
    epochs: int = Field(200, ge=1)


class TrainerConfig(StrictModel):
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = 1
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    checkpoint_every: int = Field(1, ge=1, description="full checkpoint (for --resume) every k epochs")
    snapshot_every: int = Field(0, ge=0, description="also save encoders/epoch_XXX.pt every k epochs (0 = off)")
    channels_last: bool = True
    compile: bool = False
    progress: bool = True
    log_every_n_steps: int = 10


class PretrainConfig(StrictModel):
    method: MethodConfig = Field(default_factory=MoCoConfig)
    data: DataConfig
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    def resolved_optim(self) -> tuple[str, float, float, float]:
        """(optimizer, absolute lr, weight decay, warm-up epochs) after method defaults and scaling."""
        opt, lr, wd, warm = OPTIM_DEFAULTS[self.method.name]
        o = self.optim
        lr = (o.lr if o.lr is not None else lr) * o.batch_size / 256.0
        return (o.optimizer or opt, lr, o.weight_decay if o.weight_decay is not None else wd,
                o.warmup_epochs if o.warmup_epochs is not None else warm)
