"""No random cropping (Table 4): every view is the whole image, resized (colour augmentation stays)."""

from __future__ import annotations

from typing import Any

from corruptencoder.defend.base import DEFENCES, DefenceOptions, ViewDefence


@DEFENCES.register
class NoRandomCropping(ViewDefence[DefenceOptions]):
    name = "no-crop"
    summary = "no random cropping: every view is the whole image (pre-training views)"

    def pretrain_patch(self) -> dict[str, Any]:
        return {"views": {"crop": "none"}}

    def label(self) -> str:
        return "no random cropping"
