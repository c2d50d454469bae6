"""What every contrastive method shares (solo-learn style): backbone, views, optimizer, schedule,
batched colour augmentation on the device, logging, momentum-encoder plumbing and the export of
``encoder.pt``. A method file (``ssl/methods/<name>.py``) declares its config section, views,
optimizer recipe and preset deltas as class attributes, and adds only its heads and its loss.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import lightning as L
import torch
from lightly.models.utils import update_momentum
from torch import nn

from corruptencoder.ssl.augment import ColourAugment, apply_colour
from corruptencoder.ssl.backbones import backbone_spec, build_backbone
from corruptencoder.ssl.config import MethodConfig, OptimDefaults, Patch, PretrainConfig
from corruptencoder.ssl.encoder import save_encoder
from corruptencoder.ssl.optim import build_optimizer, warmup_cosine
from corruptencoder.ssl.views import ViewPlan, ViewSpec, view_plan

C = TypeVar("C", bound=MethodConfig)


def load_initial_weights(model: nn.Module, spec: dict[str, Any], path: str) -> None:
    """Continued pre-training: copy an encoder.pt's weights into ``model`` (same backbone, or say why not)."""
    from corruptencoder.errors import ConfigError
    from corruptencoder.ssl.encoder import load_encoder

    init, init_spec, _ = load_encoder(path, spec)
    if init_spec != spec:
        raise ConfigError(f"backbone.init {path}: its backbone {init_spec} differs from the configured {spec}; "
                          "continue pre-training with the same backbone, width and stem")
    model.load_state_dict(init.state_dict())


