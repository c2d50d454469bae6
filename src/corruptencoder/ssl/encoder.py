"""``encoder.pt``: a backbone's weights plus the plain-data spec that rebuilds it.

Saved as a dict of tensors and primitives so every reader uses ``torch.load(weights_only=True)``;
nothing is ever unpickled from a user's file. Plain torchvision ResNet state dicts (with or without
``fc``, ``module.``/``backbone.`` prefixes) and timm weights load too.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from corruptencoder.errors import UserError
from corruptencoder.ssl.backbones import backbone_spec, build_backbone

FORMAT = "corruptencoder.encoder/1"
_PREFIXES = ("module.", "backbone.", "encoder.", "encoder_q.", "model.", "_orig_mod.")


def save_encoder(path: str | os.PathLike[str], backbone: nn.Module, spec: dict[str, Any],
                 meta: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    save_atomic({"format": FORMAT, "backbone": dict(spec), "meta": dict(meta or {}), "state_dict": state}, path)


def save_atomic(payload: Any, path: str | os.PathLike[str]) -> None:
    """torch.save through a temp file + rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: encoder file not found; give the encoder.pt written by 'corruptencoder pretrain'")
    try:
        with warnings.catch_warnings():  # pickle-protocol chatter: a refusal becomes our one-line error
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refuses arbitrary pickles: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: refused to load (weights_only=True allows tensors and plain data only; the file needs "
            f"arbitrary code or is damaged: {first[:160]}); re-save it as a plain state dict"
        ) from None


def load_encoder(path: str | os.PathLike[str], spec: dict[str, Any] | None = None, *,
                 strict: bool = True) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild a backbone from ``encoder.pt`` (or a plain state dict + ``spec``).

    Returns (backbone in eval mode, spec, meta). Unexpected or missing keys are an error naming them.
    """
    obj = read_checkpoint(path)
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        spec = obj["backbone"]  # an encoder.pt knows its backbone
        state, meta = obj["state_dict"], dict(obj.get("meta", {}))
    elif isinstance(obj, dict):
        state = obj.get("state_dict", obj) if isinstance(obj.get("state_dict", obj), dict) else obj
        if "model" in obj and isinstance(obj["model"], dict):
            state = obj["model"]
        if spec is None:
            spec = backbone_spec("resnet50" if any("layer1.0.conv3" in k for k in state) else "resnet18")
    else:
        raise UserError(f"{path}: not a state dict or an encoder.pt")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: the state dict holds non-tensor values; is this an encoder checkpoint?")
    state = _strip(state)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
    model = build_backbone(spec)
    # timm weights lack our wrapper's prefix
    target = cast(nn.Module, model.model) if str(spec["name"]).startswith("timm:") else model
    want = target.state_dict()
    unexpected = sorted(set(state) - set(want))
    missing = sorted(set(want) - set(state))
    if strict and (unexpected or missing):
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {', '.join(unexpected[:4])}")
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {', '.join(missing[:4])}")
        raise UserError(f"{path}: weights do not fit backbone {spec['name']} (width {spec.get('width', 1.0)}): "
                        + "; ".join(parts) + "; pass the matching --backbone or the right file")
    bad = [k for k in want if k in state and state[k].shape != want[k].shape]
    if bad:
        k = bad[0]
        raise UserError(f"{path}: {len(bad)} tensor(s) have the wrong shape for backbone {spec['name']}, e.g. {k}: "
                        f"{tuple(state[k].shape)} vs {tuple(want[k].shape)}; pass the matching --backbone/--width")
    target.load_state_dict(state, strict=strict)
    model.eval()
    return model, dict(spec), meta
