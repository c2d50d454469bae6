"""Localized cropping (Section 5, Figure 9): the paper's defence at view time.

After view 1 is cropped, its box is enlarged by ``delta`` of its size on each side and view 2 is drawn
inside the enlargement (``ssl/crops.py``, following the authors' ``RandomResizedCrop_Self``), so the two
views are likely to hold the same things: both the object, both the trigger, or neither.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from corruptencoder.defend.base import DEFENCES, DefenceOptions, ViewDefence


class LocalizedOptions(DefenceOptions):
    delta: float = Field(0.2, ge=0.0, description="enlargement of view 1's box per side (the paper: 0.2)")


@DEFENCES.register
class LocalizedCropping(ViewDefence[LocalizedOptions]):
    name = "localized"
    summary = "localized cropping: view 2 is drawn near view 1 (pre-training views)"
    options = LocalizedOptions

    def pretrain_patch(self) -> dict[str, Any]:
        return {"views": {"crop": "localized", "delta": self.opts.delta}}

    def label(self) -> str:
        return f"localized cropping (delta {self.opts.delta:g})"

    def knob(self) -> float:
        return self.opts.delta