class SSLMethod(L.LightningModule, Generic[C]):
    """A contrastive method. Subclasses declare (and register with ``@METHODS.register``):"""

    name: ClassVar[str] = "base"
    #: the method's config section (``method:`` in YAML), with ``name: Literal[...]``
    config_model: ClassVar[type[MethodConfig]]
    #: one colour augmentation per global view (the crop is drawn per sample before, see views.py)
    colours: ClassVar[tuple[ColourAugment, ...]]
    #: crop area range of the global views (the method's published augmentation)
    crop_scale: ClassVar[tuple[float, float]] = (0.08, 1.0)
    #: optimizer, lr per 256 images, weight decay, warm-up epochs (the published recipe)
    optim: ClassVar[OptimDefaults]
    #: per preset name, what the method changes in it (its section and, e.g., the learning rate)
    presets: ClassVar[dict[str, Patch]] = {}
    #: "images" (clean + poisoned images) or "pairs" (image-text pairs)
    data_kind: ClassVar[Literal["images", "pairs"]] = "images"
    #: offered as a pre-training method (CompRess distillation is a defence's training loop, not one)
    pretraining: ClassVar[bool] = True

    @classmethod
    def local_views(cls, cfg: PretrainConfig, scale: tuple[float, float],
                    colour: ColourAugment) -> tuple[ViewSpec, ...]:
        """Extra low-resolution views after the global ones (SwAV's multi-crop); none by default."""
        return ()

    def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
        super().__init__()
        cfg = config if isinstance(config, PretrainConfig) else PretrainConfig.model_validate(config)
        self.cfg = cfg
        # the config travels in every checkpoint, so --resume rebuilds the same model
        self.save_hyperparameters({"config": cfg.model_dump(mode="json")})
        self.spec, self.backbone = self.make_backbone()
        self.feat_dim = int(cast(int, self.backbone.out_dim))
        self.plan: ViewPlan = view_plan(cfg)
        self._check_view_sizes()
        self.build()
        if cfg.trainer.channels_last:
            self.to(memory_format=torch.channels_last)

    def _check_view_sizes(self) -> None:
        """A backbone built for one input size (a ViT, CLIP's attention pool) cannot take SwAV's smaller local views:
        say so now, in one line, rather than as a shape error in the first step."""
        sizes = sorted({v.size for v in self.plan.views} - {self.cfg.data.image_size})
        if not sizes:
            return
        from corruptencoder.errors import ConfigError

        was = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                for s in sizes:
                    self.backbone(torch.zeros(1, 3, s, s))
        except (RuntimeError, ValueError, AssertionError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"backbone {self.cfg.backbone.name} cannot take the {s} px local views of "
                              f"{self.cfg.method.name}'s multi-crop ({why}); set views.n_local: 0, or use a "
                              "convolutional backbone") from None
        finally:
            self.backbone.train(was)

    @property
    def m(self) -> C:
        """This method's config section, typed."""
        return cast(C, self.cfg.method)

    # -- to be provided by each method -------------------------------------------------------
    def make_backbone(self) -> tuple[dict[str, Any], nn.Module]:
        """The encoder being trained and its plain-data spec (stored in encoder.pt)."""
        b = self.cfg.backbone
        spec = backbone_spec(b.name, b.width, b.small_stem, self.cfg.data.image_size, b.clip_model)
        model = build_backbone(spec)
        if b.init:
            load_initial_weights(model, spec, b.init)
        return spec, model

    def build(self) -> None:
        """Create heads, momentum copies, queues."""

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's loss on a batch of augmented views (``self.batch_extra`` holds any other batch
        field, e.g. CLIP's caption tokens)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @staticmethod
    def momentum_copy(module: nn.Module) -> nn.Module:
        twin = copy.deepcopy(module)
        for p in twin.parameters():
            p.requires_grad = False
        return twin

    @torch.no_grad()
    def ema(self, online: nn.Module, target: nn.Module, m: float) -> None:
        """target <- m * target + (1 - m) * online (parameters, lightly's foreach update); buffers (BN
        statistics) are copied, which lightly's ``update_momentum`` leaves alone."""
        if next(online.parameters(), None) is not None:  # (a parameter-free head, e.g. nn.Identity)
            update_momentum(online, target, m)
        src, dst = list(online.buffers()), list(target.buffers())
        if len(src) != len(dst):
            raise ValueError(f"ema: {len(src)} online buffers but {len(dst)} in the momentum copy")
        if not dst:
            return
        foreach_copy = getattr(torch, "_foreach_copy_", None)  # one fused call (torch >= 2.1), not one per buffer
        if foreach_copy is not None:
            foreach_copy(dst, src)
        else:
            for bo, bt in zip(src, dst, strict=True):
                bt.copy_(bo)

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum copy) pairs that ``update_momentum_pairs`` moves (solo-learn's convention)."""
        return []

    @torch.no_grad()
    def update_momentum_pairs(self, m: float) -> None:
        for online, target in self.momentum_pairs:
            self.ema(online, target, m)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """A batch of JPEG bytes and boxes (``data.decode: device``) is decoded and cropped here, on the device."""
        from corruptencoder.data.encoded import EncodedBatch

        if isinstance(batch, EncodedBatch):
            return batch.decode(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        views, idx = batch
        fmt = torch.channels_last if self.cfg.trainer.channels_last else torch.contiguous_format
        out = [apply_colour(v, spec.colour).contiguous(memory_format=fmt)
               for v, spec in zip(views, self.plan.views, strict=True)]
        return out, idx

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        views, self.batch_extra = batch
        loss, logs = self.compute_loss(views)
        bs = views[0].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        for k, v in logs.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    @property
    def total_steps(self) -> int:
        try:
            return max(1, int(self.trainer.estimated_stepping_batches))
        except Exception:  # noqa: BLE001 - outside a Trainer (unit tests)
            return 1000

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.total_steps // max(1, self.cfg.optim.epochs))

    def configure_optimizers(self) -> Any:
        opt_name, lr, wd, warmup_epochs = self.cfg.resolved_optim()
        opt = build_optimizer(opt_name, self, lr, wd, self.cfg.optim.momentum)
        total = self.total_steps
        warm = int(round(warmup_epochs * self.steps_per_epoch))
        floor = self.cfg.optim.final_lr_ratio
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm, floor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export(self, path: str, extra: dict[str, Any] | None = None) -> None:
        backbone = getattr(self.backbone, "_orig_mod", self.backbone)
        meta = {"method": self.name, "image_size": self.cfg.data.image_size, "epoch": int(self.current_epoch)}
        meta.update(extra or {})
        save_encoder(path, backbone, self.spec, meta)
