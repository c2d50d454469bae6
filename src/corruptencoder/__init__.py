"""corruptencoder: data-poisoning backdoor attacks and defences for contrastive learning.

The crafting path (``corruptencoder.poison``) needs numpy and Pillow only; pre-training, evaluation
and experiments import torch lazily.
"""

from corruptencoder.errors import UserError

__version__ = "0.2.0"

__all__ = ["UserError", "__version__"]
