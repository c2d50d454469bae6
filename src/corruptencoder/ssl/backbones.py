"""Encoders: torchvision ResNets (with a small-image stem and a width multiplier), a small CNN for
CPU demos, and any timm model by name.

The ResNets keep torchvision's module names (``conv1``, ``bn1``, ``layer1``..``layer4``), so a
torchvision ResNet state dict loads into a width-1 model and our encoders load into torchvision.
Every backbone maps (B, 3, H, W) to (B, out_dim) features and carries its ``spec`` so
``encoder.pt`` can rebuild it without user code.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from corruptencoder.errors import ConfigError

RESNETS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
BACKBONES = (*RESNETS, "small_cnn")


class ResNet(nn.Module):
    """torchvision's ResNet trunk without ``fc``; ``width`` scales every stage's channels."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], width: float = 1.0,
                 small_stem: bool = False) -> None:
        super().__init__()
        widths = [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.inplanes = widths[0]
        if small_stem:  # CIFAR-style: 3x3 stride-1 conv, no max-pool (inputs <= 64 px)
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        exp = block.expansion
        down = None
        if stride != 1 or self.inplanes != planes * exp:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * exp, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * exp))
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * exp
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU layers: fast enough to pre-train on 2 CPU cores in minutes."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, int(round(v * width))) for v in (32, 64, 128, 256)]
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(c):
            layers += [nn.Conv2d(cin, cout, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = c[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


class TimmBackbone(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        import timm

        try:
            self.model = timm.create_model(name, pretrained=False, num_classes=0)
        except RuntimeError as exc:
            raise ConfigError(f"backbone timm:{name}: {exc}") from None
        # what forward() returns with num_classes=0: the pre-logits features, wider than num_features where the
        # model has a head layer of its own (MobileNetV3: 288 -> 1024)
        self.out_dim = int(cast(int, getattr(self.model, "head_hidden_size", None) or self.model.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def default_small_stem(image_size: int) -> bool:
    return image_size <= 64


def backbone_spec(name: str, width: float = 1.0, small_stem: bool | None = None,
                  image_size: int = 224, clip_model: str | None = None) -> dict[str, Any]:
    """A plain dict that fully describes a backbone (stored in ``encoder.pt``). ``openclip`` is the image tower
    of the open_clip model ``clip_model`` (what a CLIP run exports; e.g. a CompRess student of a CLIP teacher)."""
    if name not in BACKBONES and not name.startswith("timm:") and name != "openclip":
        raise ConfigError(f"backbone {name!r} is unknown; use one of {', '.join(BACKBONES)} or timm:<model name>")
    if width <= 0:
        raise ConfigError(f"backbone width {width} must be positive (1.0 = the standard model)")
    stem = default_small_stem(image_size) if small_stem is None else bool(small_stem)
    spec: dict[str, Any] = {"name": name, "width": float(width), "small_stem": stem}
    if name == "openclip":
        if not clip_model:
            raise ConfigError("backbone openclip needs backbone.clip_model: the open_clip model whose image tower it "
                              "is, e.g. RN50")
        spec["clip"] = {"model": clip_model, "image_size": image_size}
    return spec


def build_backbone(spec: dict[str, Any]) -> nn.Module:
    name = spec["name"]
    if name in RESNETS:
        block, layers = RESNETS[name]
        return ResNet(block, layers, spec.get("width", 1.0), spec.get("small_stem", False))
    if name == "small_cnn":
        return SmallCNN(spec.get("width", 1.0))
    if name.startswith("timm:"):
        return TimmBackbone(name.split(":", 1)[1])
    if name == "openclip":
        from corruptencoder.ssl.clip_model import visual_tower

        return visual_tower(spec)
    raise ConfigError(f"backbone {name!r} is unknown; use one of {', '.join(BACKBONES)} or timm:<model name>")
